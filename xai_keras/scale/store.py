"""The on-disk layout of a dataset explanation, and lazy reading of it.

    out/
      manifest.json        settings of the run + how many shards are complete (atomic)
      shard-00000.npz      maps (float16), targets, scores, labels, positions of shard 0
      shard-00000.jsonl    one record per image of shard 0 (class, score, peak, border mass)
      ...
      index.jsonl          all records in dataset order, written once the run is complete
      summary.md/.json/... see `summarize`

Every file is written to a hidden temporary name and renamed (`xai_keras.io.atomic_path`), in
the order shard .npz, shard .jsonl, manifest. A shard counts as done only once the manifest
says so, so a crash at any moment leaves complete shards plus, at worst, stray temporary
files, which the next run removes. Shard k always holds positions [k * shard_size,
(k + 1) * shard_size), so any image is found without an index.

Maps are stored as float16: they lie in [0, 1], where float16's relative step of 2^-11 keeps
them within 5e-4 of the float32 maps (uint8 would be 2e-3) at half the size; `np.load`
can not memory-map compressed `.npz` files, so each access decompresses one shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_keras.errors import InputError
from xai_keras.io import atomic_path, write_json, write_text
from xai_keras.scale.summary import summarize

__all__ = ["DatasetExplanation", "ShardedMaps", "FORMAT"]

FORMAT = 1
MANIFEST = "manifest.json"
INDEX = "index.jsonl"
MAP_DTYPE = "float16"


def shard_name(k: int, suffix: str) -> str:
    return f"shard-{k:05d}.{suffix}"


def write_shard(out: Path, k: int, arrays: dict[str, np.ndarray], records: list[dict]) -> None:
    """Write shard k's arrays (.npz, compressed) and records (.jsonl), each atomically."""
    with atomic_path(out / shard_name(k, "npz")) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    write_text(out / shard_name(k, "jsonl"), "".join(json.dumps(r) + "\n" for r in records))


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:  # cannot happen with atomic writes; say so if it does
        raise InputError(
            f"{path} is not valid JSON ({err}); delete {out} and start again."
        ) from None


def write_manifest(out: Path, manifest: dict) -> None:
    write_json(out / MANIFEST, manifest)


def write_index(out: Path, shards: int, skipped: Sequence[dict] = ()) -> Path:
    """Concatenate the shards' records into `index.jsonl`, one shard at a time, then one
    `{"file", "skipped": true, "error"}` record per unreadable file that was skipped."""
    with atomic_path(out / INDEX) as tmp, open(tmp, "w") as f:
        for k in range(shards):
            f.write((out / shard_name(k, "jsonl")).read_text())
        for s in skipped:
            f.write(json.dumps({"file": s["file"], "skipped": True, "error": s["error"]}) + "\n")
    return out / INDEX


