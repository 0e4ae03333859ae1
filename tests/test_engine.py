"""The engine behind every front end: a `Session` carries the model form (which output, how it
is read, held inputs) into `explain`, the metrics, `explain_dataset`, `sag` and
`ExplainCallback`, and its one padded batch loop serves them all. Each test checks an identity
between two ways of asking the same question, not just "no error"."""

from __future__ import annotations

import inspect
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import FAST_OPTIONS, model_for
from keras import layers as L

from xai_keras import explain, methods, sag
from xai_keras.errors import InputError, LayerError
from xai_keras.evaluate import average_drop_increase, deletion, insertion
from xai_keras.explainers.graph import model_store
from xai_keras.explainers.session import MODEL_FORM_ARGS, Session, batch_buckets
from xai_keras.scale import explain_dataset
from xai_keras.tensorboard import ExplainCallback

SIZE = 24


def _trunk(inp: keras.KerasTensor) -> keras.KerasTensor:
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv0")(inp)
    h = L.MaxPooling2D(name="pool0")(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="last")(h)
    return L.GlobalAveragePooling2D(name="gap")(h)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (5, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def maps(images) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, images.shape[:3]).astype(np.float32)


@pytest.fixture(scope="module")
def binary() -> keras.Model:
    """One sigmoid unit: class 1 is the logit, class 0 its negation."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inp, L.Dense(1, activation="sigmoid", name="p")(_trunk(inp)))


@pytest.fixture(scope="module")
def two_outputs() -> tuple[keras.Model, keras.Model]:
    """A model with a softmax output "cls" and a linear output "box", and "box" alone."""
    keras.utils.set_random_seed(2)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    pooled = _trunk(inp)
    cls = L.Dense(3, activation="softmax", name="cls")(pooled)
    box = L.Dense(4, name="box")(pooled)
    return keras.Model(inp, {"cls": cls, "box": box}), keras.Model(inp, box)


@pytest.fixture(scope="module")
def held() -> keras.Model:
    """Images plus a 5-number metadata input that shifts the class scores strongly."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    meta = keras.Input((5,), name="meta")
    mixed = L.Concatenate()([_trunk(inp), L.Dense(8, activation="tanh")(meta)])
    return keras.Model([inp, meta], L.Dense(3, activation="softmax", name="cls")(mixed))


def _meta(n: int) -> np.ndarray:
    return np.random.default_rng(4).normal(size=(n, 5)).astype(np.float32) * 3


# -- the session ----------------------------------------------------------------------------
def test_session_is_reused_and_explains_as_the_keywords_do(two_outputs, images):
    model, _ = two_outputs
    session = Session(model, output="box", head="linear", batch_size=2)
    assert Session.of(session) is session
    assert Session.of(session, batch_size=2) is session
    assert Session.of(session, batch_size=4).batch_size == 4
    by_session = explain(session, images, targets=1)
    by_keywords = explain(model, images, targets=1, output="box", head="linear")
    np.testing.assert_allclose(by_session.maps, by_keywords.maps, atol=1e-6)
    np.testing.assert_allclose(
        by_session.scores, model.predict(images, verbose=0)["box"][:, 1], atol=1e-5
    )
    with pytest.raises(InputError, match=r"Unknown argument\(s\) outptu"):
        Session.of(model, outptu="box")
    with pytest.raises(InputError, match="`batch_size` argument must be a positive int"):
        Session(model, batch_size=0)
    with pytest.raises(InputError, match="keras.Model or an xai_keras Session"):
        explain("model.keras", images)


