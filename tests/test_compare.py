"""`galaxy-pipeline compare`: several evaluate reports in one table, with the spread over training seeds."""

from __future__ import annotations

import json

import pytest

from galaxy_pipeline.cli import main
from galaxy_pipeline.evaluation.compare import compare_reports


def write_report(folder, sigma_mad_generated: float, n_pass: int, ellipticity: float, passes: bool):
    cell = dict(quantity="ellipticity", z_min=0.0, z_max=0.25, real_median=0.3, generated_median=ellipticity)
    report = {
        "photoz": {
            "real": {"overall": {"sigma_mad": 0.05}},
            "generated": {"overall": {"sigma_mad": sigma_mad_generated}},
        },
        "frechet": {"frechet_distance": 30.0, "null_frechet_distance": 20.0},
        "spearman": {
            "predicted_vs_conditioned": {"generated": {"rho": 0.8}},
            "size_vs_redshift": {"difference": 0.05},
        },
        "scorecard": {
            "n_pass": n_pass,
            "n_judged": 35,
            "cells": [{**cell, "pass": passes}, {**cell, "z_min": 2.0, "z_max": 4.0, "pass": None}],
        },
    }
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_seeds_give_mean_spread_and_pass_counts(tmp_path):
    folders = [
        write_report(tmp_path / "s0", 0.10, 20, 0.25, False),
        write_report(tmp_path / "s1", 0.20, 24, 0.29, True),
    ]
    table = compare_reports(folders)
    assert "| photo-z sigma_MAD, generated / real | 3 +- 1.4 |" in table
    assert "| scorecard cells passing (of 35) | 22 +- 2.8 |" in table
    assert "| ellipticity, z 0-0.25: 0.3 | 0.27 +- 0.028 (passes 1 of 2) |" in table
    assert "z 2-4" not in table  # cells that are not judged are left out


def test_recipes_side_by_side(tmp_path, capsys):
    a = write_report(tmp_path / "a", 0.10, 20, 0.25, False)
    b = write_report(tmp_path / "b", 0.05, 30, 0.29, True)
    assert main(["compare", str(a), str(b), "--labels", "old", "new"]) == 0
    table = capsys.readouterr().out
    assert "| quantity | old | new |" in table
    assert "| ellipticity, z 0-0.25: 0.3 | 0.25 FAIL | 0.29 pass |" in table


def test_a_cell_without_a_generated_median_reads_nan(tmp_path, capsys):
    a = write_report(tmp_path / "a", 0.10, 20, 0.25, False)
    b = write_report(tmp_path / "b", 0.05, 30, None, False)  # e.g. no generated galaxy had a good Sersic fit
    assert main(["compare", str(a), str(b), "--labels", "old", "new"]) == 0
    assert "| ellipticity, z 0-0.25: 0.3 | 0.25 FAIL | nan FAIL |" in capsys.readouterr().out


def test_reports_without_a_scorecard_are_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text(json.dumps({"photoz": {}}))
    assert main(["compare", str(tmp_path / "old")]) == 2
    assert "has no scorecard, frechet, spearman" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    with pytest.raises(ValueError, match="one label per folder"):
        compare_reports([write_report(tmp_path / "c", 0.1, 1, 0.2, True)], labels=["x", "y"])
