# Sourced by demo.sh and test.sh: create .venv (once) and install the package with the extras
# given in $EXTRAS. TensorFlow comes from the "cpu" extra (tensorflow-cpu), never both builds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
# Editable, so the checkout's code is what runs; setuptools' "Editable installation" notice box
# (a warning about same-named folders in the working directory) is silenced.
PYTHONWARNINGS="ignore:Editable installation" \
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${EXTRAS}]"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
