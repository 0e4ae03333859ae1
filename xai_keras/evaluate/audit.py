"""`audit`: which explanation can I trust for my model? One self-contained HTML report.

It runs every method on the user's images with the metrics that apply, each with its evidence:

- faithfulness: deletion and insertion AUC with a paired Wilcoxon test against random maps
  (`evaluate_model`), plus the opt-in Faithfulness Correlation, IROF and Region Perturbation;
- the model-randomisation sanity check (a map that survives random weights explains the image,
  not the model);
- complexity (Sparseness), to read beside faithfulness;
- shortcut flags: per class, whether the maps peak at the same spot in most images (objects
  move between images; a planted marker or a watermark does not);

then ranks the methods (trustworthy first: beats random on deletion and insertion and passes the
sanity check; then by the mean rank over the faithfulness metrics) and writes a report with the
ranked table, example pictures per class, the sanity and shortcut findings and the settings.
"""

from __future__ import annotations

import base64
import html
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from xai_keras.evaluate.localisation import peak_positions
from xai_keras.evaluate.registry import get_metric
from xai_keras.evaluate.scoring import evaluate_model
from xai_keras.evaluate.user_data import read_user_data
from xai_keras.explainers.base import get_method
from xai_keras.explainers.session import Session
from xai_keras.io import write_text
from xai_keras.visualize import overlay, to_display

__all__ = ["AUDIT_METHODS", "AUDIT_METRICS", "AuditResult", "audit", "shortcut_flags"]

AUDIT_METHODS = (
    "gradcam",
    "gradcam++",
    "layercam",
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
    "rise",
    "random",
    "centre",
)
AUDIT_METRICS = ("faithfulness_correlation", "irof", "region_perturbation", "sparseness")
# The settings of the costliest methods, used for the scored (and pictured) maps and the
# metrics that explain again alike, and stated in the report's settings. RISE keeps its 2000
# masks: with 500 (a quarter of RISE's forward passes, RISE being about half of the audit's
# time on the fer model) its maps there beat random more clearly but fail the sanity check
# (Spearman 0.59 against 0.35 with 2000), so the verdict would change with the setting.
AUDIT_OPTIONS = {
    "smoothgrad": {"samples": 16},
    "integrated_gradients": {"steps": 32},
    "rise": {"masks": 2000},
    "occlusion": {},
}
FAITHFULNESS_KEYS = ("deletion_auc", "insertion_auc", "faithfulness_correlation", "irof",
                     "region_aopc")  # fmt: skip
SANITY_LIMIT = 0.5  # |Spearman| of maps before and after randomising every layer


@dataclass
class AuditResult:
    """What `audit` found; `path` is the written report."""

    path: Path
    ranking: list[str]
    rows: dict[str, dict[str, Any]]
    flags: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)


def shortcut_flags(
    maps: np.ndarray, classes: np.ndarray, share: float = 0.7, radius: float = 0.1,
    min_images: int = 3,
) -> list[dict[str, Any]]:  # fmt: skip
    """Classes whose maps peak at one spot in at least `share` of their images.

    For each class with at least `min_images` images, the spot is the peak of the class's mean
    map; an image agrees when its own peak (`peak_positions`) lies within `radius` times the
    image side of it. Objects move between photos, so a fixed spot is what a planted marker,
    a watermark or a border artefact looks like.

    Returns:
        One dict per flagged class: `class`, `share` (images agreeing), `images`, `spot`
        (row, col) and `border` (the spot lies in the outer 15% of the image).
    """
    h, w = maps.shape[1:]
    flags = []
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        if len(idx) < min_images:
            continue
        spot = peak_positions(maps[idx].mean(axis=0, keepdims=True))[0]
        peaks = peak_positions(maps[idx])
        near = np.hypot(*(peaks - spot).T) <= radius * max(h, w)
        if near.mean() >= share:
            r, col = int(spot[0]), int(spot[1])
            border = min(r, col, h - 1 - r, w - 1 - col) < 0.15 * min(h, w)
            flags.append({"class": int(c), "share": float(near.mean()), "images": len(idx),
                          "spot": (r, col), "border": bool(border)})  # fmt: skip
    return flags


def _png(image: np.ndarray, scale: int) -> str:
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    ok, data = cv2.imencode(".png", big[..., ::-1])
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode()


