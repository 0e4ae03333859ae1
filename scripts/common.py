"""Helpers shared by the benchmarks and the reference comparisons (`python -m scripts.<name>`).

Timing (`measure`, `paired_ratio`, `median`, `spread`, `cpu_snapshot`, `others_share`), plain-text
tables (`format_table`), map agreement (`corr`), the small trained shapes CNN the tests also
use (`train_small_shapes`), and where the PyTorch reference environment lives
(`torch_python`, built by `bash scripts/torch_env.sh`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ROOT",
    "Timings",
    "corr",
    "cpu_snapshot",
    "format_table",
    "log",
    "measure",
    "median",
    "oracle_arguments",
    "oracle_missing",
    "others_share",
    "paired_ratio",
    "spread",
    "to_host",
    "torch_python",
    "train_small_shapes",
    "verdict",
]

ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def to_host(value: Any) -> Any:
    """Pull a result back to host memory so the timed call includes all the work."""
    if isinstance(value, (tuple, list)):
        return [to_host(v) for v in value]
    return value.numpy() if hasattr(value, "numpy") else value


@dataclass
class Timings:
    """Seconds of each timed call, per function: wall clock and this process's CPU time (CPU
    time counts only this process's work, so it moves less under load from others)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def measure(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, label: str = ""
) -> Timings:
    """Time each function `repeats` times in interleaved rounds whose starting function
    rotates, after `warmup` untimed calls each."""
    names = list(fns)
    tag = f"[{label}] " if label else ""
    for name in names:
        for i in range(warmup):
            start = time.perf_counter()
            to_host(fns[name]())
            log(f"  {tag}warm-up {i + 1}/{warmup} {name}: {time.perf_counter() - start:.2f}s")
    timings = Timings({n: [] for n in names}, {n: [] for n in names})
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            wall, cpu = time.perf_counter(), time.process_time()
            to_host(fns[name]())
            timings.wall[name].append(time.perf_counter() - wall)
            timings.cpu[name].append(time.process_time() - cpu)
        log(f"  {tag}round {r + 1}/{repeats} done")
    return timings


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of the per-round time ratio: robust to load that changes between
    rounds, since both calls of a round saw the same machine."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def spread(samples: Sequence[float]) -> str:
    """Range of the samples around the median, in percent."""
    mid = median(samples)
    return f"{100 * (min(samples) / mid - 1):+.0f}/{100 * (max(samples) / mid - 1):+.0f}%"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall s, busy CPU s of the whole machine, CPU s of this process); None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
    except (OSError, ValueError):
        return None
    user, nice, system, _, _, irq, softirq = fields
    busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return time.perf_counter(), busy, time.process_time()


def others_share(start: tuple | None, end: tuple | None) -> float | None:
    """Share of all CPUs that other processes used between two snapshots."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    others = (end[1] - start[1]) - (end[2] - start[2])
    return max(0.0, others / ((end[0] - start[0]) * (os.cpu_count() or 1)))


def verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "SKIP"}[ok]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps (flattened, float64). Where either is constant it is
    undefined: 1.0 if the two are equal (e.g. both all zero), else nan."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        scale = max(1e-12, float(np.abs(b).max(initial=0.0)))
        return 1.0 if np.allclose(a, b, atol=1e-6 * scale) else float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def train_small_shapes(out: str | os.PathLike, *overrides: str):
    """The small CNN the tests' `trained_shapes` fixture trains: the built-in "shapes_small"
    config (2,400 training images, 8 epochs; about a minute on 2 CPU cores) into `out`."""
    from xai_keras.config import load_config
    from xai_keras.training import train

    return train(load_config("shapes_small", [f"out_dir={out}", *overrides]), verbose=0)


def oracle_missing(python: str) -> bool:
    """Whether the PyTorch reference interpreter is missing (then say how to build it)."""
    if Path(python).exists():
        return False
    print(f"no oracle interpreter at {python}: run bash scripts/torch_env.sh", file=sys.stderr)
    return True


def oracle_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every PyTorch comparison takes: its interpreter and a folder to keep the
    exchanged files in."""
    parser.add_argument("--torch-python", default=torch_python())
    parser.add_argument("--keep", help="folder to keep the exchanged .npz files in")


def parse_oracle_args(doc: str, images: int = 8) -> argparse.Namespace | None:
    """`--torch-python` and `--images` of a comparison; None (said on stderr) where the
    PyTorch reference interpreter is missing."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--torch-python", default=torch_python())
    parser.add_argument("--images", type=int, default=images)
    args = parser.parse_args()
    return None if oracle_missing(args.torch_python) else args


def torch_python() -> str:
    """The Python of the PyTorch reference environment: $XAI_KERAS_TORCH_PYTHON, else
    `.torchvenv/` in the repository (made by `bash scripts/torch_env.sh`)."""
    return os.environ.get("XAI_KERAS_TORCH_PYTHON") or str(ROOT / ".torchvenv" / "bin" / "python")
