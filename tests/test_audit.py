"""`audit` and `xai-keras audit`: a model that reads a planted corner marker is flagged, the
methods are ranked, and the report opens in a real headless browser."""

from __future__ import annotations

import shutil
import subprocess

import keras
import numpy as np
import pytest

from xai_keras.evaluate.audit import audit, shortcut_flags


@pytest.fixture(scope="module")
def marked():
    """Class 1 = a bright 3 x 3 marker near the top-left corner of noise; a small CNN with
    global max pooling learns it (100% accuracy in a few seconds)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.5, (240, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 2, 240)
    x[y == 1, 1:4, 1:4, 0] = 1.0
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling2D()(h))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.95
    return model, x[:32], y[:32]


def test_shortcut_flags_by_hand():
    maps = np.zeros((6, 10, 10))
    maps[:3, 1, 1] = 1.0  # class 0: always the same corner
    for i, (r, c) in enumerate([(2, 7), (8, 3), (5, 5)]):  # class 1: the object moves
        maps[3 + i, r, c] = 1.0
    flags = shortcut_flags(maps, np.array([0, 0, 0, 1, 1, 1]))
    assert [f["class"] for f in flags] == [0]
    assert flags[0]["border"] and flags[0]["share"] == 1.0 and flags[0]["spot"] == (1, 1)


def test_audit_flags_the_marker_ranks_and_opens_in_chromium(marked, tmp_path):
    model, x, y = marked
    result = audit(model, (x, y), tmp_path / "audit.html", methods=("gradcam", "saliency",
                   "random", "centre"), metrics=("sparseness", "irof"), n=32, n_sanity=2,
                   class_names=["plain", "marked"])  # fmt: skip
    assert set(result.ranking) == {"gradcam", "saliency"}  # references are not ranked
    assert [f["class"] for f in result.flags] == [1] and result.flags[0]["border"]
    assert result.rows["saliency"]["trustworthy"]
    assert not result.rows["random"].get("beats_random")
    text = result.path.read_text()
    assert "<img src='data:image/png;base64," in text and "http" not in text.split("<p>Metrics")[0]
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium: apt-get install chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", result.path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    assert 'id="ranking"' in dom and "marked: the maps of" in dom
    assert dom.count("<img") == 2 * (1 + 2)  # two classes: the image and two methods
    shot = tmp_path / "audit.png"
    subprocess.run([browser, *flags, "--window-size=1200,1600", f"--screenshot={shot}",
                    result.path.as_uri()], capture_output=True, timeout=120)  # fmt: skip
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def test_cli_audit(marked, tmp_path):
    from xai_keras.cli import main

    model, x, y = marked
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", images=x[:12], labels=y[:12])
    code = main(["audit", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
                 "--out", str(tmp_path / "r.html"), "--methods", "saliency,random",
                 "--metrics", "sparseness", "--n", "12", "--n-sanity", "0", "--quiet"])  # fmt: skip
    assert code == 0 and (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    assert main(["audit", "--model", str(tmp_path / "m.keras"), "--data", "nope.npz"]) == 2
