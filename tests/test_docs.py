"""The documentation: the README's and the site's code blocks run, the site builds strictly,
and every public name has a reference entry.

Every ```python block of README.md and docs/**/*.md runs here, page by page in one namespace,
against a tiny model built in the test (`model`: a 32x32 RGB CNN with 4 classes, GAP + dense +
softmax; `image`, `batch`, `labels`, `masks`), in a temporary folder. A block that cannot run
here starts with `# not run: <reason>`.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted([README, *(ROOT / "docs").rglob("*.md")])
NOT_RUN = re.compile(r"# not run: (\S.*)")
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def test_readme_python_blocks_import_the_modules_they_use():
    blocks = _blocks(README)
    assert blocks
    imports = {"keras": "import keras", "tf": "import tensorflow as tf", "np": "import numpy as np"}
    for block in blocks:
        code = re.sub(r"#.*", "", block)
        for module, line in imports.items():
            if re.search(rf"(?<![\w.]){module}\.", code):
                assert line in block, f"a README block uses {module}. without `{line}`:\n{block}"


def test_every_block_that_is_not_run_says_why():
    for page in PAGES:
        for block in _blocks(page):
            first = block.splitlines()[0] if block.strip() else ""
            if first.startswith("# not run"):
                assert NOT_RUN.match(first), f"{page.name}: give the reason: {first!r}"


@pytest.fixture(scope="module")
def namespace_seed():
    import keras

    from xai_keras.config import ModelConfig
    from xai_keras.models import build_cnn

    keras.utils.set_random_seed(1)
    model = build_cnn(ModelConfig(filters=[8, 16, 16], dropout=0.1), (32, 32, 3), 4)
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 1, (5, 32, 32, 3)).astype(np.float32)
    masks = np.zeros((5, 32, 32), bool)
    masks[:, 8:24, 8:24] = True
    return {
        "model": model,
        "batch": batch,
        "image": batch[0],
        "labels": np.arange(5) % 4,
        "masks": masks,
    }


RUNNABLE = [p for p in PAGES if any(not NOT_RUN.match(b) for b in _blocks(p))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_page_python_blocks_run(page, namespace_seed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = dict(namespace_seed)
    for block in _blocks(page):
        if NOT_RUN.match(block):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the docs show calls, not our warnings
            try:
                exec(compile(block, f"{page.name}", "exec"), namespace)
            except Exception as err:  # name the block that failed
                raise AssertionError(f"{page.relative_to(ROOT)} block failed:\n{block}") from err


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None,
    reason="MkDocs is not installed (pip install -e '.[docs]')",
)
def test_the_site_builds_strictly_with_every_public_name(tmp_path):
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING" not in out.stderr, out.stderr[-3000:]
    from scripts.docs_hooks import API_MODULES, anchors, public_names
    where = anchors()
    for module in [*API_MODULES, "xai_keras"]:
        for name in public_names(module):
            page, anchor = where[name]
            html = (site / "api" / page / "index.html").read_text()
            assert f'id="{anchor}"' in html, f"{module}.{name} has no reference entry"
    for command in ("train", "explain", "sag", "benchmark", "explain-dataset", "methods"):
        assert f'id="{command}"' in (site / "cli" / "index.html").read_text()
    assert (site / "notebooks" / "02_explain_every_method" / "index.html").exists()
    shutil.rmtree(site)
