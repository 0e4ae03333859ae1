"""How often the default SAG comes back empty on real models, and whether its roots hold.

    python -m scripts.bench_sag_baselines --out reports/sag-baselines            # default
    python -m scripts.bench_sag_baselines --baseline blur --out reports/sag-blur  # one baseline

For each model of the real-model suite (the wheel models, and the trained ones found in
--cache), the first --n images: the share of empty graphs, the images where some baseline
removes the evidence (so a root should exist), the images with a root, and whether every root
keeps the threshold when its masked image is re-scored by an independent `model()` call.
Writes results.md / results.json; with --dump, also each model (.keras) and its images (.npz)
so an older version of the library can be measured on the same inputs.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from xai_keras import sag
from xai_keras.evaluate.real_models import (
    ARCHITECTURES,
    WHEEL_MODELS,
    load_wheel_model,
    train_real_model,
)
from xai_keras.explainers.sag import AUTO_BASELINES
from xai_keras.io import write_json, write_text


def _models(cache: str, n: int):
    for name in WHEEL_MODELS:
        real = load_wheel_model(name)
        if real is not None:
            yield real
    for dataset in ("digits", "lfw_faces"):
        for arch in ARCHITECTURES:
            if (Path(cache) / f"{arch}-{dataset}-s0.keras").exists():
                yield train_real_model(arch, dataset, cache, n=n)


def sweep(real, n: int, baseline: str) -> dict:
    model, rows = real.model, []
    start = time.perf_counter()
    for image in real.images[:n]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            g = sag(model, image, baseline=baseline, value_range=real.value_range)
        verified = all(
            float(keras.ops.convert_to_numpy(model(g.masked_image(r)[None]))[0, g.target])
            / g.probability
            >= g.threshold - 1e-4
            for r in g.roots
        )
        rows.append(
            {
                "roots": len(g.roots),
                "root_sizes": [len(r) for r in g.roots],
                "baseline": g.baseline,
                "removable": bool(min(g.baselines_tried.values()) < g.threshold),
                "verified": verified,
                "n_forward": g.n_forward,
            }
        )
    empty = sum(r["roots"] == 0 for r in rows)
    return {
        "images": len(rows),
        "empty": empty,
        "removable": sum(r["removable"] for r in rows),
        "with_roots": len(rows) - empty,
        "all_verified": all(r["verified"] for r in rows),
        "baselines": {
            b: sum(r["baseline"] == b for r in rows) for b in (*AUTO_BASELINES, baseline)
        },
        "mean_root_size": float(np.mean([s for r in rows for s in r["root_sizes"]] or [np.nan])),
        "mean_forward": float(np.mean([r["n_forward"] for r in rows])),
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="auto")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--cache", default="runs/real-models")
    parser.add_argument("--out", default="reports/sag-baselines")
    parser.add_argument("--dump", help="also save each model and its images here")
    args = parser.parse_args()
    results = {}
    lines = [
        f"# SAG on real models (baseline={args.baseline!r}, first {args.n} images)",
        "",
        "| model | empty graphs | some baseline removes the class | images with roots "
        "| roots verified | baseline chosen | mean root size | masked passes / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for real in _models(args.cache, args.n):
        r = results[real.name] = sweep(real, args.n, args.baseline)
        chosen = ", ".join(f"{k} {v}" for k, v in r["baselines"].items() if v)
        lines.append(
            f"| {real.name} | {r['empty']}/{r['images']} | {r['removable']} | {r['with_roots']} "
            f"| {'yes' if r['all_verified'] else '**no**'} | {chosen} | "
            f"{r['mean_root_size']:.1f} | {r['mean_forward']:.0f} |"
        )
        print(lines[-1], flush=True)
        if args.dump:
            dump = Path(args.dump)
            dump.mkdir(parents=True, exist_ok=True)
            stem = real.name.replace(" / ", "-")
            real.model.save(dump / f"{stem}.keras")
            np.savez(dump / f"{stem}.npz", images=real.images[: args.n])
    write_text(Path(args.out) / "results.md", "\n".join(lines) + "\n")
    write_json(Path(args.out) / "results.json", results)


if __name__ == "__main__":
    main()