class ShardedMaps(Sequence):
    """The maps of a dataset explanation, read from the shards on demand.

    Indexing with an int gives one (H, W) float32 map, with a slice or a list of ints an
    (n, H, W) array; only the shards holding the requested positions are read. The last shard
    read is kept (one shard in memory), so reading in order decompresses each shard once.

    Attributes:
        loads: how many times a shard file was read (useful to check laziness).
    """

    def __init__(self, out: Path, size: int, shard_size: int):
        self.out, self.size, self.shard_size = Path(out), size, shard_size
        self.loads = 0
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def shard(self, k: int) -> dict[str, np.ndarray]:
        """All arrays of shard k (maps as stored, float16)."""
        if self._cached is None or self._cached[0] != k:
            path = self.out / shard_name(k, "npz")
            if not path.is_file():
                raise InputError(
                    f"Shard {path.name} is missing from {self.out}; the run is incomplete or "
                    "files were deleted. Run explain_dataset again with resume=True."
                )
            with np.load(path) as data:
                arrays = {name: data[name] for name in data.files}
            self.loads += 1
            self._cached = (k, arrays)
        return self._cached[1]

    @property
    def shards(self) -> int:
        return -(-self.size // self.shard_size)

    def __len__(self) -> int:
        return self.size

    def _position(self, i: Any) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise InputError(f"Map indices must be ints or slices. Received: {i!r}.")
        j = int(i) + self.size if i < 0 else int(i)
        if not 0 <= j < self.size:
            raise IndexError(f"Map index {i} is out of range for {self.size} maps.")
        return j

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            j = self._position(index)
            k, row = divmod(j, self.shard_size)
            return self.shard(k)["maps"][row].astype(np.float32)
        if isinstance(index, slice):
            positions = np.arange(*index.indices(self.size), dtype=np.int64)
        else:
            positions = np.array([self._position(i) for i in np.asarray(index).ravel().tolist()])
        if positions.size == 0:
            return np.zeros((0, *self.shape[1:]), np.float32)
        shards, rows = np.divmod(positions, self.shard_size)
        result = None
        for k in dict.fromkeys(shards.tolist()):  # each needed shard once, in order of need
            maps = self.shard(k)["maps"]
            if result is None:
                result = np.empty((len(positions), *maps.shape[1:]), np.float32)
            hit = shards == k
            result[hit] = maps[rows[hit]]
        return result

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, maps in self.iter_shards():
            yield from maps

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield `(first position, (n, H, W) float32 maps)` shard by shard."""
        for k in range(self.shards):
            yield k * self.shard_size, self.shard(k)["maps"].astype(np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.size, *self.shard(0)["maps"].shape[1:]) if self.size else (0,)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """All maps as one array (loads everything: for small datasets)."""
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


class DatasetExplanation:
    """A finished (or partly finished) `explain_dataset` run, read lazily from its folder.

    Attributes:
        out: the folder.
        maps: `ShardedMaps`: `maps[i]` is image i's (H, W) float32 map in [0, 1].
        method, layer, options: what was explained, from the manifest.
        target_setting: the `targets` argument of the run (None, a class index or "label").
        targets, scores, labels: (N,) arrays, read from the shards on access.
        class_names: names of the classes, where known.
        complete: whether every image of the dataset is explained.
        skipped: `{"file", "error"}` of each unreadable file skipped (`skip_bad=True`).
    """

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        manifest = read_manifest(self.out)
        if manifest is None:
            raise InputError(
                f"{self.out} holds no {MANIFEST}: it is not an explain_dataset output folder."
            )
        self.manifest = manifest
        settings = manifest["settings"]
        self.method: str = settings["method"]
        self.layer: str | None = settings["layer"]
        self.options: dict = settings["options"]
        self.target_setting: Any = settings["targets"]
        self.shard_size: int = settings["shard_size"]
        self.border: float = settings["border"]
        self.metrics: list[str] = settings["metrics"]
        self.class_names: list[str] | None = manifest.get("class_names")
        self.has_labels: bool = manifest.get("has_labels", False)
        self.complete: bool = manifest["complete"]
        self.skipped: list[dict] = manifest.get("skipped", [])
        self.maps = ShardedMaps(self.out, manifest["images_done"], self.shard_size)
        self._index: list[dict] | None = None
        self._summary: dict | None = None

    @classmethod
    def open(cls, out: str | os.PathLike) -> DatasetExplanation:
        """Open the results in `out` (e.g. for a later summary or look)."""
        return cls(out)

    def __len__(self) -> int:
        return len(self.maps)

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        layer = f" @ {self.layer}" if self.layer else ""
        return f"DatasetExplanation({len(self)} maps, {self.method}{layer}, {state}, {self.out})"

    def iter_records(self) -> Iterator[list[dict]]:
        """Yield the records of each shard in turn (constant memory)."""
        for k in range(self.maps.shards):
            text = (self.out / shard_name(k, "jsonl")).read_text()
            yield [json.loads(line) for line in text.splitlines() if line]

    @property
    def index(self) -> list[dict]:
        """One record per image, in dataset order: position, shard, class, score, label (if
        given), peak_y/peak_x, border_share, corner_share, peak_region, empty, and each
        metric asked for under its registry key (e.g. `deletion_auc`). Read on first access."""
        if self._index is None:
            self._index = [r for shard in self.iter_records() for r in shard]
        return self._index

    def column(self, name: str) -> np.ndarray:
        """One array from the shards: "targets", "scores", "labels" or "positions"."""
        if name not in ("targets", "scores", "labels", "positions"):
            raise InputError(
                f"Unknown column {name!r}: use 'targets', 'scores', 'labels' or 'positions'."
            )
        parts = [self.maps.shard(k)[name] for k in range(self.maps.shards)]
        return np.concatenate(parts) if parts else np.zeros(0)

    @property
    def targets(self) -> np.ndarray:
        """(N,) int32 explained class of each image."""
        return self.column("targets")

    @property
    def scores(self) -> np.ndarray:
        """(N,) float32 probability of the explained class."""
        return self.column("scores")

    @property
    def labels(self) -> np.ndarray:
        """(N,) int32 labels (-1 where the dataset gave none)."""
        return self.column("labels")

    def class_name(self, c: int) -> str:
        if self.class_names and 0 <= c < len(self.class_names):
            return self.class_names[c]
        return f"class {c}"

    def summary(self) -> dict:
        """The dataset summary (per-class mean maps, border-peak shares, worst images), as
        `summarize` computes it; computed on first call without writing files."""
        if self._summary is None:
            self._summary = summarize(self, out=None)
        return self._summary
