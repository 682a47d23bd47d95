"""benchmarks/pixel_texture.py tells noise constant in flux (real cutouts) from noise constant in asinh units."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pixel_texture  # noqa: E402


def _galaxies(rng: np.random.Generator, count: int = 8, size: int = 48) -> np.ndarray:
    """Smooth round galaxies (peak 200 sky sigmas) in 5 bands, no noise yet."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    profile = 200.0 * np.exp(-np.hypot(x, y) / 3.0)
    return np.broadcast_to(profile, (count, 5, size, size)).astype(np.float32) * rng.uniform(0.5, 1.5, (count, 1, 1, 1))


def test_noise_constant_in_flux_shrinks_with_brightness_and_noise_constant_in_asinh_does_not():
    rng = np.random.default_rng(0)
    clean = _galaxies(rng)
    softening = np.ones(5, np.float32)
    sky_noise = clean + rng.standard_normal(clean.shape).astype(np.float32)
    asinh_noise = np.sinh(np.arcsinh(clean) + rng.standard_normal(clean.shape).astype(np.float32))

    real_like = pixel_texture.texture_by_brightness(sky_noise, softening)
    textured = pixel_texture.texture_by_brightness(asinh_noise, softening)
    assert [count for _, count in real_like][0] > 0 and [count for _, count in real_like][-1] > 0
    assert real_like[-1][0] < 0.1 * real_like[0][0]
    assert textured[-1][0] > 0.7 * textured[0][0]
