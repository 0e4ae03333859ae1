"""Structured attention graphs: roots checked by independent forward passes on trained models."""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from xai_keras import sag
from xai_keras.cli import main
from xai_keras.data import generate_shapes
from xai_keras.errors import InputError
from xai_keras.explainers.baselines import make_baseline
from xai_keras.explainers.sag import AUTO_BASELINES, SAG, PatchScorer, patch_index_map
from xai_keras.explainers.sag.search import PATCH_IG_STEPS, beam_search


def _independent_confidence(model, g: SAG, patches) -> float:
    """Target probability of the masked image from a plain model call, relative to the full."""
    masked = g.masked_image(patches)[None]
    p = model(masked, training=False).numpy()[0, g.target]
    full = model(g.image[None], training=False).numpy()[0, g.target]
    return float(p / full)


def _correct(trained_shapes, n: int = 8) -> list[int]:
    test = trained_shapes.splits.test_arrays
    predicted = trained_shapes.model.predict(test.images[:60], verbose=0).argmax(-1)
    return [i for i in range(60) if predicted[i] == test.labels[i]][:n]


def _graphs(trained_shapes, **options) -> list[tuple[int, SAG]]:
    images = trained_shapes.splits.test_arrays.images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # images without a sufficient small set
        return [
            (i, sag(trained_shapes.model, images[i], **options)) for i in _correct(trained_shapes)
        ]


@pytest.fixture(scope="module")
def graphs(trained_shapes):
    """The default search: each beam set extended by its 15 best-ranked patches."""
    return _graphs(trained_shapes)


@pytest.fixture(scope="module")
def exhaustive_graphs(trained_shapes):
    """The same images searched exhaustively (every patch extends every beam set)."""
    return _graphs(trained_shapes, candidates=None)


def test_roots_keep_the_confidence_and_are_minimal(trained_shapes, graphs):
    model = trained_shapes.model
    # A small region suffices for most images (a model may need more for some: then no root).
    assert sum(bool(g.roots) for _, g in graphs) >= 0.75 * len(graphs)
    for _, g in graphs:
        assert len(g.roots) <= 3
        for root in g.roots:
            conf = _independent_confidence(model, g, root)
            assert conf >= g.threshold - 1e-4
            assert conf == pytest.approx(g.confidence(root), abs=1e-4)
            for p in root:  # removing any one patch drops it below the threshold
                rest = tuple(q for q in root if q != p)
                assert _independent_confidence(model, g, rest) < g.threshold


def test_roots_are_diverse(graphs):
    for _, g in graphs:
        for i, a in enumerate(g.roots):
            for b in g.roots[i + 1 :]:
                assert len(set(a) & set(b)) <= 0.5 * min(len(a), len(b))


def test_roots_lie_on_the_object(trained_shapes, graphs):
    masks = trained_shapes.splits.test_arrays.masks
    index = patch_index_map(64, 64, (7, 7))
    on_object = []
    for i, g in graphs:
        object_patches = set(np.unique(index[masks[i]]).tolist())
        on_object += [p in object_patches for root in g.roots for p in root]
    print(f"root patches on the object: {np.mean(on_object):.3f}")
    assert np.mean(on_object) > 0.8


def test_shortcut_model_roots_contain_the_cue(shortcut_shapes):
    """A model trained with the class-linked corner marker is explained by the marker's patch."""
    s = generate_shapes(10, seed=77, spurious_cue=True, cue_strength=1.0)
    index = patch_index_map(64, 64, (7, 7))
    hits = []
    for i in range(10):
        g = sag(shortcut_shapes.model, s.images[i])
        cue = set(np.unique(index[s.cue_masks[i]]).tolist())
        hits.append(any(cue & set(root) for root in g.roots))
    print(f"graphs with the cue in a root: {np.mean(hits):.2f}")
    assert np.mean(hits) >= 0.8


def test_masked_image_is_what_it_says(trained_shapes, graphs):
    _, g = next((i, g) for i, g in graphs if g.roots)
    root = g.roots[0]
    masked = g.masked_image(root)
    keep = np.isin(patch_index_map(64, 64, g.grid), root)
    blurred = make_baseline(tf.constant(g.image[None]), "blur").numpy()[0]
    np.testing.assert_allclose(masked[keep], g.image[keep], atol=1e-6)
    np.testing.assert_allclose(masked[~keep], blurred[~keep], atol=1e-6)