def _rank(rows: dict[str, dict], names: list[str]) -> list[str]:
    """Trustworthy methods first, then by the mean rank over the faithfulness metrics."""
    scored = [m for m in names if get_method(m).family != "baseline"]
    ranks = {m: [] for m in scored}
    for key in FAITHFULNESS_KEYS:
        have = [m for m in scored if rows[m].get(key) is not None and np.isfinite(rows[m][key])]
        if len(have) < 2:
            continue
        higher = key != "deletion_auc"
        order = sorted(have, key=lambda m: -rows[m][key] if higher else rows[m][key])
        for r, m in enumerate(order):
            ranks[m].append(r + 1)
    for m in scored:
        rows[m]["mean_rank"] = float(np.mean(ranks[m])) if ranks[m] else float("nan")
        sanity = rows[m].get("sanity_spearman")
        rows[m]["passes_sanity"] = None if sanity is None else bool(abs(sanity) < SANITY_LIMIT)
        passes = rows[m]["passes_sanity"] is not False  # None: not checked
        rows[m]["trustworthy"] = bool(rows[m].get("beats_random")) and passes
    return sorted(scored, key=lambda m: (not rows[m]["trustworthy"], rows[m]["mean_rank"]))


def audit(
    model: keras.Model | Session,
    data: Any,
    out: str | Path = "audit.html",
    methods: Sequence[str] = AUDIT_METHODS,
    metrics: Sequence[str] = AUDIT_METRICS,
    n: int = 64,
    n_sanity: int = 4,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    value_range: Any = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    **model_form: Any,
) -> AuditResult:
    """Run every method on your images with the metrics that apply and write one HTML report.

    Args:
        model: a Keras classifier or a `Session` (every model form `explain` takes).
        data: images, `(images, labels)`, `(images, labels, masks)` or a `tf.data.Dataset`,
            as `evaluate_model` reads them; preprocessed as the model expects.
        out: the report's path (written to a temporary name, then renamed).
        methods: methods to audit; "random" and "centre" are the references.
        metrics: opt-in metrics added to `evaluate_model`'s (see `metrics(default=False)`).
        n: images used (the first n).
        n_sanity: images for the model-randomisation check (0 skips it).
        class_names: names of the classes, for the report.
        batch_size: images per compiled batch.
        value_range: the model's input range, e.g. (-1, 1).
        method_options: `{method: {option: value}}` instead of `AUDIT_OPTIONS` (RISE 2000
            masks, SmoothGrad 16 samples, IG 32 steps), e.g. `{"rise": {"masks": 500}}` for
            a 4x cheaper RISE (stated in the report; it changes RISE's sanity verdict on fer).
        **model_form: `output`, `head`, `score`, `inputs`, `reshape`, as in `explain`.

    Returns:
        An `AuditResult`: the ranking, each method's row, the shortcut flags, the report's path.

    Example:
        >>> result = audit(model, (x_val, y_val), "audit.html", class_names=names)
        >>> result.ranking[0]

    Reference: the metrics' own papers (see `xai_keras.evaluate.get_metric(name).reference`).
    """
    start = time.perf_counter()
    session = Session.of(model, batch_size=batch_size, value_range=value_range, **model_form)
    names = [get_method(m).name for m in methods]
    for m in metrics:
        get_metric(m)
    options = AUDIT_OPTIONS if method_options is None else method_options
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_model(session, data, names, n=n, n_sanity=n_sanity,
                                batch_size=batch_size, metrics=list(metrics),
                                method_options=options, keep_explanations=True)  # fmt: skip
    rows = result["methods"]
    ranking = _rank(rows, names)
    images, labels, _ = read_user_data(data, session, n)
    pictured = ranking[:3]
    exps = {m: result.explanations[m] for m in pictured}  # the maps that were scored
    top = exps[ranking[0]] if ranking else None
    flags = shortcut_flags(top.maps, top.targets) if top is not None else []
    names_of = list(class_names) if class_names is not None else None
    settings = {
        "images": result["n"], "accuracy": result["accuracy"], "methods": names,
        "metrics (opt-in, besides deletion/insertion/average drop/ROAD)": list(metrics),
        "method options (scored and pictured)": {m: options[m] for m in names if m in options},
        "sanity images": n_sanity, "batch size": batch_size,
        "value range": str(session.value_range), "seconds": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    report = _html(rows, ranking, flags, exps, pictured, images, names_of, settings)
    path = write_text(out, report)
    return AuditResult(Path(path), ranking, rows, flags, settings)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "<b>no</b>"
    if isinstance(v, float):
        return f"{v:.2e}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"
    return html.escape(str(v))


def _html(rows, ranking, flags, exps, pictured, images, class_names, settings) -> str:
    def cname(c):
        return class_names[c] if class_names and c < len(class_names) else f"class {c}"

    cols = [("trustworthy", "trustworthy"), ("beats_random", "beats random"),
            ("p_deletion", "p deletion"), ("p_insertion", "p insertion"),
            ("passes_sanity", "passes sanity"), ("sanity_spearman", "sanity Spearman"),
            ("deletion_auc", "deletion AUC ↓"), ("insertion_auc", "insertion AUC ↑"),
            ("faithfulness_correlation", "faithfulness corr. ↑"), ("irof", "IROF ↑"),
            ("region_aopc", "region AOPC ↑"), ("road_morf", "ROAD MoRF ↓"),
            ("sparseness", "sparseness ↑"), ("mean_rank", "mean rank"),
            ("ms_per_image", "ms / image")]  # fmt: skip
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>xai-keras audit</title>",
           "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
           "table{border-collapse:collapse;margin:1em 0}"
           "td,th{border:1px solid #ccc;white-space:nowrap;"
           "padding:4px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}"
           "td:nth-child(2){text-align:left}.wide{overflow-x:auto}th{font-size:12px}"
           ".flag{color:#b00;font-weight:bold}img{margin:2px}figure{display:inline-block;"
           "margin:4px;text-align:center;font-size:12px}</style></head><body>",
           "<h1>Which explanation can I trust for this model?</h1>"]  # fmt: skip
    trusted = [m for m in ranking if rows[m]["trustworthy"]]
    out.append(
        f"<p id='verdict'>Trustworthy on this model: <b>{html.escape(', '.join(trusted)) or 'none'}"
        "</b> (beats random maps on deletion and insertion, p &lt; 0.01, and changes when the "
        "weights are randomised). Ranked by the mean rank over the faithfulness metrics.</p>"
    )
    out.append("<h2>Ranked methods</h2><div class='wide'><table id='ranking'><tr><th>#</th>"
               "<th>method</th>"
               + "".join(f"<th>{t}</th>" for _, t in cols) + "</tr>")  # fmt: skip
    refs = [m for m in rows if m not in ranking]
    for i, m in enumerate(ranking + refs):
        num = str(i + 1) if m in ranking else "ref."
        cells = "".join(f"<td>{_fmt(rows[m].get(k))}</td>" for k, _ in cols)
        out.append(f"<tr><td>{num}</td><td>{html.escape(m)}</td>{cells}</tr>")
    out.append("</table></div>")
    out.append("<h2>Shortcut flags</h2>")
    if flags:
        out.append("<ul id='flags'>")
        for f in flags:
            where = "on the image border" if f["border"] else "at one spot"
            out.append(
                f"<li class='flag'>{html.escape(cname(f['class']))}: the maps of "
                f"{html.escape(ranking[0])} peak {where} (row {f['spot'][0]}, column "
                f"{f['spot'][1]}) in {f['share']:.0%} of its {f['images']} images: the model "
                + (
                    "may read a fixed marker rather than the object.</li>"
                    if f["border"]
                    else "a shortcut if that spot is not on the object (aligned images, such as "
                    "cropped faces, put one feature at one spot legitimately).</li>"
                )
            )
        out.append("</ul>")
    else:
        out.append("<p id='flags'>No class whose maps peak at one fixed spot.</p>")
    out.append("<h2>Sanity check (model-parameter randomisation)</h2><table id='sanity'>"
               "<tr><th>method</th><th>Spearman</th><th>SSIM</th><th>passes</th></tr>")  # fmt: skip
    for m in ranking:
        r = rows[m]
        out.append(f"<tr><td>{html.escape(m)}</td><td>{_fmt(r.get('sanity_spearman'))}</td>"
                   f"<td>{_fmt(r.get('sanity_ssim'))}</td><td>{_fmt(r.get('passes_sanity'))}"
                   "</td></tr>")  # fmt: skip
    out.append("</table><h2>Examples per class</h2>")
    first = next(iter(exps.values()))
    shown = to_display(images)
    scale = max(1, 128 // images.shape[1])
    for c in list(dict.fromkeys(first.targets.tolist()))[:10]:
        i = int(np.nonzero(first.targets == c)[0][0])
        out.append(f"<div class='example'><h3>{html.escape(cname(c))} (image {i})</h3>")
        out.append(f"<figure><img src='{_png(shown[i], scale)}'><figcaption>image</figcaption>"
                   "</figure>")  # fmt: skip
        for m in pictured:
            pic = overlay(images[i : i + 1], exps[m].maps[i : i + 1])[0]
            out.append(f"<figure><img src='{_png(pic, scale)}'><figcaption>{html.escape(m)}"
                       "</figcaption></figure>")  # fmt: skip
        out.append("</div>")
    out.append("<h2>Settings</h2><table id='settings'>")
    for k, v in settings.items():
        out.append(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>")
    out.append("</table><p>Metrics and their papers: "
               + "; ".join(f"{html.escape(n)}: {html.escape(get_metric(n).reference)}"
                           for n in ("deletion", "faithfulness_correlation", "irof",
                                     "region_perturbation", "sanity_spearman", "sparseness"))
               + ".</p></body></html>")  # fmt: skip
    return "\n".join(out)
