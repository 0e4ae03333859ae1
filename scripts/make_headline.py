"""Regenerate the headline picture, docs/explanations.png: every registered method on three
shapes test images (one of each of three classes) in one contact sheet, with the colour bars
of unsigned maps (importance) and signed ones (red: for the class, blue: against).

The model is the benchmark's quick shapes CNN, trained once into `--cache` (as
`xai-keras benchmark --quick` does, so a benchmark run's cache is reused) and explained with
the benchmark's quick settings for the sampling methods.

    .venv/bin/python -m scripts.make_headline [--cache DIR] [--out docs/explanations.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from xai_keras import explain, methods  # noqa: E402
from xai_keras.evaluate.presets import FAST_OPTIONS, QUICK_OPTIONS, load_or_train  # noqa: E402
from xai_keras.explainers import contact_sheet  # noqa: E402
from xai_keras.io import save_figure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="logs/bench_models", help="the benchmark's models")
    parser.add_argument("--out", default="docs/explanations.png")
    parser.add_argument("--dpi", type=int, default=45)
    args = parser.parse_args()
    bm = load_or_train("shapes", True, Path(args.cache), 0)
    test = bm.splits.test_arrays
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in np.unique(test.labels)[:3]]
    images, labels = test.images[picks], test.labels[picks]
    names = bm.splits.class_names
    explanations = []
    for method in methods(model=bm.model):  # the transformer methods need attention layers
        options = {**FAST_OPTIONS.get(method, {}), **QUICK_OPTIONS.get(method, {})}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "these CAM variants coincide at this layer"
            explanations.append(explain(bm.model, images, method, class_names=names, **options))
    path = save_figure(contact_sheet(explanations, labels=labels), args.out, dpi=args.dpi)
    print(f"{path}: {len(explanations)} methods on {len(images)} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
