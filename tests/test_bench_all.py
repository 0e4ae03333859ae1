"""scripts/bench_all.py without running a benchmark: its help, the dry-run plan, the time box and
the report read from hand-written results (nothing here is timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import scripts.bench_all as ba

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_all.py"


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=60
    )


def test_help_lists_the_options():
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--quick", "--jit", "--dry-run", "--only", "--max-minutes", "--device"):
        assert flag in proc.stdout


def test_dry_run_writes_the_plan_with_jit_where_supported(tmp_path):
    stem = tmp_path / "plan"
    proc = _run("--dry-run", "--device", "cpu", "--quick", "--jit", "--out", str(stem))
    assert proc.returncode == 0, proc.stderr
    run = json.loads((tmp_path / "plan.json").read_text())
    assert run["mode"] == "quick" and run["jit"] and run["device"]["kind"] == "cpu"
    benches = run["benchmarks"]
    assert set(benches) == {b.key for b in ba.plan("cpu", True, False)}
    assert all(e["status"] == "planned (dry run)" for e in benches.values())
    assert "--jit" in benches["explain_gradcam"]["command"]
    assert "--jit" in benches["sag"]["command"]
    assert "--jit" not in benches["callback"]["command"]
    text = (tmp_path / "plan.md").read_text()
    assert "## Headline ratios" in text and "builds no tf.function of its own" in text


def test_gpu_plan_has_bigger_batches_than_cpu():
    def batch(device: str) -> int:
        bench = next(b for b in ba.plan(device, False, False) if b.key == "explain_gradcam")
        return int(bench.args[bench.args.index("--batch") + 1])

    assert batch("gpu") > batch("cpu")


def test_only_and_skip_select_and_unknown_names_fail():
    benches = ba.plan("cpu", True, False)
    assert [b.key for b in ba.select(benches, "sag,memory", "memory")] == ["sag"]
    try:
        ba.select(benches, "nope", "")
    except SystemExit as err:
        assert "nope" in str(err) and "explain_gradcam" in str(err)
    else:
        raise AssertionError("an unknown benchmark name was accepted")


def test_a_benchmark_past_its_budget_is_cut_and_its_lines_kept(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text("import time\nprint('first table row', flush=True)\ntime.sleep(60)\n")
    bench = ba.Bench("slow", str(slow), "Slow", "nothing", [], 1.0, ba._render_callback)
    entry = ba.run_one(bench, tmp_path, budget_s=1.0)
    assert entry["status"] == "cut at its 1 s budget"
    assert entry["result"] is None
    assert "first table row" in Path(entry["log"]).read_text()


def test_report_states_ratios_targets_and_cuts(tmp_path):
    benches = [b for b in ba.plan("cpu", True, False) if b.key in ("multi_method", "callback")]
    run = {
        "device": {"kind": "cpu", "name": "Test CPU", "cpus": 2},
        "mode": "quick",
        "jit": False,
        "started": "2026-01-01 00:00",
        "max_s": 270.0,
        "wall_s": 100.0,
        "versions": {},
        "benchmarks": {
            "multi_method": {
                "status": "ok",
                "seconds": 10.0,
                "budget_s": 20.0,
                "command": "python bench_multi_method.py",
                "result": {"rows": [{"model": "cnn", "separate_s": 3.0, "one_call_s": 1.5}]},
            },
            "callback": {
                "status": "cut at its 30 s budget",
                "seconds": 30.0,
                "budget_s": 30.0,
                "command": "python bench_callback.py",
                "log": str(tmp_path / "missing.log"),
                "result": None,
            },
        },
    }
    text = ba.write_report(run, benches, tmp_path / "r.md")
    assert "| multi_method | 4 separate CAM calls / one call (cnn) | 2.00x | > 1x | pass |" in text
    assert "| callback | - | - |  | cut at its 30 s budget |" in text
    assert "What it measures:" in text


def test_a_benchmark_that_hangs_after_writing_its_json_counts_as_done(tmp_path, monkeypatch):
    monkeypatch.setattr(ba, "EXIT_GRACE_S", 0.5)
    hang = tmp_path / "hang.py"
    hang.write_text(
        "import json, sys, time\n"
        "json.dump({'rows': []}, open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n"
        "time.sleep(60)\n"
    )
    bench = ba.Bench("hang", str(hang), "Hang", "nothing", [], 30.0, ba._render_multi_method)
    entry = ba.run_one(bench, tmp_path, budget_s=30.0)
    assert entry["status"] == "ok (stopped while exiting, after writing its results)"
    assert entry["result"] == {"rows": []}
