"""The exam scorecard: one pass/fail cell per (redshift bin, quantity), judged on the medians.

A cell passes when the generated median lies within a tolerance of the real median: an absolute one in
magnitudes for colours and fluxes, an absolute one for ellipticity, a relative one for sizes and the
Sersic index. Bins holding fewer than ``min_real`` real galaxies are shown but not judged (their medians
are too uncertain to fail a model on). The count of passing cells compares any two models in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

SCORECARD_TOLERANCES: dict[str, tuple[str, float]] = {
    "ellipticity": ("absolute", 0.03),
    "semimajor_axis_arcsec": ("relative", 0.10),
    "isophotal_area_arcsec2": ("relative", 0.10),
    "sersic_index": ("relative", 0.10),
    "mag_i": ("absolute", 0.10),
    "g_i": ("absolute", 0.10),
    "r_z": ("absolute", 0.10),
}
"""Tolerance of each judged quantity on |generated median - real median|: ``("absolute", units of the
quantity)`` or ``("relative", fraction of the real median)``."""

MIN_REAL_PER_BIN = 30
"""Real galaxies a redshift bin must hold for its cells to be judged."""


def scorecard(
    by_bin: Mapping[str, list[Mapping[str, Any]]],
    tolerances: Mapping[str, tuple[str, float]] = SCORECARD_TOLERANCES,
    min_real: int = MIN_REAL_PER_BIN,
) -> dict[str, Any]:
    """Judge every (redshift bin, quantity) cell of a per-bin comparison.

    Args:
        by_bin: ``{quantity: rows}`` with the rows of
            :func:`galaxy_pipeline.evaluation.statistics.compare_by_redshift_bin` (``z_min``, ``z_max``,
            ``n_real``, ``real_median`` and its CI, ``generated_median``, ``ks_pvalue``).
        tolerances: ``{quantity: (kind, value)}``; quantities absent from ``by_bin`` are skipped.
        min_real: bins with fewer finite real values than this are not judged (``pass`` is None).

    Returns:
        ``cells`` (one dict per cell: ``z_min``, ``z_max``, ``quantity``, ``n_real``, ``n_generated``,
        ``real_median`` with ``_ci_low``/``_ci_high``, ``generated_median``, ``difference`` (generated -
        real, units of the quantity), ``tolerance`` (in the same units), ``ks_pvalue``, ``pass``),
        ``n_pass``, ``n_judged``, ``failing`` (``"quantity z_min-z_max"`` of each failed cell),
        ``tolerances`` and ``min_real``.
    """
    cells = []
    for quantity, (kind, value) in tolerances.items():
        if kind not in ("absolute", "relative"):
            raise ValueError(f"Tolerance kind of {quantity!r} is {kind!r}; use 'absolute' or 'relative'.")
        for row in by_bin.get(quantity, []):
            cells.append(_judge(quantity, kind, value, row, min_real))
    judged = [cell for cell in cells if cell["pass"] is not None]
    return {
        "cells": cells,
        "n_pass": sum(cell["pass"] for cell in judged),
        "n_judged": len(judged),
        "failing": [f"{cell['quantity']} {cell['z_min']:g}-{cell['z_max']:g}" for cell in judged if not cell["pass"]],
        "tolerances": {quantity: list(tolerance) for quantity, tolerance in tolerances.items()},
        "min_real": min_real,
    }


def _judge(quantity: str, kind: str, value: float, row: Mapping[str, Any], min_real: int) -> dict[str, Any]:
    real, generated = float(row["real_median"]), float(row["generated_median"])
    tolerance = value * abs(real) if kind == "relative" else value
    difference = generated - real
    judged = row["n_real"] >= min_real and np.isfinite(real)
    return {
        "z_min": row["z_min"],
        "z_max": row["z_max"],
        "quantity": quantity,
        "n_real": row["n_real"],
        "n_generated": row["n_generated"],
        "real_median": real,
        "real_median_ci_low": row["real_median_ci_low"],
        "real_median_ci_high": row["real_median_ci_high"],
        "generated_median": generated,
        "difference": difference,
        "tolerance": tolerance,
        "ks_pvalue": row["ks_pvalue"],
        "pass": bool(np.isfinite(difference) and abs(difference) <= tolerance) if judged else None,
    }
