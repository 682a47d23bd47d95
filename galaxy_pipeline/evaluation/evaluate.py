"""The paper's exam for any trained pipeline: generate one galaxy per real redshift, measure both, compare.

    >>> report = evaluate_pipeline(pipe, load_split("galaxiesml", "test"), "eval", n=2000, predictor=predictor)
    >>> report["spearman"]["size_vs_redshift"]["pass"]

For the first ``n`` rows of a real split, one galaxy is generated at each real redshift (image ``k``
from a torch generator seeded ``seed + k``, so nothing depends on the batch size). Real and generated
images are measured identically (:func:`~galaxy_pipeline.evaluation.morphology.measure_morphology`;
every image, detected or not, is a result) and, with a redshift predictor, their redshifts are
predicted. The report compares them per redshift bin (KS, Wasserstein-1 with a permutation null,
bootstrap CIs of medians and means), gives detection and fit-failure rates, photo-z metrics, a Frechet
distance on predictor features with its split-half null, and the Spearman correlations of the paper
(redshift vs size for real and generated; predicted vs conditioned redshift for generated).

Output folder::

    report.json, report.md, fig2_redshift.png, fig3_morphology_histograms.png,
    fig4_morphology_vs_redshift.png, fig5_galaxy_grid.png,
    galaxies_real.ecsv, galaxies_generated.ecsv      one row per galaxy: redshift, predicted z, morphology
    settings.json                                    what the cached batches were made with
    generated/rows_<start>-<stop>.npz                generated fluxes, their redshifts and seeds
    measurements/{real,generated}/rows_*.ecsv        morphology of each batch
    measurements/predictor-<hash>/*.npz              predicted redshifts and features of each batch

Every batch is written atomically and skipped when it exists, so an interrupted run resumes where it
stopped. Under ``accelerate launch -m galaxy_pipeline.cli evaluate ...`` each process takes the batches
``i % num_processes == rank`` and the main process merges them and writes the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from accelerate import PartialState
from astropy.stats import binom_conf_interval
from astropy.table import MaskedColumn, Table, vstack
from diffusers import DDPMScheduler
from scipy import stats
from tqdm.auto import tqdm

from galaxy_pipeline.data.loading import check_split
from galaxy_pipeline.data.schema import IMAGE_KEY, REDSHIFT_COLUMN
from galaxy_pipeline.evaluation.morphology import MORPHOLOGY_METRICS, measure_morphology
from galaxy_pipeline.evaluation.photoz_metrics import photoz_metrics, photoz_metrics_by_bin
from galaxy_pipeline.evaluation.redshift_model import RedshiftPredictor, predict_redshifts, predictor_features
from galaxy_pipeline.evaluation.scorecard import scorecard
from galaxy_pipeline.evaluation.statistics import (
    REDSHIFT_BIN_EDGES,
    compare_by_redshift_bin,
    compare_distributions,
    frechet_distance_with_null,
    redshift_bin_masks,
)
from galaxy_pipeline.generate import with_scheduler
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.version import __version__

DERIVED_COLOURS: tuple[str, ...] = ("g_i", "r_z")
"""Colours (AB mag) added to the measured tables: g - i and r - z bracket the 4000 A break from z = 0 to 1.5."""

COMPARED_QUANTITIES: tuple[str, ...] = (*MORPHOLOGY_METRICS, "mag_i", *DERIVED_COLOURS)
"""Measured quantities compared per redshift bin: the paper's four morphology metrics, i-band AB
magnitude and the g - i and r - z colours (AB mag)."""

GRID_REDSHIFTS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9, 2.0)
"""Redshifts shown in the galaxy grid (fig5)."""

GRID_IMAGES_PER_REDSHIFT = 2
"""Generated galaxies per redshift in the galaxy grid."""

SPEARMAN_TOLERANCE = 0.15
"""Pass criterion: the Spearman correlation of redshift with semi-major axis of generated galaxies is
within this of the real one."""

FLAGS: tuple[str, ...] = ("blank", "saturated", "not_detected", "off_centre", "fit_failed", "fit_at_bound")
"""Measurement flags counted in the report (see :func:`measure_morphology`)."""

SETTINGS_FILE = "settings.json"


def evaluate_pipeline(
    pipe: GalaxyRedshiftPipeline,
    real_split: datasets.Dataset,
    out_dir: str | os.PathLike,
    n: int | None = None,
    predictor: RedshiftPredictor | None = None,
    batch_size: int = 64,
    seed: int = 0,
    num_inference_steps: int | None = None,
    scheduler: str | None = None,
    guidance_scale: float = 1.0,
    model_id: str | None = None,
    data_id: str | None = None,
    predictor_id: str | None = None,
    bin_edges: Sequence[float] = REDSHIFT_BIN_EDGES,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    real_cache: str | os.PathLike | None = None,
    morphology_workers: int = 1,
    overwrite: bool = False,
    figures: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate one galaxy per real redshift, measure real and generated galaxies alike, and compare them.

    Args:
        pipe: the pipeline to evaluate (not modified; it samples on its own device).
        real_split: a converted split with ``image`` fluxes and ``redshift`` (see
            :func:`galaxy_pipeline.data.loading.load_split`).
        out_dir: output folder (created); rerunning with the same settings resumes there.
        n: evaluate the first ``n`` rows of the split (default all).
        predictor: a redshift predictor for photo-z metrics and the Frechet distance (moved to the
            pipeline's device); without one those parts are skipped and the report says so.
        batch_size: images generated and measured at a time (results do not depend on it).
        seed: base seed; generated galaxy ``k`` (conditioned on the redshift of row ``k``) uses ``seed + k``.
        num_inference_steps: denoising steps; default all training steps for DDPM, 50 for other samplers.
        scheduler: sampler name of :data:`galaxy_pipeline.schedulers.SCHEDULERS`; default the pipeline's own.
        guidance_scale: classifier-free guidance on redshift (1: plain conditional sampling).
        model_id, data_id, predictor_id: names recorded in the report (Hub id or folder of each).
        bin_edges: redshift bin edges of the per-bin comparisons.
        n_permutations: label shuffles of the Wasserstein-1 null distribution.
        n_bootstrap: bootstrap resamples of the confidence intervals.
        real_cache: folder caching the real sample's morphology (default ``out_dir/measurements/real``);
            share it between evaluations of different models on the same split.
        morphology_workers: processes of the photutils stage of the morphology measurement.
        overwrite: discard the cached batches of an earlier run with different settings.
        figures: write the PNG figures.
        progress: show progress bars.

    Returns:
        The report, as written to ``out_dir/report.json`` (NaN written as null).
    """
    from galaxy_pipeline.evaluation.report import write_report

    started = time.perf_counter()
    check_split(real_split)
    if len(real_split) == 0:
        raise ValueError("The real split is empty: nothing to evaluate.")
    for name, value in (("batch_size", batch_size), ("n_permutations", n_permutations), ("n_bootstrap", n_bootstrap)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive integer or None (the whole split); got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**62:
        raise ValueError(f"seed must be an integer in [0, 2**62); got {seed!r}.")
    if num_inference_steps is not None and (
        isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
    ):
        raise ValueError(f"num_inference_steps must be a positive integer; got {num_inference_steps!r}.")
    n_rows = len(real_split) if n is None else min(n, len(real_split))
    sampler = with_scheduler(pipe, scheduler)
    sampler.set_progress_bar_config(disable=True)
    if num_inference_steps is None:
        is_ddpm = isinstance(sampler.scheduler, DDPMScheduler)
        num_inference_steps = sampler.scheduler.config.num_train_timesteps if is_ddpm else 50
    if predictor is not None:
        predictor.to(pipe.device)

    state = process_state()
    out_dir = Path(out_dir)
    layout = _Layout(out_dir, Path(real_cache) if real_cache is not None else None, predictor)
    settings = {
        "model_fingerprint": _fingerprint(pipe),
        "scheduler": type(sampler.scheduler).__name__,
        "scheduler_config": {k: v for k, v in sampler.scheduler.config.items() if not k.startswith("_")},
        "num_inference_steps": num_inference_steps,
        "guidance_scale": float(guidance_scale),
        "seed": seed,
    }
    settings = json.loads(json.dumps(settings, default=str))  # the form it takes in settings.json
    if state.is_main_process:
        layout.prepare(settings, overwrite)
    state.wait_for_everyone()

    redshifts = np.asarray(real_split.select_columns([REDSHIFT_COLUMN]).with_format("numpy")[:n_rows][REDSHIFT_COLUMN])
    redshifts = redshifts.astype(np.float64)
    batches = [(start, min(start + batch_size, n_rows)) for start in range(0, n_rows, batch_size)]
    worker = _BatchWorker(
        sampler=sampler,
        real_images=real_split.select_columns([IMAGE_KEY]).with_format("numpy"),
        redshifts=redshifts,
        seed=seed,
        steps=num_inference_steps,
        guidance_scale=guidance_scale,
        layout=layout,
        predictor=predictor,
        morphology_workers=morphology_workers,
    )
    mine = batches[state.process_index :: state.num_processes]
    with tqdm(
        total=sum(stop - start for start, stop in mine),
        desc="evaluating (generate + measure)",
        unit="galaxy",
        disable=not (progress and state.is_main_process),
    ) as bar:
        for start, stop in mine:
            worker.run(start, stop)
            bar.update(stop - start)
    if state.is_main_process:
        grid = None
        if figures:
            grid = _grid_images(sampler, real_split, redshifts, seed, (num_inference_steps, guidance_scale), layout)
    state.wait_for_everyone()

    if state.is_main_process:
        report = _merge_and_report(
            batches=batches,
            layout=layout,
            pipe=pipe,
            redshifts=redshifts,
            settings=settings,
            context={
                "model_id": model_id,
                "data_id": data_id,
                "predictor_id": predictor_id,
                "n_available": len(real_split),
                "n_requested": n,
                "batch_size": batch_size,
                "sampler": scheduler,
                "bin_edges": [float(edge) for edge in bin_edges],
                "n_permutations": n_permutations,
                "n_bootstrap": n_bootstrap,
                "num_processes": state.num_processes,
                "device": str(pipe.device),
            },
            grid=grid,
            figures=figures,
            started=started,
        )
        write_report(report, out_dir)
    state.wait_for_everyone()
    return json.loads((out_dir / "report.json").read_text(encoding="utf-8"))


def process_state() -> PartialState:
    """accelerate's state of this process; processes launched on a machine without CUDA work together over gloo.

    ``PartialState()`` alone leaves CPU-only processes of ``accelerate launch --multi_gpu`` unaware of each
    other; ``cpu=True`` (only when several were launched) makes them one MULTI_CPU group, as in training.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.cuda.is_available())


def load_predictor(path: str | os.PathLike, device: str | torch.device = "cpu") -> RedshiftPredictor:
    """Load a :class:`RedshiftPredictor` saved with ``save_pretrained`` (a folder with config.json)."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Predictor folder {folder} does not exist: pass a folder written by the predictor training script "
            "(train_scripts/train_redshift_predictor.py), or leave --predictor out to skip the redshift metrics."
        )
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: it is not a saved RedshiftPredictor folder.")
    return RedshiftPredictor.from_pretrained(folder).to(device)


