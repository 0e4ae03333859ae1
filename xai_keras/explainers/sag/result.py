"""The result of a SAG search: roots, the deletion graph, and their JSON and DOT forms."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from xai_keras.explainers.sag.scorer import Patches, PatchScorer
from xai_keras.io import figure_to_png, save_figure

__all__ = ["SAG"]


@dataclass
class SAG:
    """A structured attention graph for one image.

    Attributes:
        roots: minimal sufficient patch sets (sorted tuples of patch ids), most useful first.
        nodes: node id -> {"patches": tuple, "confidence": float, "depth": int}.
        edges: (parent id, child id) pairs: the child removes one patch of the parent.
        target, class_name: the explained class; probability: its probability on the full image.
        grid, threshold, relative, floor: the settings used.
        n_forward: masked images scored to build the graph.
        message: why the graph is empty, if it is.
        baseline: the baseline the hidden patches showed (the one "auto" chose).
        baselines_tried: confidence of the empty set under each baseline tried.
    """

    image: np.ndarray
    target: int
    probability: float
    grid: tuple[int, int]
    threshold: float
    relative: bool
    floor: float
    roots: list[Patches] = field(default_factory=list)
    nodes: dict[int, dict] = field(default_factory=dict)
    edges: list[tuple[int, int]] = field(default_factory=list)
    class_name: str | None = None
    n_forward: int = 0
    message: str = ""
    baseline: str = ""
    baselines_tried: dict[str, float] = field(default_factory=dict)
    scorer: PatchScorer | None = field(default=None, repr=False, compare=False)

    # -- queries ---------------------------------------------------------------------------------
    def confidence(self, patches: Patches) -> float:
        """The recorded confidence of a scored patch set."""
        key = tuple(sorted(patches))
        for node in self.nodes.values():
            if node["patches"] == key:
                return node["confidence"]
        if self.scorer is not None and frozenset(key) in self.scorer.cache:
            return self._relative(self.scorer.cache[frozenset(key)])
        raise KeyError(f"Patch set {key} was not scored for this SAG.")

    def masked_image(self, patches: Patches) -> np.ndarray:
        """The input as the model saw it for this patch set (H, W, C), for independent checks."""
        if self.scorer is None:
            raise ValueError("This SAG was loaded from a dict; masked images need the model.")
        return self.scorer.masked_images([tuple(patches)])[0]

    def _relative(self, p: float) -> float:
        return p / self.probability if self.relative else p

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "class_name": self.class_name,
            "probability": self.probability,
            "grid": list(self.grid),
            "threshold": self.threshold,
            "relative": self.relative,
            "floor": self.floor,
            "roots": [list(r) for r in self.roots],
            "nodes": {str(k): {**v, "patches": list(v["patches"])} for k, v in self.nodes.items()},
            "edges": [list(e) for e in self.edges],
            "n_forward": self.n_forward,
            "message": self.message,
            "baseline": self.baseline,
            "baselines_tried": self.baselines_tried,
            "image_shape": list(self.image.shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], image: np.ndarray | None = None) -> SAG:
        shape = tuple(data["image_shape"])
        return cls(
            image=image if image is not None else np.zeros(shape, np.float32),
            target=data["target"],
            probability=data["probability"],
            grid=tuple(data["grid"]),
            threshold=data["threshold"],
            relative=data["relative"],
            floor=data["floor"],
            roots=[tuple(r) for r in data["roots"]],
            nodes={int(k): {**v, "patches": tuple(v["patches"])} for k, v in data["nodes"].items()},
            edges=[tuple(e) for e in data["edges"]],
            class_name=data["class_name"],
            n_forward=data["n_forward"],
            message=data["message"],
            baseline=data.get("baseline", ""),
            baselines_tried=data.get("baselines_tried", {}),
        )

    def to_json(self, path: str | os.PathLike) -> Path:
        from xai_keras.io import write_json

        return write_json(path, self.to_dict())

    def to_dot(self) -> str:
        """Graphviz DOT text: one node per patch set, labelled with its patches and confidence."""
        lines = ["digraph SAG {", "  node [shape=box];"]
        for k, v in self.nodes.items():
            patches = ",".join(map(str, v["patches"]))
            lines.append(f'  n{k} [label="{{{patches}}}\\n{v["confidence"]:.2f}"];')
        lines += [f"  n{a} -> n{b};" for a, b in self.edges]
        return "\n".join(lines + ["}"])

    # -- pictures -------------------------------------------------------------------------------
    def plot(self, thumb: float = 1.6) -> Figure:
        """The image, then the graph: each node is the masked image with its confidence."""
        from xai_keras.explainers.sag.picture import plot_sag

        return plot_sag(self, thumb)

    def save(self, path: str | os.PathLike, dpi: int = 110) -> Path:
        return save_figure(self.plot(), path, dpi=dpi)

    def _repr_png_(self) -> bytes:
        """A notebook shows the graph, not the dataclass fields."""
        return figure_to_png(self.plot())
