#!/usr/bin/env bash
# Install into .venv with the test extras, lint, and run the test suite.
# Extra arguments go to pytest (e.g. -k gradcam, -m "not slow").
EXTRAS="cpu,test" source "$(dirname "$0")/_venv.sh"
# xplique, a second reference implementation, pins tensorflow[and-cuda], which would install a
# second TensorFlow over tensorflow-cpu; so it and its small pure-Python deps come without deps.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
  "xplique==2.0.2" "einops>=0.6" "tf-keras~=2.21.0" "tensorflow-probability==0.25.0" \
  "dm-tree>=0.1.8" "decorator>=5"
.venv/bin/ruff check xai_keras tests scripts
.venv/bin/python -m pytest -q "$@"
