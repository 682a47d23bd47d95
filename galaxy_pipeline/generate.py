"""Galaxies to files, resumable and sharded over processes: FITS cubes, PNG composites, NPY arrays, a HF dataset.

    >>> generate_to_files(pipe, [0.3, 1.2], n_per_redshift=8, seed=0, out_dir="galaxies",
    ...                   formats=("fits", "png"), scheduler="dpm", steps=25)
    >>> z = read_redshifts("survey.parquet", "z_spec")            # galaxy_pipeline.catalogue
    >>> generate_to_files(pipe, z, n_per_redshift=1, seed=0, out_dir="mock_survey", formats=("hf",))

Image ``k`` (redshift-major order: all images of the first redshift first) is drawn with its own torch
generator seeded ``seed + k``, so it is the same whatever the batch size or the number of processes (to
float32 round-off: convolution kernels change with the batch shape, ~1e-5 in model space). The images are
cut into shards of ``shard_size``; under ``accelerate launch --num_processes N`` process ``r`` writes shards
``i % N == r``. A shard is done once its rows file ``shards/shard-<i>.json`` exists: it is written last,
atomically, after the shard's images were moved into place. Rerunning the same command after a kill keeps
the finished shards and redoes the rest. The output folder::

    generate.json               the settings; a rerun resumes only when they match
    fits/galaxy_<k>_z<z>.fits   (5, H, W) flux cubes (bands g,r,i,z,y; HSC units, AB zero point 27) whose
                                header records the redshift, seed, model, revision, sampler and steps
    png/..., npy/...            Lupton RGB composites (i, r, g); float32 flux arrays
    hf/shard-<i>.parquet        a Hugging Face dataset in shards: image (5, H, W) float32 fluxes, redshift,
                                seed, index; datasets.load_dataset("parquet", data_dir="<out>/hf", split="train")
    shards/shard-<i>.json       each image of the shard: index, redshift, seed, its files
    manifest.json               written once every shard is done: the settings, units and shards
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.time import Time
from tqdm.auto import tqdm

from galaxy_pipeline.atomic import atomic_write
from galaxy_pipeline.checks import check_positive_int
from galaxy_pipeline.fingerprint import fingerprint
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.processes import process_state
from galaxy_pipeline.schedulers import SCHEDULERS as SCHEDULERS  # re-exported: the demo checks names against it
from galaxy_pipeline.schedulers import make_scheduler
from galaxy_pipeline.version import __version__
from galaxy_pipeline.visualization import to_pil

FORMATS: tuple[str, ...] = ("fits", "png", "npy", "hf")
MANIFEST_NAME = "manifest.json"
SETTINGS_NAME = "generate.json"
DEFAULT_SHARD_SIZE = 1024
"""Images per shard (the unit written atomically and resumed): 80 MiB of 5x64x64 float32 fluxes."""
RUN_ENTRIES = (SETTINGS_NAME, MANIFEST_NAME, "shards", ".partial", *FORMATS)
"""What a generate run writes into its folder; ``overwrite`` removes these and nothing else."""
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


def sampling_pipeline(
    pipe: GalaxyRedshiftPipeline, scheduler: str | None, steps: int | None, steps_name: str = "num_inference_steps"
) -> tuple[GalaxyRedshiftPipeline, int]:
    """:func:`with_scheduler` without a progress bar, and the number of steps (``None``: the sampler's default).

    ``steps_name`` is the caller's name for the steps, used in the error for a bad value.
    """
    check_positive_int(steps_name, steps, none_means="the sampler's default")
    sampling_pipe = with_scheduler(pipe, scheduler)
    sampling_pipe.set_progress_bar_config(disable=True)
    return sampling_pipe, steps or sampling_pipe.default_num_inference_steps


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


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the redshift and seed of every image, the sampler, and the files to write."""

    redshifts: np.ndarray
    seed: int
    formats: tuple[str, ...]
    steps: int
    shard_size: int
    model_id: str | None
    revision: str | None
    scheduler: str

    @property
    def n_images(self) -> int:
        return int(self.redshifts.size)

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)

    def shard_name(self, shard: int) -> str:
        return f"shard-{shard:0{max(5, len(str(self.n_shards - 1)))}d}"

    def rows_of(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.n_images))

    def stem(self, index: int) -> str:
        return f"galaxy_{index:0{max(5, len(str(self.n_images - 1)))}d}_z{self.redshifts[index]:.4f}"


