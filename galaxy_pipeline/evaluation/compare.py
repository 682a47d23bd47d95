"""Compare `evaluate` reports: several training seeds of one recipe, or several recipes, in one table.

    >>> print(compare_reports(["exam_s0", "exam_s1", "exam_s2"]))        # one recipe, three seeds
    >>> print(compare_reports(["exam_a", "exam_b"], labels=["a", "b"], spread=False))

Each folder holds the ``report.json`` that ``galaxy-pipeline evaluate`` writes. With ``spread`` the
reports are runs of one recipe, and every number is given as the mean over runs and its sample
standard deviation (``mean +- std (n runs)``); without it, one column per report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPORT_NAME = "report.json"

SUMMARY_ROWS: dict[str, Callable[[dict[str, Any]], float]] = {
    "photo-z sigma_MAD, generated / real": lambda r: (
        r["photoz"]["generated"]["overall"]["sigma_mad"] / r["photoz"]["real"]["overall"]["sigma_mad"]
    ),
    "Frechet distance / its null": lambda r: r["frechet"]["frechet_distance"] / r["frechet"]["null_frechet_distance"],
    "Spearman(predicted z, conditioned z), generated": lambda r: r["spearman"]["predicted_vs_conditioned"]["generated"][
        "rho"
    ],
    "size-redshift Spearman difference": lambda r: r["spearman"]["size_vs_redshift"]["difference"],
    "scorecard cells passing": lambda r: r["scorecard"]["n_pass"],
}
"""Headline numbers of a report (all dimensionless), by row label."""


def read_report(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``report.json`` of an ``evaluate`` output folder; FileNotFoundError names the folder."""
    path = Path(folder) / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give folders written by `galaxy-pipeline evaluate`.")
    report = json.loads(path.read_text())
    missing = [key for key in ("scorecard", "photoz", "frechet", "spearman") if key not in report]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}: it predates them; rerun `galaxy-pipeline evaluate`.")
    return report


def _format(values: Sequence[float], spread: bool) -> list[str]:
    values = [float("nan") if v is None else float(v) for v in values]  # null: no measurement (JSON NaN)
    if not spread:
        return [f"{v:.3g}" for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
    return [f"{np.mean(values):.3g} +- {std:.2g}"]


def _cell_key(cell: dict[str, Any]) -> tuple[str, float, float]:
    return cell["quantity"], cell["z_min"], cell["z_max"]


def compare_reports(
    folders: Sequence[str | os.PathLike], labels: Sequence[str] | None = None, spread: bool = True
) -> str:
    """A markdown table of the headline numbers and of every judged scorecard cell of ``folders``.

    Args:
        folders: ``evaluate`` output folders.
        labels: a column name per folder (default: the folder names); ignored with ``spread``.
        spread: the folders are runs of one recipe: give mean +- sample std over them, and for each
            scorecard cell the number of runs in which it passes.
    """
    reports = [read_report(folder) for folder in folders]
    if not reports:
        raise ValueError("Give at least one evaluate output folder.")
    labels = [Path(folder).name for folder in folders] if labels is None else list(labels)
    if len(labels) != len(reports):
        raise ValueError(f"Give one label per folder: {len(labels)} labels for {len(reports)} folders.")
    total = reports[0]["scorecard"]["n_judged"]
    header = [f"mean +- std over {len(reports)} runs"] if spread else labels
    lines = [f"| quantity | {' | '.join(header)} |", "|---|" + "---|" * len(header)]
    for name, read in SUMMARY_ROWS.items():
        suffix = f" (of {total})" if name == "scorecard cells passing" else ""
        lines.append(f"| {name}{suffix} | {' | '.join(_format([read(r) for r in reports], spread))} |")

    cells = [{_cell_key(c): c for c in r["scorecard"]["cells"] if c["pass"] is not None} for r in reports]
    lines += ["", f"| cell: real median / generated median | {' | '.join(header)} |", "|---|" + "---|" * len(header)]
    for key, first in cells[0].items():
        runs = [per_report[key] for per_report in cells if key in per_report]
        generated = _format([c["generated_median"] for c in runs], spread)
        if spread:
            generated = [f"{generated[0]} (passes {sum(bool(c['pass']) for c in runs)} of {len(runs)})"]
        else:
            generated = [f"{g} {'pass' if c['pass'] else 'FAIL'}" for g, c in zip(generated, runs, strict=True)]
        quantity, z_min, z_max = key
        lines.append(f"| {quantity}, z {z_min:g}-{z_max:g}: {first['real_median']:.3g} | {' | '.join(generated)} |")
    return "\n".join(lines)