def test_every_set_scored_once_with_bounded_traces(graphs):
    for _, g in graphs:
        # the full image was scored first; the ranking differentiated 16 images
        assert g.n_forward == len(g.scorer.cache) - 1 + g.scorer.n_gradient
        searched = list(g.baselines_tried.values())[-1] < g.threshold
        assert g.scorer.n_gradient == (PATCH_IG_STEPS if searched else 0)
        # One trace per padded batch size (powers of two up to 64), shared by every image.
        assert g.scorer._kernel.experimental_get_tracing_count() <= 7
        assert g.n_forward <= 15 * 5 * 49 + 500  # beam bound plus minimisation and graph


def test_graph_structure_and_round_trip(graphs):
    _, g = next((i, g) for i, g in graphs if g.roots)
    depth0 = [v["patches"] for v in g.nodes.values() if v["depth"] == 0]
    assert sorted(depth0) == sorted(g.roots)
    for a, b in g.edges:
        pa, pb = set(g.nodes[a]["patches"]), set(g.nodes[b]["patches"])
        assert pb < pa and len(pa - pb) == 1
    patch_sets = [v["patches"] for v in g.nodes.values()]
    assert len(patch_sets) == len(set(patch_sets))  # shared subsets are merged
    data = json.loads(json.dumps(g.to_dict()))
    back = SAG.from_dict(data, image=g.image)
    assert back.roots == g.roots and back.edges == g.edges and back.nodes == g.nodes
    assert back.confidence(g.roots[0]) == pytest.approx(g.confidence(g.roots[0]))
    dot = g.to_dot()
    assert dot.startswith("digraph") and dot.count("->") == len(g.edges)


# -- edge cases ------------------------------------------------------------------------------------
def test_unconfident_image_gives_an_empty_graph(gap_model, images32, tmp_path):
    with pytest.warns(RuntimeWarning, match="not confident"):
        g = sag(gap_model, images32[0], threshold=0.99, relative=False, grid=(4, 4))
    assert g.roots == [] and g.nodes == {} and "No set" in g.message
    assert g.save(tmp_path / "empty.png").is_file()


def test_grids_that_do_not_divide_and_small_images(gap_model, images32):
    index = patch_index_map(32, 32, (5, 7))
    assert set(np.unique(index)) == set(range(35))
    g = sag(gap_model, images32[1], grid=(5, 7), max_roots=1)
    assert len(g.roots) <= 1
    full = tuple(range(35))
    np.testing.assert_allclose(g.masked_image(full), images32[1], atol=1e-6)
    keras.utils.set_random_seed(0)
    tiny = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    sag(tiny, np.random.default_rng(0).uniform(size=(6, 6, 1)), grid=(6, 6))
    with pytest.raises(InputError, match="grid"):
        sag(tiny, np.zeros((6, 6, 1)), grid=(7, 7))


def test_bad_arguments(gap_model, images32):
    with pytest.raises(InputError, match="one image at a time"):
        sag(gap_model, images32[:2])
    with pytest.raises(InputError, match="threshold"):
        sag(gap_model, images32[0], threshold=0)
    with pytest.raises(InputError, match=r"\[0, 3\]"):
        sag(gap_model, images32[0], target=9)


def test_cli_sag_and_tensorboard(trained_shapes, tmp_path, capsys):
    import cv2

    image = trained_shapes.splits.test_arrays.images[0]
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.round(image[..., ::-1] * 255).astype(np.uint8))
    out, logs = tmp_path / "sag.png", tmp_path / "tb"
    code = main(
        [
            "sag",
            "--model",
            str(trained_shapes.model_path),
            "--image",
            str(path),
            "--out",
            str(out),
            "--logdir",
            str(logs),
        ]
    )
    assert code == 0 and out.is_file() and out.with_suffix(".json").is_file()
    assert "root" in capsys.readouterr().out
    tags = set()
    for f in logs.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags.update(v.tag for v in event.summary.value)
    assert {"sag/graph", "sag/info"} <= tags


