"""Photometric-redshift quality metrics, as defined by the HSC-SSP photo-z papers (Tanaka et al. 2018).

With ``dz = (z_pred - z_spec) / (1 + z_spec)``:

- bias: ``median(dz)``
- scatter: ``sigma_MAD = 1.4826 * median(|dz - median(dz)|)``
- outlier rate: fraction of objects with ``|dz| > 0.15``
- loss: ``L = 1 - 1 / (1 + (dz / 0.15)^2)``, averaged over objects (0 is perfect, 1 is hopeless)

All quantities are dimensionless. Pairs where either redshift is NaN or infinite are left out and
counted as ``n_nonfinite``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch

from galaxy_pipeline.evaluation.statistics import REDSHIFT_BIN_EDGES, redshift_bin_masks

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

OUTLIER_THRESHOLD: float = 0.15
"""|dz| above which a photo-z is an outlier, and the width of the HSC loss."""

MAD_TO_SIGMA: float = 1.4826
"""Ratio of the Gaussian sigma to the median absolute deviation."""


def normalized_residual(z_pred: ArrayT, z_spec: ArrayT) -> ArrayT:
    """``dz = (z_pred - z_spec) / (1 + z_spec)`` elementwise; numpy arrays or torch tensors."""
    return (z_pred - z_spec) / (1 + z_spec)


def hsc_loss(z_pred: ArrayT, z_spec: ArrayT) -> ArrayT:
    """Per-object HSC photo-z loss ``1 - 1 / (1 + (dz / 0.15)^2)`` in [0, 1); numpy arrays or torch tensors.

    Quadratic for small ``dz`` and saturating at 1 for outliers, so a few catastrophic
    failures do not dominate the mean.
    """
    dz = normalized_residual(z_pred, z_spec)
    return 1 - 1 / (1 + (dz / OUTLIER_THRESHOLD) ** 2)


def photoz_metrics(z_pred: np.ndarray, z_spec: np.ndarray) -> dict[str, float | int]:
    """Bias, sigma_MAD, outlier rate and mean HSC loss of predicted against spectroscopic redshifts.

    Args:
        z_pred: predicted redshifts, shape (N,).
        z_spec: spectroscopic (true) redshifts, shape (N,).

    Returns:
        ``{"n", "n_nonfinite", "bias", "sigma_mad", "outlier_rate", "loss"}``; the metrics are NaN
        when no finite pair is left.
    """
    z_pred = np.asarray(z_pred, dtype=np.float64).ravel()
    z_spec = np.asarray(z_spec, dtype=np.float64).ravel()
    if z_pred.shape != z_spec.shape:
        raise ValueError(f"z_pred and z_spec must have the same length; got {z_pred.size} and {z_spec.size}.")
    finite = np.isfinite(z_pred) & np.isfinite(z_spec)
    metrics: dict[str, float | int] = {"n": int(finite.sum()), "n_nonfinite": int((~finite).sum())}
    if not finite.any():
        return metrics | {"bias": np.nan, "sigma_mad": np.nan, "outlier_rate": np.nan, "loss": np.nan}
    dz = normalized_residual(z_pred[finite], z_spec[finite])
    bias = float(np.median(dz))
    return metrics | {
        "bias": bias,
        "sigma_mad": MAD_TO_SIGMA * float(np.median(np.abs(dz - bias))),
        "outlier_rate": float(np.mean(np.abs(dz) > OUTLIER_THRESHOLD)),
        "loss": float(np.mean(hsc_loss(z_pred[finite], z_spec[finite]))),
    }


def photoz_metrics_by_bin(
    z_pred: np.ndarray, z_spec: np.ndarray, bin_edges: Sequence[float] = REDSHIFT_BIN_EDGES
) -> list[dict[str, float | int]]:
    """:func:`photoz_metrics` in bins of spectroscopic redshift.

    Bins are ``[z_min, z_max)``, the last one closed; objects outside the edges are left out.

    Returns:
        One row per bin: ``{"z_min", "z_max"}`` followed by the keys of :func:`photoz_metrics`
        (``astropy.table.Table(rows=...)`` turns the list into a table).
    """
    z_pred = np.asarray(z_pred, dtype=np.float64).ravel()
    z_spec = np.asarray(z_spec, dtype=np.float64).ravel()
    if z_pred.shape != z_spec.shape:
        raise ValueError(f"z_pred and z_spec must have the same length; got {z_pred.size} and {z_spec.size}.")
    return [
        {"z_min": float(low), "z_max": float(high)} | photoz_metrics(z_pred[mask], z_spec[mask])
        for (low, high), mask in redshift_bin_masks(z_spec, bin_edges)
    ]
