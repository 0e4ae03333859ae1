#!/usr/bin/env bash
# Install into .venv and run the main job: train the CNN on the shapes dataset, write the model,
# the metrics report, explanations of test images with every method, and TensorBoard logs.
# Extra arguments go to `xai-keras train` (e.g. --set training.epochs=3, --tensorboard).
# Takes 3-6 minutes on 2 CPU cores (the first run adds about 3 minutes of install).
EXTRAS="cpu" source "$(dirname "$0")/_venv.sh"
.venv/bin/xai-keras train --config shapes --out runs/shapes "$@"
cat <<'NOTE'

xai-keras and tensorboard were installed into .venv/bin. In a new shell, run once
  source .venv/bin/activate
and the commands above and in the README work as written, e.g.
  xai-keras tensorboard --logdir runs/shapes/tb
  xai-keras analyze --model runs/shapes/model.keras --out reports/analysis
NOTE
