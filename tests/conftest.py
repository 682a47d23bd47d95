"""Shared fixtures: tiny pipelines and the location of the real HSC cutouts."""

from pathlib import Path

import numpy as np
import pytest
import torch

from galaxy_pipeline import FluxTransform, GalaxyRedshiftPipeline, RedshiftUNet2DModel, paper_scheduler

REALDATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture
def realdata_dir() -> Path:
    """Folder of real HSC cutouts (shared/realdata beside the repository); skips where absent."""
    if not REALDATA_DIR.is_dir():
        pytest.skip(f"real HSC cutouts not found at {REALDATA_DIR}")
    return REALDATA_DIR


def make_tiny_pipeline(sample_size: int = 16, seed: int = 0, redshift_max: float = 4.0) -> GalaxyRedshiftPipeline:
    """A randomly initialised pipeline with a few thousand weights, for fast tests."""
    torch.manual_seed(seed)
    unet = RedshiftUNet2DModel.from_preset("tiny", sample_size=sample_size, redshift_max=redshift_max)
    rng = np.random.default_rng(seed)
    flux_transform = FluxTransform.fit([rng.standard_t(3, size=(4, 5, sample_size, sample_size)) * 0.05])
    pipe = GalaxyRedshiftPipeline(unet=unet, scheduler=paper_scheduler(), flux_transform=flux_transform)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def tiny_pipeline() -> GalaxyRedshiftPipeline:
    """A tiny random 5x16x16 pipeline (DDPM scheduler, redshift range 0-4)."""
    return make_tiny_pipeline()
