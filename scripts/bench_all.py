"""Every speed benchmark in one go: one Markdown table file and one JSON per run.

Run (from the repository root; `bash scripts/bench.sh` is the same with the venv's Python):

    python -m scripts.bench_all --quick          # under 5 minutes on 2 CPU cores
    python -m scripts.bench_all                  # full: for a GPU, about 8 minutes there
    python -m scripts.bench_all --jit            # also XLA rows (jit_compile=True)
    python -m scripts.bench_all --only explain,sag --dry-run   # print the plan, run nothing

Each benchmark is one of the existing scripts (bench_explain.py, bench_perturbation.py,
bench_sag.py, bench_relevance.py, bench_multi_method.py, bench_callback.py, check_memory.py,
bench_scale.py, bench_auto_layer.py) run in its own process with `--json`, so a crash or a
runaway one cannot take the others down and each gets the whole machine. The device is
detected first (`tf.config.list_physical_devices`; its name from
`tf.config.experimental.get_device_details`, `nvidia-smi` or `/proc/cpuinfo`), and the model
sizes and batch sizes follow from it and from `--quick` (bigger batches on a GPU).

Time boxes: each benchmark has a budget of seconds, and the whole run a total
(`--max-minutes`); a benchmark still running at the end of its budget (or of what is left of
the total) is stopped, and the table says so, with the lines it printed before. A benchmark
that would start with less than `MIN_START_S` seconds left is skipped, and the table says that
too. `--budget-scale` stretches every budget (and the total) on a slow or busy machine.

Output: `reports/bench/<device>-<date>[-quick].md` and `.json` (`--out` changes the stem), and
beside them a folder with each benchmark's own JSON and log. Every section states what it
measures as ratios, side by side in one process, never seconds across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIN_START_S = 20  # a benchmark is not started with less time than this left
EXIT_GRACE_S = 5  # seconds a benchmark gets to exit after writing its JSON
SAG_SEARCH_BOUND = 15 * 5 * 49  # max_size x beam_width x patches (bench_sag.py)
# Row names in bench_explain.py's JSON (not imported: that would load TensorFlow here)
EXPLAIN_SCORECAM = "xai_keras explain(scorecam)"
EXPLAIN_XLA = "forward: tf.function(jit_compile=True)"


# -- the device --------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _nvidia_smi_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return names[0] if out.returncode == 0 and names else None


def detect_device(kind: str = "auto") -> dict[str, Any]:
    """{"kind": "gpu" or "cpu", "name", "count", "cpus", "slug"}.

    Args:
        kind: "auto" asks TensorFlow for its GPUs (importing it, a few seconds); "cpu" or "gpu"
            take the caller's word and only look the name up.
    """
    gpus: list[Any] = []
    name = None
    if kind == "auto":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        kind = "gpu" if gpus else "cpu"
        if gpus:
            try:
                name = tf.config.experimental.get_device_details(gpus[0]).get("device_name")
            except (ValueError, RuntimeError):
                name = None
    if kind == "gpu":
        name = name or _nvidia_smi_name() or "gpu"
    else:
        name = _cpu_name()
    short = re.sub(
        r"\((r|tm|c)\)|\bcpu\b|@.*$|\bnvidia\b|\bcore\b|\bprocessor\b", "", name, flags=re.I
    )
    short = re.sub(r"[^a-z0-9]+", "-", short.lower()).strip("-")[:40].strip("-")
    return {
        "kind": kind,
        "name": name,
        "count": max(1, len(gpus)) if kind == "gpu" else 1,
        "cpus": os.cpu_count(),
        "slug": f"{kind}-{short}" if short else kind,
    }


# -- the plan ----------------------------------------------------------------------------------
@dataclass
class Bench:
    """One benchmark: a script run with arguments, a time budget, and how to read its JSON."""

    key: str
    script: str
    title: str
    measures: str
    args: list[str]
    budget_s: float
    render: Callable[[dict], tuple[list[list[str]], str]]
    jit: bool = False  # whether the script takes --jit
    notes: list[str] = field(default_factory=list)


def plan(device: str, quick: bool, jit: bool) -> list[Bench]:
    """The benchmarks with the sizes, batches and budgets fit for `device` and the mode."""
    gpu = device == "gpu"
    if quick:
        b = 4 if gpu else 1  # batch multiplier
        sizes = {
            "explain": [  # what bench_explain's --quick does, with the sizes given here
                "--repeats", "3", "--warmup", "1", "--size", "96", "--batch", str(4 * b),
                "--scorecam-model", "small", "--small-batch", str(4 * b), "--light-methods",
            ],
            # later flags win: 4 images x 32 channels in chunks of 32, not 1 x 32 in chunks of 4
            "scorecam": [
                "--batch", str(32 * b), "--scorecam-images", "4", "--max-channels", "32",
            ],
            "perturbation": [
                "--repeats", "2", "--warmup", "1", "--samples", str(256 * b),
                "--batch-size", str(64 * b),
            ],
            "sag": [
                "--quick", "--images", "1", "--repeats", "3", "--cnn-batch", str(64 * b),
            ],
            "relevance": [
                "--model", "mobilenetv2", "--size", "64", "--batch", str(4 * b),
                "--repeats", "2",
            ],
            "multi_method": ["--models", "cnn", "--repeats", "2"],
            "callback": [
                "--epochs", "2", "--rounds", "1", "--images", "4", "--set", "data.n_train=256",
                "--set", "data.n_val=64", "--set", "data.n_test=64",
            ],
            "memory": ["--calls", "40", "--n", "4", "--methods", "gradcam,saliency"],
            "scale": ["--sizes", "200", "800", "--batch-size", str(64 * b)],
            "auto_layer": ["--models", "cnn,wheels", "--repeats", "1", "--n", "8"],
        }  # fmt: skip
        budgets = {
            "explain_gradcam": 40, "explain_scorecam": 20, "explain_methods": 35,
            "perturbation": 25, "sag": 25, "relevance": 40, "multi_method": 20,
            "callback": 40, "memory": 25, "scale": 40, "auto_layer": 35,
        }  # fmt: skip
    else:
        b = 4 if gpu else 1
        sizes = {
            "explain": [
                "--batch", str(16 * b), "--small-batch", str(16 * b),
                "--max-channels", "256" if gpu else "64",
            ],
            "perturbation": ["--samples", str(1024 * b), "--batch-size", str(64 * b)],
            "sag": ["--cnn-batch", str(64 * b), "--resnet-batch", str(16 * b)],
            "relevance": ["--batch", str(4 * b)],
            "multi_method": ["--resnet-images", str(8 * b)],
            "callback": ["--rounds", "1"],
            "memory": ["--calls", "300" if gpu else "100"],
            "scale": ["--sizes", "2000", "20000" if gpu else "5000", "--batch-size",
                      str(64 * b)],
            "auto_layer": [],
        }  # fmt: skip
        budgets = {
            "explain_gradcam": 60, "explain_scorecam": 40, "explain_methods": 50,
            "perturbation": 40, "sag": 70, "relevance": 40, "multi_method": 35,
            "callback": 50, "memory": 35, "scale": 55, "auto_layer": 35,
        }  # fmt: skip
    explain = sizes["explain"]
    benches = [
        Bench(
            "explain_gradcam",
            "bench_explain.py",
            "Grad-CAM against a forward pass, tf-keras-vis and xplique",
            "Grad-CAM's full `explain()` call on ResNet50 (weights=None) against one plain "
            "compiled forward pass of the same batch (time ratio), and tf-keras-vis' and "
            "xplique's Grad-CAM at the same layer against ours (their time / ours: above 1 "
            "means we are faster).",
            [*explain, "--sections", "gradcam"],
            budgets["explain_gradcam"],
            _render_explain,
            jit=True,
        ),
        Bench(
            "explain_scorecam",
            "bench_explain.py",
            "Score-CAM masked-pass throughput",
            "Masked images per second of Score-CAM's full `explain()` call (its one gradient "
            "pass counted against it) against plain inference over as many images in chunks "
            "of the same size (throughput ratio).",
            [*explain, "--sections", "scorecam", *sizes.get("scorecam", [])],
            budgets["explain_scorecam"],
            _render_explain,
            jit=True,
        ),
        Bench(
            "explain_methods",
            "bench_explain.py",
            "Every registered method against a forward pass",
            "Each method's full `explain()` call on the project CNN against one plain compiled "
            "forward pass of the same batch (time ratio).",
            [*explain, "--sections", "methods"],
            budgets["explain_methods"],
            _render_explain,
            jit=True,
        ),
        Bench(
            "perturbation",
            "bench_perturbation.py",
            "RISE, LIME and KernelSHAP masked-pass throughput",
            "Masked images per second of each method's full `explain()` call on one image, "
            "against a plain compiled forward pass over as many images in the same chunks "
            "(throughput ratio: 1 means masking, scoring and the fit cost nothing extra).",
            sizes["perturbation"],
            budgets["perturbation"],
            _render_perturbation,
            jit=True,
        ),
        Bench(
            "sag",
            "bench_sag.py",
            "Structured attention graphs: passes and seconds",
            "Masked images per second of the SAG patch scorer against plain inference at the "
            "same batch size (throughput ratio), and the forward passes a whole SAG costs, "
            f"against the search bound {SAG_SEARCH_BOUND}.",
            sizes["sag"],
            budgets["sag"],
            _render_sag,
            jit=True,
        ),
        Bench(
            "relevance",
            "bench_relevance.py",
            "LRP and DeepLIFT against one gradient pass",
            "Each rule's full `explain()` call against `saliency` (one gradient pass) on the "
            "same batch (time ratio).",
            sizes["relevance"],
            budgets["relevance"],
            _render_relevance,
        ),
        Bench(
            "multi_method",
            "bench_multi_method.py",
            "Several CAMs in one call",
            "Four CAMs (gradcam, gradcam++, layercam, xgradcam) as four `explain()` calls "
            "against one call with the list, which shares the forward and backward pass "
            "(time ratio: above 1 means sharing pays); best of the rounds.",
            sizes["multi_method"],
            budgets["multi_method"],
            _render_multi_method,
        ),
        Bench(
            "callback",
            "bench_callback.py",
            "ExplainCallback overhead",
            "The callback's own time per logged epoch against the median epoch time of the "
            "default shapes training (share of an epoch).",
            sizes["callback"],
            budgets["callback"],
            _render_callback,
        ),
        Bench(
            "memory",
            "check_memory.py",
            "Repeated explain() calls: retraces and memory",
            "Many `explain()` calls on one model and shape: traces of the compiled kernels "
            "after the last call against after the first (1 = no retrace), and RSS growth.",
            sizes["memory"],
            budgets["memory"],
            _render_memory,
        ),
        Bench(
            "scale",
            "bench_scale.py",
            "explain_dataset throughput and memory as the dataset grows",
            "Grad-CAM over a generated dataset with `explain_dataset`, each size in a fresh "
            "process: peak RSS and throughput of the largest size against the smallest "
            "(flat memory: a peak ratio near 1).",
            sizes["scale"],
            budgets["scale"],
            _render_scale,
        ),
        Bench(
            "auto_layer",
            "bench_auto_layer.py",
            "The cost of layer='auto'",
            "`explain(model, x, layer='auto')` against one default Grad-CAM call (time "
            "ratio), warm.",
            sizes["auto_layer"],
            budgets["auto_layer"],
            _render_auto_layer,
        ),
    ]
    for bench in benches:
        if jit and bench.jit:
            bench.args.append("--jit")
        elif jit:
            bench.notes.append("--jit: this benchmark builds no tf.function of its own")
    return benches


# -- running -----------------------------------------------------------------------------------
def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    env["PYTHONUNBUFFERED"] = "1"  # a benchmark stopped at its budget still leaves its lines
    return env


def command(bench: Bench, json_path: Path) -> list[str]:
    return [sys.executable, str(HERE / bench.script), *bench.args, "--json", str(json_path)]


def _wait(proc: subprocess.Popen, json_path: Path, deadline: float) -> int | None:
    """The exit code, or None at the deadline, or EXIT_GRACE_S after the JSON (written last)
    parses: TensorFlow processes sometimes take long to exit once their work is done."""
    written = None
    while True:
        code = proc.poll()
        if code is not None:
            return code
        now = time.perf_counter()
        if now >= deadline or (written is not None and now >= written + EXIT_GRACE_S):
            return None
        if written is None and json_path.exists():
            try:
                json.loads(json_path.read_text())
                written = now
            except (OSError, json.JSONDecodeError):
                pass  # still being written
        time.sleep(0.2)


def run_one(bench: Bench, folder: Path, budget_s: float) -> dict[str, Any]:
    """Run one benchmark in its own process group, stopped after `budget_s` seconds."""
    json_path, log_path = folder / f"{bench.key}.json", folder / f"{bench.key}.log"
    cmd = command(bench, json_path)
    json_path.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopping it stops its children too
        )
        code = _wait(proc, json_path, start + budget_s)
        if code is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            status = f"cut at its {budget_s:.0f} s budget"
        else:
            status = "ok" if code == 0 else f"failed (exit {code})"
    seconds = time.perf_counter() - start
    result = None
    if json_path.exists():  # written last: a benchmark stopped after it had finished
        try:
            result = json.loads(json_path.read_text())
        except json.JSONDecodeError:
            status += "; its JSON did not parse"
        else:
            if status.startswith("cut"):
                status = "ok (stopped while exiting, after writing its results)"
    return {
        "status": status,
        "seconds": seconds,
        "budget_s": budget_s,
        "command": shlex.join(cmd),
        "log": str(log_path),
        "result": result,
    }


# -- reading each benchmark's JSON -------------------------------------------------------------
def _x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A Markdown table; the first `left` columns left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(map(str, headers)) + " |"]
    lines.append("|" + "---|" * left + "---:|" * (len(headers) - left))
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: ""}[ok]


def _render_explain(r: dict) -> tuple[list[list[str]], str]:
    head, parts = [], []
    if "gradcam" in r:
        g = r["gradcam"]
        where = f"ResNet50 {g['size']}px, batch {g['batch']}"
        ratio = g["explain_vs_forward"]
        head.append(
            [f"Grad-CAM explain() / plain forward ({where})", _x(ratio), "<= 1.3x",
             _verdict(ratio <= 1.3)]
        )  # fmt: skip
        tkv = g.get("speedup_vs_tkv")
        ok = None if tkv is None else tkv >= 3.0
        head.append(["tf-keras-vis Gradcam / Grad-CAM explain() (speedup)", _x(tkv), ">= 3x",
                     _verdict(ok)])  # fmt: skip
        head.append(["xplique GradCAM / Grad-CAM explain() (speedup)",
                     _x(g.get("speedup_vs_xplique")), "", ""])  # fmt: skip
        if g.get("xla_vs_forward") is not None:
            head.append(["XLA forward / plain forward, ResNet50 (time)",
                         _x(g["xla_vs_forward"]), "", ""])  # fmt: skip
        rows = [
            [name, f"{1e3 * g['median_s'][name] / g['batch']:.2f}",
             _x(g["ratio_vs_forward"][name])]
            for name in g["median_s"]
        ]  # fmt: skip
        parts.append(
            f"Grad-CAM, {where}, layer `{g['layer']}` (time / plain forward of the batch):\n\n"
            + md_table(["function", "ms / image", "x plain forward"], rows)
        )
    if "scorecam" in r:
        s = r["scorecam"]
        ratio = s["throughput_vs_forward"][EXPLAIN_SCORECAM]
        head.append(
            [f"Score-CAM masked-pass throughput / plain inference ({s['model']} {s['size']}px)",
             _x(ratio), ">= 0.8x", _verdict(ratio >= 0.8)]
        )  # fmt: skip
        rows = [[k, _x(v)] for k, v in s["throughput_vs_forward"].items()]
        parts.append(
            f"Score-CAM on {s['model']} {s['size']}px: {s['masked_passes']} masked passes in "
            f"chunks of {s['chunk']} (throughput / plain inference):\n\n"
            + md_table(["function", "throughput ratio"], rows)
        )
    if "methods" in r:
        m = r["methods"]
        options = m.get("options", {})
        rows = []
        for name, ratio in m["ratio_vs_forward"].items():
            opts = ", ".join(f"{k}={v}" for k, v in options.get(name, {}).items())
            ms = 1e3 * m["median_s"][name] / m["batch"]
            rows.append([name, f"{ms:.2f}", _x(ratio, 1), opts])
        rows += [[name, "-", "-", err[:70]] for name, err in m.get("errors", {}).items()]
        methods = {k: v for k, v in m["ratio_vs_forward"].items() if not k.startswith("forward")}
        if methods:
            where = f"{m['model']} {m['size']}px, batch {m['batch']}"
            slowest = max(methods, key=methods.get)
            head.append([f"gradcam explain() / plain forward ({where})",
                         _x(methods.get("gradcam"), 1), "", ""])  # fmt: skip
            head.append([f"slowest of {len(methods)} methods / plain forward: {slowest}",
                         _x(methods[slowest], 1), "", ""])  # fmt: skip
        parts.append(
            f"Every registered method, `explain()` on {m['model']} {m['size']}px, batch "
            f"{m['batch']} (time / one plain forward pass of the batch):\n\n"
            + md_table(["method", "ms / image", "x plain forward", "options"], rows)
        )
        if EXPLAIN_XLA in m["ratio_vs_forward"]:
            head.append(["XLA forward / plain forward, small model (time)",
                         _x(m["ratio_vs_forward"][EXPLAIN_XLA]), "", ""])  # fmt: skip
    return head, "\n\n".join(parts)


def _render_perturbation(r: dict) -> tuple[list[list[str]], str]:
    a, figures = r["args"], r["figures"]
    where = f"{a['model']} {a['size']}px, K={a['samples']}, B={a['batch_size']}"
    head, rows = [], []
    for name, f in figures.items():
        if name == "plain":
            continue
        ratio = f["ratio_to_plain"]
        target = ">= 0.9x" if name in ("rise", "lime", "kernelshap") else ""
        verdict = _verdict(ratio >= 0.9) if target else ""
        if name == "xla":
            head.append([f"XLA forward / plain forward throughput ({where})", _x(ratio), "", ""])
        elif target:
            head.append([f"{name} masked throughput / plain inference ({where})", _x(ratio),
                         target, verdict])  # fmt: skip
        rows.append([name, f"{f['images_per_s']:.0f}", _x(ratio), _x(f["cpu_ratio_to_plain"])])
    rows.insert(0, ["plain tf.function(model)", f"{figures['plain']['images_per_s']:.0f}",
                    "1.00x", "1.00x"])  # fmt: skip
    table = md_table(["call", "images/s", "throughput / plain (wall)", "(CPU time)"], rows)
    return head, f"{where}:\n\n{table}"


def _render_sag(r: dict) -> tuple[list[list[str]], str]:
    head = []
    for row in r["throughput"]:
        head.append([f"SAG masked throughput / plain inference ({row['model']}, batch "
                     f"{row['batch']})", row["ratio"], ">= 0.8x",
                     _verdict(row[">= 0.8x"] == "PASS")])  # fmt: skip
        if "XLA / plain" in row:
            head.append([f"XLA plain / plain throughput ({row['model']})", row["XLA / plain"],
                         "", ""])  # fmt: skip
    for row in r["whole_sag"]:
        share = float(row["forward passes"]) / SAG_SEARCH_BOUND
        what = f"whole SAG forward passes / search bound ({row['model']}, {row['settings']})"
        head.append([what, f"{share:.3f}", "<= 1", _verdict(share <= 1)])
    t, w = r["throughput"], r["whole_sag"]
    tables = md_table(list(t[0]), [list(row.values()) for row in t]) if t else ""
    tables += "\n\n" + md_table(list(w[0]), [list(row.values()) for row in w]) if w else ""
    return head, tables


def _render_relevance(r: dict) -> tuple[list[list[str]], str]:
    a, figures = r["args"], r["figures"]
    where = f"{a['model']} {a['size']}px, batch {a['batch']}"
    head = []
    for name, f in figures.items():
        if name in ("lrp (composite)", "deeplift"):
            target = "<= 2x" if name.startswith("lrp") else ""
            ok = f["vs_saliency"] <= 2 if target else None
            head.append([f"{name} / saliency ({where})", _x(f["vs_saliency"]), target,
                         _verdict(ok)])  # fmt: skip
    rows = [[n, f"{f['ms_per_image']:.1f}", _x(f["vs_saliency"])] for n, f in figures.items()]
    return head, f"{where}:\n\n" + md_table(["call", "ms / image", "x saliency"], rows)


def _render_multi_method(r: dict) -> tuple[list[list[str]], str]:
    head, rows = [], []
    for row in r["rows"]:
        ratio = row["separate_s"] / row["one_call_s"]
        head.append([f"4 separate CAM calls / one call ({row['model']})", _x(ratio), "> 1x",
                     _verdict(ratio > 1)])  # fmt: skip
        rows.append([row["model"], f"{row['separate_s']:.2f}", f"{row['one_call_s']:.2f}",
                     _x(ratio)])  # fmt: skip
    return head, md_table(["model", "separate (s)", "one call (s)", "separate / one"], rows)


def _render_callback(r: dict) -> tuple[list[list[str]], str]:
    share = r["callback_share_of_epoch"]
    what = f"ExplainCallback({r['methods']}, {r['images']} images)"
    head = [[f"{what} own time / epoch", f"{100 * share:.2f}%", "<= 10%", _verdict(share <= 0.1)]]
    drift = r["epoch_with_callback_s"] / r["epoch_s"]
    rows = [
        ["epoch without the callback (median)", f"{r['epoch_s']:.2f} s"],
        ["epoch with it (median)", f"{r['epoch_with_callback_s']:.2f} s ({_x(drift)}, noisy)"],
        ["callback's own time per logged epoch", f"{1e3 * r['callback_s_per_epoch']:.1f} ms"],
        ["config overrides", ", ".join(r.get("overrides") or []) or "none"],
    ]
    return head, md_table(["", "value"], rows)


def _render_memory(r: dict) -> tuple[list[list[str]], str]:
    head, rows = [], []
    for row in r["rows"]:
        t1, tn = row["traces"]
        head.append([f"{row['method']}: traces after {r['calls']} calls / after 1",
                     f"{tn / max(1, t1):.2f}x", "1x", _verdict(row["ok"])])  # fmt: skip
        rows.append([row["method"], f"{row['ms_per_call']:.1f}", f"{row['growth_mb']:+.1f}",
                     f"{row['steady_growth_mb']:+.1f}", f"{t1} -> {tn}"])  # fmt: skip
    headers = ["method", "ms / call", "RSS growth 1->N MiB", "growth N/2->N MiB", "traces"]
    where = f"{r['calls']} calls of {r['n']} images {r['size']}px, default CNN"
    return head, f"{where}:\n\n" + md_table(headers, rows)


def _render_scale(rows: list) -> tuple[list[list[str]], str]:
    head = []
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        sizes = f"{last['images']} / {first['images']} images"
        head.append([f"explain_dataset peak RSS, {sizes}",
                     _x(last["peak_rss_mb"] / first["peak_rss_mb"], 3), "~1x", ""])  # fmt: skip
        head.append([f"explain_dataset throughput, {sizes}",
                     _x(last["images_per_s"] / first["images_per_s"]), "", ""])  # fmt: skip
    table = md_table(
        ["images", "s", "images/s", "baseline MiB", "peak RSS MiB", "disk MiB"],
        [[r["images"], f"{r['seconds']:.1f}", f"{r['images_per_s']:.0f}",
          f"{r['baseline_rss_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['disk_mb']:.1f}"]
         for r in rows],
    )  # fmt: skip
    return head, table


def _render_auto_layer(r: dict) -> tuple[list[list[str]], str]:
    head, rows = [], []
    for row in r["rows"]:
        ratio = row["auto_s"] / row["default_s"]
        head.append([f"layer='auto' / default Grad-CAM ({row['model']})", _x(ratio, 1), "", ""])
        rows.append([row["model"], row["images"], f"{1e3 * row['default_s']:.0f}",
                     f"{1e3 * row['auto_s']:.0f}", _x(ratio, 1)])  # fmt: skip
    headers = ["model", "images", "default ms", "auto ms", "auto / default"]
    return head, md_table(headers, rows)


# -- the report --------------------------------------------------------------------------------
def _tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [line for line in text if "oneDNN" not in line and "absl::" not in line]
    return "\n".join(keep[-lines:])


def write_report(run: dict, benches: Sequence[Bench], md_path: Path) -> str:
    """The Markdown file: the headline ratios of every benchmark, then each one's details."""
    dev = run["device"]
    lines = [
        f"# Speed benchmarks: {dev['name']} ({dev['kind'].upper()})",
        "",
        f"{run['started']}, mode {run['mode']}{', --jit' if run['jit'] else ''}; "
        f"{dev['cpus']} CPUs; TensorFlow {run['versions'].get('tensorflow', '?')}, "
        f"Keras {run['versions'].get('keras', '?')}; wall time {run['wall_s']:.0f} s of "
        f"{run['max_s']:.0f} s allowed. Ratios come from calls timed side by side in one "
        "process (each benchmark's own rounds); compare ratios, not seconds.",
        "",
    ]
    headline: list[list[str]] = []
    details: list[str] = []
    for bench in benches:
        entry = run["benchmarks"][bench.key]
        status = entry["status"]
        section = [f"## {bench.title}", "", f"What it measures: {bench.measures}", ""]
        section.append(
            f"`{bench.script}` - {status}, {entry.get('seconds', 0):.0f} s of a "
            f"{entry['budget_s']:.0f} s budget." + "".join(f" {n}." for n in bench.notes)
        )
        section.append("")
        head, body = [], ""
        if entry.get("result") is not None:
            try:
                head, body = bench.render(entry["result"])
            except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as err:
                body = f"(its JSON could not be read: {type(err).__name__}: {err})"
        if head:
            headline += [[bench.key, *row] for row in head]
        else:
            headline.append([bench.key, "-", "-", "", status])
        if body:
            section += [body, ""]
        if status != "ok" and entry.get("log"):
            tail = _tail(entry["log"])
            if tail:
                section += ["Its last lines before it stopped:", "", "```", tail, "```", ""]
        section.append(f"Command: `{entry['command']}`")
        details += section + [""]
    lines += [
        "## Headline ratios",
        "",
        md_table(["benchmark", "what (ratio)", "value", "target", "verdict"], headline, left=2),
        "",
        *details,
    ]
    text = "\n".join(lines).rstrip() + "\n"
    md_path.write_text(text)
    return text


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name, dist in (("tensorflow", "tensorflow"), ("keras", "keras")):
        for candidate in (dist, f"{dist}-cpu", f"{dist}_cpu"):
            try:
                found[name] = version(candidate)
                break
            except PackageNotFoundError:
                continue
    return found


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small models and images, few rounds: < 5 min on 2 cores",
    )
    parser.add_argument(
        "--jit",
        action="store_true",
        help="XLA rows (jit_compile=True) where a benchmark builds its own tf.function; "
        "jit_compile=True to explain() once the engine accepts it",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "gpu"],
        default="auto",
        help="auto: ask TensorFlow; cpu/gpu: take this one (sizes and batches follow)",
    )
    parser.add_argument("--only", help="comma list of benchmarks to run (default: all)")
    parser.add_argument("--skip", default="", help="comma list of benchmarks to leave out")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="time box of the whole run (default: 4.5 with --quick, 8 otherwise)",
    )
    parser.add_argument(
        "--budget-scale", type=float, default=1.0, help="multiply every budget and the total"
    )
    parser.add_argument(
        "--out",
        help="path stem of the .md and .json (default: reports/bench/<device>-<date>[-quick])",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write the plan (commands, budgets) to the report and run nothing",
    )
    args = parser.parse_args(argv)
    if args.budget_scale <= 0:
        parser.error(f"--budget-scale must be > 0. Received: budget_scale={args.budget_scale}")
    if args.max_minutes is not None and args.max_minutes <= 0:
        parser.error(f"--max-minutes must be > 0. Received: max_minutes={args.max_minutes}")
    return args