class _Layout:
    """Where the cached batches of one evaluation live, and the check that they match the settings."""

    def __init__(self, out_dir: Path, real_cache: Path | None, predictor: RedshiftPredictor | None):
        self.out_dir = out_dir
        self.generated = out_dir / "generated"
        self.generated_morphology = out_dir / "measurements" / "generated"
        self.real_morphology = real_cache or out_dir / "measurements" / "real"
        self.predictor = out_dir / "measurements" / f"predictor-{_fingerprint(predictor)[:12]}" if predictor else None

    def prepare(self, settings: dict, overwrite: bool) -> None:
        """Create the folders; refuse (or with ``overwrite`` clear) generated batches made with other settings."""
        path = self.out_dir / SETTINGS_FILE
        if path.is_file():
            previous = json.loads(path.read_text(encoding="utf-8"))
            changed = sorted(key for key in settings.keys() | previous.keys() if settings.get(key) != previous.get(key))
            if changed and not overwrite:
                raise FileExistsError(
                    f"{self.out_dir} holds an evaluation made with other settings ({', '.join(changed)} differ): "
                    "choose another output folder, or pass --overwrite to discard its generated galaxies."
                )
            if changed:
                shutil.rmtree(self.generated, ignore_errors=True)
                shutil.rmtree(self.generated_morphology, ignore_errors=True)
                for folder in (self.out_dir / "measurements").glob("predictor-*"):
                    shutil.rmtree(folder, ignore_errors=True)
        for folder in (self.generated, self.generated_morphology, self.real_morphology, self.predictor):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda temporary: temporary.write_text(json.dumps(settings, indent=2), encoding="utf-8"))

    @staticmethod
    def name(start: int, stop: int) -> str:
        return f"rows_{start:07d}-{stop:07d}"


