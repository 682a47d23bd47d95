"""The exam scorecard: per-cell tolerances on medians, unjudged sparse bins, and its report table."""

import numpy as np
import pytest

from galaxy_pipeline.evaluation.scorecard import SCORECARD_TOLERANCES, scorecard
from galaxy_pipeline.evaluation.statistics import compare_by_redshift_bin


def test_cells_pass_within_tolerance_and_fail_outside():
    rng = np.random.default_rng(0)
    z = rng.uniform(0, 1, 2000)
    real_colour = 1.0 + z + rng.normal(0, 0.05, z.size)
    close = 1.0 + z + 0.05 + rng.normal(0, 0.05, z.size)  # 0.05 mag redder: inside 0.10
    flat = np.full(z.size, 1.5) + rng.normal(0, 0.05, z.size)  # no evolution: fails at both ends
    real_size = rng.lognormal(np.log(0.6), 0.3, z.size)
    by_bin = {
        "g_i": compare_by_redshift_bin(real_colour, z, close, z, bin_edges=(0, 0.5, 1), n_permutations=10),
        "r_z": compare_by_redshift_bin(real_colour, z, flat, z, bin_edges=(0, 0.5, 1), n_permutations=10),
        "semimajor_axis_arcsec": compare_by_redshift_bin(
            real_size, z, 1.2 * real_size, z, bin_edges=(0, 0.5, 1), n_permutations=10
        ),
    }
    card = scorecard(by_bin)
    verdicts = {(cell["quantity"], cell["z_min"]): cell["pass"] for cell in card["cells"]}
    assert verdicts == {
        ("g_i", 0.0): True,
        ("g_i", 0.5): True,
        ("r_z", 0.0): False,
        ("r_z", 0.5): False,
        ("semimajor_axis_arcsec", 0.0): False,  # 20% larger against a 10% relative tolerance
        ("semimajor_axis_arcsec", 0.5): False,
    }
    assert (card["n_pass"], card["n_judged"]) == (2, 6)
    assert "r_z 0-0.5" in card["failing"]
    size = next(cell for cell in card["cells"] if cell["quantity"] == "semimajor_axis_arcsec")
    assert size["tolerance"] == pytest.approx(0.1 * size["real_median"])
    assert size["real_median_ci_low"] < size["real_median"] < size["real_median_ci_high"]


def test_sparse_bins_are_shown_but_not_judged_and_nan_medians_fail():
    row = {
        "z_min": 0.0, "z_max": 1.0, "n_real": 29, "n_generated": 29, "real_median": 1.0,
        "real_median_ci_low": 0.9, "real_median_ci_high": 1.1, "generated_median": 1.0, "ks_pvalue": 1.0,
    }  # fmt: skip
    card = scorecard({"g_i": [row, {**row, "z_min": 1.0, "z_max": 2.0, "n_real": 30, "generated_median": np.nan}]})
    assert [cell["pass"] for cell in card["cells"]] == [None, False]
    assert (card["n_pass"], card["n_judged"], card["failing"]) == (0, 1, ["g_i 1-2"])


def test_unknown_tolerance_kind_is_refused():
    with pytest.raises(ValueError, match="absolute.*relative"):
        scorecard({}, tolerances={"g_i": ("percent", 10)})


def test_every_quantity_the_issue_names_is_judged():
    assert set(SCORECARD_TOLERANCES) == {
        "ellipticity", "semimajor_axis_arcsec", "isophotal_area_arcsec2", "sersic_index", "mag_i", "g_i", "r_z",
    }  # fmt: skip
    assert SCORECARD_TOLERANCES["g_i"] == ("absolute", 0.10) and SCORECARD_TOLERANCES["ellipticity"][1] == 0.03
