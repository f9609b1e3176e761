"""Stand-in detector networks for post-processing tests: heat from a difference of Gaussians."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage


def dog_runner(inner: float, outer: float) -> Callable[[np.ndarray], np.ndarray]:
    """A runner with the detector's output layout (5 channels at stride 2) whose heat is a DoG of the
    window (sigmas `inner`, `outer` in voxels: it prefers blobs of about that radius), diameters 10 mm."""

    def run(x: np.ndarray) -> np.ndarray:
        tile = x[0, 0]
        dog = ndimage.gaussian_filter(tile, inner) - ndimage.gaussian_filter(tile, outer)
        out = np.zeros((1, 5, *(s // 2 for s in tile.shape)), np.float32)
        out[0, 0] = (dog[::2, ::2, ::2] * 40.0 - 2.0).astype(np.float32)
        out[0, 4] = np.log(10.0)
        return out

    return run
