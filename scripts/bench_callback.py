"""How much does ExplainCallback slow an epoch of the default shapes training? (target: < 10%)

    python -m scripts.bench_callback [--epochs 3] [--images 8] [--methods gradcam] [--json PATH]

Trains the default CNN on the default shapes data with and without the callback, alternating
the order of the two each round after one warm-up fit, and compares the median epoch time (the
first epoch of each fit, which traces the training step, is left out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import keras

from xai_keras.config import load_config
from xai_keras.data import load_dataset
from xai_keras.models import build_cnn
from xai_keras.tensorboard import ExplainCallback


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def epoch_times(cfg, splits, callbacks) -> list[float]:
    keras.utils.set_random_seed(cfg.training.seed)
    model = build_cnn(cfg.model, splits.image_shape, splits.num_classes)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()  # last, so it also times the other callbacks' epoch-end work
    model.fit(
        splits.train,
        validation_data=splits.val,
        epochs=cfg.training.epochs,
        verbose=0,
        shuffle=False,
        callbacks=[*callbacks, timer],
    )
    return timer.times[1:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--methods", default="gradcam")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, repeatable (e.g. data.n_train=1024 for a quicker run)",
    )
    args = parser.parse_args(argv)
    cfg = load_config(None, [f"training.epochs={args.epochs}", *args.set])
    splits = load_dataset(cfg.data, cfg.training.batch_size, cfg.training.seed)
    images = splits.test_arrays.images[: args.images]
    epoch_times(cfg, splits, [])  # warm-up: fills the tf.data cache, the thread pools
    plain, with_cb = [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as log_dir:
            cb = ExplainCallback(images, args.methods.split(","), log_dir=log_dir)
            # Alternate which goes first (A B, B A, ...) so drift hits both alike.
            for variant in ["plain", "cb"] if r % 2 == 0 else ["cb", "plain"]:
                if variant == "plain":
                    plain += epoch_times(cfg, splits, [])
                else:
                    with_cb += epoch_times(cfg, splits, [cb])
    a, b = statistics.median(plain), statistics.median(with_cb)
    # The callback's own cost, timed directly (epoch times vary by more than it costs).
    with tempfile.TemporaryDirectory() as log_dir:
        cb = ExplainCallback(images, args.methods.split(","), log_dir=log_dir)
        keras.utils.set_random_seed(0)
        cb.set_model(build_cnn(cfg.model, splits.image_shape, splits.num_classes))
        cb.on_epoch_end(0)  # the first call compiles the kernels, once per training run
        start = time.perf_counter()
        for epoch in range(1, 6):
            cb.on_epoch_end(epoch)
        own = (time.perf_counter() - start) / 5
        cb.on_train_end()
    print(f"epoch without callback: {a:.2f} s (median of {len(plain)})")
    print(f"epoch with ExplainCallback({args.methods}, {args.images} images): {b:.2f} s")
    print(f"epoch time difference: {100 * (b / a - 1):+.1f}% (noise: epochs vary more than this)")
    ratio = own / a
    print(
        f"callback's own time per logged epoch: {1000 * own:.1f} ms = {100 * ratio:.2f}% of an "
        f"epoch ({'PASS' if ratio <= 0.10 else 'FAIL'}: <= 10%)"
    )
    if args.json:
        figures = {
            "methods": args.methods,
            "images": args.images,
            "overrides": args.set,
            "epoch_s": a,
            "epoch_with_callback_s": b,
            "epochs_timed": [len(plain), len(with_cb)],
            "callback_s_per_epoch": own,
            "callback_share_of_epoch": ratio,
        }
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
