#!/usr/bin/env bash
# Build the PyTorch reference environment in .torchvenv/ (ignored by git), once:
#   bash scripts/torch_env.sh
# It holds what the comparisons' oracles import (scripts/_*_torch_oracle.py): torch,
# pytorch-grad-cam (compare_cams, compare_road), zennit and Captum (compare_relevance),
# LXT 2.1, the AttnLRP authors' library (compare_transformers), and Quantus 0.6
# (compare_metrics; it pins keras<3 and tensorflow<2.16, so it comes with --no-deps and its
# numeric requirements by hand).
# TensorFlow and torch never share a process, so this is a venv of its own; the comparisons
# find it through scripts.common.torch_python() ($XAI_KERAS_TORCH_PYTHON overrides it). Then:
#   .venv/bin/python -m scripts.compare_cams      # and compare_road, compare_relevance,
#                                                 # compare_transformers
#   .venv/bin/python -m pytest -m torch           # the oracle tests
# $TORCH_INDEX_URL picks a torch build (e.g. https://download.pytorch.org/whl/cpu).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -x .torchvenv/bin/python ] || "${PYTHON:-python3}" -m venv --upgrade-deps .torchvenv
.torchvenv/bin/python -m pip install --quiet --disable-pip-version-check \
  ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch
.torchvenv/bin/python -m pip install --quiet --disable-pip-version-check \
  "grad-cam==1.5.7" "zennit==0.5.1" "captum==0.9.0" "lxt==2.1" numpy scipy scikit-image \
  opencv-python-headless tqdm matplotlib pandas scikit-learn typing-extensions cachetools
.torchvenv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "quantus==0.6.0"
echo "PyTorch reference environment ready: .torchvenv/bin/python"
