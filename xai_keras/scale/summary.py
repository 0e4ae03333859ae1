"""What a whole-dataset explanation says at a glance: per-class mean maps, the images explained
worst, and a shortcut finder (how often maps peak in the border or a corner).

The border test needs no object masks: objects rarely sit at the very edge, while watermarks,
scanner tags, rulers and planted markers usually do, so a class whose maps often peak there is
worth a look. It is computed per class, against the share a uniformly placed peak would have.
Everything is streamed shard by shard, so summarising costs constant memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib.figure import Figure

from xai_keras.evaluate.registry import get_metric, metrics
from xai_keras.io import figure_to_png, write_bytes, write_json, write_text
from xai_keras.scale.metrics import border_masks, uniform_shares


class ExplainedDataset(Protocol):
    """What a summary reads of `xai_keras.scale.store.DatasetExplanation` (which imports this
    module, so this one names only the attributes it reads, not the class)."""

    method: str
    layer: str | None
    complete: bool
    border: float
    skipped: list[dict]
    metrics: list[str]
    maps: Any  # ShardedMaps: .shard(k)["maps"]

    @property
    def target_setting(self) -> Any: ...

    def __len__(self) -> int: ...

    def iter_records(self) -> Iterator[list[dict]]: ...

    def class_name(self, c: int) -> str: ...

__all__ = ["summarize"]


def _threshold(uniform_border_share: float) -> float:
    """A class is flagged when its maps peak in the band at least this often: halfway between
    chance (a peak placed uniformly at random) and always, and at least half the time."""
    return max(0.5, (1.0 + uniform_border_share) / 2)


def _criterion(result: ExplainedDataset) -> tuple[str, str, str]:
    """(record key, description, sign): the worst images have the largest sign * value. The
    first metric of the run in registry order decides (deletion before insertion)."""
    for name in metrics():
        if name in result.metrics:
            m = get_metric(name)
            worst, sign = ("lowest", "-") if m.higher_is_better else ("highest", "+")
            return m.key, f"{worst} {m.label} (least faithful maps)", sign
    return "score", "lowest score of the explained class (faithfulness not computed)", "-"


def _plot_maps(
    maps: list[np.ndarray], titles: list[str], border: float | None, columns: int = 5
) -> Figure:
    rows = max(1, -(-len(maps) // columns))
    cols = max(1, min(columns, len(maps)))
    fig = Figure(figsize=(2.4 * cols, 2.5 * rows))
    for i, (m, title) in enumerate(zip(maps, titles)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(m, cmap="jet", vmin=0, vmax=max(float(m.max()), 1e-12))
        if border is not None:  # outline the border band
            band, _ = border_masks(m.shape[0], m.shape[1], border)
            ax.contour(band, levels=[0.5], colors="white", linewidths=0.8, linestyles="--")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _markdown(s: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    layer = f" @ `{s['layer']}`" if s["layer"] else ""
    lines = [
        f"# Dataset explanation: {s['method']}{layer}",
        "",
        f"{s['images']} images{'' if s['complete'] else ' (run incomplete)'}; "
        f"{s['empty_maps']} all-zero maps.",
    ]
    if s.get("skipped_files"):
        skipped = s["skipped_files"]
        lines.append(
            f"{len(skipped)} unreadable file(s) skipped (no map): "
            + "; ".join(f"{x['file']} ({x['error']})" for x in skipped[:20])
            + (f"; and {len(skipped) - 20} more (see index.jsonl)." if len(skipped) > 20 else ".")
        )
    if s.get("accuracy") is not None:
        lines.append(f"Top class equals the label for {pct(s['accuracy'])} of the images.")
    lines += [
        "",
        "## Shortcut finder: maps that peak in the border",
        "",
        f"The border band is the outer {pct(s['border'])} of each side. "
        f"**{pct(s['peak_in_border'])}** of the maps peak there and {pct(s['peak_in_corner'])} "
        f"in a corner; a peak placed uniformly at random would be there "
        f"{pct(s['uniform_border_share'])} / {pct(s['uniform_corner_share'])} of the time. "
        f"On average {pct(s['mean_border_share'])} of a map's mass lies in the band. "
        f"Classes whose maps peak in the band at least {pct(s['flag_threshold'])} of the time "
        "(halfway between chance and always) are flagged: look at their images for a "
        "watermark, tag, ruler or marker the model may rely on.",
        "",
        "| class | images | peak in border | peak in corner | mass in border | mean score | |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in s["per_class"]:
        flag = "**check**" if c["peak_in_border"] >= s["flag_threshold"] else ""
        lines.append(
            f"| {c['name']} | {c['images']} | {pct(c['peak_in_border'])} | "
            f"{pct(c['peak_in_corner'])} | {pct(c['mean_border_share'])} | "
            f"{c['mean_score']:.3f} | {flag} |"
        )
    flagged = ", ".join(s["flagged_classes"]) or "none"
    lines += ["", f"Flagged classes: {flagged}.", "", "![per-class mean maps](mean_maps.png)", ""]
    worst = s["worst"]
    lines += [
        f"## Images explained worst: {worst['criterion']}",
        "",
        "| position | class | score | peak | " + worst["key"].replace("_", " ") + " | file |",
        "|---|---|---|---|---|---|",
    ]
    for r in worst["images"]:
        lines.append(
            f"| {r['position']} | {r.get('class_name', r['class'])} | {r['score']:.4f} | "
            f"{r['peak_region']} ({r['peak_y']}, {r['peak_x']}) | {r[worst['key']]:.4f} | "
            f"{r.get('file', '')} |"
        )
    lines += ["", "![worst maps](worst_maps.png)", ""]
    return "\n".join(lines)


def summarize(
    result: ExplainedDataset,
    out: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    worst: int = 16,
) -> dict[str, Any]:
    """Summarise a dataset explanation; write it as Markdown, JSON and PNG and to TensorBoard.

    Args:
        result: what `explain_dataset` returned (or `DatasetExplanation.open(folder)`).
        out: folder for `summary.md`, `summary.json`, `mean_maps.png` and `worst_maps.png`
            (each written atomically); None writes nothing.
        log_dir: TensorBoard log folder for the figures (`explain_dataset/mean_maps`,
            `explain_dataset/worst_maps`) and the Markdown (`explain_dataset/summary`).
        worst: how many of the worst-explained images to list.

    Returns:
        The summary as a dict: overall and per-class border/corner peak shares (per explained
        class), the share a uniform peak would have, mean scores, the worst images and the
        criterion used to rank them (the deletion/insertion AUC when `explain_dataset`
        computed it, else the lowest score).
    """
    key, description, sign = _criterion(result)
    tally = _Tally(worst=worst)
    for k, records in enumerate(result.iter_records()):
        maps = result.maps.shard(k)["maps"].astype(np.float32)
        badness = np.array([r[key] for r in records], np.float64) * (1 if sign == "+" else -1)
        tally.add_shard(records, maps, badness)
    summary = _summary(result, tally)
    summary["worst"] = {
        "key": key,
        "criterion": description,
        "images": [record for _, _, record, _ in tally.chosen],
    }
    if out is None and log_dir is None:
        return summary
    _write_summary(summary, tally, result.border, key, out, log_dir)
    return summary


@dataclass
class _ClassTally:
    """One explained class: how many maps, where they peak, their sum (for the mean map)."""

    sum: np.ndarray
    n: int = 0
    border: int = 0
    corner: int = 0
    mass: float = 0.0
    score: float = 0.0


@dataclass
class _Tally:
    """Streamed over the shards: per-class tallies, totals and the worst images so far."""

    worst: int
    classes: dict[int, _ClassTally] = field(default_factory=dict)
    totals: dict[str, float] = field(
        default_factory=lambda: {"border": 0, "corner": 0, "mass": 0.0, "empty": 0,
                                 "correct": 0, "labelled": 0}  # fmt: skip
    )
    chosen: list[tuple[float, int, dict, np.ndarray]] = field(default_factory=list)
    shape: tuple[int, ...] | None = None

    def add(self, r: dict, map_: np.ndarray) -> None:
        c = r["class"]
        if c not in self.classes:
            self.classes[c] = _ClassTally(np.zeros(self.shape, np.float64))
        stats, totals = self.classes[c], self.totals
        stats.sum += map_
        in_border = r["peak_region"] != "interior"
        stats.n += 1
        stats.border += in_border
        stats.corner += r["peak_region"] == "corner"
        stats.mass += r["border_share"]
        stats.score += r["score"]
        totals["border"] += in_border
        totals["corner"] += r["peak_region"] == "corner"
        totals["mass"] += r["border_share"]
        totals["empty"] += r["empty"]
        if "label" in r:
            totals["labelled"] += 1
            totals["correct"] += r["label"] == c

    def add_shard(self, records: list[dict], maps: np.ndarray, badness: np.ndarray) -> None:
        self.shape = maps.shape[1:]
        for i, r in enumerate(records):
            self.add(r, maps[i])
        top = np.argsort(-badness, kind="stable")[: self.worst]
        for i in top:  # copies: a view would keep its whole shard alive
            self.chosen.append(
                (float(badness[i]), records[i]["position"], records[i], maps[i].copy())
            )
        self.chosen = sorted(self.chosen, key=lambda item: (-item[0], item[1]))[: self.worst]


def _per_class(result: ExplainedDataset, tally: _Tally) -> list[dict[str, Any]]:
    rows = []
    for c in sorted(tally.classes):
        stats = tally.classes[c]
        rows.append(
            {
                "class": c,
                "name": result.class_name(c),
                "images": int(stats.n),
                "peak_in_border": stats.border / stats.n,
                "peak_in_corner": stats.corner / stats.n,
                "mean_border_share": stats.mass / stats.n,
                "mean_score": stats.score / stats.n,
            }
        )
    return rows


def _summary(result: ExplainedDataset, tally: _Tally) -> dict[str, Any]:
    """The summary's numbers (all but the worst images)."""
    n, totals = len(result), tally.totals
    h, w = tally.shape if tally.shape is not None else (1, 1)
    band_area, corner_area = uniform_shares(h, w, result.border)
    per_class = _per_class(result, tally)
    return {
        "method": result.method,
        "layer": result.layer,
        "images": n,
        "complete": result.complete,
        "border": result.border,
        "uniform_border_share": band_area,
        "uniform_corner_share": corner_area,
        "peak_in_border": totals["border"] / max(n, 1),
        "peak_in_corner": totals["corner"] / max(n, 1),
        "mean_border_share": totals["mass"] / max(n, 1),
        "empty_maps": int(totals["empty"]),
        "skipped_files": list(result.skipped),
        "accuracy": (
            totals["correct"] / totals["labelled"]
            if totals["labelled"] and result.target_setting is None
            else None
        ),
        "per_class": per_class,
        "flag_threshold": _threshold(band_area),
        "flagged_classes": [
            c["name"] for c in per_class if c["peak_in_border"] >= _threshold(band_area)
        ],
    }