def select(benches: list[Bench], only: str | None, skip: str) -> list[Bench]:
    keys = [b.key for b in benches]
    wanted = [k.strip() for k in (only or ",".join(keys)).split(",") if k.strip()]
    dropped = {k.strip() for k in skip.split(",") if k.strip()}
    unknown = (set(wanted) | dropped) - set(keys)
    if unknown:
        raise SystemExit(
            f"Unknown benchmark(s) {sorted(unknown)}: the benchmarks are {', '.join(keys)}."
        )
    return [b for b in benches if b.key in wanted and b.key not in dropped]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    device = detect_device(args.device)
    benches = select(plan(device["kind"], args.quick, args.jit), args.only, args.skip)
    max_s = 60 * (args.max_minutes or (4.5 if args.quick else 8.0)) * args.budget_scale
    for bench in benches:
        bench.budget_s *= args.budget_scale
    stamp = dt.datetime.now()
    stem = Path(
        args.out
        or ROOT
        / "reports"
        / "bench"
        / f"{device['slug']}-{stamp:%Y-%m-%d}{'-quick' if args.quick else ''}"
    )
    folder = stem.parent / (stem.name + "-runs")
    folder.mkdir(parents=True, exist_ok=True)
    run: dict[str, Any] = {
        "device": device,
        "mode": "quick" if args.quick else "full",
        "jit": args.jit,
        "dry_run": args.dry_run,
        "started": f"{stamp:%Y-%m-%d %H:%M}",
        "max_s": max_s,
        "versions": {} if args.dry_run else _versions(),
        "benchmarks": {},
    }
    print(
        f"{device['name']} ({device['kind']}), {run['mode']} mode, {len(benches)} benchmarks, "
        f"time box {max_s:.0f} s",
        flush=True,
    )
    for bench in benches:
        left = max_s - (time.perf_counter() - started)
        budget = min(bench.budget_s, left)
        if args.dry_run:
            entry = {"status": "planned (dry run)", "seconds": 0.0, "budget_s": bench.budget_s}
            entry["command"] = shlex.join(command(bench, folder / f"{bench.key}.json"))
        elif budget < MIN_START_S:
            entry = {
                "status": f"skipped: {left:.0f} s left of the {max_s:.0f} s time box",
                "seconds": 0.0,
                "budget_s": bench.budget_s,
                "command": shlex.join(command(bench, folder / f"{bench.key}.json")),
            }
        else:
            print(f"  {bench.key}: up to {budget:.0f} s ...", end=" ", flush=True)
            entry = run_one(bench, folder, budget)
            print(f"{entry['status']} ({entry['seconds']:.0f} s)", flush=True)
        run["benchmarks"][bench.key] = entry
    run["wall_s"] = time.perf_counter() - started
    md_path, json_path = Path(f"{stem}.md"), Path(f"{stem}.json")
    write_report(run, benches, md_path)
    json_path.write_text(json.dumps(run, indent=2, default=str) + "\n")
    print(f"wrote {md_path} and {json_path} ({run['wall_s']:.0f} s)")
    failed = [k for k, e in run["benchmarks"].items() if e["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
