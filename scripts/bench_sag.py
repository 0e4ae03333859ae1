"""Benchmark structured attention graphs: masked-image throughput and the cost of a whole SAG.

Run (from the repository root):

    export TF_CPP_MIN_LOG_LEVEL=2
    .venv/bin/python -m scripts.bench_sag            # ~5-8 min on 2 cores (ResNet50 SAG dominates)
    .venv/bin/python -m scripts.bench_sag --quick    # the project CNN only
    .venv/bin/python -m scripts.bench_sag --help
    .venv/bin/python -m scripts.bench_sag --roots 20 --model runs/shapes/model.keras
        # root quality of the ranked search against the exhaustive one (see `roots`)

Targets (from the issue), measured side by side in one run:

1. Masked images per second >= 0.8x the plain-inference throughput of the same model at the
   same batch size: `PatchScorer.probabilities` on new patch sets (the masks are built and
   the images blended inside the same compiled function) against
   `tf.function(lambda x: model(x, training=False))` on ready-made images.
2. A whole SAG with the default settings (7x7 grid, beam width 5, threshold 0.9 relative,
   blurred baseline) on a 224x224 ResNet50 costs a bounded number of masked forward passes:
   the count and the seconds per image are reported (the bound is max_size x beam_width x
   candidates for the search, plus the ranking, minimisation and the graph).

3. `--roots N`: the ranked search (each beam set extended by its best-ranked patches)
   against the exhaustive one (`candidates=None`) on N correctly classified shapes images:
   masked passes, images with roots, root sizes, every root re-checked sufficient and
   minimal by plain `model()` calls on masked images built here (not by the scorer), and
   diversity. `--resnet N` adds ResNet50 (weights=None, 224x224, black baseline) on N images.

`--jit` adds an XLA column: the same plain inference compiled with `jit_compile=True`, and its
throughput against the plain one. `--json PATH` saves both tables.

The reference implementation scores one masked image per forward pass (its published example
took ~400 s per 224x224 image with VGG19).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from scripts.common import format_table, measure, paired_ratio, train_small_shapes
from xai_keras.config import ModelConfig  # noqa: E402
from xai_keras.data import generate_shapes  # noqa: E402
from xai_keras.explainers.baselines import make_baseline  # noqa: E402
from xai_keras.explainers.sag import PatchScorer, patch_index_map, sag  # noqa: E402
from xai_keras.explainers.session import Session  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402


def _models(
    quick: bool, cnn_batch: int = 64, resnet_batch: int = 16
) -> list[tuple[str, keras.Model, int, int]]:
    keras.utils.set_random_seed(0)
    found = [("xai_cnn 64x64", build_cnn(ModelConfig(), (64, 64, 3), 5), 64, cnn_batch)]
    if not quick:
        resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
        found.append(("ResNet50 224x224", resnet, 224, resnet_batch))
    return found


def throughput(name, model, size, batch, repeats, rng, jit=False) -> list:
    """Masked images/s of the SAG scorer vs plain compiled inference, same batch size; with
    `jit`, also the plain inference compiled by XLA."""
    image = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    plain = tf.function(lambda x: model(x, training=False))
    x = tf.constant(rng.uniform(0, 1, (batch, size, size, 3)).astype(np.float32))
    scorer = PatchScorer(Session.of(model, batch_size=batch), image, 0, (7, 7), "blur")
    # Distinct random patch sets, drawn up front so the timed calls only score them.
    masks = rng.uniform(size=((repeats + 2) * batch, 49)) < 0.3
    pool = list(dict.fromkeys(tuple(int(v) for v in np.flatnonzero(m)) for m in masks))
    chunks = iter(pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch))

    def fresh_sets():
        """`batch` patch sets never scored before, so each call really runs the model."""
        return scorer.probabilities(next(chunks))

    fns = {"plain": lambda: plain(x), "sag": fresh_sets}
    if jit:
        xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
        fns["xla"] = lambda: xla(x)
    times = measure(fns, repeats, 1, name).wall
    ratio = 1 / paired_ratio(times["sag"], times["plain"])
    plain_ips = batch / np.median(times["plain"])
    sag_ips = batch / np.median(times["sag"])
    row = [
        name,
        batch,
        f"{plain_ips:.1f}",
        f"{sag_ips:.1f}",
        f"{ratio:.2f}x",
        "PASS" if ratio >= 0.8 else "FAIL",
    ]
    if jit:
        xla_ips = batch / np.median(times["xla"])
        row += [f"{xla_ips:.1f}", f"{1 / paired_ratio(times['xla'], times['plain']):.2f}x"]
    return row


def whole_sag(name, model, size, batch, images, rng, label, **options) -> list:
    """Forward passes and seconds for a full SAG, per image."""
    counts, seconds, roots = [], [], []
    for _ in range(images):
        image = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # empty graphs are expected here
            g = sag(model, image, batch_size=batch, **options)
        seconds.append(time.perf_counter() - start)
        counts.append(g.n_forward)
        roots.append(len(g.roots))
    return [
        name,
        label,
        images,
        f"{np.mean(counts):.0f}",
        f"{max(counts)}",
        f"{np.mean(seconds):.1f}",
        f"{np.mean(roots):.1f}",
    ]


# The settings of each whole-SAG row. With random weights a blurred image keeps most of the
# confidence, so "black" shows a real search; an unreachable threshold shows the worst case.
_SETTINGS = {
    "default (blur)": {},
    "black baseline": {"baseline": "black"},
    "worst case": {"threshold": 0.9999, "relative": False, "baseline": "black"},
}


def _modes(text: str) -> dict[str, dict]:
    """The searches `--roots` compares: the exhaustive one, then each "count:ranking"."""
    modes = {"exhaustive": {"candidates": None}}
    for item in text.split(","):
        count, _, rank_by = item.partition(":")
        modes[f"{count}, {rank_by}"] = {"candidates": int(count), "rank_by": rank_by}
    return modes


def _shapes_model(path: str | None, train_dir: Path) -> keras.Model:
    """The saved model at `path`, else the tests' small shapes CNN trained once into
    `train_dir` (`scripts.common.train_small_shapes`, as the tests' `trained_shapes`)."""
    if path is None:
        path = train_dir / "model.keras"
        if not path.is_file():
            train_small_shapes(train_dir)
    return keras.models.load_model(path)


def _verify(model, g) -> tuple[bool, bool]:
    """(every root sufficient, every root minimal), by plain `model()` calls on masked
    images built here from the patch map and the baseline, not by the SAG's scorer."""
    if not g.roots:
        return True, True
    image = g.image
    fill = make_baseline(tf.constant(image[None]), g.baseline).numpy()[0]
    index = patch_index_map(image.shape[0], image.shape[1], g.grid)
    sets = list(g.roots) + [tuple(q for q in r if q != p) for r in g.roots for p in r]
    masked = np.stack([np.where(np.isin(index, s)[..., None], image, fill) for s in sets])
    p = np.concatenate(
        [model(masked[i : i + 64], training=False).numpy() for i in range(0, len(masked), 64)]
    )[:, g.target]
    full = float(model(image[None], training=False).numpy()[0, g.target])
    conf = p / full if g.relative else p
    kept, dropped = conf[: len(g.roots)], conf[len(g.roots) :]
    return bool(np.all(kept >= g.threshold - 1e-4)), bool(np.all(dropped < g.threshold))


def _overlap(roots) -> float:
    """Mean share of the smaller root that two roots of one graph have in common."""
    pairs = [(a, b) for i, a in enumerate(roots) for b in roots[i + 1 :]]
    return float(np.mean([len(set(a) & set(b)) / min(len(a), len(b)) for a, b in pairs] or [0]))


def roots(name, model, images, modes, batch, **options) -> list[list]:
    """One row per search mode: cost, roots found, their size, checks and diversity."""
    graphs = {label: [] for label in modes}
    seconds = {label: 0.0 for label in modes}
    for image in images:
        for label, mode in modes.items():
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                g = sag(model, image, batch_size=batch, **options, **mode)
            seconds[label] += time.perf_counter() - start
            graphs[label].append(g)
    reference = graphs.get("exhaustive")
    rows = []
    for label, gs in graphs.items():
        checks = [_verify(model, g) for g in gs]
        smallest = [min(map(len, g.roots)) for g in gs if g.roots]
        both = same = 0
        if reference is not None:
            pairs = [(g, r) for g, r in zip(gs, reference) if g.roots and r.roots]
            both = len(pairs)
            same = sum(set(g.roots) & set(r.roots) != set() for g, r in pairs)
        rows.append(
            [
                name,
                label,
                len(gs),
                f"{np.mean([g.n_forward for g in gs]):.0f}",
                max(g.n_forward for g in gs),
                sum(bool(g.roots) for g in gs),
                both if reference is not None else "-",
                same if reference is not None else "-",
                f"{np.mean(smallest):.2f}" if smallest else "-",
                f"{np.mean([len(r) for g in gs for r in g.roots] or [0]):.2f}",
                f"{np.mean([len(g.roots) for g in gs]):.2f}",
                f"{np.mean([_overlap(g.roots) for g in gs if len(g.roots) > 1] or [0]):.2f}",
                "yes" if all(c[0] for c in checks) else "NO",
                "yes" if all(c[1] for c in checks) else "NO",
                f"{seconds[label] / len(gs):.1f}",
            ]
        )
    return rows


_ROOT_HEADERS = [
    "model",
    "search",
    "images",
    "passes",
    "max",
    "with roots",
    "both",
    "a shared root",
    "smallest root",
    "mean root",
    "roots",
    "overlap",
    "sufficient",
    "minimal",
    "s / image",
]


def _correct_shapes(model, n: int) -> list[np.ndarray]:
    """The first `n` images of a fresh shapes sample the model classifies correctly."""
    s = generate_shapes(4 * n, seed=2024)
    pred = model.predict(s.images, verbose=0).argmax(-1)
    return [s.images[i] for i in np.flatnonzero(pred == s.labels)[:n]]


def main_roots(args) -> int:
    model = _shapes_model(args.model, Path(args.train_dir))
    modes = _modes(args.ranked)
    images = _correct_shapes(model, args.roots)
    rows = roots("shapes CNN 64x64", model, images, modes, 64, extra_sizes=args.extra_sizes)
    if args.resnet:
        keras.utils.set_random_seed(0)
        resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
        rng = np.random.default_rng(0)
        images = [rng.uniform(0, 1, (224, 224, 3)).astype(np.float32) for _ in range(args.resnet)]
        modes = dict(list(modes.items())[:2])  # exhaustive and the first ranked search
        if args.no_exhaustive_resnet:
            modes.pop("exhaustive")
        options = {"baseline": "black", "extra_sizes": args.extra_sizes}
        rows += roots("ResNet50 224x224", resnet, images, modes, 16, **options)
    print("\nRoots of the ranked search against the exhaustive one (7x7 grid, beam width 5)")
    print(format_table(_ROOT_HEADERS, rows))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the project CNN only")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument("--images", type=int, default=2, help="images per whole-SAG measurement")
    parser.add_argument("--roots", type=int, help="compare root quality on this many images")
    parser.add_argument("--model", help="--roots: a saved shapes model (default: train one)")
    parser.add_argument("--train-dir", default="runs/bench_sag_shapes", help="where to train it")
    parser.add_argument(
        "--ranked",
        default="10:patch_ig,15:patch_ig,10:gradcam",
        help="--roots: the ranked searches, as candidates:rank_by, comma-separated",
    )
    parser.add_argument("--extra-sizes", type=int, default=2, help="--roots: sag's extra_sizes")
    parser.add_argument("--resnet", type=int, default=0, help="--roots: ResNet50 images too")
    parser.add_argument(
        "--no-exhaustive-resnet", action="store_true", help="--roots: ResNet50 ranked only"
    )
    parser.add_argument("--cnn-batch", type=int, default=64, help="batch of the project CNN")
    parser.add_argument("--resnet-batch", type=int, default=16, help="batch of ResNet50")
    parser.add_argument(
        "--settings",
        default=",".join(_SETTINGS),
        help=f"comma list of the whole-SAG rows: {', '.join(_SETTINGS)}",
    )
    parser.add_argument("--jit", action="store_true", help="add an XLA plain-inference column")
    parser.add_argument("--json", metavar="PATH", help="also write both tables as JSON")
    args = parser.parse_args(argv)
    if args.roots:
        return main_roots(args)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if set(settings) - set(_SETTINGS):
        parser.error(f"unknown --settings {sorted(set(settings) - set(_SETTINGS))}")
    rng = np.random.default_rng(0)
    models = _models(args.quick, args.cnn_batch, args.resnet_batch)
    rows = [throughput(n, m, s, b, args.repeats, rng, args.jit) for n, m, s, b in models]
    print("\nMasked-image throughput (images/s, median of interleaved rounds)")
    headers = ["model", "batch", "plain", "SAG masked", "ratio", ">= 0.8x"]
    headers += ["XLA plain", "XLA / plain"] if args.jit else []
    print(format_table(headers, rows), flush=True)
    results = {"throughput": [dict(zip(headers, row)) for row in rows]}
    rows = [
        whole_sag(n, m, s, b, args.images, rng, label, **_SETTINGS[label])
        for n, m, s, b in models
        for label in settings
    ]
    print("\nWhole SAG (7x7 grid, beam width 5, threshold 0.9 relative unless stated)")
    print(f"search bound: max_size x beam_width x candidates = 15 x 5 x 10 = {15 * 5 * 10}")
    headers = ["model", "settings", "images", "forward passes", "max", "s / image", "roots"]
    print(format_table(headers, rows))
    results["whole_sag"] = [dict(zip(headers, row)) for row in rows]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
