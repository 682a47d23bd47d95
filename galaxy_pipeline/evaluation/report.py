"""Write an evaluation report: ``report.json`` (everything, machine-readable) and ``report.md`` (a short summary).

JSON is strict: NaN and infinities become ``null``, numpy scalars and arrays become numbers and lists.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from galaxy_pipeline.atomic import atomic_write

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy types turned into Python ones and non-finite floats into None, recursively."""
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (atomically) and return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = to_jsonable(report)
    paths = out_dir / REPORT_JSON, out_dir / REPORT_MARKDOWN
    for path, text in zip(
        paths, (json.dumps(clean, indent=2, allow_nan=False) + "\n", render_markdown(clean)), strict=True
    ):
        atomic_write(path, lambda temporary, text=text: temporary.write_text(text, encoding="utf-8"))
    return paths


def render_markdown(report: Mapping[str, Any]) -> str:
    """A short human summary of a report: settings, the scorecard, detection, the Spearman checks,
    per-quantity comparisons, photo-z metrics and the Frechet distance, figures and timings."""
    lines = _header_lines(report)
    if report.get("scorecard"):
        lines += _scorecard_lines(report["scorecard"])
    lines += _detection_lines(report["detection"])
    lines += _spearman_lines(report["spearman"])
    lines += _morphology_lines(report["morphology"])
    if report.get("photoz"):
        lines += _photoz_lines(report["photoz"], report.get("frechet") or {})
    figures = report.get("files", {}).get("figures", [])
    if figures:
        lines += ["## Figures", ""] + [f"![{Path(name).stem}]({name})" for name in figures] + [""]
    timings = report.get("timings", {})
    if timings:
        lines += ["## Timings", ""]
        lines += _table(["stage", "seconds"], [[key, _number(value)] for key, value in timings.items()])
    return "\n".join(lines)


def _header_lines(report: Mapping[str, Any]) -> list[str]:
    """The title, what was compared with what, and the report's notes."""
    model, data, settings, counts = report["model"], report["data"], report["settings"], report["counts"]
    lines = [
        "# Evaluation report",
        "",
        f"Model `{model.get('id') or 'unnamed'}`, sampler {model['scheduler']} with "
        f"{model['num_inference_steps']} steps{_guidance_text(model)}; "
        f"{counts['n_real']} real galaxies of `{data.get('id') or 'the split'}` "
        f"(z = {_number(data['redshift_min'])} to {_number(data['redshift_max'])}) and one generated galaxy per real "
        f"redshift (seed {settings['seed']}).",
        "",
    ]
    lines += [f"- {note}" for note in report.get("notes", [])]
    return lines + ([""] if report.get("notes") else [])


def _detection_lines(detection: Mapping[str, Any]) -> list[str]:
    """Detection and Sersic-fit failure rates of both samples, with the flags raised."""
    lines = ["## Detection", "", "Every image is measured; a galaxy that is not detected is a result, not dropped.", ""]
    rows = []
    for name in ("real", "generated"):
        summary = detection[name]
        flags = ", ".join(f"{flag} {count}" for flag, count in summary["flags"].items() if count) or "none"
        rows.append([name, summary["n"], _rate(summary, "detection_rate"), _rate(summary, "fit_failure_rate"), flags])
    return lines + _table(["sample", "N", "detected (95% CI)", "Sersic fit failed, of detected", "flags"], rows)


def _spearman_lines(spearman_checks: Mapping[str, Any]) -> list[str]:
    """The size-redshift trend of both samples, and predicted against conditioning redshift."""
    spearman = spearman_checks["size_vs_redshift"]
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}[spearman["pass"]]
    lines = [
        "## Spearman checks",
        "",
        f"Redshift vs semi-major axis: real rho = {_number(spearman['real']['rho'])} "
        f"(N={spearman['real']['n']}), generated rho = {_number(spearman['generated']['rho'])} "
        f"(N={spearman['generated']['n']}); difference {_number(spearman['difference'])} "
        f"(tolerance {spearman['tolerance']}): **{verdict}**.",
    ]
    predicted = spearman_checks.get("predicted_vs_conditioned")
    if predicted:
        lines.append(
            f"Predicted vs conditioning redshift of generated galaxies: rho = {_number(predicted['generated']['rho'])} "
            f"(real, predicted vs spectroscopic: {_number(predicted['real']['rho'])})."
        )
    return lines + [""]