def generate_to_files(
    pipe: GalaxyRedshiftPipeline,
    redshifts: Sequence[float] | np.ndarray,
    n_per_redshift: int,
    seed: int,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("fits",),
    scheduler: str | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    shard_size: int = DEFAULT_SHARD_SIZE,
    model_id: str | None = None,
    revision: str | None = None,
    allow_extrapolation: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Generate ``n_per_redshift`` galaxies at each redshift into ``out_dir`` (layout in the module docstring).

    Every process of an ``accelerate launch`` calls it alike; each writes its own shards.

    Args:
        pipe: the pipeline to sample from (not modified), on this process's device.
        redshifts: redshifts to generate at, within the model's trained range (a list or a catalogue column).
        n_per_redshift: galaxies per redshift (positive).
        seed: base seed; image ``k`` uses ``seed + k`` (non-negative).
        out_dir: output folder. An unfinished run with the same settings is resumed; a finished run, or an
            unfinished one with other settings, is refused unless ``overwrite``; a non-empty folder that holds
            no generate run is never written into.
        formats: any of ``"fits"``, ``"png"``, ``"npy"``, ``"hf"``.
        scheduler: ``"ddpm"``, ``"ddim"``, ``"dpm"``, ``"unipc"`` or ``None`` (the pipeline's own).
        steps: denoising steps; default the pipeline's default (all training steps for DDPM).
        batch_size: images per forward pass (memory and speed only).
        shard_size: images per shard, the unit that is written atomically and resumed.
        model_id: model name recorded in headers and manifest.
        revision: Hub commit of the model recorded in headers and manifest.
        allow_extrapolation: generate outside the trained redshift range (with a warning).
        overwrite: discard an earlier run in ``out_dir`` (its files only) and start afresh.
        progress: show a progress bar (main process).

    Returns:
        Path of ``manifest.json``.
    """
    formats = tuple(dict.fromkeys(formats))
    if not formats or any(name not in FORMATS for name in formats):
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}; got {list(formats)}.")
    for name, value in (("n_per_redshift", n_per_redshift), ("batch_size", batch_size), ("shard_size", shard_size)):
        check_positive_int(name, value)
    sampling_pipe, steps = sampling_pipeline(pipe, scheduler, steps, steps_name="steps")
    per_image_z = np.repeat(pipe.check_redshifts(redshifts, allow_extrapolation), n_per_redshift)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= 2**63 - per_image_z.size:
        raise ValueError(f"seed must be an integer in [0, 2**63 - {per_image_z.size}]; got {seed!r}.")
    request = GenerationRequest(
        per_image_z,
        int(seed),
        formats,
        steps,
        shard_size,
        model_id,
        revision,
        type(sampling_pipe.scheduler).__name__,
    )
    out_dir = Path(out_dir)
    settings = _settings(request, pipe)

    state = process_state()
    resumed = _check_output(out_dir, settings, request, overwrite)  # every process checks: all raise alike
    state.wait_for_everyone()
    if state.is_main_process:
        _prepare(out_dir, settings, overwrite)
        if resumed and progress:
            print(f"Resuming {out_dir}: {resumed} of {request.n_shards} shards already written.", file=sys.stderr)
    state.wait_for_everyone()

    mine = [
        shard
        for shard in range(state.process_index, request.n_shards, state.num_processes)
        if not _rows_file(out_dir, request, shard).is_file()
    ]
    show = progress and state.is_main_process
    with tqdm(
        total=sum(len(request.rows_of(s)) for s in mine), desc="generating galaxies", unit="galaxy", disable=not show
    ) as bar:
        for shard in mine:
            _write_shard(sampling_pipe, request, out_dir, shard, batch_size, allow_extrapolation, bar)
    state.wait_for_everyone()
    if state.is_main_process:
        _write_manifest(out_dir, settings, request)
    state.wait_for_everyone()
    return out_dir / MANIFEST_NAME


def generated_rows(manifest_path: str | os.PathLike) -> Iterator[dict]:
    """Each image of a finished run in index order: ``index``, ``redshift``, ``seed`` and its file per format."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for shard in manifest["shards"]:
        yield from json.loads((manifest_path.parent / shard["rows"]).read_text(encoding="utf-8"))["images"]


def _settings(request: GenerationRequest, pipe: GalaxyRedshiftPipeline) -> dict:
    """Everything that fixes the output (the batch size does not): a rerun resumes only when it matches."""
    return {
        "model": request.model_id,
        "revision": request.revision,
        "model_sha256": fingerprint(pipe),
        "scheduler": request.scheduler,
        "steps": request.steps,
        "seed": request.seed,
        "n_images": request.n_images,
        "redshifts_sha256": hashlib.sha256(request.redshifts.astype("<f8").tobytes()).hexdigest(),
        "formats": list(request.formats),
        "shard_size": request.shard_size,
        "n_shards": request.n_shards,
    }


def _rows_file(out_dir: Path, request: GenerationRequest, shard: int) -> Path:
    return out_dir / "shards" / f"{request.shard_name(shard)}.json"


def _check_output(out_dir: Path, settings: dict, request: GenerationRequest, overwrite: bool) -> int:
    """Raise FileExistsError unless ``out_dir`` may be written; return the number of shards already done."""
    if not out_dir.exists():
        return 0
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file: choose a folder for the output.")
    settings_path, manifest_path = out_dir / SETTINGS_NAME, out_dir / MANIFEST_NAME
    if not settings_path.is_file() and not manifest_path.is_file():
        if any(out_dir.iterdir()):
            raise FileExistsError(
                f"Refusing to write into {out_dir}: it is not empty and holds no {MANIFEST_NAME} or {SETTINGS_NAME} "
                "of an earlier generate run (nothing was deleted); choose a new or empty output folder."
            )
        return 0
    if overwrite:
        return 0
    if manifest_path.is_file():
        raise FileExistsError(f"{manifest_path} exists: choose another output folder or pass --overwrite.")
    earlier = json.loads(settings_path.read_text(encoding="utf-8"))
    changed = sorted(key for key in settings.keys() | earlier.keys() if settings.get(key) != earlier.get(key))
    if changed:
        raise FileExistsError(
            f"{out_dir} holds an unfinished run with other settings ({', '.join(changed)}): rerun it with the same "
            "ones to resume, pass --overwrite to discard it, or choose another output folder."
        )
    return sum(_rows_file(out_dir, request, shard).is_file() for shard in range(request.n_shards))


def _prepare(out_dir: Path, settings: dict, overwrite: bool) -> None:
    """(Main process) remove an earlier run if ``overwrite``, then write the settings and the folders."""
    if overwrite:
        for name in RUN_ENTRIES:
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    for name in ("shards", ".partial", *settings["formats"]):
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    if not (out_dir / SETTINGS_NAME).is_file():
        _write_json(out_dir / SETTINGS_NAME, settings)


def _write_shard(
    sampling_pipe,
    request: GenerationRequest,
    out_dir: Path,
    shard: int,
    batch_size: int,
    allow_extrapolation: bool,
    bar: tqdm,
) -> None:
    """Generate one shard into ``.partial/``, move its files into place, and write its rows file last."""
    rows = request.rows_of(shard)
    partial = out_dir / ".partial" / request.shard_name(shard)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    batches = []
    for start in range(rows.start, rows.stop, batch_size):
        stop = min(start + batch_size, rows.stop)
        batches.append(
            sampling_pipe(
                z=request.redshifts[start:stop],
                seeds=[request.seed + k for k in range(start, stop)],
                num_inference_steps=request.steps,
                output_type="np",
                allow_extrapolation=allow_extrapolation,
            ).images.astype(np.float32)
        )
        bar.update(stop - start)
    fluxes = np.concatenate(batches)
    records = [{"index": k, "redshift": float(request.redshifts[k]), "seed": request.seed + k} for k in rows]
    moves = []  # (staged file, final file); every final name holds the image index, so a redo replaces it
    for fmt in request.formats:
        if fmt == "hf":
            name = f"{request.shard_name(shard)}.parquet"
            _write_parquet(partial / name, fluxes, records)
            moves.append((partial / name, out_dir / "hf" / name))
            for record in records:
                record["hf"] = f"hf/{name}"
            continue
        composites = to_pil(fluxes) if fmt == "png" else None
        for offset, record in enumerate(records):
            record[fmt] = f"{fmt}/{request.stem(record['index'])}.{fmt}"
            staged = partial / f"{request.stem(record['index'])}.{fmt}"
            if fmt == "fits":
                header = fits_header(
                    record["redshift"],
                    record["seed"],
                    fluxes.shape[-2:],
                    request.model_id,
                    request.revision,
                    request.scheduler,
                    request.steps,
                )
                fits.PrimaryHDU(data=fluxes[offset], header=header).writeto(staged)
            elif fmt == "png":
                composites[offset].save(staged)
            else:
                np.save(staged, fluxes[offset])
            moves.append((staged, out_dir / record[fmt]))
    for staged, final in moves:
        os.replace(staged, final)
    _write_json(_rows_file(out_dir, request, shard), {"shard": shard, "images": records})
    shutil.rmtree(partial, ignore_errors=True)


def _write_parquet(path: Path, fluxes: np.ndarray, records: list[dict]) -> None:
    """One shard of the ``hf`` format: a parquet file with datasets' features (image as an Array3D)."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Array3D(shape=fluxes.shape[1:], dtype="float32"),
            "redshift": datasets.Value("float64"),
            "seed": datasets.Value("int64"),
            "index": datasets.Value("int64"),
        }
    )
    columns = {key: [record[key] for record in records] for key in ("redshift", "seed", "index")}
    table = datasets.Dataset.from_dict({"image": fluxes, **columns}, features=features).data.table
    pq.write_table(table, path)


def _write_manifest(out_dir: Path, settings: dict, request: GenerationRequest) -> None:
    """(Main process) the manifest of a finished run: settings, units and one entry per shard."""
    missing = [request.shard_name(s) for s in range(request.n_shards) if not _rows_file(out_dir, request, s).is_file()]
    if missing:
        raise RuntimeError(f"Shards {missing[:5]} of {out_dir} were not written; rerun the same command to finish.")
    shards = []
    for shard in range(request.n_shards):
        rows = request.rows_of(shard)
        entry = {"shard": shard, "start": rows.start, "stop": rows.stop}
        entry["rows"] = f"shards/{request.shard_name(shard)}.json"
        if "hf" in request.formats:
            entry["hf"] = f"hf/{request.shard_name(shard)}.parquet"
        shards.append(entry)
    manifest = {
        **settings,
        "bands": list(BANDS),
        "flux_unit": f"HSC coadd flux, AB mag = {MAG_ZERO_POINT:g} - 2.5 log10(flux)",
        "pixel_scale_arcsec": PIXEL_SCALE_ARCSEC,
        "galaxy_pipeline_version": __version__,
        "shards": shards,
    }
    _write_json(out_dir / MANIFEST_NAME, manifest)
    shutil.rmtree(out_dir / ".partial", ignore_errors=True)


def _write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8"))
