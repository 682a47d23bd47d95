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
    settings.json, generated/, measurements/         the resumable cache (galaxy_pipeline.evaluation.cache)

Every batch is written atomically and skipped when it exists, so an interrupted run resumes where it
stopped. This module orchestrates; the cache (:mod:`~galaxy_pipeline.evaluation.cache`), the settings
(:mod:`~galaxy_pipeline.evaluation.settings`), the statistics of the report
(:mod:`~galaxy_pipeline.evaluation.summary`) and its writing (:mod:`~galaxy_pipeline.evaluation.report`)
each have their own module. Under ``accelerate launch -m galaxy_pipeline.cli evaluate ...`` each process
takes the batches ``i % num_processes == rank`` and the main process merges them and writes the report.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from astropy.table import Table
from tqdm.auto import tqdm

from galaxy_pipeline.data.loading import check_split
from galaxy_pipeline.data.schema import IMAGE_KEY, REDSHIFT_COLUMN
from galaxy_pipeline.evaluation.cache import EvaluationCache, ensure, read_npz
from galaxy_pipeline.evaluation.morphology import measure_morphology
from galaxy_pipeline.evaluation.redshift_model import RedshiftPredictor, predict_redshifts, predictor_features
from galaxy_pipeline.evaluation.settings import EvaluationSettings
from galaxy_pipeline.evaluation.statistics import REDSHIFT_BIN_EDGES
from galaxy_pipeline.evaluation.summary import COMPARED_QUANTITIES, add_colours, summarize
from galaxy_pipeline.fingerprint import fingerprint
from galaxy_pipeline.generate import sampling_pipeline
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.processes import process_state

GRID_REDSHIFTS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9, 2.0)
"""Redshifts shown in the galaxy grid (fig5)."""

