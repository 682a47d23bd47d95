"""FluxTransform: exact inversion, fitting from streamed data, clear errors, persistence."""

import json

import numpy as np
import pytest
import torch

from galaxy_pipeline import FluxTransform, GalaxyRedshiftPipeline
from galaxy_pipeline.normalization import colour_basis_mixing


def heavy_tailed_fluxes(rng: np.random.Generator, n: int = 16, size: int = 32) -> np.ndarray:
    """Gaussian sky noise plus Student-t(1.5) bright outliers, spanning ~6 decades, per band noise levels."""
    noise = rng.normal(0, 1, size=(n, 5, size, size)) * np.array([0.02, 0.03, 0.04, 0.08, 0.15])[:, None, None]
    bright = np.abs(rng.standard_t(1.5, size=noise.shape)) * (rng.random(noise.shape) < 0.05) * 50
    return (noise + bright).astype(np.float32)


def test_round_trip_is_exact_to_float32_precision():
    rng = np.random.default_rng(0)
    fluxes = heavy_tailed_fluxes(rng)
    transform = FluxTransform.fit([fluxes[:8], fluxes[8:]])
    back = transform.inverse(transform.forward(fluxes))
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, fluxes, rtol=2e-6, atol=1e-7 * np.abs(fluxes).max())


def test_round_trip_torch_keeps_dtype_and_matches_numpy():
    rng = np.random.default_rng(1)
    fluxes = heavy_tailed_fluxes(rng, n=4)
    transform = FluxTransform.fit([fluxes])
    model_space = transform.forward(torch.from_numpy(fluxes))
    assert model_space.dtype == torch.float32
    np.testing.assert_allclose(model_space.numpy(), transform.forward(fluxes), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(transform.inverse(model_space), torch.from_numpy(fluxes), rtol=2e-6, atol=1e-5)


def test_fit_recovers_per_band_noise_and_maps_the_99th_percentile_to_two():
    rng = np.random.default_rng(2)
    fluxes = heavy_tailed_fluxes(rng, n=64)
    transform = FluxTransform.fit(fluxes[i : i + 8] for i in range(0, 64, 8))
    np.testing.assert_allclose(transform.softening, [0.02, 0.03, 0.04, 0.08, 0.15], rtol=0.1)
    model_space = transform.forward(fluxes)
    for band in range(5):
        assert np.quantile(model_space[:, band], 0.99) == pytest.approx(2.0, abs=0.04)
        assert abs(np.median(model_space[:, band])) < 0.1


def test_nan_and_inf_raise_clear_errors():
    transform = FluxTransform()
    image = np.zeros((1, 5, 4, 4), dtype=np.float32)
    image[0, 2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        transform.forward(image)
    with pytest.raises(ValueError, match="NaN or inf"):
        transform.inverse(torch.full((5, 4, 4), float("inf")))


def test_wrong_band_count_and_bad_parameters_raise():
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, H, W\)"):
        FluxTransform().forward(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="softening"):
        FluxTransform(softening=[1, 1, 0, 1, 1])
    with pytest.raises(ValueError, match="one entry per band"):
        FluxTransform(softening=[1, 1])
    with pytest.raises(ValueError, match="no finite pixels"):
        FluxTransform.fit([])


def test_save_and_load_preserve_parameters_exactly(tmp_path):
    rng = np.random.default_rng(3)
    transform = FluxTransform.fit([heavy_tailed_fluxes(rng, n=4)])
    transform.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = FluxTransform.from_pretrained(tmp_path)
    assert loaded.softening == transform.softening
    assert loaded.scale == transform.scale
    assert loaded.band_names == ["g", "r", "i", "z", "y"]


LEGACY_PREPROCESSOR_CONFIG = (
    '{"band_names": ["g", "r", "i", "z", "y"], "image_processor_type": "FluxTransform", '
    '"scale": [1.5, 1.6, 1.7, 1.8, 1.9], "softening": [0.1, 0.2, 0.3, 0.4, 0.5]}'
)
"""``flux_transform/preprocessor_config.json`` byte for byte as releases up to 0.1.0 wrote it (transformers)."""


def test_a_folder_saved_by_the_transformers_era_loads_unchanged(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(LEGACY_PREPROCESSOR_CONFIG)
    loaded = FluxTransform.from_pretrained(tmp_path)
    assert loaded.softening == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert loaded.scale == [1.5, 1.6, 1.7, 1.8, 1.9]
    assert loaded.channel_mixing is None
    assert "image_processor_type" not in loaded.config


def test_an_old_pipeline_folder_loads_and_generates(tmp_path, tiny_pipeline):
    tiny_pipeline.save_pretrained(tmp_path)
    (tmp_path / "flux_transform" / "preprocessor_config.json").write_text(LEGACY_PREPROCESSOR_CONFIG)
    pipe = GalaxyRedshiftPipeline.from_pretrained(tmp_path)
    assert pipe.flux_transform.softening == [0.1, 0.2, 0.3, 0.4, 0.5]
    images = pipe(z=0.5, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (1, 5, 16, 16) and np.isfinite(images).all()


def test_colour_basis_round_trip_is_exact_and_survives_saving(tmp_path):
    rng = np.random.default_rng(4)
    fluxes = heavy_tailed_fluxes(rng, n=4)
    transform = FluxTransform.fit([fluxes], channel_mixing=colour_basis_mixing())
    model_space = transform.forward(fluxes.astype(np.float64))
    stretched = FluxTransform(softening=transform.softening, scale=transform.scale).forward(fluxes.astype(np.float64))
    np.testing.assert_allclose(model_space[:, 0], 0.2 * stretched.sum(axis=1), atol=1e-12)
    np.testing.assert_allclose(model_space[:, 2], 2 * (stretched[:, 1] - stretched[:, 2]), atol=1e-12)
    transform.save_pretrained(tmp_path)
    loaded = FluxTransform.from_pretrained(tmp_path)
    assert loaded.channel_mixing == transform.channel_mixing
    back = loaded.inverse(torch.from_numpy(model_space))
    np.testing.assert_allclose(back.numpy(), fluxes, rtol=1e-9, atol=1e-12)


def test_singular_channel_mixing_is_refused():
    with pytest.raises(ValueError, match="not invertible"):
        FluxTransform(channel_mixing=[[1.0] * 5] * 5)
    with pytest.raises(ValueError, match="5 x 5"):
        FluxTransform(channel_mixing=[[1.0, 0.0], [0.0, 1.0]])


def test_the_pipeline_records_the_transform_as_a_diffusers_component(tmp_path, tiny_pipeline):
    tiny_pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["flux_transform"] == ["galaxy_pipeline.normalization", "FluxTransform"]
    saved = json.loads((tmp_path / "flux_transform" / "preprocessor_config.json").read_text())
    assert saved["_class_name"] == "FluxTransform" and saved["softening"] == tiny_pipeline.flux_transform.softening