class _BatchWorker:
    """Generate, measure and predict one batch of rows, each step cached in its own file."""

    def __init__(
        self, sampler, real_images, redshifts, seed, steps, guidance_scale, layout, predictor, morphology_workers
    ):
        self.sampler = sampler
        self.real_images = real_images
        self.redshifts = redshifts
        self.seed = seed
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.layout = layout
        self.predictor = predictor
        self.morphology_workers = morphology_workers
        self.device = str(sampler.device)

    def run(self, start: int, stop: int) -> None:
        name = _Layout.name(start, stop)
        z = self.redshifts[start:stop]
        generated_path = self.layout.generated / f"{name}.npz"
        _ensure(generated_path, z, lambda: self._generate(start, stop))
        loaded: dict[str, np.ndarray] = {}

        def images(kind: str) -> np.ndarray:
            """Real or generated fluxes of the batch, read once and only if some measurement is missing."""
            if kind not in loaded:
                if kind == "real":
                    loaded[kind] = np.asarray(self.real_images[start:stop][IMAGE_KEY], dtype=np.float32)
                else:
                    loaded[kind] = _read_npz(generated_path, ("images",), z)["images"]
            return loaded[kind]

        for kind, folder in (("generated", self.layout.generated_morphology), ("real", self.layout.real_morphology)):
            _ensure(folder / f"{name}.ecsv", z, lambda kind=kind: self._measure(images(kind)))
            if self.predictor is not None:
                _ensure(self.layout.predictor / f"{kind}_{name}.npz", z, lambda kind=kind: self._predict(images(kind)))

    def _generate(self, start: int, stop: int) -> dict[str, np.ndarray]:
        seeds = np.arange(start, stop, dtype=np.int64) + self.seed
        tic = time.perf_counter()
        images, clipped = _sample(self.sampler, self.redshifts[start:stop], seeds, (self.steps, self.guidance_scale))
        return {"images": images, "seeds": seeds, "seconds": time.perf_counter() - tic, "clipped": clipped}

    def _measure(self, images: np.ndarray) -> Table:
        tic = time.perf_counter()
        table = measure_morphology(images, n_workers=self.morphology_workers, device=self.device)
        table.meta["seconds"] = time.perf_counter() - tic
        return table

    def _predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        tic = time.perf_counter()
        z_pred = predict_redshifts(self.predictor, images)
        features = predictor_features(self.predictor, images)
        return {"predicted_redshift": z_pred, "features": features, "seconds": time.perf_counter() - tic}


