"""What the pictures show: legible titles, a colour bar, overlays that keep the background,
reference maps marked, true labels, SAG numbers with enough digits and named roots."""

from __future__ import annotations

import numpy as np

from xai_keras import explain, sag
from xai_keras.explainers import contact_sheet
from xai_keras.visualize import overlay


def _texts(fig) -> list[str]:
    found = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        found += [ax.get_title(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
    return found


def test_an_overlay_leaves_unimportant_pixels_as_they_are():
    image = np.full((1, 8, 8, 3), 200, np.uint8)
    maps = np.zeros((1, 8, 8), np.float32)
    maps[0, :2] = 1.0
    out = overlay(image, maps)
    assert (out[0, 4:] == 200).all()  # map 0: the image, not tinted navy
    assert not (out[0, :2] == 200).all()


def test_contact_sheet_marks_references_shows_true_labels_and_a_colour_bar(gap_model, images32):
    names = ["cat", "dog", "owl", "eel"]
    exps = [
        explain(gap_model, images32[:2], method=m, class_names=names)
        for m in ("gradcam", "integrated_gradients", "random")
    ]
    fig = contact_sheet(exps, labels=np.array([2, 3]))
    texts = _texts(fig)
    assert any(t.startswith("pred ") and t.endswith("\ntrue owl") for t in texts)
    assert "random\n(reference)" in texts and "integrated_\ngradients" in texts
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert min(t.get_fontsize() for t in titles) >= 11  # legible when the sheet is scaled down
    # Both kinds of map on one sheet: both colour bars.
    assert "importance (1: most important)" in texts
    assert "red: for the class, blue: against" in texts


def test_signed_maps_get_a_signed_colour_bar_and_unsigned_ones_do_not(gap_model, images32):
    signed = _texts(explain(gap_model, images32[:2], method="integrated_gradients").plot())
    assert "red: for the class, blue: against" in signed
    assert not any("most important" in t for t in signed)
    fig = explain(gap_model, images32[:2], method="lrp").plot()
    bar = next(ax for ax in fig.axes if ax.get_ylabel().startswith("red"))
    assert [t.get_text() for t in bar.get_yticklabels()] == ["against", "0", "for"]
    unsigned = _texts(explain(gap_model, images32[:2], method="gradcam").plot())
    assert "importance (1: most important)" in unsigned
    assert not any(t.startswith("red") for t in unsigned)


def test_sag_pictures_print_three_digits_and_name_their_roots(gap_model, images32):
    g = sag(gap_model, images32[0], grid=(3, 3), baseline="black", max_roots=2)
    assert g.roots
    texts = _texts(g.plot())
    value = f"{g.confidence(g.roots[0]):.3f}"
    assert any(t.startswith(value) for t in texts), texts
    assert "root 1" in texts
