"""Does explaining many images, again and again, grow memory? Prints the process RSS per call.

    python scripts/check_memory.py [--n 1000] [--calls 8] [--method gradcam]

Each call explains `n` images in batches of 32 (the last one padded); after the first call
(tracing, caches) the RSS should stay flat. The returned maps (n x H x W float32) are dropped
between calls.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args(argv)

    from xai_keras import explain
    from xai_keras.config import ModelConfig
    from xai_keras.models import build_cnn

    model = build_cnn(ModelConfig(), (64, 64, 3), 5)
    images = np.random.default_rng(0).uniform(0, 1, (args.n, 64, 64, 3)).astype(np.float32)
    sizes = []
    for i in range(args.calls):
        exp = explain(model, images, method=args.method, batch_size=32)
        del exp
        gc.collect()
        sizes.append(rss_mb())
        print(f"call {i + 1}: RSS {sizes[-1]:.0f} MiB", flush=True)
    growth = sizes[-1] - sizes[1]
    print(f"growth from call 2 to call {args.calls}: {growth:+.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