def _morphology_lines(morphology: Mapping[str, Any]) -> list[str]:
    """Real against generated for every quantity: over all redshifts, then KS per redshift bin."""
    lines = [
        "## Real vs generated, all redshifts",
        "",
        "Medians with bootstrap 95% CIs; W1 is the Wasserstein-1 distance, next to the median of its permutation "
        "null (what two samples of the same population give) and its p-value.",
        "",
    ]
    rows = []
    for name in morphology["quantities"]:
        row = morphology["overall"][name]
        unit = morphology["units"].get(name) or ""
        rows.append(
            [
                f"{name}" + (f" [{unit}]" if unit else ""),
                f"{row['n_real']} / {row['n_generated']}",
                _interval(row, "real_median"),
                _interval(row, "generated_median"),
                _number(row["ks_statistic"]),
                f"{_number(row['wasserstein'])} ({_number(row['wasserstein_null_median'])})",
                _number(row["wasserstein_pvalue"]),
            ]
        )
    lines += _table(["quantity", "N real / gen", "real median", "generated median", "KS D", "W1 (null)", "W1 p"], rows)
    lines += ["## Per redshift bin: KS statistic (W1 p-value)", ""]
    edges = [(row["z_min"], row["z_max"]) for row in next(iter(morphology["by_bin"].values()))]
    rows = [
        [name]
        + [
            f"{_number(row['ks_statistic'])} ({_number(row['wasserstein_pvalue'])})"
            for row in morphology["by_bin"][name]
        ]
        for name in morphology["quantities"]
    ]
    return lines + _table(["quantity"] + [f"{low:g}-{high:g}" for low, high in edges], rows)


def _photoz_lines(photoz: Mapping[str, Any], frechet: Mapping[str, Any]) -> list[str]:
    """The redshift predictor's metrics on both samples, and the Frechet distance with its null."""
    lines = ["## Photo-z metrics (redshift predictor)", ""]
    rows = []
    for name in ("real", "generated"):
        overall = photoz[name]["overall"]
        rows.append([name] + [_number(overall[key]) for key in ("n", "bias", "sigma_mad", "outlier_rate", "loss")])
    lines += _table(["sample", "N", "bias", "sigma_MAD", "outlier rate", "HSC loss"], rows)
    if "frechet_distance" in frechet:
        lines += [
            f"Frechet distance on predictor features (whitened on the real set, N={frechet['n_per_sample']} per "
            f"sample): {_number(frechet['frechet_distance'])} +- {_number(frechet['frechet_distance_std'])}; "
            f"split-half null of the real set: {_number(frechet['null_frechet_distance'])} +- "
            f"{_number(frechet['null_frechet_distance_std'])}.",
            "",
        ]
    return lines


def _scorecard_lines(card: Mapping[str, Any]) -> list[str]:
    """The scorecard as one table: a row per quantity, a column per redshift bin."""
    tolerances = ", ".join(
        f"{name} {value:g}" + (" (relative)" if kind == "relative" else "")
        for name, (kind, value) in card["tolerances"].items()
    )
    lines = [
        "## Scorecard",
        "",
        f"**{card['n_pass']} of {card['n_judged']} cells pass.** A cell passes when |generated median - real median| "
        f"is within its tolerance ({tolerances}); bins with fewer than {card['min_real']} real galaxies are not "
        "judged (-). Each cell: real median [bootstrap 95% CI] / generated median (KS p-value) verdict.",
        "",
    ]
    cells = card["cells"]
    bins = list(dict.fromkeys((cell["z_min"], cell["z_max"]) for cell in cells))
    rows = []
    for quantity in dict.fromkeys(cell["quantity"] for cell in cells):
        row = [quantity]
        for cell in (cell for cell in cells if cell["quantity"] == quantity):
            verdict = {True: "PASS", False: "FAIL", None: "-"}[cell["pass"]]
            row.append(
                f"{_number(cell['real_median'])} [{_number(cell['real_median_ci_low'])}, "
                f"{_number(cell['real_median_ci_high'])}] / {_number(cell['generated_median'])} "
                f"(p {_number(cell['ks_pvalue'])}) {verdict}"
            )
        rows.append(row)
    header = ["quantity"] + [f"z {low:g}-{high:g} (N {_bin_count(cells, low)})" for low, high in bins]
    return lines + _table(header, rows)


def _bin_count(cells: list[Mapping[str, Any]], z_min: float) -> int:
    """Real galaxies in the bin starting at ``z_min`` (the largest count over quantities: detections vary)."""
    return max(cell["n_real"] for cell in cells if cell["z_min"] == z_min)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool | int):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}"
    return f"{value:.2e}"


def _interval(row: Mapping[str, Any], key: str) -> str:
    return f"{_number(row[key])} [{_number(row[f'{key}_ci_low'])}, {_number(row[f'{key}_ci_high'])}]"


def _rate(summary: Mapping[str, Any], key: str) -> str:
    if summary[key] is None:
        return "n/a"
    return f"{summary[key]:.1%} [{summary[f'{key}_ci_low']:.1%}, {summary[f'{key}_ci_high']:.1%}]"


def _guidance_text(model: dict) -> str:
    """The clause naming the guidance scale g of a guided run; empty for plain sampling (g = 1 or absent)."""
    scale = model.get("guidance_scale", 1.0)
    return "" if scale == 1.0 else f", classifier-free guidance scale {_number(scale)}"