def test_front_ends_spell_the_model_form_args_alike():
    """`explain`, `sag`, `Session` and `explain_dataset` list the model-form keywords
    explicitly (completion, `help()`): exactly `MODEL_FORM_ARGS`, in its order, default None,
    annotated alike and documented, so none can drift from the others."""
    fronts = {"explain": explain, "sag": sag, "Session": Session.__init__}
    fronts["explain_dataset"] = explain_dataset
    reference = inspect.signature(explain).parameters
    for name, fn in fronts.items():
        params = inspect.signature(fn).parameters
        assert [p for p in params if p in MODEL_FORM_ARGS] == list(MODEL_FORM_ARGS), name
        doc = inspect.getdoc(Session if name == "Session" else fn)
        for arg in MODEL_FORM_ARGS:
            assert params[arg].default is None, (name, arg)
            assert params[arg].annotation == reference[arg].annotation, (name, arg)
            assert re.search(rf"^\s+(\w+, )*{arg}(, \w+)*:", doc, re.M), (name, arg)
    options = {"head": "linear", "steps": 4, "batch_size": 2}
    session = Session.from_options(keras.Sequential([keras.Input((2,)), L.Dense(3)]), options)
    assert options == {"steps": 4}  # the rest goes to the method
    assert session.head.kind == "linear" and session.batch_size == 2


def test_map_batches_pads_up_to_a_bucket_and_drops_the_padding():
    assert batch_buckets(8) == (1, 2, 4, 8) and batch_buckets(6) == (1, 2, 4, 6)
    assert batch_buckets(1) == (1,)
    session = Session(keras.Sequential([keras.Input((2,)), L.Dense(1)]), batch_size=4)
    shapes = []

    def kernel(a, b):
        shapes.append(tuple(a.shape))
        return {"sum": a + b, "none": None}

    a, b = np.arange(11.0), np.arange(11.0) * 10
    out = session.map_batches(kernel, a, b)
    assert shapes == [(4,), (4,), (4,)]  # the last batch of 3 is padded to 4
    np.testing.assert_allclose(out["sum"], a + b)
    assert out["none"] is None
    shapes.clear()
    for n in (1, 2, 3, 5, 6):
        np.testing.assert_allclose(session.map_batches(kernel, a[:n], b[:n])["sum"], a[:n] + b[:n])
    # 1, 2 or 3 rows alone: the bucket 1, 2 or 4; the last of several batches: the full 4
    assert shapes == [(1,), (2,), (4,), (4,), (4,), (4,), (4,)]
    total = session.map_batches(
        lambda r: tf.reduce_sum(r, keepdims=True), a, pad=(0.0,), combine="sum"
    )
    np.testing.assert_allclose(total, [a.sum()])  # zero padding adds nothing


