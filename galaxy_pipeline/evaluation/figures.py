"""The paper's figures for an evaluation: redshifts (fig2), morphology histograms (fig3), morphology
against redshift (fig4) and a grid of real and generated galaxies (fig5).

Figures are drawn on ``matplotlib.figure.Figure`` objects (Agg canvas) without pyplot, so no global
backend or state is touched and they can be made in worker processes and on headless machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from galaxy_pipeline.evaluation.photoz_metrics import OUTLIER_THRESHOLD
from galaxy_pipeline.hsc import PIXEL_SCALE_ARCSEC
from galaxy_pipeline.visualization import RGB_BANDS, rgb_composite

REAL_STYLE = {"color": "#1f4e9c", "label": "real"}
GENERATED_STYLE = {"color": "#d1495b", "label": "generated"}
DPI = 110

LABELS: dict[str, str] = {
    "ellipticity": "ellipticity 1 - b/a",
    "semimajor_axis_arcsec": "semi-major axis a [arcsec]",
    "sersic_index": "Sersic index n",
    "isophotal_area_arcsec2": "isophotal area [arcsec$^2$]",
    "half_light_radius_arcsec": "half-light radius [arcsec]",
    "mag_i": "i-band magnitude [AB mag]",
    "g_i": "g - i colour [AB mag]",
    "g_r": "g - r colour [AB mag]",
    "r_z": "r - z colour [AB mag]",
}
"""Axis label (with units) of each measured quantity."""

LOG_QUANTITIES = frozenset({"semimajor_axis_arcsec", "isophotal_area_arcsec2", "sersic_index"})
"""Positive, long-tailed quantities whose histograms use logarithmic bins."""


def plot_redshift(real: Table, generated: Table, report: dict[str, Any], path: str | Path) -> Path:
    """Fig. 2: predicted vs true redshift (real) and vs conditioning redshift (generated), HSC photo-z loss
    per redshift bin, and detection rate per bin with Wilson 95% intervals.

    Without a ``predicted_redshift`` column only the detection-rate panel is drawn, with a note.

    Args:
        real, generated: per-galaxy tables with ``redshift`` (and ``predicted_redshift``).
        report: the evaluation report (its ``photoz`` and ``detection`` per-bin rows are plotted).
        path: PNG file to write.
    """
    has_predictor = "predicted_redshift" in real.colnames and report.get("photoz")
    figure = Figure(figsize=(11, 9.5) if has_predictor else (6, 4.5), layout="constrained")
    axes = figure.subplots(2, 2).ravel() if has_predictor else [None, None, None, figure.subplots()]
    if has_predictor:
        z_max = float(np.nanmax([np.nanmax(real["redshift"]), np.nanmax(generated["redshift"])])) * 1.05
        for axis, table, style, xlabel, title in (
            (axes[0], real, REAL_STYLE, "spectroscopic redshift", "real galaxies"),
            (axes[1], generated, GENERATED_STYLE, "conditioning redshift", "generated galaxies"),
        ):
            _redshift_scatter(axis, table["redshift"], table["predicted_redshift"], style, z_max)
            axis.set(xlabel=xlabel, ylabel="predicted redshift", title=title)
        axis = axes[2]
        for name, style in (("real", REAL_STYLE), ("generated", GENERATED_STYLE)):
            rows = report["photoz"][name]["by_bin"]
            _binned(axis, rows, [row["loss"] for row in rows], None, None, style, name == "generated")
        axis.set(
            xlabel="redshift (spectroscopic / conditioning)",
            ylabel="mean HSC photo-z loss",
            title="photo-z loss per redshift bin",
            ylim=(0, None),
        )
        axis.legend()
    else:
        figure.suptitle("no redshift predictor given (--predictor): photo-z panels skipped", fontsize=9)
    axis = axes[3]
    for name, style in (("real", REAL_STYLE), ("generated", GENERATED_STYLE)):
        rows = report["detection"][name]["by_bin"]
        rates = [row["detection_rate"] for row in rows]
        lows = [row["detection_rate_ci_low"] for row in rows]
        highs = [row["detection_rate_ci_high"] for row in rows]
        _binned(axis, rows, rates, lows, highs, style, name == "generated")
    axis.set(xlabel="redshift", ylabel="detected fraction", title="central-source detection rate", ylim=(0, 1.05))
    axis.legend(loc="lower left")
    return _save(figure, path)


def plot_morphology_histograms(
    real: Table, generated: Table, quantities: Sequence[str], path: str | Path, columns: int = 3
) -> Path:
    """Fig. 3: normalised histograms of each quantity, real vs generated, all redshifts together.

    Only detected galaxies with a finite value enter; the legend gives how many. Bins span the 0.5-99.5th
    percentiles of both samples together (logarithmic for :data:`LOG_QUANTITIES`).
    """
    rows = -(-len(quantities) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis, name in zip(axes, quantities, strict=False):
        samples = [_finite(table[name]) for table in (real, generated)]
        pooled = np.concatenate(samples)
        log = name in LOG_QUANTITIES
        if log:
            pooled = pooled[pooled > 0]
        axis.set_xlabel(LABELS.get(name, name))
        if pooled.size < 2:
            axis.text(0.5, 0.5, "no finite values", ha="center", va="center", transform=axis.transAxes)
            continue
        low, high = np.percentile(pooled, [0.5, 99.5])
        if high <= low:
            low, high = low - 0.5, high + 0.5
        bins = np.geomspace(low, high, 31) if log else np.linspace(low, high, 31)
        for values, style in zip(samples, (REAL_STYLE, GENERATED_STYLE), strict=True):
            if values.size:
                axis.hist(
                    np.clip(values, low, high),
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.6,
                    color=style["color"],
                    label=f"{style['label']} (N={values.size})",
                )
        if log:
            axis.set_xscale("log")
            axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_ylabel("probability density")
        axis.legend(fontsize=8)
    for axis in axes[len(quantities) :]:
        axis.set_visible(False)
    figure.suptitle("Measured galaxies, all redshifts (values beyond the plotted range are piled at its edges)")
    return _save(figure, path)


def plot_morphology_vs_redshift(report: dict[str, Any], path: str | Path, columns: int = 3) -> Path:
    """Fig. 4: per-bin means of each compared quantity with bootstrap 95% CIs, real vs generated.

    Reads ``report["morphology"]["by_bin"]`` (rows of :func:`compare_by_redshift_bin`); points sit at bin
    centres, generated ones shifted slightly right, and the horizontal bar of the real points spans the bin.
    """
    by_bin = report["morphology"]["by_bin"]
    quantities = list(by_bin)
    rows = -(-len(quantities) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis, name in zip(axes, quantities, strict=False):
        bins = by_bin[name]
        for prefix, style in (("real", REAL_STYLE), ("generated", GENERATED_STYLE)):
            means = [row[f"{prefix}_mean"] for row in bins]
            lows = [row[f"{prefix}_mean_ci_low"] for row in bins]
            highs = [row[f"{prefix}_mean_ci_high"] for row in bins]
            _binned(axis, bins, means, lows, highs, style, prefix == "generated")
        axis.set(xlabel="redshift", ylabel=f"mean {LABELS.get(name, name)}")
        axis.legend(fontsize=8)
    for axis in axes[len(quantities) :]:
        axis.set_visible(False)
    figure.suptitle("Mean per redshift bin with bootstrap 95% confidence intervals (detected galaxies)")
    return _save(figure, path)


def plot_galaxy_grid(
    real_images: np.ndarray,
    real_redshifts: np.ndarray,
    generated_images: np.ndarray,
    generated_redshifts: np.ndarray,
    path: str | Path,
) -> Path:
    """Fig. 5: Lupton RGB composites (i, r, g) of real galaxies nearest each redshift and generated ones at it.

    Args:
        real_images: (C, 5, H, W) fluxes, one per column.
        real_redshifts: (C,) their spectroscopic redshifts.
        generated_images: (C * k, 5, H, W) fluxes, k per column, column-major (all of column 0 first).
        generated_redshifts: (C * k,) conditioning redshift of each.
        path: PNG file to write.
    """
    n_columns = len(real_images)
    per_column = len(generated_images) // n_columns
    real_rgb, generated_rgb = rgb_composite(real_images), rgb_composite(generated_images)
    figure = Figure(figsize=(1.9 * n_columns + 0.6, 2.0 * (1 + per_column) + 0.6), layout="constrained")
    axes = np.atleast_2d(figure.subplots(1 + per_column, n_columns, squeeze=False))
    for column in range(n_columns):
        z = generated_redshifts[column * per_column]
        axes[0, column].imshow(real_rgb[column], origin="lower")
        axes[0, column].set_title(f"z = {z:g}\nreal: z$_{{spec}}$ = {real_redshifts[column]:.3f}", fontsize=9)
        for k in range(per_column):
            axes[1 + k, column].imshow(generated_rgb[column * per_column + k], origin="lower")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0, 0].set_ylabel("real (nearest z)")
    for k in range(per_column):
        axes[1 + k, 0].set_ylabel(f"generated #{k + 1}")
    size = real_images.shape[-1] * PIXEL_SCALE_ARCSEC
    bands = ", ".join(RGB_BANDS)
    figure.suptitle(f'Real and generated galaxies; RGB = ({bands}), {size:.2f}" x {size:.2f}" cutouts')
    return _save(figure, path)


def _redshift_scatter(axis, z_true, z_pred, style: dict, z_max: float) -> None:
    """Predicted vs true redshift with the 1:1 line and the HSC outlier limits |dz| = 0.15 (1 + z)."""
    z_true, z_pred = np.asarray(z_true, dtype=float), np.asarray(z_pred, dtype=float)
    alpha = float(np.clip(300 / max(z_true.size, 1), 0.05, 0.8))
    axis.scatter(z_true, z_pred, s=4, alpha=alpha, color=style["color"], rasterized=True, label=style["label"])
    line = np.array([0.0, z_max])
    axis.plot(line, line, color="k", linewidth=1, label="1:1")
    for sign in (-1, 1):
        axis.plot(line, line + sign * OUTLIER_THRESHOLD * (1 + line), "k--", linewidth=0.8)
    axis.plot([], [], "k--", linewidth=0.8, label=f"|dz| = {OUTLIER_THRESHOLD} (1 + z)")
    axis.set(xlim=(0, z_max), ylim=(0, z_max), aspect="equal")
    axis.legend(loc="upper left", fontsize=8)


def _binned(axis, bins: list[dict], values, lows, highs, style: dict, shifted: bool) -> None:
    """Plot one value per redshift bin at the bin centre, with optional CIs; NaN/None bins are skipped."""
    centres = np.array([(row["z_min"] + row["z_max"]) / 2 for row in bins])
    half_widths = np.array([(row["z_max"] - row["z_min"]) / 2 for row in bins])
    values = _as_float(values)
    keep = np.isfinite(values)
    x = centres + (0.02 * (centres.max() - centres.min() or 1) if shifted else 0.0)
    if lows is not None:
        lows, highs = _as_float(lows), _as_float(highs)
        keep &= np.isfinite(lows) & np.isfinite(highs)
        # A percentile-bootstrap interval of a tiny sample may miss its own estimate: draw it from the point.
        yerr = np.clip(np.vstack([values - lows, highs - values]), 0, None)[:, keep]
    else:
        yerr = None
    axis.errorbar(
        x[keep],
        values[keep],
        yerr=yerr,
        xerr=None if shifted else half_widths[keep],
        fmt="o" if not shifted else "s",
        markersize=4,
        capsize=2,
        linestyle="-",
        linewidth=1,
        **style,
    )


def _as_float(values) -> np.ndarray:
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def _finite(column) -> np.ndarray:
    values = np.asarray(column, dtype=float)
    return values[np.isfinite(values)]


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    return path
