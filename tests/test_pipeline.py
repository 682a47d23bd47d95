"""GalaxyRedshiftPipeline: outputs, determinism, redshift dependence, persistence, schedulers, bad input."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from PIL import Image

from galaxy_pipeline import GalaxyRedshiftPipeline, RedshiftUNet2DModel, hub_ids
from galaxy_pipeline.normalization import MODEL_SPACE_LIMIT
from galaxy_pipeline.pipeline import DEFAULT_BATCH_SIZE

STEPS = 5


def generate(pipe, z=0.5, seed=0, **kwargs):
    return pipe(z=z, generator=torch.manual_seed(seed), num_inference_steps=STEPS, **kwargs)


@pytest.mark.parametrize(
    ("output_type", "kind", "dtype"),
    [("np", np.ndarray, np.float32), ("pt", torch.Tensor, torch.float32), ("model", np.ndarray, np.float32)],
)
def test_array_output_types(tiny_pipeline, output_type, kind, dtype):
    out = generate(tiny_pipeline, z=[0.1, 0.5, 2.0], num_images_per_redshift=2, output_type=output_type)
    assert isinstance(out.images, kind)
    assert out.images.shape == (6, 5, 16, 16)
    assert out.images.dtype == dtype
    np.testing.assert_array_equal(out.redshifts, [0.1, 0.1, 0.5, 0.5, 2.0, 2.0])


def test_flux_output_is_inverse_transform_of_model_output(tiny_pipeline):
    fluxes = generate(tiny_pipeline, output_type="np").images
    model_space = generate(tiny_pipeline, output_type="model").images
    np.testing.assert_allclose(fluxes, tiny_pipeline.flux_transform.inverse(model_space), rtol=1e-6)
    assert np.isfinite(fluxes).all()


def test_pil_output_is_rgb_composites(tiny_pipeline):
    out = generate(tiny_pipeline, z=[0.2, 1.0], output_type="pil")
    assert len(out.images) == 2
    assert all(
        isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (16, 16) for image in out.images
    )


def test_same_seed_same_images_different_redshift_different_images(tiny_pipeline):
    first = generate(tiny_pipeline, z=0.5).images
    again = generate(tiny_pipeline, z=0.5).images
    other_z = generate(tiny_pipeline, z=1.5).images
    other_seed = generate(tiny_pipeline, z=0.5, seed=1).images
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other_z)
    assert not np.allclose(first, other_seed)


def test_per_image_generators_make_batches_match_single_images(tiny_pipeline):
    redshifts = [0.2, 0.9, 1.7]
    batch = tiny_pipeline(
        z=redshifts,
        generator=[torch.Generator().manual_seed(seed) for seed in range(3)],
        num_inference_steps=STEPS,
        output_type="model",
    ).images
    for seed, z in enumerate(redshifts):
        single = tiny_pipeline(
            z=z, generator=[torch.Generator().manual_seed(seed)], num_inference_steps=STEPS, output_type="model"
        ).images
        np.testing.assert_allclose(batch[seed], single[0], rtol=1e-4, atol=1e-4)


def test_save_and_load_round_trip(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["unet"] == ["galaxy_pipeline.unet", "RedshiftUNet2DModel"]
    assert index["flux_transform"] == ["galaxy_pipeline.normalization", "FluxTransform"]
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin"))
    loaded = GalaxyRedshiftPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert not loaded.unet.training
    expected = generate(tiny_pipeline, z=[0.3, 1.1], output_type="model").images
    np.testing.assert_allclose(
        generate(loaded, z=[0.3, 1.1], output_type="model").images, expected, rtol=1e-5, atol=1e-5
    )
    assert loaded.flux_transform.softening == tiny_pipeline.flux_transform.softening


def test_load_in_bfloat16(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path)
    loaded = GalaxyRedshiftPipeline.from_pretrained(tmp_path, dtype=torch.bfloat16)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.dtype == torch.bfloat16
    out = generate(loaded, z=[0.4, 2.5], output_type="np")
    assert out.images.dtype == np.float32 and np.isfinite(out.images).all()


@pytest.mark.parametrize("scheduler_class", [DDIMScheduler, DPMSolverMultistepScheduler])
def test_scheduler_swap(tiny_pipeline, scheduler_class):
    tiny_pipeline.scheduler = scheduler_class.from_config(tiny_pipeline.scheduler.config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a random network diverges under few-step samplers
        out = generate(tiny_pipeline, z=[0.5, 1.5])
        again = generate(tiny_pipeline, z=[0.5, 1.5])
    assert out.images.shape == (2, 5, 16, 16)
    assert np.isfinite(out.images).all()
    np.testing.assert_array_equal(out.images, again.images)


def test_default_steps_are_the_training_steps_for_ddpm(tiny_pipeline):
    with (
        mock.patch.object(tiny_pipeline.scheduler, "set_timesteps", side_effect=RuntimeError("stop")) as spy,
        pytest.raises(RuntimeError, match="stop"),
    ):
        tiny_pipeline(z=0.5)
    assert spy.call_args.args[0] == 1000


def test_diverging_sampler_is_clipped_with_a_warning(tiny_pipeline):
    with mock.patch.object(tiny_pipeline.scheduler, "step") as step:
        step.return_value.prev_sample = torch.full((1, 5, 16, 16), 50.0)
        with pytest.warns(UserWarning, match="1280 of 1280 generated pixels"):
            out = generate(tiny_pipeline, output_type="model")
    assert out.images.max() == MODEL_SPACE_LIMIT


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"z": float("nan")}, "finite"),
        ({"z": [0.5, float("inf")]}, "finite"),
        ({"z": -0.1}, ">= 0"),
        ({"z": 4.5}, r"trained redshift range \[0.0, 4.0\].*allow_extrapolation"),
        ({"z": [[0.1, 0.2]]}, "shape"),
        ({"z": []}, "empty"),
        ({"z": "far"}, "number"),
        ({"z": 0.5, "num_images_per_redshift": 0}, "positive integer"),
        ({"z": 0.5, "num_images_per_redshift": 1.5}, "positive integer"),
        ({"z": 0.5, "num_inference_steps": 0}, "positive integer"),
        ({"z": 0.5, "output_type": "jpeg"}, "output_type"),
        ({"z": [0.1, 0.2], "generator": [torch.Generator()]}, "one per image"),
        (
            {"z": [0.1, 0.2], "latents": torch.zeros(1, 5, 16, 16)},
            r"latents must be a tensor of shape \(2, 5, 16, 16\)",
        ),
        ({"z": 0.5, "callback_on_step_end": "print"}, "callable"),
        ({"z": 0.5, "callback_on_step_end_tensor_inputs": ["noise"]}, r"\['noise'\] are not available"),
    ],
)
def test_bad_input_raises_value_error_naming_the_problem(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(**kwargs)


def test_extrapolation_allowed_on_request_with_warning(tiny_pipeline):
    with pytest.warns(UserWarning, match="extrapolates"):
        out = generate(tiny_pipeline, z=4.5, allow_extrapolation=True)
    assert out.redshifts.tolist() == [4.5]


def test_hub_id_resolves_through_snapshot_download(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "snapshot")
    with mock.patch.object(hub_ids, "snapshot_download", return_value=str(tmp_path / "snapshot")) as download:
        loaded = GalaxyRedshiftPipeline.from_pretrained(
            "user/galaxies", revision="v1", token="hf_secret", cache_dir=tmp_path / "cache", local_files_only=True
        )
    assert isinstance(loaded, GalaxyRedshiftPipeline)
    args, kwargs = download.call_args
    assert args == ("user/galaxies",)
    assert kwargs["revision"] == "v1" and kwargs["token"] == "hf_secret" and kwargs["local_files_only"] is True
    assert kwargs["cache_dir"] == tmp_path / "cache"
    assert "*.bin" in kwargs["ignore_patterns"]


def test_hub_id_loads_from_offline_cache(tiny_pipeline, tmp_path):
    """A fake Hugging Face cache (refs/main -> snapshots/<sha>) read with HF_HUB_OFFLINE=1, in a fresh process."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--astro--tiny-galaxies"
    tiny_pipeline.save_pretrained(repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from galaxy_pipeline import GalaxyRedshiftPipeline, RedshiftUNet2DModel
        pipe = GalaxyRedshiftPipeline.from_pretrained("astro/tiny-galaxies")
        pipe.set_progress_bar_config(disable=True)
        out = pipe(z=0.7, generator=torch.manual_seed(0), num_inference_steps=3)
        np.save("out.npy", out.images)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = tiny_pipeline(z=0.7, generator=torch.manual_seed(0), num_inference_steps=3).images
    np.testing.assert_allclose(np.load(Path(tmp_path) / "out.npy"), expected, rtol=1e-4, atol=1e-6)


def test_batch_size_with_per_image_generators_gives_the_same_images(tiny_pipeline):
    def run(batch_size):
        generators = [torch.Generator().manual_seed(seed) for seed in range(5)]
        return tiny_pipeline(
            z=[0.1, 0.4, 0.8, 1.6, 3.2],
            generator=generators,
            num_inference_steps=STEPS,
            batch_size=batch_size,
            output_type="model",
        ).images

    np.testing.assert_allclose(run(2), run(None), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tiny_pipeline(z=0.5, batch_size=0)


@pytest.fixture
def guided_pipeline():
    pipe = make_tiny_pipeline()
    torch.manual_seed(1)
    pipe.unet = RedshiftUNet2DModel.from_preset("tiny", sample_size=16, learned_null_redshift=True)
    with torch.no_grad():
        pipe.unet.null_redshift_embedding.normal_()
    return pipe


def test_guidance_scale_one_equals_no_guidance_and_other_scales_differ(guided_pipeline):
    plain = generate(guided_pipeline, z=[0.3, 1.2], output_type="model").images
    scale_one = generate(guided_pipeline, z=[0.3, 1.2], output_type="model", guidance_scale=1.0).images
    guided = generate(guided_pipeline, z=[0.3, 1.2], output_type="model", guidance_scale=3.0).images
    np.testing.assert_array_equal(plain, scale_one)
    assert not np.allclose(plain, guided)


def test_guidance_needs_a_null_embedding(tiny_pipeline):
    with pytest.raises(ValueError, match="trained with redshift dropout"):
        tiny_pipeline(z=0.5, guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale must be"):
        tiny_pipeline(z=0.5, guidance_scale=float("nan"))


def test_sweep_shares_noise_across_redshifts(tiny_pipeline):
    out = tiny_pipeline.sweep(z=[0.5, 0.5, 2.0], generator=torch.Generator().manual_seed(0), num_noise_draws=2,
                              num_inference_steps=STEPS, output_type="model")  # fmt: skip
    images = out.images
    assert images.shape == (6, 5, 16, 16)
    np.testing.assert_array_equal(out.redshifts, [0.5, 0.5, 2.0, 0.5, 0.5, 2.0])
    np.testing.assert_array_equal(images[0], images[1])  # same noise, same z, deterministic sampler
    assert not np.allclose(images[0], images[2])  # same noise, other z
    assert not np.allclose(images[0], images[3])  # other noise draw
    assert isinstance(tiny_pipeline.scheduler, DDPMScheduler)  # the stochastic scheduler is restored


def test_long_redshift_lists_are_denoised_in_bounded_batches(monkeypatch):
    pipe = make_tiny_pipeline(sample_size=8)
    batch_sizes = []
    denoise = pipe._denoise

    def recording_denoise(noise, *args):
        batch_sizes.append(noise.shape[0])
        return denoise(noise, *args)

    monkeypatch.setattr(pipe, "_denoise", recording_denoise)
    out = pipe(z=np.linspace(0.1, 3.0, DEFAULT_BATCH_SIZE + 10), num_inference_steps=1, output_type="model")
    assert batch_sizes == [DEFAULT_BATCH_SIZE, 10]
    assert out.images.shape == (DEFAULT_BATCH_SIZE + 10, 5, 8, 8) and np.isfinite(out.images).all()


def test_given_latents_replace_the_drawn_noise(tiny_pipeline):
    """latents= is the starting noise: passing the noise a generator would draw gives the same images."""
    tiny_pipeline.scheduler = DDIMScheduler.from_config(tiny_pipeline.scheduler.config)  # no per-step noise
    drawn = generate(tiny_pipeline, z=[0.3, 1.2], output_type="model").images
    noise = torch.randn((2, *tiny_pipeline._image_shape), generator=torch.manual_seed(0))
    given = tiny_pipeline(z=[0.3, 1.2], latents=noise, num_inference_steps=STEPS, output_type="model").images
    np.testing.assert_allclose(given, drawn, rtol=1e-5, atol=1e-5)
    other = tiny_pipeline(z=[0.3, 1.2], latents=-noise, num_inference_steps=STEPS, output_type="model").images
    assert not np.allclose(other, drawn)
    batched = tiny_pipeline(z=[0.3, 1.2], latents=noise, num_inference_steps=STEPS, output_type="model", batch_size=1)
    np.testing.assert_allclose(batched.images, given, rtol=1e-4, atol=1e-4)


def test_step_callback_sees_every_step_and_can_replace_the_latents(tiny_pipeline):
    seen = []

    def record(pipe, step_index, timestep, tensors):
        seen.append((step_index, int(timestep), tuple(tensors["latents"].shape)))
        return tensors

    plain = generate(tiny_pipeline, z=[0.3, 1.2], output_type="model").images
    recorded = generate(tiny_pipeline, z=[0.3, 1.2], output_type="model", callback_on_step_end=record).images
    np.testing.assert_array_equal(recorded, plain)  # returning the tensors unchanged changes nothing
    assert [index for index, _, _ in seen] == list(range(STEPS))
    assert [timestep for _, timestep, _ in seen] == [int(t) for t in tiny_pipeline.scheduler.timesteps]
    assert {shape for _, _, shape in seen} == {(2, *tiny_pipeline._image_shape)}

    def zero_at_last_step(pipe, step_index, timestep, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])} if step_index == STEPS - 1 else {}

    zeroed = generate(tiny_pipeline, z=0.3, output_type="model", callback_on_step_end=zero_at_last_step).images
    np.testing.assert_array_equal(zeroed, np.zeros_like(zeroed))


def test_interrupt_from_the_callback_skips_the_remaining_steps(tiny_pipeline):
    steps_run = []

    def stop_after_two(pipe, step_index, timestep, tensors):
        steps_run.append(step_index)
        if step_index == 1:
            pipe._interrupt = True
        return tensors

    generate(tiny_pipeline, z=0.3, callback_on_step_end=stop_after_two)
    assert steps_run == [0, 1] and tiny_pipeline.interrupt
    generate(tiny_pipeline, z=0.3)
    assert not tiny_pipeline.interrupt  # every call starts uninterrupted


def test_seeds_give_one_generator_per_image(tiny_pipeline):
    """seeds=[s0, s1] draws image k exactly as generator=[torch.Generator().manual_seed(s_k)] does."""
    settings = {"z": [0.5, 1.5], "num_inference_steps": 2, "output_type": "model"}
    by_seed = tiny_pipeline(**settings, seeds=[7, 11]).images
    by_generator = tiny_pipeline(
        **settings, generator=[torch.Generator().manual_seed(7), torch.Generator().manual_seed(11)]
    ).images
    np.testing.assert_array_equal(by_seed, by_generator)
    alone = tiny_pipeline(z=1.5, num_inference_steps=2, output_type="model", seeds=np.array([11])).images
    np.testing.assert_allclose(alone[0], by_seed[1], atol=1e-5)  # the batch does not change image 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": [1, 2], "generator": torch.Generator()}, "Pass seeds= or generator=, not both"),
        ({"seeds": [1]}, "Got 1 seeds for 2 images"),
        ({"seeds": [1, -2]}, "seeds must be integers >= 0"),
        ({"seeds": [1, True]}, "seeds must be integers >= 0"),
        ({"seeds": [1, 2.5]}, "seeds must be integers >= 0"),
    ],
)
def test_bad_seeds_raise_a_clear_value_error(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(z=[0.5, 1.0], num_inference_steps=1, **kwargs)
