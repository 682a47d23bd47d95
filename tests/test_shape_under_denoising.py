"""benchmarks/shape_under_denoising.py: with the exact denoiser of a one-galaxy dataset, every start gives it back."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shape_under_denoising  # noqa: E402


class _ExactDenoiser(torch.nn.Module):
    """The optimal noise prediction when the data are one known model-space image."""

    def __init__(self, clean: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.clean, self.alphas_cumprod = clean, alphas_cumprod
        self.timesteps: list[int] = []

    def forward(self, sample, timestep, redshift):
        self.timesteps.append(int(timestep))
        alpha_bar = self.alphas_cumprod[int(timestep)]
        return SimpleNamespace(sample=(sample - alpha_bar.sqrt() * self.clean) / (1 - alpha_bar).sqrt())


@pytest.mark.parametrize("start", [50, 500, 999])
def test_the_exact_denoiser_returns_the_galaxy_from_any_start(start):
    pipe = make_tiny_pipeline()
    rng = np.random.default_rng(1)
    fluxes = (rng.standard_normal((2, 5, 16, 16)) * 0.05).astype(np.float32)
    fluxes[:, :, 6:10, 4:12] += 1.0  # an elongated galaxy
    clean = torch.as_tensor(pipe.flux_transform.forward(fluxes))
    pipe.unet = _ExactDenoiser(clean, pipe.scheduler.alphas_cumprod)
    denoised = shape_under_denoising.denoise_from(pipe, fluxes, np.array([0.2, 0.3]), start, steps=50, seed=0)
    np.testing.assert_allclose(denoised, fluxes, atol=1e-3)
    assert pipe.unet.timesteps[0] <= start < pipe.unet.timesteps[0] + 1000 // 50
    assert pipe.unet.timesteps == sorted(pipe.unet.timesteps, reverse=True) and pipe.unet.timesteps[-1] < 1000 // 50
