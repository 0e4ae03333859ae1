#!/usr/bin/env bash
# Build .torchvenv/ (ignored by git): PyTorch, Captum and Quantus, the oracles of
# scripts/compare_metrics.py. TensorFlow never enters it (Quantus pins keras<3 and
# tensorflow<2.16, so it is installed with --no-deps and its numeric dependencies by hand).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .torchvenv/bin/python ]; then
  "$PYTHON" -m venv .torchvenv
  .torchvenv/bin/python -m pip install --quiet --upgrade pip
fi
.torchvenv/bin/python -m pip install --quiet --disable-pip-version-check \
  torch captum numpy scipy scikit-image opencv-python-headless tqdm matplotlib pandas scikit-learn typing-extensions cachetools
.torchvenv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps quantus
.torchvenv/bin/python -c "import torch, captum, quantus; print(torch.__version__, captum.__version__, quantus.__version__)"
