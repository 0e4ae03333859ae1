"""The output folder of `explain_dataset`: its lock, its check against a call, its manifest.

A run claims `out` with `OutLock` before touching anything, removes the temporaries a killed
run left (`remove_temporaries`), and `open_out` compares the folder with the call: a folder
without a manifest holds no run (foreign files are refused unless `overwrite`), a run is
continued only with `resume` and the same settings. `new_manifest` starts the record a run
keeps up to date; `guarded_write` turns a failed write into one line saying what is kept.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xai_keras.errors import InputError
from xai_keras.scale.store import read_manifest

__all__ = [
    "OutLock",
    "foreign_files",
    "guarded_write",
    "new_manifest",
    "open_out",
    "remove_outputs",
    "remove_temporaries",
    "settings_diff",
]

# Hidden temporary names `atomic_path` makes for our files: ".<stem>.<32 hex><suffix>".
_TEMP = re.compile(
    r"^\.(shard-\d+|manifest|index|summary|mean_maps|worst_maps)\.[0-9a-f]{32}\.\w+$"
)


def remove_temporaries(out: Path) -> list[str]:
    """Delete temporary files a killed run left in `out`; return their names."""
    gone = []
    if out.is_dir():
        for p in out.iterdir():
            if _TEMP.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                gone.append(p.name)
    return gone


# The names of the files a run writes (`remove_outputs` deletes only these).
_OURS = re.compile(
    r"^(shard-\d+\.(npz|jsonl)|manifest\.json|index\.jsonl|summary\.(md|json)|"
    r"mean_maps\.png|worst_maps\.png)$"
)
LOCK = ".explain_dataset.lock"


def foreign_files(out: Path) -> list[str]:
    """Visible entries of `out` (sorted names): a folder with none counts as empty. Hidden
    files (.DS_Store, .gitkeep, our lock and temporaries) do not count and are never
    touched, except our own temporaries."""
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))


def remove_outputs(out: Path) -> None:
    """Delete the files a previous run wrote in `out`: only names the library writes (shards,
    manifest, index, summary, the two PNGs) and its temporaries; anything else stays."""
    for p in out.iterdir():
        if _OURS.match(p.name) and p.is_file():
            p.unlink()
    remove_temporaries(out)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class OutLock:
    """An exclusive claim on an output folder: `out/.explain_dataset.lock`, created with
    O_EXCL and holding the owner's pid and host. A lock whose pid is dead on this host is
    stale (a killed run) and is taken over; a live one (or one from another host, whose pid
    cannot be checked) makes `acquire` raise. Released by `release` (or the `with` block)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)  # fmt: skip
        return True

    def _owner(self) -> tuple[str, dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return "", {}
        try:
            owner = json.loads(text)
        except json.JSONDecodeError:  # written by a process killed inside `_create`
            owner = {}
        return text, owner if isinstance(owner, dict) else {}

    def acquire(self) -> OutLock:
        for _ in range(3):
            if self._create():
                self.held = True
                return self
            text, owner = self._owner()
            pid, host = owner.get("pid"), owner.get("host")
            stale = host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)
            if not stale:
                if not text and not self.path.exists():
                    continue  # released meanwhile: try again
                who = f"pid {pid} on {host}, started {owner.get('started')}" if owner else "?"
                raise InputError(
                    f"Another explain_dataset run ({who}) is writing to {self.path.parent}: "
                    "wait for it to finish or pass another `out`; if no run is going on, "
                    f"delete {self.path}."
                )
            if self._owner()[0] == text:  # still the dead owner's: take it over
                self.path.unlink(missing_ok=True)
        raise InputError(
            f"Could not lock {self.path.parent}: other runs keep taking {self.path}. Run one "
            "explain_dataset per `out` folder."
        )

    def release(self) -> None:
        if self.held:
            self.held = False
            text, owner = self._owner()
            if owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> OutLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def settings_diff(old: dict, new: dict) -> list[str]:
    """The settings of `new` that differ from `old`'s, one phrase each."""
    diff = []
    for key, value in new.items():
        before = old.get(key)
        if key == "dataset_size" and (before is None or value is None):
            continue  # an unknown size cannot be compared
        if before != value:
            diff.append(f"{key}: the run in progress has {before!r}, this call {value!r}")
    return diff


def _refuse_foreign(out: Path, overwrite: bool) -> None:
    """`out` holds no run: refuse visible files unless `overwrite`, then remove only ours."""
    foreign = foreign_files(out)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if foreign[3:] else "")
        raise InputError(
            f"The `out` folder {out} is not empty ({shown}) and holds no explain_dataset "
            "run (no manifest.json). Pass a new or empty folder, or overwrite=True "
            "(--overwrite) to write there anyway (files named as a run names its outputs, "
            "shard-*, index.jsonl, summary.*, *_maps.png, are then replaced; nothing else "
            "is touched)."
        )
    if foreign:
        remove_outputs(out)


def open_out(out: Path, settings: dict, resume: bool, overwrite: bool) -> dict | None:
    """Check `out` against this call (the writer, holding the lock); return the manifest to
    continue from (or None for a new run). A folder without a manifest was not written by
    explain_dataset (a run writes its manifest before anything else), so nothing in it is
    touched unless `overwrite`, and then only files with the names a run writes."""
    manifest = read_manifest(out)
    if manifest is None:
        _refuse_foreign(out, overwrite)
        return None
    if not resume and not overwrite:
        state = "a complete" if manifest.get("complete") else "an incomplete"
        raise InputError(
            f"{out} already holds {state} explain_dataset run ({manifest.get('images_done', 0)} "
            "images). Pass resume=True (--resume) to continue it, overwrite=True (--overwrite) "
            "to start again, or another `out` folder."
        )
    if overwrite:
        remove_outputs(out)
        return None
    diff = settings_diff(manifest.get("settings", {}), settings)
    if diff:
        raise InputError(
            f"Cannot resume the run in {out}: it was started with different settings ("
            + "; ".join(diff)
            + "). Resume with the same model, method, layer, options, targets, shard_size, "
            "border and metrics, or pass overwrite=True / another `out` to start a new run."
        )
    return manifest


def new_manifest(settings: dict, shards: int = 0, shard_size: int = 0, files: int = 0) -> dict:
    """The manifest of a run that has committed `shards` full shards (0: a new run)."""
    manifest = {"settings": settings, "shards_done": shards, "images_done": shards * shard_size,
                "complete": False}  # fmt: skip
    if shards:
        manifest["files_done"] = files
    return manifest


def guarded_write(out: Path, manifest: dict, write: Callable[[], Any], what: str) -> None:
    """Run `write`; turn a failed write (full disk, read-only or removed folder) into one
    line saying what is in `out` and what is not."""
    try:
        write()
    except OSError as err:
        reason = err.strerror or str(err)
        done, images = manifest["shards_done"], manifest["images_done"]
        kept = (
            f"{done} complete shard(s) with {images} maps are kept there"
            if done
            else "no maps were written"
        )
        raise InputError(
            f"Writing {what} to {out} failed ({reason}): {kept}, {what} and what follows "
            "were not written. Free some space (or fix the folder) and run again with "
            "resume=True (--resume) to continue."
        ) from None