def test_baseline_alone_sufficient_is_reported(images32):
    """A model that ignores the image keeps its confidence with no patch at all: say so, and
    never advise the baseline that was just tried."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="zeros")(x))
    with pytest.warns(RuntimeWarning, match="baseline alone") as caught:
        g = sag(model, images32[0], grid=(4, 4), baseline="black")
    advice = str(caught[0].message).split("Try", 1)[1]
    assert "'black'" not in advice and "'mean'" in advice
    assert g.roots == [] and g.n_forward == 1 and g.baseline == "black"
    assert g.probability == pytest.approx(1 / 3)  # logits (no softmax layer) are squashed
    with pytest.warns(RuntimeWarning, match="No baseline removes the evidence.*finding about"):
        g = sag(model, images32[0], grid=(4, 4))
    assert list(g.baselines_tried) == list(AUTO_BASELINES) and g.n_forward == 4
    assert all(v == pytest.approx(1.0) for v in g.baselines_tried.values())


def test_auto_baseline_moves_past_a_blur_that_keeps_the_class():
    """A bright square on noise: a blur keeps the square's mean brightness, so the empty set
    is sufficient under it; "auto" moves on to a baseline that removes the square, and every
    root it returns keeps the threshold when re-scored by an independent model() call."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((28, 28, 1))
    # class 1 = "mean brightness is high": a blur cannot remove that, black can
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(
        2,
        kernel_initializer=keras.initializers.Constant([[-40.0, 40.0]]),
        bias_initializer=keras.initializers.Constant([6.0, -6.0]),
    )(mean)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    image = rng.uniform(0, 0.1, (28, 28, 1)).astype(np.float32)
    image[8:20, 8:20] = 1.0
    g = sag(model, image, grid=(4, 4), threshold=0.9)
    assert g.baselines_tried["blur"] >= 0.9 and g.baseline != "blur"
    assert g.baselines_tried[g.baseline] < 0.9 and g.roots
    for root in g.roots:
        masked = g.masked_image(root)
        p = float(keras.ops.convert_to_numpy(model(masked[None]))[0, g.target])
        assert p / g.probability >= g.threshold - 1e-4


def test_ranked_candidates_bound_the_search(trained_shapes, exhaustive_graphs):
    """Ranking by Grad-CAM and extending by 12 patches costs fewer masked passes than the
    exhaustive search, and the roots found still keep the confidence."""
    i, full = next((i, g) for i, g in exhaustive_graphs if g.roots)
    image = trained_shapes.splits.test_arrays.images[i]
    g = sag(trained_shapes.model, image, rank_by="gradcam", candidates=12)
    assert g.n_forward < full.n_forward / 2
    for root in g.roots:
        assert _independent_confidence(trained_shapes.model, g, root) >= g.threshold - 1e-4


def test_ranked_search_finds_the_exhaustive_roots_at_a_quarter_of_the_cost(
    graphs, exhaustive_graphs
):
    """The default (10 ranked candidates per beam set) against candidates=None on the same
    images: at most 250 masked passes per image on average (the exhaustive search needs about
    1,000), roots on as many images, and the smallest root as small within half a patch."""
    ranked = [g for _, g in graphs]
    full = [g for _, g in exhaustive_graphs]
    cost, full_cost = np.mean([g.n_forward for g in ranked]), np.mean([g.n_forward for g in full])
    print(f"masked passes per image: ranked {cost:.0f}, exhaustive {full_cost:.0f}")
    assert cost <= 250 and full_cost > 3 * cost
    for g in ranked:  # the search bound with 10 candidates, the ranking, minimisation, graph
        assert g.n_forward <= 15 * 5 * 10 + PATCH_IG_STEPS + 300
    both = [(g, f) for g, f in zip(ranked, full) if g.roots and f.roots]
    assert len(both) >= sum(bool(f.roots) for f in full) - 1
    smallest = np.mean([min(map(len, g.roots)) - min(map(len, f.roots)) for g, f in both])
    assert abs(smallest) <= 0.5


def _old_beam_search(score, threshold, beam_width, max_size, extra_sizes, max_found, n):
    """The exhaustive search as it was before ranked candidates, for comparison."""
    found, beam, last = [], [()], max_size
    for size in range(1, max_size + 1):
        if size > last or len(found) >= max_found:
            break
        grown = list(
            dict.fromkeys(tuple(sorted((*s, p))) for s in beam for p in range(n) if p not in s)
        )
        if not grown:
            break
        conf = score(grown)
        order = np.argsort(-conf, kind="stable")
        hits = [grown[i] for i in order if conf[i] >= threshold]
        if hits and not found:
            last = min(max_size, size + extra_sizes)
        found += hits
        beam = [grown[i] for i in order if conf[i] < threshold][:beam_width]
        if not beam:
            break
    return found


def _toy_score(weights, calls):
    """A set's confidence: the saturating sum of its patches' weights; records each call."""

    def score(sets):
        calls.append(list(sets))
        return np.array([1 - np.exp(-sum(weights[p] for p in s)) for s in sets])

    return score


