"""Files are written to a temporary name beside the target and renamed, so a crash never
leaves a half-written model, report or picture behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "write_text",
    "write_json",
    "save_figure",
    "write_bytes",
    "figure_to_png",
    "ensure_writable_dir",
    "stale_temporaries",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success.

    The temporary name keeps the target's suffix, so writers that infer the format from the
    suffix (Keras `.keras`, matplotlib `.png`) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique hidden name beside the target; created with 0666 so the umask applies.
    # `stale_temporaries` recognises exactly this name; keep the two in step.
    tmp_path = path.parent / f".{path.stem}.{uuid.uuid4().hex}{path.suffix}"
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` atomically, e.g. a PNG from `figure_to_png` that also goes to TensorBoard."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def figure_to_png(fig: Any, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically and close it.

    Raises:
        InputError: the folder cannot be written (read-only, no permission, a file in the
            way), in one line naming `path`, not the hidden temporary file.
    """
    import matplotlib.pyplot as plt

    from xai_keras.errors import InputError

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    except OSError as err:  # read-only, no permission, no space, a file where a folder is
        reason = (err.strerror or type(err).__name__).lower()
        raise InputError(
            f"Cannot save {path}: {reason} in {Path(path).parent}. Save it in a folder you "
            "can write to."
        ) from None
    finally:
        plt.close(fig)
    return Path(path)


def ensure_writable_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create `path` if needed and check we can write there; raise a clear error if not."""
    from xai_keras.errors import InputError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise InputError(
            f"The {what} {path} is not writable ({err.strerror}). "
            "Pass a directory you can write to (e.g. --out runs/myrun)."
        ) from None
    return path


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """The temporaries `atomic_path(path)` leaves behind when its process is killed mid-write.

    Only names `atomic_path` itself makes for this target (`.<stem>.<32 hex digits><suffix>`,
    plain files, not links) are returned, so a caller can delete them without touching a
    user's files.
    """
    path = Path(path)
    name = re.compile(rf"\.{re.escape(path.stem)}\.[0-9a-f]{{32}}{re.escape(path.suffix)}")
    if not path.parent.is_dir():
        return []
    return sorted(
        p
        for p in path.parent.iterdir()
        if name.fullmatch(p.name) and p.is_file() and not p.is_symlink()
    )
