#!/usr/bin/env bash
# KerasHub beside the TensorFlow xai-keras installed, without a second TensorFlow:
#   bash scripts/install_hub.sh [python]      (default: .venv/bin/python, else python3)
# keras-hub requires tensorflow-text, which requires the `tensorflow` package: next to
# `tensorflow-cpu` (which shares its package folder) that is a broken install. KerasHub's
# image models need no tensorflow-text, so keras-hub comes without its requirements and the
# `hub` extra brings the others.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[hub]"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "keras-hub>=0.32"
"$PY" - <<'PY'
from importlib import metadata

builds = []
for name in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"):
    try:
        metadata.version(name)
        builds.append(name)
    except metadata.PackageNotFoundError:
        pass
if len(builds) > 1:
    raise SystemExit(f"two TensorFlow builds are installed ({', '.join(builds)}): keep one")
import keras_hub  # noqa: E402

print(f"keras-hub {keras_hub.__version__} beside {builds[0] if builds else 'no TensorFlow'}")
PY
