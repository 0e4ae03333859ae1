"""Execute the walkthrough notebooks end to end, as a reader would run them.

Each notebook trains its own small model, so they are independent; their last cell asserts the
claim the notebook demonstrates. They run in a temporary working directory and write only under
`$XAI_KERAS_NOTEBOOK_OUT` (a temporary folder here), never into the repository. The executed
copy is saved there too, for inspecting a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

# Several minutes on 2 CPU cores: left out of a plain `pytest` / `scripts/test.sh` run (see
# pyproject.toml), run by CI (.ci/run) and by `scripts/test.sh -m slow`.
pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "xai-keras-test"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec that starts this interpreter, first on JUPYTER_PATH.

    The `python3` spec a user installed with `ipykernel install --user` may point at another
    environment's Python; this one always runs the environment running pytest.
    """
    jupyter = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(jupyter / "kernels" / KERNEL)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(jupyter))
        yield KERNEL


@pytest.mark.parametrize(
    "name",
    [
        "01_train_and_tensorboard.ipynb",
        "02_explain_every_method.ipynb",
        "03_sag_and_benchmark.ipynb",
    ],
)
def test_notebook_runs(name, kernel_name, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("XAI_KERAS_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in nb.cells
        if c.cell_type == "code"
    ), f"{name} is committed with outputs; clear them before committing"
    # The kernel must be the interpreter (and so the environment) that runs the tests.
    nb.cells.insert(
        0,
        nbformat.v4.new_code_cell(f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.prefix"),
    )
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute()
    finally:
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / name)
    assert not any(p.name != "out" for p in tmp_path.iterdir()), "wrote outside the out dir"