GRID_IMAGES_PER_REDSHIFT = 2
"""Generated galaxies per redshift in the galaxy grid."""


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

    Many arguments, for a reason: each is a flag of ``galaxy-pipeline evaluate`` with a default, gathered at
    once into one checked :class:`EvaluationSettings`, whose docstring describes those not listed here.

    Args:
        pipe: the pipeline to evaluate (not modified; it samples on its own device).
        real_split: a converted split with ``image`` fluxes and ``redshift`` (see
            :func:`galaxy_pipeline.data.loading.load_split`).
        out_dir: output folder (created); rerunning with the same settings resumes there.
        predictor: a redshift predictor for photo-z metrics and the Frechet distance (moved to the
            pipeline's device); without one those parts are skipped and the report says so.
        num_inference_steps: denoising steps; default all training steps for DDPM, 50 for other samplers.
        scheduler: sampler name of :data:`galaxy_pipeline.schedulers.SCHEDULERS`; default the pipeline's own.
        real_cache: folder caching the real sample's morphology (default ``out_dir/measurements/real``);
            share it between evaluations of different models on the same split.
        overwrite: discard the cached batches of an earlier run with different settings.
        figures, progress: write the PNG figures; show progress bars.

    Returns:
        The report, as written to ``out_dir/report.json`` (NaN written as null).
    """
    started = time.perf_counter()
    check_split(real_split)
    if len(real_split) == 0:
        raise ValueError("The real split is empty: nothing to evaluate.")
    sampling_pipe, num_inference_steps = sampling_pipeline(pipe, scheduler, num_inference_steps)
    state = process_state()
    settings = EvaluationSettings(
        model_fingerprint=fingerprint(pipe),
        scheduler=type(sampling_pipe.scheduler).__name__,
        scheduler_config={k: v for k, v in sampling_pipe.scheduler.config.items() if not k.startswith("_")},
        num_inference_steps=num_inference_steps,
        guidance_scale=float(guidance_scale),
        seed=seed,
        batch_size=batch_size,
        bin_edges=tuple(float(edge) for edge in bin_edges),
        n_permutations=n_permutations,
        n_bootstrap=n_bootstrap,
        n_requested=n,
        n_available=len(real_split),
        sampler=scheduler,
        model_id=model_id,
        data_id=data_id,
        predictor_id=predictor_id,
        morphology_workers=morphology_workers,
        num_processes=state.num_processes,
        device=str(pipe.device),
    )
    if predictor is not None:
        predictor.to(pipe.device)
    cache = EvaluationCache(Path(out_dir), Path(real_cache) if real_cache is not None else None, predictor)
    if state.is_main_process:
        cache.prepare(settings.cache_key(), overwrite)
    state.wait_for_everyone()
    return _run(_BatchWorker(sampling_pipe, real_split, settings, cache, predictor), figures, progress, started)


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


class _BatchWorker:
    """Generate, measure and predict one batch of rows, each step cached in its own file.

    Args:
        sampling_pipe: the pipeline with the evaluation's scheduler.
        real_split: the real split (its first ``len(redshifts)`` rows are evaluated).
        settings: the evaluation's settings.
        cache: where the batches are cached.
        predictor: the redshift predictor, or ``None``.
    """

    def __init__(
        self,
        sampling_pipe: GalaxyRedshiftPipeline,
        real_split: datasets.Dataset,
        settings: EvaluationSettings,
        cache: EvaluationCache,
        predictor: RedshiftPredictor | None,
    ):
        self.sampling_pipe = sampling_pipe
        self.real_split = real_split
        self.real_images = real_split.select_columns([IMAGE_KEY]).with_format("numpy")
        n_rows = settings.n_available if settings.n_requested is None else min(settings.n_requested, len(real_split))
        column = real_split.select_columns([REDSHIFT_COLUMN]).with_format("numpy")[:n_rows][REDSHIFT_COLUMN]
        self.redshifts = np.asarray(column).astype(np.float64)
        self.batches = [
            (start, min(start + settings.batch_size, n_rows)) for start in range(0, n_rows, settings.batch_size)
        ]
        self.settings = settings
        self.cache = cache
        self.predictor = predictor
        self.device = str(sampling_pipe.device)

    def run(self, start: int, stop: int) -> None:
        """Make whatever of the batch of rows ``start:stop`` is not cached yet."""
        name = self.cache.name(start, stop)
        z = self.redshifts[start:stop]
        generated_path = self.cache.generated / f"{name}.npz"
        ensure(generated_path, z, lambda: self._generate(start, stop))
        loaded: dict[str, np.ndarray] = {}

        def images(kind: str) -> np.ndarray:
            """Real or generated fluxes of the batch, read once and only if some measurement is missing."""
            if kind not in loaded:
                if kind == "real":
                    loaded[kind] = np.asarray(self.real_images[start:stop][IMAGE_KEY], dtype=np.float32)
                else:
                    loaded[kind] = read_npz(generated_path, ("images",), z)["images"]
            return loaded[kind]

        for kind in ("generated", "real"):
            ensure(self.cache.morphology(kind) / f"{name}.ecsv", z, lambda kind=kind: self._measure(images(kind)))
            if self.predictor is not None:
                path = self.cache.predictor / f"{kind}_{name}.npz"
                ensure(path, z, lambda kind=kind: self._predict(images(kind)))

    def grid_images(self) -> dict[str, np.ndarray]:
        """Real galaxies nearest each grid redshift (from the evaluated rows) and generated ones at exactly it."""
        redshifts = self.redshifts
        grid_z = np.asarray(GRID_REDSHIFTS, dtype=np.float64)
        nearest = np.array([int(np.argmin(np.abs(redshifts - z))) for z in grid_z])
        generated_z = np.repeat(grid_z, GRID_IMAGES_PER_REDSHIFT)
        seeds = self.settings.seed + redshifts.size + np.arange(generated_z.size, dtype=np.int64)

        path = self.cache.generated / "grid.npz"
        if path.is_file() and not np.array_equal(read_npz(path, ("seeds",), generated_z)["seeds"], seeds):
            path.unlink()  # made for another number of rows
        ensure(path, generated_z, lambda: {"images": self._sample(generated_z, seeds)[0], "seeds": seeds})
        generated = read_npz(path, ("images",), generated_z)
        real = np.asarray(self.real_images[nearest.tolist()][IMAGE_KEY])
        return {
            "real_images": real.astype(np.float32),
            "real_redshifts": redshifts[nearest],
            "generated_images": generated["images"],
            "generated_redshifts": generated_z,
        }

    def _generate(self, start: int, stop: int) -> dict[str, np.ndarray]:
        seeds = np.arange(start, stop, dtype=np.int64) + self.settings.seed
        tic = time.perf_counter()
        images, clipped = self._sample(self.redshifts[start:stop], seeds)
        return {"images": images, "seeds": seeds, "seconds": time.perf_counter() - tic, "clipped": clipped}

    def _sample(self, z: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, bool]:
        """One galaxy per redshift (image k seeded ``seeds[k]``), extrapolating where needed.

        Returns the fluxes and whether some pixels left the model-space range and were clipped.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            images = self.sampling_pipe(
                z=z,
                seeds=seeds,
                num_inference_steps=self.settings.num_inference_steps,
                output_type="np",
                allow_extrapolation=True,
                guidance_scale=self.settings.guidance_scale,
            ).images
        clipped = False
        for warning in caught:
            message = str(warning.message)
            if "model-space range" in message:
                clipped = True
            elif "outside the trained redshift range" not in message:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return images.astype(np.float32), clipped

    def _measure(self, images: np.ndarray) -> Table:
        tic = time.perf_counter()
        table = measure_morphology(images, n_workers=self.settings.morphology_workers, device=self.device)
        table.meta["seconds"] = time.perf_counter() - tic
        return table

    def _predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        tic = time.perf_counter()
        z_pred = predict_redshifts(self.predictor, images)
        features = predictor_features(self.predictor, images)
        return {"predicted_redshift": z_pred, "features": features, "seconds": time.perf_counter() - tic}


def _run(worker: _BatchWorker, figures: bool, progress: bool, started: float) -> dict[str, Any]:
    """Fill this process's batches (``i % num_processes == rank``); then the main process merges and reports."""
    from galaxy_pipeline.evaluation.report import write_report

    state = process_state()
    mine = worker.batches[state.process_index :: state.num_processes]
    with tqdm(
        total=sum(stop - start for start, stop in mine),
        desc="evaluating (generate + measure)",
        unit="galaxy",
        disable=not (progress and state.is_main_process),
    ) as bar:
        for start, stop in mine:
            worker.run(start, stop)
            bar.update(stop - start)
    grid = worker.grid_images() if figures and state.is_main_process else None
    state.wait_for_everyone()
    if state.is_main_process:
        write_report(_report(worker, grid, started), worker.cache.out_dir)
    state.wait_for_everyone()
    return json.loads((worker.cache.out_dir / "report.json").read_text(encoding="utf-8"))


def _report(worker: _BatchWorker, grid: dict[str, np.ndarray] | None, started: float) -> dict[str, Any]:
    """Read every batch back, write the catalogues, compute the statistics and draw the figures."""
    from galaxy_pipeline.evaluation import figures as plots

    out_dir = worker.cache.out_dir
    measurements = worker.cache.read(worker.batches, worker.redshifts)
    real, generated = measurements.real, measurements.generated
    for table in (real, generated):
        add_colours(table)
    real.write(out_dir / "galaxies_real.ecsv", format="ascii.ecsv", overwrite=True)
    generated.write(out_dir / "galaxies_generated.ecsv", format="ascii.ecsv", overwrite=True)

    tic = time.perf_counter()
    report = summarize(
        measurements, worker.settings, worker.redshifts, worker.sampling_pipe.redshift_range, len(worker.batches)
    )
    statistics_seconds = time.perf_counter() - tic
    figure_files = []
    if grid is not None:
        figure_files = [
            plots.plot_redshift(real, generated, report, out_dir / "fig2_redshift.png"),
            plots.plot_morphology_histograms(
                real, generated, COMPARED_QUANTITIES, out_dir / "fig3_morphology_histograms.png"
            ),
            plots.plot_morphology_vs_redshift(report, out_dir / "fig4_morphology_vs_redshift.png"),
            plots.plot_galaxy_grid(**grid, path=out_dir / "fig5_galaxy_grid.png"),
        ]
    report["files"] = {
        "figures": [path.name for path in figure_files],
        "catalogues": ["galaxies_real.ecsv", "galaxies_generated.ecsv"],
    }
    generation_seconds = measurements.generation_seconds
    report["timings"] = {
        "generation_seconds": generation_seconds,
        "generation_images_per_second": len(generated) / generation_seconds if generation_seconds > 0 else None,
        "morphology_seconds": float(real.meta["seconds"] + generated.meta["seconds"]),
        "predictor_seconds": measurements.predictor_seconds,
        "statistics_seconds": statistics_seconds,
        "wall_seconds_this_run": time.perf_counter() - started,
    }
    return report
