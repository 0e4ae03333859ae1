"""Reading image files as a model takes them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# What `explain`, `sag` and `features` read with OpenCV: the suffixes tf.data folders decode
# (`IMAGE_SUFFIXES`), plus WebP and TIFF, which only OpenCV reads.
_OPENCV_ONLY = (".webp", ".tif", ".tiff")


def image_files(paths: Sequence[str]) -> list[Path]:
    """Image files named directly, or found anywhere under the given folders.

    Hidden files and folders under a given folder are skipped: macOS `._name.png` resource
    forks and `.ipynb_checkpoints` copies are not images of the set.
    """
    from xai_keras.data.folder import IMAGE_SUFFIXES
    from xai_keras.errors import InputError

    suffixes = (*IMAGE_SUFFIXES, *_OPENCV_ONLY)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(
                f
                for f in p.rglob("*")
                if f.suffix.lower() in suffixes
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"Image path not found: {p}.")
    if not files:
        raise InputError(f"No images ({'/'.join(suffixes)}) found in: {', '.join(paths)}.")
    return files


def output_stems(files: list[Path]) -> list[str]:
    """A distinct name per image for its output PNGs: the file stem, or, where stems repeat
    (a/1.png and b/1.png in nested folders), the path below the common folder joined by '_'."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    root = Path(os.path.commonpath([f.resolve().parent for f in files]))
    names = ["_".join(f.resolve().relative_to(root).with_suffix("").parts) for f in files]
    if len(set(names)) < len(names):  # a/1.png next to a/1.jpg
        names = [f"{n}_{f.suffix.lstrip('.').lower()}" for n, f in zip(names, files)]
    return [f"{n}_{i}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _to_bgra(img):
    """Any decoded image (gray, BGR or BGRA; 8 or 16 bit) as 8-bit BGRA, opaque without alpha."""
    import cv2
    import numpy as np

    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2BGRA) if img.shape[2] == 3 else img


def _check_complete(f: Path) -> None:
    """Refuse a truncated or corrupt JPEG, which OpenCV decodes with its missing part grey
    (printing only "Premature end of JPEG file"); PIL's decoder raises instead."""
    from PIL import Image

    from xai_keras.errors import InputError

    with open(f, "rb") as fh:
        if fh.read(3) != b"\xff\xd8\xff":  # only JPEGs: OpenCV refuses other broken files
            return
    try:
        with Image.open(f) as img:
            img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(
            f"Image {f} is truncated or corrupt ({err}); re-save it or leave it out."
        ) from None


def _image_size(shape: tuple, size: tuple[int, int] | None) -> tuple[int | None, int | None]:
    """(H, W) the images are resized to: the model's, or `--size` where the model accepts any
    size; None for a side the image keeps."""
    from xai_keras.errors import InputError

    h, w = shape[0], shape[1]
    if size is None:
        return h, w
    if (h is not None and h != size[0]) or (w is not None and w != size[1]):
        raise InputError(
            f"--size {size[0]},{size[1]} does not match the model's input size {h}x{w}; "
            "drop --size (images are resized to the model's size)."
        )
    return size


FITS = ("stretch", "crop", "pad")


def fit_image(img, target: tuple[int, int], fit: str):
    """`img` resized to `target` (W, H): stretched, centre-cropped to the target's aspect ratio
    first, or padded with black (the range minimum) around it to that ratio first."""
    import cv2

    tw, th = target
    ih, iw = img.shape[:2]
    if fit != "stretch" and abs(iw * th - ih * tw) > 0.01 * ih * tw:
        if fit == "crop":
            if iw * th > ih * tw:  # too wide: keep the middle columns
                keep = max(1, round(ih * tw / th))
                left = (iw - keep) // 2
                img = img[:, left : left + keep]
            else:
                keep = max(1, round(iw * th / tw))
                top = (ih - keep) // 2
                img = img[top : top + keep]
        else:  # pad
            ph, pw = max(ih, round(iw * th / tw)), max(iw, round(ih * tw / th))
            top, left = (ph - ih) // 2, (pw - iw) // 2
            img = cv2.copyMakeBorder(
                img, top, ph - ih - top, left, pw - iw - left, cv2.BORDER_CONSTANT, value=0
            )
    if (img.shape[1], img.shape[0]) != target:
        img = cv2.resize(img, target, interpolation=cv2.INTER_AREA)
    return img


def read_images(
    files: list[Path], shape: tuple, value_range, size=None, fit: str = "stretch", note=None
):
    """Image files as the model takes them: pixels mapped through the model's value range.

    An image whose aspect ratio is not the model's is fitted by `fit` (see `fit_image`); `note`,
    if given, is called with one sentence saying how many were and how.
    """
    import cv2
    import numpy as np

    from xai_keras.errors import InputError

    c = shape[-1]
    h, w = _image_size(shape, size)
    if c not in (1, 3, 4):
        raise InputError(
            f"The model takes {c}-channel images; image files can be read for models with 1 "
            "(grayscale), 3 (RGB) or 4 (RGBA) channels. Pass the images as an array instead."
        )
    flag = {1: cv2.IMREAD_GRAYSCALE, 3: cv2.IMREAD_COLOR, 4: cv2.IMREAD_UNCHANGED}[c]
    images, reshaped = [], []
    for f in files:
        _check_complete(f)
        img = cv2.imread(str(f), flag)
        if img is None:
            raise InputError(f"Cannot read image {f} (not an image, or an unsupported format).")
        img = _to_bgra(img) if c == 4 else img
        target = (w or img.shape[1], h or img.shape[0])  # a side the model leaves free: kept
        ih, iw = img.shape[:2]
        if abs(iw * target[1] - ih * target[0]) > 0.01 * ih * target[0]:
            reshaped.append(f"{f.name} {iw}x{ih}")
        img = fit_image(img, target, fit)
        if c == 1:
            img = img[..., None]
        else:  # BGR(A) -> RGB(A)
            img = img[..., ::-1] if c == 3 else img[..., [2, 1, 0, 3]]
        pixels = img.astype("float32")  # a None range: the model maps pixels itself
        images.append(pixels if value_range is None else value_range.from_pixels(pixels))
    if len({im.shape[:2] for im in images}) > 1:
        from xai_keras.checks import describe_sizes

        found = describe_sizes((im.shape[:2] for im in images), (f.name for f in files))
        raise InputError(
            f"The model accepts any image size, but the {len(images)} images differ ({found}); "
            "pass --size H,W to resize them all to one, e.g. --size 224,224."
        )
    if reshaped and note is not None and h and w:
        how = {
            "stretch": "stretched (squashed) to it",
            "crop": "centre-cropped to its aspect ratio, then resized",
            "pad": "padded with black to its aspect ratio, then resized",
        }[fit]
        others = ", ".join(FITS[i] for i in range(3) if FITS[i] != fit)
        note(
            f"{len(reshaped)} of {len(files)} images ({', '.join(reshaped[:3])}"
            f"{', ...' if len(reshaped) > 3 else ''}) have another aspect ratio than the "
            f"model's input {w}x{h} (WxH): {how} (--fit {fit}; --fit {others.replace(', ', ' or ')}"
            " to change)."
        )
    return np.stack(images)
