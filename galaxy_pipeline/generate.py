"""Batch generation of galaxies to files: FITS cubes, PNG composites, NPY arrays and a manifest.

    >>> manifest = generate_to_files(pipe, [0.3, 1.2], n_per_redshift=8, seed=0, out_dir="galaxies",
    ...                              formats=("fits", "png"), scheduler="dpm", steps=25)

Image ``k`` (redshift-major order: all images of the first redshift first) is drawn with its own
torch generator seeded ``seed + k``, so it is the same whatever the batch size (to float32
round-off: convolution kernels change with the batch shape, ~1e-5 in model space). Every FITS file
is one (5, H, W) flux cube (bands g,r,i,z,y; HSC units, AB zero point 27) whose header records
the redshift, seed, model, revision, sampler and number of steps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time
from tqdm.auto import tqdm

from galaxy_pipeline.atomic import atomic_folder
from galaxy_pipeline.checks import check_positive_int
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.schedulers import SCHEDULERS as SCHEDULERS  # re-exported: the demo checks names against it
from galaxy_pipeline.schedulers import make_scheduler
from galaxy_pipeline.version import __version__
from galaxy_pipeline.visualization import to_pil

FORMATS: tuple[str, ...] = ("fits", "png", "npy")
MANIFEST_NAME = "manifest.json"
AB_ZERO_POINT_JY_MAG = 8.9
"""AB magnitude of a 1 Jy source: m_AB = -2.5 log10(f / Jy) + 8.9."""


def with_scheduler(pipe: GalaxyRedshiftPipeline, scheduler: str | None = None) -> GalaxyRedshiftPipeline:
    """A pipeline sharing ``pipe``'s network and flux transform, with a fresh scheduler of its own.

    Args:
        pipe: the loaded pipeline (left unchanged).
        scheduler: a name of :data:`galaxy_pipeline.schedulers.SCHEDULERS` (``"ddpm"``, ``"ddim"``, ``"dpm"``,
            ``"unipc"``), built from ``pipe.scheduler.config``; ``None`` keeps ``pipe``'s scheduler class.
    """
    if scheduler is None:
        new_scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    else:
        new_scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    return GalaxyRedshiftPipeline(unet=pipe.unet, scheduler=new_scheduler, flux_transform=pipe.flux_transform)


def fits_header(
    redshift: float,
    seed: int,
    image_size: tuple[int, int],
    model_id: str | None = None,
    revision: str | None = None,
    scheduler: str | None = None,
    steps: int | None = None,
) -> fits.Header:
    """FITS header of one generated (5, H, W) flux cube.

    Records the flux unit (HSC coadd flux with AB zero point ``MAGZERO`` = 27; ``PHOTFNU`` gives
    it in Jy), band of each plane, pixel scale (arcsec), generation settings, and a linear WCS of
    angular offsets from the image centre (degrees; east to the left), with no sky position.

    Args:
        redshift: redshift the image was generated at.
        seed: torch seed of this image.
        image_size: (height, width) in pixels.
        model_id: Hub id or folder of the model.
        revision: Hub commit hash of the model, when known.
        scheduler: scheduler class that sampled the image.
        steps: number of denoising steps.
    """
    height, width = image_size
    header = fits.Header()
    header["BUNIT"] = ("count", "HSC flux; AB mag = MAGZERO - 2.5 log10(flux)")
    header["MAGZERO"] = (MAG_ZERO_POINT, "AB magnitude zero point of the flux unit")
    header["FLUXMAG0"] = (10 ** (0.4 * MAG_ZERO_POINT), "flux of an AB magnitude 0 source")
    header["PHOTFNU"] = (10 ** (-0.4 * (MAG_ZERO_POINT - AB_ZERO_POINT_JY_MAG)), "[Jy] flux density of one flux unit")
    header["PIXSCALE"] = (PIXEL_SCALE_ARCSEC, "[arcsec/pixel] pixel scale")
    for plane, band in enumerate(BANDS, start=1):
        header[f"BAND{plane}"] = (band, f"HSC {band} filter in plane {plane}")
    header["WCSAXES"] = (2, "linear angular offsets, no sky position")
    header["CUNIT1"] = header["CUNIT2"] = "deg"
    header["CRPIX1"] = ((width + 1) / 2, "image centre")
    header["CRPIX2"] = ((height + 1) / 2, "image centre")
    header["CRVAL1"] = header["CRVAL2"] = 0.0
    header["CDELT1"] = (-PIXEL_SCALE_ARCSEC / 3600, "[deg] pixel size, east to the left")
    header["CDELT2"] = (PIXEL_SCALE_ARCSEC / 3600, "[deg] pixel size")
    header["REDSHIFT"] = (float(redshift), "redshift the galaxy was generated at")
    header["SEED"] = (int(seed), "torch seed of this image")
    header["MODEL"] = model_id or "unknown"
    if revision:
        header["REVISION"] = (revision, "Hub commit")
    if scheduler:
        header["HIERARCH SCHEDULER"] = scheduler
    if steps:
        header["STEPS"] = (int(steps), "denoising steps")
    header["ORIGIN"] = f"galaxy_pipeline {__version__}"
    header["DATE"] = (Time.now().isot, "UTC creation time")
    header["COMMENT"] = "Generated by a diffusion model: a mock HSC observation, not a real galaxy."
    return header


def generate_to_files(
    pipe: GalaxyRedshiftPipeline,
    redshifts: Sequence[float],
    n_per_redshift: int,
    seed: int,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("fits",),
    scheduler: str | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    model_id: str | None = None,
    revision: str | None = None,
    allow_extrapolation: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``n_per_redshift`` galaxies at each redshift and write them to ``out_dir``.

    Files go to ``out_dir/<format>/galaxy_<k>_z<z>.<ext>``: FITS (5, H, W) flux cubes with the
    header of :func:`fits_header`, PNG Lupton RGB composites (i, r, g), NPY float32 flux arrays.
    ``manifest.json`` lists every image with its redshift, seed and files, and the settings.

    Args:
        pipe: the pipeline to sample from (not modified).
        redshifts: redshifts to generate at, within the model's trained range.
        n_per_redshift: galaxies per redshift (positive).
        seed: base seed; image ``k`` uses ``seed + k`` (non-negative).
        out_dir: output folder, created when the run is complete (it is written beside it first); an
            existing one must be empty or an earlier run.
        formats: any of ``"fits"``, ``"png"``, ``"npy"``.
        scheduler: ``"ddpm"``, ``"ddim"``, ``"dpm"``, ``"unipc"`` or ``None`` (the pipeline's own).
        steps: denoising steps; default the pipeline's default (all training steps for DDPM).
        batch_size: images per forward pass (memory and speed; results agree to float32 round-off).
        model_id: model name recorded in headers and manifest.
        revision: Hub commit of the model recorded in headers and manifest.
        allow_extrapolation: generate outside the trained redshift range (with a warning).
        overwrite: replace an earlier run in ``out_dir`` (a folder with a ``manifest.json``), all its files
            included; a non-empty folder without a manifest is never replaced.
        progress: show a progress bar.

    Returns:
        Path of the manifest.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [name for name in formats if name not in FORMATS]
    if not formats or unknown:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}; got {list(formats)}.")
    check_positive_int("n_per_redshift", n_per_redshift)
    check_positive_int("batch_size", batch_size)
    check_positive_int("steps", steps, none_means="the pipeline's default")
    z_values = pipe.check_redshifts(redshifts, allow_extrapolation)
    per_image_z = np.repeat(z_values, n_per_redshift)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= 2**63 - per_image_z.size:
        raise ValueError(f"seed must be an integer in [0, 2**63 - {per_image_z.size}]; got {seed!r}.")
    seeds = [int(seed) + k for k in range(per_image_z.size)]
    out_dir = Path(out_dir)
    _check_output(out_dir, overwrite)
    sampler = with_scheduler(pipe, scheduler)
    sampler.set_progress_bar_config(disable=True)
    scheduler_class = type(sampler.scheduler).__name__
    rows, steps_run = [], steps
    with atomic_folder(out_dir) as staged:
        for name in formats:
            (staged / name).mkdir(parents=True)
        with tqdm(total=per_image_z.size, desc="generating galaxies", unit="galaxy", disable=not progress) as bar:
            for start in range(0, per_image_z.size, batch_size):
                batch_z = per_image_z[start : start + batch_size]
                batch_seeds = seeds[start : start + batch_size]
                fluxes = sampler(
                    z=batch_z,
                    seeds=batch_seeds,
                    num_inference_steps=steps,
                    output_type="np",
                    allow_extrapolation=allow_extrapolation,
                ).images.astype(np.float32)
                steps_run = len(sampler.scheduler.timesteps)
                composites = to_pil(fluxes) if "png" in formats else None
                for offset, (flux, z, image_seed) in enumerate(zip(fluxes, batch_z, batch_seeds, strict=True)):
                    index = start + offset
                    stem = f"galaxy_{index:05d}_z{z:.4f}"
                    row = {"index": index, "redshift": float(z), "seed": image_seed}
                    if "fits" in formats:
                        header = fits_header(
                            z, image_seed, flux.shape[-2:], model_id, revision, scheduler_class, steps_run
                        )
                        row["fits"] = f"fits/{stem}.fits"
                        fits.PrimaryHDU(data=flux, header=header).writeto(staged / row["fits"], overwrite=True)
                    if "png" in formats:
                        row["png"] = f"png/{stem}.png"
                        composites[offset].save(staged / row["png"])
                    if "npy" in formats:
                        row["npy"] = f"npy/{stem}.npy"
                        np.save(staged / row["npy"], flux)
                    rows.append(row)
                bar.update(len(batch_z))

        manifest = {
            "model": model_id,
            "revision": revision,
            "scheduler": scheduler_class,
            "steps": steps_run,
            "seed": int(seed),
            "n_per_redshift": n_per_redshift,
            "redshifts": z_values.tolist(),
            "formats": formats,
            "bands": list(BANDS),
            "flux_unit": f"HSC coadd flux, AB mag = {MAG_ZERO_POINT:g} - 2.5 log10(flux)",
            "pixel_scale_arcsec": PIXEL_SCALE_ARCSEC,
            "galaxy_pipeline_version": __version__,
            "images": rows,
        }
        (staged / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir / MANIFEST_NAME


def _check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse an earlier run unless ``overwrite``, and never replace a folder that is not an earlier run."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file: choose a folder for the output.")
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.is_file():
        if not overwrite:
            raise FileExistsError(f"{manifest_path} exists: choose another output folder or pass --overwrite.")
    elif any(out_dir.iterdir()):
        raise FileExistsError(
            f"Refusing to write into {out_dir}: it is not empty and holds no {MANIFEST_NAME} of an earlier "
            "generate run (nothing was deleted); choose a new or empty output folder."
        )