def _sample(
    sampler: GalaxyRedshiftPipeline, z: np.ndarray, seeds: np.ndarray, settings: tuple[int, float]
) -> tuple[np.ndarray, bool]:
    """Generate one galaxy per redshift with ``settings`` = (steps, guidance scale), extrapolating where needed.

    Returns the fluxes and whether some pixels left the model-space range and were clipped.
    """
    steps, guidance_scale = settings
    generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = sampler(
            z=z,
            generator=generators,
            num_inference_steps=steps,
            output_type="np",
            allow_extrapolation=True,
            guidance_scale=guidance_scale,
        ).images
    clipped = False
    for warning in caught:
        message = str(warning.message)
        if "model-space range" in message:
            clipped = True
        elif "outside the trained redshift range" not in message:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return images.astype(np.float32), clipped


def _grid_images(sampler, real_split, redshifts, seed, settings, layout) -> dict[str, np.ndarray]:
    """Real galaxies nearest each grid redshift (from the evaluated rows) and generated ones at exactly it."""
    grid_z = np.asarray(GRID_REDSHIFTS, dtype=np.float64)
    nearest = np.array([int(np.argmin(np.abs(redshifts - z))) for z in grid_z])
    generated_z = np.repeat(grid_z, GRID_IMAGES_PER_REDSHIFT)
    seeds = seed + redshifts.size + np.arange(generated_z.size, dtype=np.int64)

    path = layout.generated / "grid.npz"
    if path.is_file() and not np.array_equal(_read_npz(path, ("seeds",), generated_z)["seeds"], seeds):
        path.unlink()  # made for another number of rows
    _ensure(path, generated_z, lambda: {"images": _sample(sampler, generated_z, seeds, settings)[0], "seeds": seeds})
    generated = _read_npz(path, ("images",), generated_z)
    real = np.asarray(real_split.select_columns([IMAGE_KEY]).with_format("numpy")[nearest.tolist()][IMAGE_KEY])
    return {
        "real_images": real.astype(np.float32),
        "real_redshifts": redshifts[nearest],
        "generated_images": generated["images"],
        "generated_redshifts": generated_z,
    }