def _write_summary(
    summary: dict[str, Any],
    tally: _Tally,
    border: float,
    key: str,
    out: str | os.PathLike | None,
    log_dir: str | os.PathLike | None,
) -> None:
    """The two figures and the Markdown, into `out` and/or TensorBoard."""
    per_class, chosen = summary["per_class"], tally.chosen
    sums = {c: t.sum for c, t in tally.classes.items()}
    mean_fig = _plot_maps(
        [sums[c["class"]] / c["images"] for c in per_class],
        [
            f"{c['name']} (n={c['images']})\nborder peak {c['peak_in_border']:.0%}"
            for c in per_class
        ],
        border,
    )
    worst_fig = _plot_maps(
        [m for *_, m in chosen],
        [
            f"#{r['position']} {r.get('class_name', r['class'])}\n{key} {r[key]:.3f}"
            for _, _, r, _ in chosen
        ],
        None,
    )
    pngs = {"mean_maps": figure_to_png(mean_fig), "worst_maps": figure_to_png(worst_fig)}
    markdown = _markdown(summary)
    if out is not None:
        out = Path(out)
        summary["files"] = {
            "markdown": "summary.md",
            "json": "summary.json",
            **{name: f"{name}.png" for name in pngs},
        }
        for name, png in pngs.items():
            write_bytes(out / f"{name}.png", png)
        write_text(out / "summary.md", markdown)
        write_json(out / "summary.json", summary)
    if log_dir is not None:
        from xai_keras.tensorboard import log_figure, log_text

        for name, png in pngs.items():
            log_figure(log_dir, f"explain_dataset/{name}", png)
        log_text(log_dir, "explain_dataset/summary", markdown)
