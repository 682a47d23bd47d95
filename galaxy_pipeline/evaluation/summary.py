"""The summary of an evaluation: measured real and generated galaxies in, the report dictionary out.

:func:`summarize` compares real and generated galaxies per redshift bin (KS, Wasserstein-1 with a
permutation null, bootstrap CIs of medians and means), gives detection and fit-failure rates,
photo-z metrics, a Frechet distance on predictor features with its split-half null, the scorecard,
and the Spearman correlations of the paper. :mod:`galaxy_pipeline.evaluation.report` writes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from astropy.stats import binom_conf_interval
from astropy.table import Table
from scipy import stats

from galaxy_pipeline.evaluation.cache import Measurements
from galaxy_pipeline.evaluation.morphology import MORPHOLOGY_METRICS
from galaxy_pipeline.evaluation.photoz_metrics import photoz_metrics, photoz_metrics_by_bin
from galaxy_pipeline.evaluation.scorecard import scorecard
from galaxy_pipeline.evaluation.settings import EvaluationSettings
from galaxy_pipeline.evaluation.statistics import (
    REDSHIFT_BIN_EDGES,
    compare_by_redshift_bin,
    compare_distributions,
    frechet_distance_with_null,
    redshift_bin_masks,
)
from galaxy_pipeline.version import __version__

DERIVED_COLOURS: tuple[str, ...] = ("g_i", "r_z")
"""Colours (AB mag) added to the measured tables: g - i and r - z bracket the 4000 A break from z = 0 to 1.5."""

COMPARED_QUANTITIES: tuple[str, ...] = (*MORPHOLOGY_METRICS, "mag_i", *DERIVED_COLOURS)
"""Measured quantities compared per redshift bin: the paper's four morphology metrics, i-band AB
magnitude and the g - i and r - z colours (AB mag)."""

SPEARMAN_TOLERANCE = 0.15
"""Pass criterion: the Spearman correlation of redshift with semi-major axis of generated galaxies is
within this of the real one."""

FLAGS: tuple[str, ...] = ("blank", "saturated", "not_detected", "off_centre", "fit_failed", "fit_at_bound")
"""Measurement flags counted in the report (see :func:`measure_morphology`)."""


def add_colours(table: Table) -> None:
    """Add the :data:`DERIVED_COLOURS` columns (AB mag) from the measured ``mag_<band>`` columns."""
    for name in DERIVED_COLOURS:
        first, second = name.split("_")
        table[name] = table[f"mag_{first}"] - table[f"mag_{second}"]
        table[name].unit = table[f"mag_{first}"].unit
        table[name].description = f"AB colour {first} - {second}"


def summarize(
    measurements: Measurements,
    settings: EvaluationSettings,
    redshifts: np.ndarray,
    trained_range: tuple[float, float],
    n_batches: int,
) -> dict[str, Any]:
    """The report of an evaluation, without its ``files`` and ``timings`` (the orchestration adds those).

    Args:
        measurements: every batch read back (with colours added).
        settings: what the evaluation was made with.
        redshifts: the real redshifts of the evaluated rows (the conditioning redshifts).
        trained_range: the pipeline's trained redshift range (low, high).
        n_batches: batches the rows were cut into.
    """
    real, generated = measurements.real, measurements.generated
    low, high = trained_range
    n_extrapolated = int(np.sum((redshifts < low) | (redshifts > high)))
    notes = _notes(settings, n_extrapolated, trained_range, measurements.n_clipped, n_batches)
    bin_edges = [float(edge) for edge in settings.bin_edges]
    morphology = _morphology_comparison(real, generated, settings)
    report: dict[str, Any] = {
        "galaxy_pipeline_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": _model_section(settings, trained_range),
        "data": {
            "id": settings.data_id,
            "n": int(redshifts.size),
            "n_available": settings.n_available,
            "redshift_min": float(redshifts.min()),
            "redshift_max": float(redshifts.max()),
        },
        "settings": _settings_section(settings, real, measurements.real_features is not None),
        "counts": {
            "n_real": len(real),
            "n_generated": len(generated),
            "n_extrapolated": n_extrapolated,
            "n_batches": n_batches,
            "n_batches_clipped": measurements.n_clipped,
        },
        "detection": {"real": detection_summary(real, bin_edges), "generated": detection_summary(generated, bin_edges)},
        "morphology": morphology,
        "scorecard": scorecard(morphology["by_bin"]),
        "spearman": _spearman_checks(real, generated),
        "photoz": None,
        "frechet": None,
    }
    _add_predictor_sections(report, measurements, settings, notes)
    report["notes"] = notes
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


def _notes(
    settings: EvaluationSettings,
    n_extrapolated: int,
    trained_range: tuple[float, float],
    n_clipped: int,
    n_batches: int,
) -> list[str]:
    """What the reader of the report must know about how the sample was made."""
    notes = []
    if settings.n_requested is not None and settings.n_requested > settings.n_available:
        notes.append(f"Asked for n={settings.n_requested} but the split has {settings.n_available} rows: used all.")
    if n_extrapolated:
        low, high = trained_range
        notes.append(
            f"{n_extrapolated} real redshifts lie outside the trained range [{low:g}, {high:g}]: those galaxies were "
            "generated by extrapolation (allow_extrapolation=True) and are included."
        )
    if n_clipped:
        notes.append(
            f"In {n_clipped} of {n_batches} generated batches some pixels left the model-space range and were "
            "clipped: the sampler may be diverging (too few steps, or an undertrained model)."
        )
    return notes


def _model_section(settings: EvaluationSettings, trained_range: tuple[float, float]) -> dict[str, Any]:
    low, high = trained_range
    return {
        "id": settings.model_id,
        "fingerprint": settings.model_fingerprint,
        "trained_redshift_range": [low, high],
        "scheduler": settings.scheduler,
        "sampler": settings.sampler or "default",
        "num_inference_steps": settings.num_inference_steps,
        "guidance_scale": settings.guidance_scale,
    }


def _settings_section(settings: EvaluationSettings, real: Table, with_predictor: bool) -> dict[str, Any]:
    return {
        "seed": settings.seed,
        "batch_size": settings.batch_size,
        "bin_edges": [float(edge) for edge in settings.bin_edges],
        "n_permutations": settings.n_permutations,
        "n_bootstrap": settings.n_bootstrap,
        "num_processes": settings.num_processes,
        "device": settings.device,
        "predictor": settings.predictor_id if with_predictor else None,
        "detection": real.meta.get("detection"),
        "psf": real.meta.get("psf"),
    }


def _add_predictor_sections(
    report: dict[str, Any], measurements: Measurements, settings: EvaluationSettings, notes: list[str]
) -> None:
    """Fill ``photoz`` and ``frechet`` from the predicted redshifts and features, or note that they are missing."""
    if measurements.real_features is None:
        notes.append(
            "No redshift predictor given (--predictor): photo-z metrics, the predicted-vs-conditioned Spearman "
            "correlation and the Frechet distance on predictor features were skipped."
        )
        return
    bin_edges = [float(edge) for edge in settings.bin_edges]
    report["photoz"] = {
        name: {
            "overall": photoz_metrics(table["predicted_redshift"], table["redshift"]),
            "by_bin": photoz_metrics_by_bin(table["predicted_redshift"], table["redshift"], bin_edges),
        }
        for name, table in (("real", measurements.real), ("generated", measurements.generated))
    }
    try:
        report["frechet"] = frechet_distance_with_null(
            measurements.real_features, measurements.generated_features, seed=settings.seed
        )
    except ValueError as error:
        report["frechet"] = {"error": str(error)}
        notes.append(f"No Frechet distance: {error}")


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


def _morphology_comparison(real: Table, generated: Table, settings: EvaluationSettings) -> dict[str, Any]:
    """Overall and per-bin two-sample comparisons of every compared quantity (non-detections count as NaN)."""
    options = {"n_permutations": settings.n_permutations, "n_bootstrap": settings.n_bootstrap}
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
            bin_edges=[float(edge) for edge in settings.bin_edges],
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