def _merge_and_report(batches, layout, pipe, redshifts, settings, context, grid, figures, started) -> dict[str, Any]:
    """Read every batch back, compute the statistics, write catalogues and figures; return the report."""
    from galaxy_pipeline.evaluation import figures as plots

    names = [_Layout.name(start, stop) for start, stop in batches]
    batch_redshifts = [redshifts[start:stop] for start, stop in batches]
    generated_files = [
        _read_npz(layout.generated / f"{name}.npz", ("seeds", "seconds", "clipped"), z)
        for name, z in zip(names, batch_redshifts, strict=True)
    ]
    real = _read_tables([layout.real_morphology / f"{name}.ecsv" for name in names], batch_redshifts)
    generated = _read_tables([layout.generated_morphology / f"{name}.ecsv" for name in names], batch_redshifts)
    generated["seed"] = np.concatenate([file["seeds"] for file in generated_files])
    real_features = generated_features = None
    if layout.predictor is not None:
        keys = ("predicted_redshift", "features", "seconds")
        real_pred, generated_pred = (
            [
                _read_npz(layout.predictor / f"{kind}_{name}.npz", keys, z)
                for name, z in zip(names, batch_redshifts, strict=True)
            ]
            for kind in ("real", "generated")
        )
        real["predicted_redshift"] = np.concatenate([file["predicted_redshift"] for file in real_pred])
        generated["predicted_redshift"] = np.concatenate([file["predicted_redshift"] for file in generated_pred])
        real_features = np.concatenate([file["features"] for file in real_pred])
        generated_features = np.concatenate([file["features"] for file in generated_pred])
        predictor_seconds = sum(float(file["seconds"]) for file in real_pred + generated_pred)
    for table in (real, generated):
        for name in DERIVED_COLOURS:
            first, second = name.split("_")
            table[name] = table[f"mag_{first}"] - table[f"mag_{second}"]
            table[name].unit = table[f"mag_{first}"].unit
            table[name].description = f"AB colour {first} - {second}"
    real.write(layout.out_dir / "galaxies_real.ecsv", format="ascii.ecsv", overwrite=True)
    generated.write(layout.out_dir / "galaxies_generated.ecsv", format="ascii.ecsv", overwrite=True)

    tic = time.perf_counter()
    bin_edges = context["bin_edges"]
    low, high = pipe.redshift_range
    n_extrapolated = int(np.sum((redshifts < low) | (redshifts > high)))
    generation_seconds = sum(float(file["seconds"]) for file in generated_files)
    notes = []
    if context["n_requested"] is not None and context["n_requested"] > context["n_available"]:
        notes.append(f"Asked for n={context['n_requested']} but the split has {context['n_available']} rows: used all.")
    if n_extrapolated:
        notes.append(
            f"{n_extrapolated} real redshifts lie outside the trained range [{low:g}, {high:g}]: those galaxies were "
            "generated by extrapolation (allow_extrapolation=True) and are included."
        )
    n_clipped = sum(bool(file["clipped"]) for file in generated_files)
    if n_clipped:
        notes.append(
            f"In {n_clipped} of {len(batches)} generated batches some pixels left the model-space range and were "
            "clipped: the sampler may be diverging (too few steps, or an undertrained model)."
        )

    morphology = _morphology_comparison(real, generated, context)
    report: dict[str, Any] = {
        "galaxy_pipeline_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "id": context["model_id"],
            "fingerprint": settings["model_fingerprint"],
            "trained_redshift_range": [low, high],
            "scheduler": settings["scheduler"],
            "sampler": context["sampler"] or "default",
            "num_inference_steps": settings["num_inference_steps"],
            "guidance_scale": settings["guidance_scale"],
        },
        "data": {
            "id": context["data_id"],
            "n": int(redshifts.size),
            "n_available": context["n_available"],
            "redshift_min": float(redshifts.min()),
            "redshift_max": float(redshifts.max()),
        },
        "settings": {
            "seed": settings["seed"],
            "batch_size": context["batch_size"],
            "bin_edges": bin_edges,
            "n_permutations": context["n_permutations"],
            "n_bootstrap": context["n_bootstrap"],
            "num_processes": context["num_processes"],
            "device": context["device"],
            "predictor": context["predictor_id"] if layout.predictor else None,
            "detection": real.meta.get("detection"),
            "psf": real.meta.get("psf"),
        },
        "counts": {
            "n_real": len(real),
            "n_generated": len(generated),
            "n_extrapolated": n_extrapolated,
            "n_batches": len(batches),
            "n_batches_clipped": n_clipped,
        },
        "detection": {
            "real": detection_summary(real, bin_edges),
            "generated": detection_summary(generated, bin_edges),
        },
        "morphology": morphology,
        "scorecard": scorecard(morphology["by_bin"]),
        "spearman": _spearman_checks(real, generated),
        "photoz": None,
        "frechet": None,
    }
    if layout.predictor is not None:
        report["photoz"] = {
            name: {
                "overall": photoz_metrics(table["predicted_redshift"], table["redshift"]),
                "by_bin": photoz_metrics_by_bin(table["predicted_redshift"], table["redshift"], bin_edges),
            }
            for name, table in (("real", real), ("generated", generated))
        }
        try:
            report["frechet"] = frechet_distance_with_null(real_features, generated_features, seed=settings["seed"])
        except ValueError as error:
            report["frechet"] = {"error": str(error)}
            notes.append(f"No Frechet distance: {error}")
    else:
        notes.append(
            "No redshift predictor given (--predictor): photo-z metrics, the predicted-vs-conditioned Spearman "
            "correlation and the Frechet distance on predictor features were skipped."
        )
    report["notes"] = notes
    statistics_seconds = time.perf_counter() - tic

    figure_files = []
    if figures:
        figure_files = [
            plots.plot_redshift(real, generated, report, layout.out_dir / "fig2_redshift.png"),
            plots.plot_morphology_histograms(
                real, generated, COMPARED_QUANTITIES, layout.out_dir / "fig3_morphology_histograms.png"
            ),
            plots.plot_morphology_vs_redshift(report, layout.out_dir / "fig4_morphology_vs_redshift.png"),
            plots.plot_galaxy_grid(**grid, path=layout.out_dir / "fig5_galaxy_grid.png"),
        ]
    report["files"] = {
        "figures": [path.name for path in figure_files],
        "catalogues": ["galaxies_real.ecsv", "galaxies_generated.ecsv"],
    }
    report["timings"] = {
        "generation_seconds": generation_seconds,
        "generation_images_per_second": len(generated) / generation_seconds if generation_seconds > 0 else None,
        "morphology_seconds": float(real.meta["seconds"] + generated.meta["seconds"]),
        "predictor_seconds": predictor_seconds if layout.predictor is not None else None,
        "statistics_seconds": statistics_seconds,
        "wall_seconds_this_run": time.perf_counter() - started,
    }
    return report


