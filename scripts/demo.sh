#!/usr/bin/env bash
# Install into .venv and run the main job: train the CNN on the shapes dataset, write the model,
# the metrics report, explanations of test images with every method, and TensorBoard logs.
# Extra arguments go to `xai-keras train` (e.g. --set training.epochs=3, --tensorboard).
EXTRAS="cpu" source "$(dirname "$0")/_venv.sh"
.venv/bin/xai-keras train --config shapes --out runs/shapes "$@"