def test_candidates_none_is_the_old_exhaustive_search():
    weights = np.random.default_rng(3).exponential(0.3, 20)
    old_calls, new_calls, all_calls = [], [], []
    old = _old_beam_search(_toy_score(weights, old_calls), 0.9, 5, 8, 2, 12, 20)
    new = beam_search(_toy_score(weights, new_calls), 0.9, 5, 8, list(range(20)), None, 2, 12)
    every = beam_search(_toy_score(weights, all_calls), 0.9, 5, 8, list(range(20)), 20, 2, 12)
    assert old and new == old and every == old
    assert new_calls == old_calls and all_calls == old_calls  # the same sets, in the same order


def test_each_beam_set_gets_its_own_best_candidates():
    """Every set grown at a size is a beam set plus one of the first 4 patches of the ranking
    that set lacks, so sets holding the top patches still reach patches further down."""
    weights = np.random.default_rng(4).exponential(0.2, 16)
    order = [int(p) for p in np.argsort(-weights)]
    calls = []
    beam_search(_toy_score(weights, calls), 0.99, 3, 6, order, 4, 0, 100)
    assert len(calls[0]) == 4 and {s[0] for s in calls[0]} == set(order[:4])
    reached = set()
    for grown in calls[1:]:
        for s in grown:
            # each set extends one of its subsets by a top-4 patch that subset lacks
            assert any(p in [q for q in order if q not in set(s) - {p}][:4] for p in s)
            reached.update(s)
    assert not reached <= set(order[:4])  # the search went past the first 4 patches


def test_patch_gradients_match_a_hand_computed_linear_model():
    """For mean pooling and a dense layer, the gradient of the logit with respect to a
    patch's keep weight is w * (sum of image - baseline over the patch) / pixels."""
    image = np.random.default_rng(5).uniform(size=(6, 6, 1)).astype(np.float32)
    inputs = keras.Input((6, 6, 1))
    w = np.array([[2.0, -3.0]], np.float32)
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant(w))
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    scorer = PatchScorer(model, image, 1, (2, 3), baseline="black")
    grads = scorer.patch_gradients(np.ones((1, 6)))[0]
    index = patch_index_map(6, 6, (2, 3))
    expected = [-3.0 * image[index == p].sum() / 36 for p in range(6)]
    np.testing.assert_allclose(grads, expected, rtol=1e-5)
    assert scorer.n_gradient == 1 and scorer.n_forward == 0


def test_bad_ranking_arguments(gap_model, images32):
    with pytest.raises(InputError, match="`candidates` argument must be a positive int"):
        sag(gap_model, images32[0], candidates=0)
    with pytest.raises(InputError, match="`rank_by` argument must be 'patch_ig' or a method name"):
        sag(gap_model, images32[0], rank_by="nope")


def test_the_picture_labels_do_not_overlap(graphs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _, g = max(graphs, key=lambda item: len(item[1].nodes))
    rows = {}
    for node in g.nodes.values():
        rows[len(node["patches"])] = rows.get(len(node["patches"]), 0) + 1
    assert max(rows.values()) >= 3  # a row where neighbours' labels could meet
    fig = g.plot()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    texts = [t for t in fig.axes[1].texts if t.get_text()]  # arrows are empty annotations
    assert len(texts) == len(g.nodes) + len(g.roots)  # one label per node, a name per root
    boxes = [t.get_window_extent(canvas.get_renderer()) for t in texts]
    overlapping = [
        (texts[i].get_text(), texts[j].get_text())
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]
    assert not overlapping


def test_notebooks_display_a_sag_as_its_picture(gap_model, images32):
    g = sag(gap_model, images32[0], grid=(3, 3), max_roots=1)
    assert g._repr_png_().startswith(b"\x89PNG")


def test_one_auto_removal_rule_for_sag_and_the_curves():
    from xai_keras.explainers.baselines import auto_removal

    kept = np.array([[0.9, 0.3, 0.8], [0.4, 0.2, 0.7], [0.1, 0.1, 0.9]])  # (baselines, images)
    # first baseline under the limit, else the lowest: per column
    assert auto_removal(kept, 0.5).tolist() == [1, 0, 1]
    assert auto_removal(kept, np.array([0.05, 0.35, 0.75])).tolist() == [2, 0, 1]
    assert int(auto_removal([0.97, 0.95, 0.99], 0.9)) == 1  # SAG: none removes, least kept