def detection_summary(table: Table, bin_edges: Sequence[float] = REDSHIFT_BIN_EDGES) -> dict[str, Any]:
    """Detection and Sersic-fit-failure rates of a measured sample, overall and per redshift bin.

    Rates come with Wilson 95% binomial intervals (``astropy.stats.binom_conf_interval``); the fit-failure
    rate is among detected galaxies. ``flags`` counts images carrying each measurement flag.

    Args:
        table: output of :func:`measure_morphology` with a ``redshift`` column.
        bin_edges: redshift bin edges.
    """
    detected = np.asarray(table["detected"], dtype=bool)
    fitted = np.asarray(table["sersic_ok"], dtype=bool)
    flags = [set(str(value).split("|")) for value in table["flags"]]
    summary = _rates(detected, fitted)
    summary["flags"] = {flag: sum(flag in row for row in flags) for flag in FLAGS}
    summary["by_bin"] = [
        {"z_min": z_min, "z_max": z_max} | _rates(detected[mask], fitted[mask])
        for (z_min, z_max), mask in redshift_bin_masks(np.asarray(table["redshift"]), bin_edges)
    ]
    return summary


def _rates(detected: np.ndarray, fitted: np.ndarray) -> dict[str, Any]:
    n, n_detected = detected.size, int(detected.sum())
    n_failed = int((detected & ~fitted).sum())
    row: dict[str, Any] = {"n": int(n), "n_detected": n_detected, "n_fit_failed": n_failed}
    for key, k, total in (("detection_rate", n_detected, n), ("fit_failure_rate", n_failed, n_detected)):
        if total:
            ci_low, ci_high = binom_conf_interval(k, total, confidence_level=0.95, interval="wilson")
            row |= {key: k / total, f"{key}_ci_low": float(ci_low), f"{key}_ci_high": float(ci_high)}
        else:
            row |= {key: None, f"{key}_ci_low": None, f"{key}_ci_high": None}
    return row


