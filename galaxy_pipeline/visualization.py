"""RGB composites of 5-band HSC flux images (Lupton et al. 2004 arcsinh colour stretch)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from galaxy_pipeline.hsc import BANDS

RGB_BANDS: tuple[str, str, str] = ("i", "r", "g")
"""Bands shown as red, green and blue."""


def rgb_composite(fluxes: np.ndarray, stretch: float = 0.4, q: float = 8.0) -> np.ndarray:
    """Lupton RGB composites (i, r, g as red, green, blue) of flux images.

    Args:
        fluxes: HSC fluxes (AB zero point 27), shape (5, H, W) or (N, 5, H, W), bands g,r,i,z,y.
        stretch: linear stretch of the arcsinh colour mapping, in flux units.
        q: asinh softening parameter ``Q`` of Lupton et al.

    Returns:
        uint8 array (H, W, 3) or (N, H, W, 3).
    """
    from astropy.visualization import make_lupton_rgb  # here: the pipeline's remote code loads without astropy

    fluxes = np.asarray(fluxes, dtype=np.float64)
    if fluxes.ndim not in (3, 4) or fluxes.shape[-3] != len(BANDS):
        raise ValueError(f"Expected fluxes of shape (5, H, W) or (N, 5, H, W); got {fluxes.shape}.")
    if fluxes.ndim == 3:
        return rgb_composite(fluxes[None], stretch=stretch, q=q)[0]
    red, green, blue = (BANDS.index(band) for band in RGB_BANDS)
    return np.stack(
        [make_lupton_rgb(image[red], image[green], image[blue], minimum=0.0, stretch=stretch, Q=q) for image in fluxes]
    )


def to_pil(fluxes: np.ndarray, stretch: float = 0.4, q: float = 8.0) -> list[Image.Image]:
    """RGB composites of flux images (N, 5, H, W) as a list of PIL images."""
    return [
        Image.fromarray(rgb)
        for rgb in rgb_composite(np.asarray(fluxes).reshape(-1, *np.shape(fluxes)[-3:]), stretch, q)
    ]


def image_grid(rgb_images: np.ndarray, rows: int) -> np.ndarray:
    """Tile RGB images (N, H, W, 3), N divisible by ``rows``, into one (rows*H, N/rows*W, 3) image."""
    count, height, width, channels = rgb_images.shape
    if count % rows:
        raise ValueError(f"Cannot tile {count} images into {rows} equal rows.")
    columns = count // rows
    grid = rgb_images.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4)
    return grid.reshape(rows * height, columns * width, channels)
