"""Real photographs that ship inside installed wheels (scikit-image, scikit-learn, matplotlib).

Test inputs for real trained models, available offline: `real_faces` (the 100 LFW faces of
`skimage.data.lfw_subset` plus two portraits) and `photo_crops` (square crops of the colour
photographs of scikit-image, scikit-learn and matplotlib at several scales).
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["photo_crops", "real_faces"]


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(mpimg.imread(f))


def real_faces(size: int = 64) -> np.ndarray:
    """(102, size, size, 1) grey faces as pixels in [0, 255]: 100 LFW faces, the astronaut's
    face and Grace Hopper's, resized with area averaging."""
    from skimage import data

    faces = [f * 255.0 for f in data.lfw_subset()[:100]]  # (25, 25) in [0, 1]
    faces.append(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)[30:230, 140:340])
    faces.append(cv2.cvtColor(_grace_hopper(), cv2.COLOR_RGB2GRAY)[60:400, 90:430])
    out = [cv2.resize(np.float32(f), (size, size), interpolation=cv2.INTER_AREA) for f in faces]
    return np.stack(out)[..., None].astype(np.float32)


def photo_crops(size: int = 32, per_photo: int = 12, seed: int = 0) -> np.ndarray:
    """(N, size, size, 3) RGB pixels in [0, 255]: `per_photo` random square crops (a fifth to
    all of the short side) of each colour photograph shipped with scikit-image, scikit-learn
    and matplotlib."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.immunohistochemistry(),
        _grace_hopper(),
        *load_sample_images().images,
    ]
    rng = np.random.default_rng(seed)
    crops = []
    for photo in photos:
        photo = np.asarray(photo)[..., :3]
        h, w = photo.shape[:2]
        for _ in range(per_photo):
            side = int(rng.uniform(0.2, 1.0) * min(h, w))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = photo[top : top + side, left : left + side]
            crops.append(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(crops).astype(np.float32)
