"""Batch generation to FITS/PNG/NPY with a manifest, and the `galaxy-pipeline generate` command."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales
from conftest import make_tiny_pipeline
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from PIL import Image

from galaxy_pipeline.cli import main
from galaxy_pipeline.generate import generate_to_files, generated_rows, with_scheduler

# Images of one seed computed in batches of different sizes agree to float32 round-off (the
# convolution kernels change with the batch size); different seeds differ by O(1) fluxes.
ROUND_OFF = {"rtol": 1e-3, "atol": 1e-3}


def _read(manifest_path: Path, key: str) -> np.ndarray:
    return np.stack([np.load(manifest_path.parent / row[key]) for row in generated_rows(manifest_path)])


def test_fits_png_npy_and_manifest(tiny_pipeline, tmp_path):
    manifest_path = generate_to_files(
        tiny_pipeline,
        [0.3, 1.2],
        n_per_redshift=2,
        seed=10,
        out_dir=tmp_path / "out",
        formats=("fits", "png", "npy"),
        scheduler="ddim",
        steps=3,
        model_id="astro-user/galaxies",
        revision="0123456789abcdef0123456789abcdef01234567",
        progress=False,
    )
    manifest = json.loads(manifest_path.read_text())
    rows = list(generated_rows(manifest_path))
    assert [(row["index"], row["redshift"], row["seed"]) for row in rows] == [
        (0, 0.3, 10),
        (1, 0.3, 11),
        (2, 1.2, 12),
        (3, 1.2, 13),
    ]
    assert manifest["scheduler"] == "DDIMScheduler" and manifest["steps"] == 3

    row = rows[2]
    with fits.open(manifest_path.parent / row["fits"]) as hdus:
        header, data = hdus[0].header, hdus[0].data
        assert data.shape == (5, 16, 16) and data.dtype == np.dtype(">f4")
        assert header["MAGZERO"] == 27.0 and header["BUNIT"]
        assert [header[f"BAND{k}"] for k in range(1, 6)] == ["g", "r", "i", "z", "y"]
        assert header["PIXSCALE"] == pytest.approx(0.168)
        assert header["REDSHIFT"] == pytest.approx(1.2) and header["SEED"] == 12
        assert header["MODEL"] == "astro-user/galaxies" and header["REVISION"].startswith("0123456789")
        assert header["SCHEDULER"] == "DDIMScheduler" and header["STEPS"] == 3
        assert header["CDELT2"] == pytest.approx(0.168 / 3600)
        wcs = WCS(header, naxis=2)
        np.testing.assert_allclose(proj_plane_pixel_scales(wcs) * 3600, [0.168, 0.168])
        np.testing.assert_array_equal(data, np.load(manifest_path.parent / row["npy"]))

    # The FITS cube is the image of seed 12 at z=1.2, as the pipeline makes it on its own.
    alone = with_scheduler(tiny_pipeline, "ddim")(
        z=1.2, generator=[torch.Generator().manual_seed(12)], num_inference_steps=3
    ).images[0]
    np.testing.assert_allclose(data, alone, **ROUND_OFF)

    png = Image.open(manifest_path.parent / row["png"])
    assert png.mode == "RGB" and png.size == (16, 16)


def test_same_seed_same_pixels_whatever_the_batch_size(tiny_pipeline, tmp_path):
    runs = {
        batch_size: generate_to_files(
            tiny_pipeline,
            [0.5, 2.0],
            n_per_redshift=3,
            seed=7,
            out_dir=tmp_path / f"batch{batch_size}",
            formats=("npy",),
            scheduler="ddpm",
            steps=4,
            batch_size=batch_size,
            progress=False,
        )
        for batch_size in (1, 4, 64)
    }
    images = {batch_size: _read(path, "npy") for batch_size, path in runs.items()}
    np.testing.assert_allclose(images[4], images[1], **ROUND_OFF)
    np.testing.assert_allclose(images[64], images[1], **ROUND_OFF)
    assert np.abs(images[1][0] - images[1][1]).max() > 100 * ROUND_OFF["atol"]


def test_with_scheduler_swaps_without_touching_the_pipeline(tiny_pipeline):
    original = tiny_pipeline.scheduler
    for name, cls in (("ddpm", DDPMScheduler), ("ddim", DDIMScheduler), ("dpm", DPMSolverMultistepScheduler)):
        swapped = with_scheduler(tiny_pipeline, name)
        assert type(swapped.scheduler) is cls and swapped.unet is tiny_pipeline.unet
        assert swapped.scheduler.config.num_train_timesteps == original.config.num_train_timesteps
    assert tiny_pipeline.scheduler is original
    with pytest.raises(ValueError, match="Unknown scheduler"):
        with_scheduler(tiny_pipeline, "euler")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"redshifts": [-0.1]}, "z must be >= 0"),
        ({"redshifts": [5.0]}, "outside the trained redshift range"),
        ({"formats": ("tiff",)}, "formats"),
        ({"batch_size": 0}, "batch_size"),
        ({"steps": 0}, "steps"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_requests_are_refused_before_any_work(tiny_pipeline, tmp_path, kwargs, message):
    request = {"redshifts": [0.5], "n_per_redshift": 1, "seed": 0, "out_dir": tmp_path / "out", "progress": False}
    with pytest.raises(ValueError, match=message):
        generate_to_files(tiny_pipeline, **{**request, **kwargs})
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "pipeline"
    make_tiny_pipeline(redshift_max=2.0).save_pretrained(folder)
    return folder


@pytest.mark.filterwarnings("ignore:.*outside the model-space range:UserWarning")  # random weights diverge
def test_cli_generate_writes_files(model_dir, tmp_path, capsys):
    out = tmp_path / "galaxies"
    args = ["generate", "--model", str(model_dir), "--z", "0.3", "1.5", "--n", "2", "--seed", "3", "--out", str(out)]
    options = ["--scheduler", "dpm", "--steps", "2", "--format", "fits", "npy", "--batch-size", "3"]
    assert main([*args, *options, "--dtype", "bfloat16"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    rows = list(generated_rows(out / "manifest.json"))
    assert [row["seed"] for row in rows] == [3, 4, 5, 6]
    assert manifest["model"] == str(model_dir) and manifest["scheduler"] == "DPMSolverMultistepScheduler"
    header = fits.getheader(out / rows[3]["fits"])
    assert header["REDSHIFT"] == pytest.approx(1.5) and header["STEPS"] == 2
    assert "manifest" in capsys.readouterr().out

    assert main([*args, *options]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--z", "-0.5"], "--z"),
        (["--z", "3.0"], "outside the trained redshift range"),
        (["--z", "0.5", "--format", "npy", "--steps", "0"], "steps"),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(model_dir, tmp_path, capsys, arguments, message):
    assert main(["generate", "--model", str(model_dir), "--out", str(tmp_path / "o"), *arguments]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0]


def test_cli_missing_model_folder_exits_2(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    assert main(["generate", "--model", str(missing), "--z", "0.5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1


def test_channels_last_and_compile_options(model_dir, monkeypatch):
    from galaxy_pipeline.hub import load_pipeline

    plain, _ = load_pipeline(model_dir)
    fast, _ = load_pipeline(model_dir, channels_last=True)
    assert fast.unet.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.unet.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    for pipe in (plain, fast):
        pipe.set_progress_bar_config(disable=True)
    kwargs = dict(z=[0.3, 1.0], num_inference_steps=2, output_type="model")
    np.testing.assert_allclose(
        fast(**kwargs, generator=[torch.Generator().manual_seed(k) for k in range(2)]).images,
        plain(**kwargs, generator=[torch.Generator().manual_seed(k) for k in range(2)]).images,
        rtol=1e-4,
        atol=1e-4,
    )
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    pipe, _ = load_pipeline(model_dir, compile_unet=True)
    assert compiled == [pipe.unet]
