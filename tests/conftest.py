"""Shared fixtures: tiny models built in the test, and one small model trained on shapes."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from xai_keras.config import ModelConfig, load_config  # noqa: E402
from xai_keras.models import build_cnn  # noqa: E402

# Method options that keep the contract tests fast (fewer samples, masks, steps).
FAST_OPTIONS = {
    "scorecam": {},
    "smoothgrad": {"samples": 4},
    "integrated_gradients": {"steps": 8},
    "occlusion": {"patch": 8},
    "rise": {"masks": 64},
    "lime": {"samples": 64},
    "kernelshap": {"samples": 64},
}


@pytest.fixture(scope="session")
def gap_model() -> keras.Model:
    """The project's CNN (GAP + dense head, BN, softmax), untrained but with seeded weights."""
    keras.utils.set_random_seed(1)
    return build_cnn(ModelConfig(filters=[8, 16, 16], dropout=0.1), (32, 32, 3), 4)


@pytest.fixture(scope="session")
def images32() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (5, 32, 32, 3)).astype(np.float32)


def _train_small(out, *extra: str):
    """The built-in "shapes_small" run (also what the benchmarks train) into `out`."""
    from xai_keras.training import train

    return train(load_config("shapes_small", [f"out_dir={out}", *extra]), verbose=0)


@pytest.fixture(scope="session")
def trained_shapes(tmp_path_factory):
    """A small CNN trained on the shapes dataset through the real `train()` pipeline."""
    return _train_small(tmp_path_factory.mktemp("shapes_run"))


@pytest.fixture(scope="session")
def shortcut_shapes(tmp_path_factory):
    """The same CNN trained with the planted corner marker linked to the class."""
    return _train_small(tmp_path_factory.mktemp("shortcut_run"), "data.spurious_cue=true")


def pytest_collection_modifyitems(config, items):
    """Tests marked `torch` run a PyTorch oracle in another venv (slow, and not part of the
    default run): they are skipped unless the `-m` expression names `torch`."""
    if "torch" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="PyTorch oracle test; select it with -m torch")
    for item in items:
        if item.get_closest_marker("torch") is not None:
            item.add_marker(skip)
