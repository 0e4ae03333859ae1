"""scripts/compat_matrix.py on tiny rows: cells, one-line reasons, the CAM identity, Markdown."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import keras
import numpy as np
import pytest

import scripts.compat_matrix as cm

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["gradcam", "cam", "saliency"]


def _vgg_like(size: int) -> cm.Case:
    inputs = keras.Input((size, size, 3))
    x = inputs
    for block, width in enumerate((8, 16)):
        for i in range(2):
            x = keras.layers.Conv2D(
                width, 3, padding="same", activation="relu", name=f"b{block}c{i}"
            )(x)
        if block == 0:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    return cm.Case(keras.Model(inputs, outputs, name="vgg_like"), cm.random_images(size))


def _no_spatial_layer(size: int) -> cm.Case:
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(inputs))
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    return cm.Case(keras.Model(inputs, outputs, name="mlp"), cm.random_images(size))


@pytest.fixture(scope="module")
def results():
    rows = [
        cm.Row("vgg_like", "test", "form", _vgg_like, 32),
        cm.Row("nested", "form", "form", cm.form_nested, 32),
        cm.Row("mlp", "test", "form", _no_spatial_layer, 32),
    ]
    return {r["name"]: r for r in cm.run(rows, METHODS, peers=[])}


def test_cells_pass_on_supported_models(results):
    vgg = results["vgg_like"]
    assert all(vgg["ours"][m]["status"] == "ok" for m in METHODS)
    assert (vgg["layer"], vgg["grid"], vgg["score_kind"]) == ("b1c1", (16, 16), "logits")
    assert results["nested"]["ours"]["gradcam"]["status"] == "ok"
    assert results["nested"]["layer"].count("/") == 1  # a layer inside the nested MobileNetV2


def test_gradcam_follows_the_cam_identity(results):
    identity = results["vgg_like"]["identity"]
    assert identity["layer"] == "b1c1"
    assert identity["max_rel_diff"] < 1e-4 and identity["min_corr"] > 0.9999
    assert results["mlp"]["identity"] is None


def test_a_failing_cell_gives_a_one_line_reason(results):
    cell = results["mlp"]["ours"]["gradcam"]
    assert cell["status"] == "fail" and cell["clear"]
    assert cell["text"].startswith("LayerError: ")
    assert "\n" not in cell["text"] and len(cell["text"]) <= cm.REASON_CHARS
    assert results["mlp"]["ours"]["saliency"]["status"] == "ok"
    # CAM on a head that is not GAP + Dense is refused by design: "n/a", not a failure.
    assert results["mlp"]["ours"]["cam"]["status"] == "n/a"


def test_markdown_has_rows_columns_and_reasons(results):
    meta = {
        "versions": cm.versions([]),
        "methods": METHODS,
        "peers": [],
        "command": "python scripts/compat_matrix.py --test",
        "seconds": 1.0,
    }
    text = cm.render(list(results.values()), meta)
    header = next(line for line in text.splitlines() if line.startswith("| model | layer |"))
    assert header == "| model | layer | " + " | ".join(METHODS) + " |"
    for row in ("vgg_like (32px)", "nested (32px)", "mlp (32px)"):
        assert f"| {row} |" in text
    assert "| xai_keras | 2 / 3 |" in text
    mlp = next(line for line in text.splitlines() if line.startswith("| mlp (32px)"))
    assert "LayerError: Model 'mlp' has no layer with a spatial" in mlp
    assert "| vgg_like | b1c1 |" in text  # the identity table


def test_map_problems_are_named():
    shape = (2, 4, 4)
    good = np.random.default_rng(0).uniform(0, 1, shape)
    assert cm.map_problem(good, shape) is None
    assert cm.map_problem(good[..., None], shape) is None
    assert "shape" in cm.map_problem(good[:1], shape)
    assert "NaN" in cm.map_problem(np.where(good > 0.5, np.nan, good), shape)
    assert "all-zero" in cm.map_problem(np.stack([good[0], 0 * good[1]]), shape)
    assert "constant" in cm.map_problem(np.stack([good[0], 0 * good[1] + 0.5]), shape)
    assert "outside" in cm.map_problem(good * 2, shape)
    assert cm.map_problem(good * 2, shape, unit_range=False) is None


def test_reasons_are_short_single_lines():
    err = ValueError("first line " + "x" * 200 + "\nsecond line")
    text = cm.reason(err)
    assert text.startswith("ValueError: first line") and "second" not in text
    assert len(text) == cm.REASON_CHARS and text.endswith("…")


def test_application_rows_and_minimum_sizes():
    rows = cm.application_rows(64)
    names = {r.name for r in rows}
    assert {"ResNet50", "VGG16", "MobileNetV3Small", "EfficientNetB0", "Xception"} <= names
    quick = cm.application_rows(64, quick=True)
    assert len(quick) == len({r.family for r in rows}) == len({r.family for r in quick})
    assert "ResNet50" in {r.name for r in quick}
    model = cm.build_application(keras.applications.Xception, 32)  # needs at least 75x75
    assert tuple(model.inputs[0].shape[1:3]) == (75, 75)


def test_main_writes_the_report(tmp_path, capsys):
    out = tmp_path / "compat.md"
    args = ["--out", str(out), "--json", str(tmp_path / "raw.json"), "--size", "32"]
    args += ["--models", "small_cnn", "--methods", "gradcam,occlusion", "--no-peers"]
    assert cm.main(args) == 0
    assert "| small_cnn (32px) | c1 (16x16); logits | ✓ | ✓ |" in out.read_text()
    assert "| xai_keras | 1 / 1 |" in capsys.readouterr().out
    saved = json.loads((tmp_path / "raw.json").read_text())
    assert [r["name"] for r in saved["results"]] == ["small_cnn"]
    # --resume takes the finished rows from the JSON file instead of running them again
    saved["results"][0]["ours"]["gradcam"]["text"] = "from the file"
    (tmp_path / "raw.json").write_text(json.dumps(saved))
    assert cm.main([*args, "--resume"]) == 0
    assert (
        json.loads((tmp_path / "raw.json").read_text())["results"][0]["ours"]["gradcam"]["text"]
        == "from the file"
    )


def test_peers_on_a_gap_dense_model():
    pytest.importorskip("tf_keras_vis")
    keras.utils.set_random_seed(0)
    case = _vgg_like(32)
    out = cm.run_peer(cm.TKV, case, ["gradcam", "saliency", "integrated_gradients"])
    assert set(out["cells"]) == {"gradcam", "saliency"}  # tf-keras-vis has no IG
    assert all(c.status == "ok" for c in out["cells"].values())
    assert out["layer"][:2] == ("b1c1", (16, 16))
    found = cm.peer_identity(out["runner"], "b1c1", cm.top_targets(case))
    assert found["max_rel_diff"] < 1e-4 and found["min_corr"] > 0.9999


def test_rows_free_their_models():
    """Each row's model is freed after the row, also after the peers ran on it (xplique keeps
    the models it saw in a class-level cache, which the script empties)."""
    peers = [p for p in cm.PEERS if cm.peer_version(p)]
    refs = []

    def build(size: int) -> cm.Case:
        case = cm.form_small_cnn(size)
        refs.append(weakref.ref(case.model))
        return case

    cm.run_row(cm.Row("small_cnn", "form", "form", build, 32), ["gradcam"], peers)
    gc.collect()
    assert refs and refs[0]() is None