def _morphology_comparison(real: Table, generated: Table, context: dict) -> dict[str, Any]:
    """Overall and per-bin two-sample comparisons of every compared quantity (non-detections count as NaN)."""
    options = {"n_permutations": context["n_permutations"], "n_bootstrap": context["n_bootstrap"]}
    result: dict[str, Any] = {"quantities": list(COMPARED_QUANTITIES), "units": {}, "overall": {}, "by_bin": {}}
    for name in COMPARED_QUANTITIES:
        unit = real[name].unit
        result["units"][name] = str(unit) if unit is not None else ""
        real_values, generated_values = np.asarray(real[name], float), np.asarray(generated[name], float)
        result["overall"][name] = compare_distributions(real_values, generated_values, **options)
        result["by_bin"][name] = compare_by_redshift_bin(
            real_values,
            np.asarray(real["redshift"]),
            generated_values,
            np.asarray(generated["redshift"]),
            bin_edges=context["bin_edges"],
            **options,
        )
    return result


def _spearman(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    if finite.sum() < 3 or np.ptp(x[finite]) == 0 or np.ptp(y[finite]) == 0:
        return {"rho": None, "pvalue": None, "n": int(finite.sum())}
    result = stats.spearmanr(x[finite], y[finite])
    return {"rho": float(result.statistic), "pvalue": float(result.pvalue), "n": int(finite.sum())}


def _spearman_checks(real: Table, generated: Table) -> dict[str, Any]:
    """The paper's rank correlations: size against redshift (real vs generated), predicted against conditioned z."""
    real_size = _spearman(real["redshift"], real["semimajor_axis_arcsec"])
    generated_size = _spearman(generated["redshift"], generated["semimajor_axis_arcsec"])
    difference = None
    if real_size["rho"] is not None and generated_size["rho"] is not None:
        difference = abs(real_size["rho"] - generated_size["rho"])
    checks: dict[str, Any] = {
        "size_vs_redshift": {
            "quantity": "semimajor_axis_arcsec",
            "real": real_size,
            "generated": generated_size,
            "difference": difference,
            "tolerance": SPEARMAN_TOLERANCE,
            "pass": None if difference is None else difference <= SPEARMAN_TOLERANCE,
        },
        "predicted_vs_conditioned": None,
    }
    if "predicted_redshift" in generated.colnames:
        checks["predicted_vs_conditioned"] = {
            "generated": _spearman(generated["redshift"], generated["predicted_redshift"]),
            "real": _spearman(real["redshift"], real["predicted_redshift"]),
        }
    return checks


def _read_tables(paths: list[Path], redshifts: list[np.ndarray]) -> Table:
    """Stack cached morphology tables, checking each was made for its ``redshifts``; ``meta["seconds"]`` adds up."""
    tables = [_read_table(path) for path in paths]
    for path, table, expected in zip(paths, tables, redshifts, strict=True):
        _check_redshifts(path, np.asarray(table["redshift"]), expected)
    merged = vstack(tables, metadata_conflicts="silent")
    merged.meta.pop("detection_rate", None)
    merged.meta["seconds"] = sum(float(table.meta.get("seconds", 0.0)) for table in tables)
    return merged


def _read_table(path: Path) -> Table:
    table = Table.read(path, format="ascii.ecsv")
    for name in table.colnames:
        if isinstance(table[name], MaskedColumn) and table[name].dtype.kind == "U":
            table[name] = table[name].filled("")  # ECSV reads empty strings back as masked
    return table


def _ensure(path: Path, redshifts: np.ndarray, compute: Callable[[], Table | dict[str, np.ndarray]]) -> None:
    """Unless ``path`` exists, compute a table (written as ECSV) or arrays (NPZ) and write them atomically,
    with the ``redshifts`` of their rows (which readers check)."""
    if path.is_file():
        return
    result = compute()
    if isinstance(result, Table):
        result.add_column(redshifts, name="redshift", index=0)
        result["redshift"].description = "spectroscopic redshift (real) or conditioning redshift (generated)"
        _atomic_write(path, lambda temporary: result.write(temporary, format="ascii.ecsv"))
    else:
        _atomic_write(path, lambda temporary: np.savez(temporary, **result, redshifts=redshifts))


def _read_npz(path: Path, keys: Sequence[str], redshifts: np.ndarray) -> dict[str, np.ndarray]:
    """``keys`` of a cached NPZ made for ``redshifts`` (other arrays, such as images, stay on disk)."""
    with np.load(path) as arrays:
        _check_redshifts(path, arrays["redshifts"], redshifts)
        return {key: arrays[key] for key in keys}


def _check_redshifts(path: Path, cached: np.ndarray, expected: np.ndarray) -> None:
    if not np.array_equal(cached, expected):
        raise FileExistsError(
            f"{path} was made for other redshifts than rows of this split: the output folder belongs to another "
            "dataset or --n; choose another output folder."
        )


def _atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(temporary path)`` (same suffix as ``path``, same folder), then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _fingerprint(model: GalaxyRedshiftPipeline | RedshiftPredictor | None) -> str:
    """SHA-256 of a pipeline's (or predictor's) weights and configs: same hash, same model."""
    digest = hashlib.sha256()
    modules = [model.unet] if isinstance(model, GalaxyRedshiftPipeline) else [model]
    if isinstance(model, GalaxyRedshiftPipeline):
        transform = model.flux_transform
        digest.update(json.dumps([transform.softening, transform.scale, transform.band_names]).encode())
    for module in modules:
        config = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
        config = {key: value for key, value in config.items() if not key.startswith("_")}  # bookkeeping, unordered
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
