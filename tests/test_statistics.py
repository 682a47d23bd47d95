"""Two-sample statistics: KS / Wasserstein with a permutation null, bootstrap CIs, Frechet distance."""

import itertools

import numpy as np
import pytest
from scipy import linalg, stats

from galaxy_pipeline.evaluation.statistics import (
    REDSHIFT_BIN_EDGES,
    bootstrap_ci,
    compare_by_redshift_bin,
    compare_distributions,
    frechet_distance,
    frechet_distance_with_null,
    redshift_bin_masks,
    wasserstein_permutation_null,
)


def log_normal_sizes(n: int, seed: int, factor: float = 1.0) -> np.ndarray:
    """Half-light radii in arcsec, log-normal around 0.5" (median 0.5 x factor)."""
    return factor * np.random.default_rng(seed).lognormal(np.log(0.5), 0.5, n)


def test_a_30_percent_size_shift_is_detected():
    real, generated = log_normal_sizes(300, seed=1), log_normal_sizes(300, seed=2, factor=1.3)
    result = compare_distributions(real, generated, n_permutations=500)
    assert result["ks_pvalue"] < 1e-3
    assert result["wasserstein_pvalue"] < 0.01
    assert result["wasserstein"] > 3 * result["wasserstein_null_median"]
    assert result["wasserstein"] == pytest.approx(stats.wasserstein_distance(real, generated))
    assert result["real_median_ci_high"] < result["generated_median_ci_low"]
    assert result["n_real"] == result["n_generated"] == 300


def test_two_halves_of_one_sample_are_not_flagged():
    sample = log_normal_sizes(600, seed=3)
    result = compare_distributions(sample[:300], sample[300:], n_permutations=500)
    assert result["ks_pvalue"] > 0.05
    assert result["wasserstein_pvalue"] > 0.05
    assert result["wasserstein"] < 2 * result["wasserstein_null_median"]
    assert result["real_median_ci_low"] < result["generated_median"] < result["real_median_ci_high"]


def test_nonfinite_values_are_excluded_and_counted():
    real, generated = log_normal_sizes(200, seed=4), log_normal_sizes(150, seed=5)
    clean = compare_distributions(real, generated, n_permutations=100, n_bootstrap=200)
    dirty = compare_distributions(
        np.concatenate([real, [np.nan, np.inf]]),
        np.concatenate([[np.nan], generated]),
        n_permutations=100,
        n_bootstrap=200,
    )
    assert (dirty["n_real_nonfinite"], dirty["n_generated_nonfinite"]) == (2, 1)
    assert (clean["n_real_nonfinite"], clean["n_generated_nonfinite"]) == (0, 0)
    for key in ("ks_pvalue", "wasserstein", "wasserstein_pvalue", "real_median_ci_low", "generated_mean"):
        assert dirty[key] == pytest.approx(clean[key])


def test_tiny_samples_give_nan_statistics_not_errors():
    result = compare_distributions(np.array([1.0]), log_normal_sizes(50, seed=6), n_permutations=10)
    assert result["n_real"] == 1
    assert np.isnan(result["ks_pvalue"]) and np.isnan(result["wasserstein"])
    assert np.isfinite(result["generated_median_ci_low"])


def test_permutation_null_is_the_wasserstein_distance_of_relabelled_samples():
    sample_a, sample_b = np.array([0.1, 0.7]), np.array([0.3, 1.6, 2.0])
    pooled = np.concatenate([sample_a, sample_b])
    every_relabelling = {
        round(stats.wasserstein_distance(pooled[list(chosen)], np.delete(pooled, chosen)), 10)
        for chosen in itertools.combinations(range(5), 2)
    }
    null = wasserstein_permutation_null(sample_a, sample_b, n_permutations=400, seed=0)
    assert null.shape == (400,)
    assert set(np.round(null, 10)) == every_relabelling


def test_bootstrap_ci_covers_the_true_median_at_about_the_nominal_rate():
    true_median = 0.5
    covered = []
    for seed in range(40):
        low, high = bootstrap_ci(log_normal_sizes(200, seed=100 + seed), np.median, n_resamples=500, seed=seed)
        assert low < high
        covered.append(low <= true_median <= high)
    assert np.mean(covered) >= 0.85


def test_bootstrap_ci_narrows_with_sample_size_and_rejects_bad_levels():
    small = np.diff(bootstrap_ci(log_normal_sizes(100, seed=7), np.mean, n_resamples=500))[0]
    large = np.diff(bootstrap_ci(log_normal_sizes(2500, seed=7), np.mean, n_resamples=500))[0]
    assert large < small / 3
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(log_normal_sizes(10, seed=0), confidence=95)