@pytest.mark.parametrize(
    ("method", "options"), [("gradcam", {}), ("integrated_gradients", {"steps": 4})]
)
def test_batches_of_any_size_trace_once_per_bucket(method, options):
    """Explaining 1, 2, ..., 9 images at batch_size=8 traces each kernel at most once per
    bucket (1, 2, 4, 8), not once per size, and each map is the image's map alone."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inp, L.Dense(3)(_trunk(inp)))
    x = np.random.default_rng(2).uniform(0, 1, (9, SIZE, SIZE, 3)).astype(np.float32)
    alone = [explain(model, x[i], method=method, **options).maps[0] for i in range(9)]
    for n in range(1, 10):
        exp = explain(model, x[:n], method=method, batch_size=8, **options)
        np.testing.assert_allclose(exp.maps, alone[:n], atol=1e-6, rtol=0, err_msg=f"n={n}")
    runners = model_store(model)["runners"].values()
    traces = {
        name: k.experimental_get_tracing_count() for r in runners for name, k in r._kernels.items()
    }
    assert max(traces.values()) <= len(batch_buckets(8)), traces
    assert sum(traces.values()) >= len(batch_buckets(8))  # the counts are real


# -- the metrics ----------------------------------------------------------------------------
def test_metrics_read_a_single_sigmoid_unit_as_two_classes(binary, images, maps):
    p = binary.predict(images, verbose=0)[:, 0]
    for curve in (deletion, insertion):
        one = curve(binary, images, maps, targets=1, steps=4)
        zero = curve(binary, images, maps, targets=0, steps=4)
        np.testing.assert_allclose(zero.scores, 1 - one.scores, atol=1e-5)
    clean = deletion(binary, images, maps, targets=1, steps=4).scores[:, 0]
    np.testing.assert_allclose(clean, p, atol=1e-5)
    drop1, _ = average_drop_increase(binary, images, maps, targets=1)
    kept = binary.predict(images * maps[..., None], verbose=0)[:, 0]
    np.testing.assert_allclose(drop1, np.maximum(0, p - kept) / p, atol=1e-4)


def test_metrics_of_a_named_output_equal_that_output_alone(two_outputs, images, maps):
    model, alone = two_outputs
    for curve in (deletion, insertion):
        named = curve(model, images, maps, targets=2, steps=4, output="box", head="linear")
        single = curve(alone, images, maps, targets=2, steps=4, head="linear")
        np.testing.assert_allclose(named.scores, single.scores, atol=1e-5)
    session = Session(model, output="cls")
    probs = model.predict(images, verbose=0)["cls"]
    clean = deletion(session, images, maps, steps=2).scores[:, 0]
    np.testing.assert_allclose(clean, probs.max(axis=1), atol=1e-5)


def test_metrics_hold_each_images_own_row(held, images, maps):
    rows = _meta(len(images))
    together = deletion(held, images, maps, steps=4, inputs={"meta": rows}, targets=1)
    for i in range(len(images)):
        one = deletion(held, images[i], maps[i], steps=4, inputs={"meta": rows[i]}, targets=1)
        np.testing.assert_allclose(together.scores[i], one.scores[0], atol=1e-5)
    probs = held.predict([images, rows], verbose=0)[:, 1]
    np.testing.assert_allclose(together.scores[:, 0], probs, atol=1e-5)
    with pytest.raises(InputError, match="'image'.*'meta'"):
        deletion(held, images, maps)


# -- explain_dataset ------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["binary", "two_outputs", "held"])
def test_explain_dataset_equals_explain_for_every_model_form(form, request, images, tmp_path):
    if form == "binary":
        model, kw = request.getfixturevalue("binary"), {"targets": 0}
    elif form == "two_outputs":
        model, kw = request.getfixturevalue("two_outputs")[0], {"output": "box", "head": "linear"}
    else:
        model, kw = request.getfixturevalue("held"), {"inputs": {"meta": _meta(1)}}
    ds = tf.data.Dataset.from_tensor_slices(images).batch(2)
    for method in ("gradcam", "saliency"):
        run = explain_dataset(
            model, ds, method, out=tmp_path / f"{form}-{method}", batch_size=3, summary=False,
            progress=False, **kw,
        )  # fmt: skip
        want = explain(model, images, method, **kw)
        np.testing.assert_allclose(np.stack(list(run.maps)), want.maps, atol=1e-3)  # float16
        scores = [r["score"] for r in run.index]
        np.testing.assert_allclose(scores, want.scores, atol=1e-5)


def test_explain_dataset_refuses_per_image_held_rows(held, images, tmp_path):
    with pytest.raises(InputError, match="one row for every image"):
        explain_dataset(
            held, images, out=tmp_path / "x", inputs={"meta": _meta(len(images))}, progress=False
        )


# -- the callback ---------------------------------------------------------------------------
def test_callback_explains_the_model_form_it_is_given(held, images, tmp_path):
    callback = ExplainCallback(
        images[:2], ("gradcam",), log_dir=tmp_path / "logs", inputs={"meta": _meta(1)}
    )
    callback.set_model(held)
    callback.on_epoch_end(0)
    callback.on_train_end()
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))
    bare = ExplainCallback(images[:2], ("gradcam",), log_dir=tmp_path / "bare")
    bare.set_model(held)
    with pytest.raises(InputError, match="'image'.*'meta'"):
        bare.on_epoch_end(0)
    with pytest.raises(InputError, match=r"unknown argument\(s\) outputs"):
        ExplainCallback(images, outputs="cls")


# -- the contract: every method x every model form x tf.data input ----------------------------
def _gap(out_units: int, activation: str | None, name: str) -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    return keras.Model(inp, L.Dense(out_units, activation=activation, name=name)(_trunk(inp)))


def _nested() -> keras.Model:
    inner = _gap(3, "softmax", "inner_cls")
    inp = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inp, inner(L.Rescaling(1.0)(inp)), name="nested")


def _score(outputs):  # one number per image from a multi-output model: a user's score
    return outputs["box"][:, 0] - outputs["box"][:, 1]


def _forms(two, held_model, binary_model) -> dict:
    """name -> (model, explain keywords, expected scores of the explained class)."""
    keras.utils.set_random_seed(5)
    multi, regression, nested = _gap(4, "sigmoid", "tags"), _gap(1, None, "value"), _nested()
    row = _meta(1)

    def top(p):
        return np.asarray(p).max(axis=1)

    def binary_top(x):
        p = binary_model(x).numpy()
        return top(np.c_[1 - p, p])

    return {
        "binary_sigmoid": (binary_model, {}, binary_top),
        "named_output": (two, {"output": "cls"}, lambda x: top(two(x)["cls"].numpy())),
        "linear_output": (
            two, {"output": "box", "head": "linear", "targets": 0}, lambda x: two(x)["box"][:, 0]
        ),
        "score_function": (two, {"score": _score}, lambda x: _score(two(x))),
        "held_input": (
            held_model, {"inputs": {"meta": row}},
            lambda x: top(held_model([x, np.repeat(row, len(x), 0)]).numpy()),
        ),
        "multi_label": (multi, {}, lambda x: top(multi(x).numpy())),
        "regression": (regression, {}, lambda x: regression(x)[:, 0]),
        "nested": (nested, {}, lambda x: top(nested(x).numpy())),
    }  # fmt: skip


@pytest.fixture(scope="module")
def forms(two_outputs, held, binary):
    return _forms(two_outputs[0], held, binary)


FORMS = [
    "binary_sigmoid", "named_output", "linear_output", "score_function", "held_input",
    "multi_label", "regression", "nested",
]  # fmt: skip


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("method", methods())
def test_every_method_takes_every_model_form_from_tf_data(form, method, forms, images):
    """A valid map of the explained score, or a one-line refusal naming why."""
    model, kwargs, expected = forms[form]
    ds = tf.data.Dataset.from_tensor_slices(images[:3]).batch(2)
    try:
        exp = explain(model, ds, method, batch_size=2, **kwargs, **FAST_OPTIONS.get(method, {}))
    except (InputError, LayerError) as err:  # e.g. 'cam' needs a GAP + dense head
        assert "\n" not in str(err) and len(str(err)) < 400
        return
    assert exp.maps.shape == (3, SIZE, SIZE) and np.isfinite(exp.maps).all()
    assert exp.maps.min() >= 0 and exp.maps.max() <= 1
    np.testing.assert_allclose(exp.scores, np.asarray(expected(images[:3])), atol=1e-5)


@pytest.mark.parametrize("method", methods())
def test_explain_dataset_equals_explain_for_every_method(
    method, gap_model, vit_model, images32, tmp_path
):
    options = FAST_OPTIONS.get(method, {})
    gap_model = model_for(method, gap_model, vit_model)  # the tiny ViT for transformer methods
    run = explain_dataset(
        gap_model, images32, method, out=tmp_path / "run", batch_size=2, summary=False,
        progress=False, **options,
    )  # fmt: skip
    want = explain(gap_model, images32, method, **options)
    np.testing.assert_allclose(np.stack(list(run.maps)), want.maps, atol=2e-3)  # float16
    assert [r["class"] for r in run.index] == want.targets.tolist()


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "saliency", "occlusion", "rise"])
def test_xla_compiled_kernels_give_the_same_maps(method, gap_model, images32):
    options = FAST_OPTIONS.get(method, {})
    plain = explain(gap_model, images32, method, **options)
    xla = explain(gap_model, images32, method, jit_compile=True, **options)
    assert xla.maps.shape == plain.maps.shape
    np.testing.assert_allclose(xla.maps, plain.maps, atol=1e-4)
    runner = Session(gap_model, jit_compile=True).runner
    assert runner.jit_compile and runner is not Session(gap_model).runner


def test_cli_explain_dataset_explains_the_named_output(two_outputs, images, tmp_path):
    from xai_keras.cli import main
    from xai_keras.scale import DatasetExplanation

    model, _ = two_outputs
    model.save(tmp_path / "two.keras")
    np.save(tmp_path / "images.npy", images)
    code = main([
        "explain-dataset", str(tmp_path / "images.npy"), "--model", str(tmp_path / "two.keras"),
        "--out", str(tmp_path / "run"), "--output", "box", "--head", "linear", "--targets", "0",
        "--quiet",
    ])  # fmt: skip
    assert code == 0
    run = DatasetExplanation.open(tmp_path / "run")
    want = explain(model, images, targets=0, output="box", head="linear")
    np.testing.assert_allclose(run.maps[:], want.maps, atol=2e-3)
    np.testing.assert_allclose([r["score"] for r in run.index], want.scores, atol=1e-5)


# -- sag ------------------------------------------------------------------------------------
FILL = 8.0  # a baseline far outside the images, so that hiding patches changes the scores


def _falling(probabilities, x):
    """The class whose probability the baseline lowers most (so a search has work to do)."""
    ratio = probabilities(np.full_like(x[None], FILL)) / probabilities(x[None])
    return int(np.argmin(ratio))


def _sag_checks(g, masked_probability, full_probability):
    """Roots are found, and each keeps the threshold by plain model calls on its masked image."""
    assert g.probability == pytest.approx(full_probability, abs=1e-5)
    assert g.roots, g.message
    for root in g.roots:
        kept = masked_probability(g.masked_image(root)[None]) / full_probability
        assert kept == pytest.approx(g.confidence(root), abs=1e-4) and kept >= g.threshold - 1e-4


def test_sag_takes_every_model_form(binary, two_outputs, held, images):
    x = images[0]

    def binary_probs(m):
        p = binary(m).numpy()[0, 0]
        return np.array([1 - p, p])

    t = _falling(binary_probs, x)
    g = sag(binary, x, target=t, threshold=0.9, baseline=FILL)
    _sag_checks(g, lambda m: binary_probs(m)[t], binary_probs(x[None])[t])

    model, _ = two_outputs

    def cls_probs(m):
        return model(m)["cls"].numpy()[0]

    t = _falling(cls_probs, x)
    g = sag(Session(model, output="cls"), x, target=t, threshold=0.9, baseline=FILL)
    _sag_checks(g, lambda m: cls_probs(m)[t], cls_probs(x[None])[t])

    row = _meta(1)

    def held_probs(m):
        return held([m, row]).numpy()[0]

    t = _falling(held_probs, x)
    g = sag(held, x, target=t, inputs={"meta": row}, threshold=0.9, baseline=FILL)
    _sag_checks(g, lambda m: held_probs(m)[t], held_probs(x[None])[t])
    with pytest.raises(InputError, match="'image'.*'meta'"):
        sag(held, x)


def test_a_method_made_by_create_runs_with_its_sessions_batch_size(gap_model, images32):
    from xai_keras.explainers import get_method

    x, t = tf.constant(images32), tf.constant([-1] * len(images32), tf.int32)
    for session in (gap_model, Session(gap_model, batch_size=3)):  # a model gets a default one
        method = get_method("scorecam").create(session)
        raw = method.attribute(x, t).raw
        want = explain(gap_model, images32, "scorecam").raw
        np.testing.assert_allclose(raw.numpy(), want, atol=1e-5)
    assert method.session.batch_size == 3


def test_no_front_end_sets_anything_on_the_users_model(images32):
    """Runners, kernels and held inputs live beside the model (a weak store), never on it,
    and the store does not keep a model alive."""
    import gc
    import weakref

    from xai_keras import Session, explain, sag
    from xai_keras.evaluate import deletion

    keras.utils.set_random_seed(1)  # a model of its own: the shared ones count their traces
    inp = keras.Input(images32.shape[1:])
    x = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, activation="relu", name="conv")(inp))
    own = keras.Model(inp, L.Dense(3, activation="softmax")(x))
    before = dict(own.__dict__)
    exp = explain(own, images32[:2], method=["gradcam", "saliency", "lrp", "deeplift"])
    deletion(Session(own), images32[:2], exp[0].maps, steps=4)
    sag(own, images32[0], grid=(2, 2))
    assert own.__dict__.keys() == before.keys()
    assert all(own.__dict__[k] is v for k, v in before.items())

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    explain(model, np.ones((1, 8, 8, 3), "float32"), method="saliency")
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None
