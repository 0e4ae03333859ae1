"""The README's code blocks import the modules they use."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_import_the_modules_they_use():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    imports = {"keras": "import keras", "tf": "import tensorflow as tf", "np": "import numpy as np"}
    for block in blocks:
        code = re.sub(r"#.*", "", block)
        for module, line in imports.items():
            if re.search(rf"(?<![\w.]){module}\.", code):
                assert line in block, f"a README block uses {module}. without `{line}`:\n{block}"
