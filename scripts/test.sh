#!/usr/bin/env bash
# Install into .venv with the test extras, lint, and run the test suite.
# Extra arguments go to pytest (e.g. -k gradcam, -m "not slow").
EXTRAS="cpu,test" source "$(dirname "$0")/_venv.sh"
.venv/bin/ruff check xai_keras tests scripts
.venv/bin/python -m pytest -q "$@"