def test_redshift_bins_cover_the_range_with_the_last_edge_closed():
    z = np.array([0.0, 0.24, 0.25, 1.99, 2.0, 4.0, 4.01, np.nan])
    masks = [mask for _, mask in redshift_bin_masks(z, REDSHIFT_BIN_EDGES)]
    assert len(masks) == len(REDSHIFT_BIN_EDGES) - 1
    membership = np.stack(masks).sum(axis=0)
    assert membership.tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert masks[-1].tolist() == [False] * 4 + [True, True, False, False]
    with pytest.raises(ValueError, match="increasing"):
        list(redshift_bin_masks(z, [0.0, 1.0, 0.5]))


def test_compare_by_redshift_bin_flags_only_the_shifted_bin():
    rng = np.random.default_rng(8)
    real_z, generated_z = rng.uniform(0, 1.5, 1200), rng.uniform(0, 1.5, 1200)
    real = log_normal_sizes(1200, seed=9)
    generated = log_normal_sizes(1200, seed=10)
    shifted = (generated_z >= 0.5) & (generated_z < 1.0)
    generated[shifted] *= 1.5
    rows = compare_by_redshift_bin(
        real, real_z, generated, generated_z, bin_edges=[0, 0.5, 1.0, 1.5], n_permutations=300
    )
    assert [(row["z_min"], row["z_max"]) for row in rows] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5)]
    assert sum(row["n_generated"] for row in rows) == 1200
    assert rows[1]["n_generated"] == shifted.sum()
    assert rows[1]["ks_pvalue"] < 1e-4 and rows[1]["wasserstein_pvalue"] < 0.01
    assert rows[0]["ks_pvalue"] > 0.01 and rows[2]["ks_pvalue"] > 0.01
    with pytest.raises(ValueError, match="one entry per galaxy"):
        compare_by_redshift_bin(real, real_z[:10], generated, generated_z)


def test_frechet_distance_matches_the_sqrtm_formula_and_is_zero_for_identical_sets():
    rng = np.random.default_rng(11)
    features_a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    features_b = rng.normal(0.3, 1.2, size=(400, 6))
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    expected = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * linalg.sqrtm(cov_a @ cov_b).real)
    assert frechet_distance(features_a, features_b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(features_a, features_a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_grows_with_a_mean_shift():
    rng = np.random.default_rng(12)
    reference = rng.normal(size=(4000, 8))
    distances = [frechet_distance(reference, rng.normal(shift, 1.0, size=(4000, 8))) for shift in (0.0, 0.25, 0.5, 1.0)]
    assert np.all(np.diff(distances) > 0)
    assert distances[-1] == pytest.approx(8 * 1.0**2, rel=0.1)
    assert distances[0] < 0.05


def test_frechet_null_matches_an_unbiased_generator_and_flags_a_shifted_one():
    rng = np.random.default_rng(13)
    mixing = rng.normal(size=(10, 10))
    reference = rng.normal(size=(3000, 10)) @ mixing
    same = frechet_distance_with_null(reference, rng.normal(size=(1000, 10)) @ mixing, seed=0)
    shifted = frechet_distance_with_null(reference, rng.normal(0.3, 1.0, size=(1000, 10)) @ mixing, seed=0)
    assert same["n_per_sample"] == 1000 and same["n_features"] == 10
    assert same["null_frechet_distance"] > 0
    assert 0.5 < same["frechet_distance"] / same["null_frechet_distance"] < 1.5
    assert shifted["frechet_distance"] > 5 * shifted["null_frechet_distance"]


def test_whitened_frechet_distance_ignores_feature_units():
    rng = np.random.default_rng(14)
    reference, generated = rng.normal(size=(600, 5)), rng.normal(0.2, 1.1, size=(300, 5))
    units = np.array([1e-3, 1.0, 10.0, 1e3, 5.0])
    plain = frechet_distance_with_null(reference, generated, seed=1)
    rescaled = frechet_distance_with_null(reference * units, generated * units, seed=1)
    assert rescaled["frechet_distance"] == pytest.approx(plain["frechet_distance"], rel=1e-6)
    raw = frechet_distance_with_null(reference * units, generated * units, seed=1, whiten=False)
    assert raw["frechet_distance"] != pytest.approx(plain["frechet_distance"], rel=0.1)


def test_frechet_distance_rejects_bad_features():
    good = np.zeros((10, 3)) + np.arange(10)[:, None]
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(good, good[:, :2])
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(good, np.where(good > 8, np.nan, good))
    with pytest.raises(ValueError, match="at least 4 reference"):
        frechet_distance_with_null(good[:3], good)
