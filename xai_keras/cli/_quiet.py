"""Import TensorFlow without its start-up log lines (shown again with `--debug`).

`TF_CPP_MIN_LOG_LEVEL=2` hides TensorFlow's C++ INFO and WARNING lines, but not those written
before absl's logging starts (TensorFlow 2.17+: "All log messages before absl::InitializeLog()
is called are written to STDERR", "oneDNN custom operations are on", "This TensorFlow binary is
optimized to use available CPU instructions"). So the import runs with file descriptor 2 read
into a temporary file, and every line but those INFO/WARNING log lines is written back: an
error, or anything else, is still shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# absl ("I0000 00:00:17.. 123 port.cc:153] ...") and TensorFlow's own ("2025-01-01 12:00:00.1: I
# tensorflow/...") INFO and WARNING lines, absl's notice, and the CPU-instructions continuation.
_LOG_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    r"|\d{4}-\d\d-\d\d [\d:.]+: [IW] "
    r"|To enable the following instructions:"
    r"|oneDNN custom operations are on)"
)


def is_log_line(line: str) -> bool:
    """Whether `line` is one of TensorFlow's INFO/WARNING start-up log lines."""
    return bool(_LOG_LINE.match(line))


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest's capsys): no fd
        fd = 2
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not is_log_line(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and Keras) now, without its start-up log lines; a no-op when it is
    already imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules:
        return
    with _filtered_stderr():
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            return  # the command that needs it says so
