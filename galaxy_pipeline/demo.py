"""Gradio demo: generate galaxies at a chosen redshift, look at them, measure them, download FITS.

    >>> demo = build_demo(GalaxyRedshiftPipeline.from_pretrained("user/galaxies-ddpm"))
    >>> demo.launch()            # or: galaxy-pipeline demo --model user/galaxies-ddpm

Each request is limited to ``max_images`` galaxies and ``max_steps`` denoising steps (larger
requests are clamped, and the page says so) and requests run one at a time from a bounded queue.
Galaxy ``k`` of a request uses the seed ``seed + k``, as ``galaxy-pipeline generate`` does, so a
galaxy seen in the demo can be regenerated from the command line.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.visualization import simple_norm
from PIL import Image

from galaxy_pipeline.checks import check_positive_int
from galaxy_pipeline.generate import SCHEDULERS, fits_header, with_scheduler
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC
from galaxy_pipeline.hub_ids import ModelSource
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.provenance import read_training_config, training_data_sentence
from galaxy_pipeline.visualization import RGB_BANDS, to_pil

SAMPLER_LABELS = {
    "ddpm": "DDPM (the trained sampler; best with many steps)",
    "ddim": "DDIM (deterministic)",
    "dpm": "DPM-Solver++ (fast: good in 20-30 steps)",
}
DISPLAY_SIZE = 192
"""Side in screen pixels of displayed images (nearest-neighbour upscaling keeps pixels visible)."""
MORPHOLOGY_COLUMNS: tuple[str, ...] = (
    "detected",
    "ellipticity",
    "semimajor_axis_arcsec",
    "half_light_radius_arcsec",
    "sersic_index",
    "isophotal_area_arcsec2",
    "mag_i",
    "g_r",
    "flags",
)
"""Columns of ``measure_morphology`` shown in the demo table (all 1-D columns if none of these exist)."""
GALLERY_ROW_HEIGHT = 200
"""Height in screen pixels of one row of a gallery."""
FILE_LIFETIME_S = 3600
"""FITS files written for download are deleted after this many seconds."""


@dataclass
class DemoResult:
    """What one demo request produced.

    Args:
        composites: RGB composites with captions, one per galaxy.
        band_images: grey-scale images of the first galaxy with band captions.
        table: one row of measurements per galaxy.
        fits_path: multi-extension FITS file, one (5, H, W) flux cube per galaxy.
        status: Markdown summary of the request, including any clamped limit.
    """

    composites: list[tuple[Image.Image, str]]
    band_images: list[tuple[Image.Image, str]]
    table: pd.DataFrame
    fits_path: str
    status: str


def generate_galaxies(
    pipe: GalaxyRedshiftPipeline,
    z: float,
    n: int,
    seed: int | None,
    sampler: str,
    steps: int,
    workdir: str | os.PathLike,
    max_images: int = 8,
    max_steps: int = 100,
    model_id: str | None = None,
) -> DemoResult:
    """Serve one demo request: ``n`` galaxies at redshift ``z`` (clamped to the demo's limits).

    Args:
        pipe: the pipeline (not modified).
        z: redshift, inside the trained range.
        n: number of galaxies, clamped to [1, ``max_images``].
        seed: base seed (an empty box counts as 0); galaxy ``k`` uses ``seed + k``.
        sampler: ``"ddpm"``, ``"ddim"`` or ``"dpm"``.
        steps: denoising steps, clamped to [1, ``max_steps``].
        workdir: folder the FITS download is written to.
        max_images: most galaxies per request.
        max_steps: most denoising steps per request.
        model_id: model name written into the FITS headers.
    """
    notes = []
    requested_n, requested_steps = int(n), int(steps)
    n = min(max(requested_n, 1), max_images)
    steps = min(max(requested_steps, 1), max_steps)
    if n != requested_n:
        notes.append(f"Asked for {requested_n} galaxies: this demo makes 1 to {max_images} per request.")
    if steps != requested_steps:
        notes.append(f"Asked for {requested_steps} steps: this demo runs 1 to {max_steps} steps per request.")
    seed = int(seed or 0)
    if seed < 0:
        raise ValueError(f"The seed must be >= 0; got {seed}.")
    if sampler not in SCHEDULERS:
        raise ValueError(f"Unknown sampler {sampler!r}; choose one of {sorted(SCHEDULERS)}.")

    started = time.perf_counter()
    runner = with_scheduler(pipe, sampler)
    runner.set_progress_bar_config(disable=True)
    seeds = [seed + k for k in range(n)]
    fluxes = runner(z=[float(z)] * n, seeds=seeds, num_inference_steps=steps).images.astype(np.float32)
    elapsed = time.perf_counter() - started
    scheduler_class = type(runner.scheduler).__name__

    composites = [
        (_upscale(image), f"z = {z:.2f}, seed {image_seed}")
        for image, image_seed in zip(to_pil(fluxes), seeds, strict=True)
    ]
    band_images = [(_upscale(_grey(plane)), f"{band} band") for plane, band in zip(fluxes[0], BANDS, strict=True)]
    fits_path = _write_fits(fluxes, z, seeds, Path(workdir), model_id, scheduler_class, steps)
    status = (
        f"Generated {n} galaxies at z = {z:.2f} with {scheduler_class} in {steps} steps "
        f"(seeds {seeds[0]}-{seeds[-1]}) in {elapsed:.1f} s."
    )
    if notes:
        status = "\n\n".join([*(f"**Limited:** {note}" for note in notes), status])
    return DemoResult(composites, band_images, measurement_table(fluxes, z, seeds), str(fits_path), status)


def measurement_table(fluxes: np.ndarray, z: float, seeds: list[int]) -> pd.DataFrame:
    """Morphology of each galaxy, measured by ``galaxy_pipeline.evaluation.morphology`` when installed.

    Sizes are in arcsec, areas in arcsec^2, magnitudes AB; see ``MORPHOLOGY_COLUMNS``.

    Without that module, the table holds what needs no fit: the total i-band flux (HSC units) and
    its AB magnitude.
    """
    front = pd.DataFrame({"galaxy": range(len(seeds)), "redshift": float(z), "seed": seeds})
    try:
        from galaxy_pipeline.evaluation.morphology import measure_morphology
    except ImportError:
        i_flux = fluxes[:, BANDS.index("i")].sum(axis=(-2, -1)).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag_i = np.where(i_flux > 0, MAG_ZERO_POINT - 2.5 * np.log10(i_flux), np.nan)
        measured = pd.DataFrame({"flux_i": i_flux, "mag_i": mag_i})
    else:
        catalog = measure_morphology(fluxes)
        shown = [name for name in MORPHOLOGY_COLUMNS if name in catalog.colnames] or catalog.colnames
        measured = pd.DataFrame({name: np.asarray(catalog[name]) for name in shown if np.ndim(catalog[name]) == 1})
    return pd.concat([front, measured.reset_index(drop=True)], axis=1).round(3)


def check_port(host: str, port: int) -> None:
    """Raise ValueError unless ``port`` is a TCP port number that is free to serve on at ``host``."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"--port must be a TCP port between 1 and 65535; got {port!r}.")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as error:
        raise ValueError(
            f"Cannot serve the demo on {host}:{port}: {error.strerror or error}. Choose another --port "
            "(or stop the program using it) or another --host."
        ) from error


def build_demo(
    pipe: GalaxyRedshiftPipeline,
    max_images: int = 8,
    max_steps: int = 100,
    source: ModelSource | None = None,
    default_sampler: str = "dpm",
    default_steps: int = 25,
    queue_size: int = 16,
):
    """The Gradio app of a pipeline.

    Controls: a redshift slider over the trained range, the number of galaxies, the seed, the
    sampler and the number of steps. Outputs: RGB composites (Lupton i, r, g), the five bands of
    the first galaxy, a table of measurements, a FITS download, and a status line.

    Args:
        pipe: the pipeline to sample from.
        max_images: most galaxies per request.
        max_steps: most denoising steps per request.
        source: where the pipeline was loaded from (``galaxy_pipeline.hub.load_pipeline``'s second value): the
            page names the model by its Hub id or folder name, and states its training data from the
            folder's ``training_config.json``, as the model card does.
        default_sampler: sampler selected when the page opens.
        default_steps: steps selected when the page opens.
        queue_size: most requests waiting in the queue; requests run one at a time.

    Returns:
        A ``gradio.Blocks`` app, queued; call ``.launch()`` to serve it.
    """
    import gradio as gr

    for name, value in (("max_images", max_images), ("max_steps", max_steps), ("queue_size", queue_size)):
        check_positive_int(name, value)
    if default_sampler not in SCHEDULERS:
        raise ValueError(f"Unknown default_sampler {default_sampler!r}; choose one of {sorted(SCHEDULERS)}.")
    z_min, z_max = _two_decimals_inside(*pipe.redshift_range)
    workdir = Path(tempfile.mkdtemp(prefix="galaxy-pipeline-demo-"))
    model_id = source.display_name if source is not None else None
    training = read_training_config(source.local_dir) if source is not None else None
    trained_on = training_data_sentence(training) if training is not None else "training data not recorded"

    def run(z, n, seed, sampler, steps):
        _remove_old_files(workdir)
        try:
            result = generate_galaxies(pipe, z, n, seed, sampler, steps, workdir, max_images, max_steps, model_id)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        return result.composites, result.band_images, result.table, result.fits_path, result.status

    size = pipe.unet.config.sample_size
    intro = (
        f"# Galaxies at a chosen redshift\n"
        f"A redshift-conditioned diffusion model{f' (`{model_id}`)' if model_id else ''} of Hyper Suprime-Cam "
        f'{"/".join(BANDS)} cutouts ({size} x {size} pixels of {PIXEL_SCALE_ARCSEC}"), trained on {trained_on}, '
        f"for {z_min:.2f} <= z <= {z_max:.2f}. Fluxes are in HSC units (AB zero point {MAG_ZERO_POINT:g}).\n\n"
        f"Limits per request: {max_images} galaxies, {max_steps} denoising steps; requests run one at a time."
    )
    with gr.Blocks(title="galaxy_pipeline demo", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(intro)
        with gr.Row():
            with gr.Column(scale=1):
                redshift = gr.Slider(
                    z_min,
                    z_max,
                    value=min(max(0.5, z_min), z_max),
                    step=0.01,
                    label="Redshift z",
                    info=f"trained range {z_min:.2f}-{z_max:.2f}; 93% of GalaxiesML lies below z = 1.5",
                    elem_id="redshift",
                )
                count = gr.Slider(
                    1, max_images, value=min(4, max_images), step=1, label="Number of galaxies", elem_id="count"
                )
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (galaxy k uses seed + k)")
                sampler = gr.Dropdown(
                    choices=[(label, name) for name, label in SAMPLER_LABELS.items()],
                    value=default_sampler,
                    label="Sampler",
                )
                steps = gr.Slider(
                    1, max_steps, value=min(default_steps, max_steps), step=1, label="Denoising steps", elem_id="steps"
                )
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                gallery = gr.Gallery(
                    label=f"RGB composites ({', '.join(RGB_BANDS)} as red, green, blue)",
                    columns=4,
                    height=GALLERY_ROW_HEIGHT * -(-max_images // 4),
                    format="png",
                    elem_id="gallery",
                )
                bands = gr.Gallery(
                    label="First galaxy, band by band",
                    columns=5,
                    height=GALLERY_ROW_HEIGHT,
                    format="png",
                    elem_id="bands",
                )
                table = gr.Dataframe(label="Measurements", elem_id="measurements", interactive=False)
                fits_file = gr.File(label="FITS download (one 5-band flux cube per galaxy)", elem_id="fits")
        button.click(
            run,
            inputs=[redshift, count, seed, sampler, steps],
            outputs=[gallery, bands, table, fits_file, status],
            api_name="generate",
        )
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo


def _two_decimals_inside(z_min: float, z_max: float) -> tuple[float, float]:
    """The trained redshift range rounded inwards to 2 decimals (the slider's 0.01 grid), or as is if narrower."""
    low, high = math.ceil(round(z_min * 100, 6)) / 100, math.floor(round(z_max * 100, 6)) / 100
    return (low, high) if low < high else (z_min, z_max)


def _write_fits(
    fluxes: np.ndarray,
    z: float,
    seeds: list[int],
    workdir: Path,
    model_id: str | None,
    scheduler: str,
    steps: int,
) -> Path:
    """One multi-extension FITS file: an empty primary HDU and one flux-cube extension per galaxy."""
    primary = fits.PrimaryHDU()
    primary.header["NGALAXY"] = (len(seeds), "number of galaxy extensions")
    primary.header["MODEL"] = model_id or "unknown"
    cubes = []
    for k, (flux, image_seed) in enumerate(zip(fluxes, seeds, strict=True)):
        header = fits_header(z, image_seed, flux.shape[-2:], model_id=model_id, scheduler=scheduler, steps=steps)
        cubes.append(fits.ImageHDU(data=flux, header=header, name=f"GALAXY{k}"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"galaxies_z{z:.2f}_seed{seeds[0]}_{uuid.uuid4().hex[:8]}.fits"
    fits.HDUList([primary, *cubes]).writeto(path)
    return path


def _remove_old_files(workdir: Path) -> None:
    cutoff = time.time() - FILE_LIFETIME_S
    for path in workdir.glob("*.fits"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


def _grey(plane: np.ndarray) -> Image.Image:
    """One band as an 8-bit grey image: arcsinh stretch between the 0.5th and 99.5th percentiles."""
    norm = simple_norm(plane, stretch="asinh", percent=99.0)
    return Image.fromarray((255 * np.clip(norm(plane).filled(0), 0, 1)).astype(np.uint8))


def _upscale(image: Image.Image) -> Image.Image:
    return image.resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.NEAREST)
