"""Two-sample statistics for real versus generated galaxies.

For one measured quantity (a size in arcsec, a magnitude, a Sersic index...) of a real and a
generated sample, :func:`compare_distributions` reports the Kolmogorov-Smirnov test, the
Wasserstein-1 distance (in the units of the quantity) with a permutation null, and bootstrap
confidence intervals of medians and means; :func:`compare_by_redshift_bin` repeats it per bin of
redshift. A bootstrap CI of W1 would never cover 0 (W1 of finite samples is biased upwards), so
W1 is judged against its permutation null instead: the distances one gets by shuffling the
real/generated labels.

For image features (e.g. :func:`galaxy_pipeline.evaluation.redshift_model.predictor_features`),
:func:`frechet_distance_with_null` gives an FID-like score without downloaded weights: features
whitened on the reference set, and the distance reported next to a split-half null at equal N.

Non-finite values (NaN, inf) are excluded from every statistic and counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

REDSHIFT_BIN_EDGES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
"""Default redshift bin edges: narrow where GalaxiesML is dense (93% of it lies below z=1.5)."""

_BOOTSTRAP_ELEMENTS_PER_BATCH = 20_000_000
_PERMUTATIONS_PER_BATCH = 64


def redshift_bin_masks(
    redshifts: np.ndarray, bin_edges: Sequence[float] = REDSHIFT_BIN_EDGES
) -> Iterator[tuple[tuple[float, float], np.ndarray]]:
    """Yield ``((z_min, z_max), mask)`` per bin: ``z_min <= z < z_max``, the last bin closed at ``z_max``.

    NaN redshifts fall in no bin.
    """
    edges = np.asarray(bin_edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"bin_edges must be at least two strictly increasing values; got {list(bin_edges)}.")
    redshifts = np.asarray(redshifts, dtype=np.float64).ravel()
    last = edges.size - 2
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        upper = redshifts <= high if index == last else redshifts < high
        yield (float(low), float(high)), (redshifts >= low) & upper


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[..., np.ndarray] = np.median,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` of a sample (``scipy.stats.bootstrap``).

    The percentile method is used because the default BCa needs a jackknife that costs O(N^2)
    for the median. Non-finite values are dropped.

    Args:
        values: the sample, any shape (flattened).
        statistic: a function of an array with an ``axis`` argument (``np.median``, ``np.mean``...).
        n_resamples: number of bootstrap resamples.
        confidence: confidence level in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(low, high)`` in the units of ``values``; ``(nan, nan)`` with fewer than 2 finite values.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
    values = _finite(values)
    if values.size < 2:
        return np.nan, np.nan
    result = stats.bootstrap(
        (values,),
        statistic,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        batch=max(1, _BOOTSTRAP_ELEMENTS_PER_BATCH // values.size),
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wasserstein_permutation_null(
    sample_a: np.ndarray, sample_b: np.ndarray, n_permutations: int = 1000, seed: int = 0
) -> np.ndarray:
    """Wasserstein-1 distances between the two samples after random shuffles of their labels.

    The pooled values are sorted once; each permutation only reassigns which sorted values
    belong to which sample, and W1 is the integral of ``|F_a - F_b|`` over the sorted gaps.

    Returns:
        ``n_permutations`` distances, in the units of the samples.
    """
    sample_a, sample_b = _finite(sample_a), _finite(sample_b)
    pooled = np.sort(np.concatenate([sample_a, sample_b]))
    gaps = np.diff(pooled)
    n_a, n_b, n_total = sample_a.size, sample_b.size, pooled.size
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n_total)
    null = []
    for start in range(0, n_permutations, _PERMUTATIONS_PER_BATCH):
        count = min(_PERMUTATIONS_PER_BATCH, n_permutations - start)
        in_a = np.broadcast_to(np.arange(n_total) < n_a, (count, n_total)).copy()
        rng.permuted(in_a, axis=1, out=in_a)
        counts_a = np.cumsum(in_a[:, :-1], axis=1)
        cdf_difference = counts_a / n_a - (steps - counts_a) / n_b
        null.append(np.abs(cdf_difference) @ gaps)
    return np.concatenate(null)


def compare_distributions(
    real: np.ndarray,
    generated: np.ndarray,
    n_permutations: int = 1000,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
) -> dict[str, float | int]:
    """Compare the distributions of one quantity in a real and a generated sample.

    Args:
        real: values measured on real galaxies (any units; NaN/inf are excluded and counted).
        generated: the same quantity measured on generated galaxies.
        n_permutations: label shuffles for the Wasserstein-1 null distribution.
        seed: seed of the permutations and of the bootstrap.
        n_bootstrap: bootstrap resamples for the confidence intervals of medians and means.
        confidence: level of those confidence intervals.

    Returns:
        ``n_real``, ``n_generated``, ``n_real_nonfinite``, ``n_generated_nonfinite``;
        ``ks_statistic``, ``ks_pvalue`` (two-sided ``scipy.stats.ks_2samp``); ``wasserstein``
        (W1, units of the quantity), ``wasserstein_null_median`` and ``wasserstein_pvalue``
        (fraction of label shuffles at least as far apart, ``(k + 1) / (n_permutations + 1)``);
        ``{real,generated}_{median,mean}`` with ``_ci_low`` / ``_ci_high``. Statistics are NaN
        when a sample has fewer than 2 finite values.
    """
    real_raw, generated_raw = (
        np.asarray(real, dtype=np.float64).ravel(),
        np.asarray(generated, dtype=np.float64).ravel(),
    )
    real, generated = _finite(real_raw), _finite(generated_raw)
    row: dict[str, float | int] = {
        "n_real": real.size,
        "n_generated": generated.size,
        "n_real_nonfinite": real_raw.size - real.size,
        "n_generated_nonfinite": generated_raw.size - generated.size,
    }
    keys = ("ks_statistic", "ks_pvalue", "wasserstein", "wasserstein_null_median", "wasserstein_pvalue")
    if min(real.size, generated.size) < 2:
        row |= dict.fromkeys(keys, np.nan)
    else:
        ks = stats.ks_2samp(real, generated)
        distance = float(stats.wasserstein_distance(real, generated))
        null = wasserstein_permutation_null(real, generated, n_permutations=n_permutations, seed=seed)
        row |= {
            "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
            "wasserstein": distance,
            "wasserstein_null_median": float(np.median(null)),
            "wasserstein_pvalue": float((np.sum(null >= distance * (1 - 1e-12)) + 1) / (null.size + 1)),
        }
    for name, sample in (("real", real), ("generated", generated)):
        for statistic in (np.median, np.mean):
            key = f"{name}_{statistic.__name__}"
            row[key] = float(statistic(sample)) if sample.size else np.nan
            row[f"{key}_ci_low"], row[f"{key}_ci_high"] = bootstrap_ci(
                sample, statistic, n_resamples=n_bootstrap, confidence=confidence, seed=seed
            )
    return row


def compare_by_redshift_bin(
    real_values: np.ndarray,
    real_z: np.ndarray,
    generated_values: np.ndarray,
    generated_z: np.ndarray,
    bin_edges: Sequence[float] = REDSHIFT_BIN_EDGES,
    n_permutations: int = 1000,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    progress: bool = False,
) -> list[dict[str, float | int]]:
    """:func:`compare_distributions` in each redshift bin.

    Args:
        real_values, real_z: the quantity and the (spectroscopic) redshift of each real galaxy.
        generated_values, generated_z: the quantity and the conditioning redshift of each generated galaxy.
        bin_edges: increasing redshift edges; bins are ``[z_min, z_max)``, the last one closed.
        progress: show a progress bar over bins.

    Returns:
        One row per bin: ``{"z_min", "z_max"}`` followed by the keys of :func:`compare_distributions`
        (``astropy.table.Table(rows=...)`` turns the list into a table).
    """
    real_values, real_z = _paired(real_values, real_z, "real")
    generated_values, generated_z = _paired(generated_values, generated_z, "generated")
    rows = []
    real_bins = list(redshift_bin_masks(real_z, bin_edges))
    generated_bins = [mask for _, mask in redshift_bin_masks(generated_z, bin_edges)]
    for ((low, high), real_mask), generated_mask in tqdm(
        list(zip(real_bins, generated_bins, strict=True)), desc="redshift bins", disable=not progress
    ):
        comparison = compare_distributions(
            real_values[real_mask],
            generated_values[generated_mask],
            n_permutations=n_permutations,
            seed=seed,
            n_bootstrap=n_bootstrap,
            confidence=confidence,
        )
        rows.append({"z_min": low, "z_max": high} | comparison)
    return rows


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Squared Frechet distance between Gaussians fitted to two feature sets (the FID formula).

    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^1/2 C_b C_a^1/2)^1/2)``, computed with
    symmetric eigendecompositions (stable for singular covariances). Units: feature units squared.

    Args:
        features_a: (N_a, D) features, N_a >= 2.
        features_b: (N_b, D) features, N_b >= 2.
    """
    features_a = _features(features_a, "features_a")
    features_b = _features(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"Both feature sets need the same dimension; got {features_a.shape[1]} and {features_b.shape[1]}."
        )
    mean_a, mean_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
    sqrt_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sum(np.sqrt(np.clip(cross, 0, None)))
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance_with_null(
    reference_features: np.ndarray,
    generated_features: np.ndarray,
    seed: int = 0,
    n_repeats: int = 5,
    whiten: bool = True,
) -> dict[str, float | int]:
    """Frechet distance of generated to reference features, next to its split-half null at equal N.

    Features are first whitened with the mean and covariance of the whole reference set
    (constant features and exactly dependent directions are dropped), so every direction
    counts equally and the distance is dimensionless and independent of feature units.
    Each repeat draws two disjoint random subsets A and B of the reference, each of
    ``n = min(N_generated, N_reference // 2)`` rows, and
    ``n`` generated rows G; it records FD(A, G) and the null FD(A, B). Both have the same
    finite-sample bias, so a generator matching the reference gives a distance near the null.

    Args:
        reference_features: (N_ref, D) features of real galaxies, N_ref >= 4.
        generated_features: (N_gen, D) features of generated galaxies, N_gen >= 2.
        seed: seed of the random subsets.
        n_repeats: number of random splits averaged.
        whiten: whiten with the reference statistics (set False for raw feature units).

    Returns:
        ``frechet_distance`` and ``frechet_distance_std`` (mean and standard deviation over
        repeats), ``null_frechet_distance`` and ``null_frechet_distance_std``, ``n_per_sample``,
        ``n_reference``, ``n_generated``, ``n_features`` (dimension after whitening).
    """
    reference = _features(reference_features, "reference_features")
    generated = _features(generated_features, "generated_features")
    if reference.shape[1] != generated.shape[1]:
        raise ValueError(
            f"Both feature sets need the same dimension; got {reference.shape[1]} and {generated.shape[1]}."
        )
    n = min(generated.shape[0], reference.shape[0] // 2)
    if n < 2:
        raise ValueError(
            f"Need at least 4 reference and 2 generated rows for a split-half null; got {reference.shape[0]} "
            f"and {generated.shape[0]}."
        )
    if whiten:
        reference, generated = _whiten(reference, generated)
    rng = np.random.default_rng(seed)
    distances, nulls = [], []
    for _ in range(n_repeats):
        order = rng.permutation(reference.shape[0])
        half_a, half_b = reference[order[:n]], reference[order[n : 2 * n]]
        sample = generated[rng.choice(generated.shape[0], size=n, replace=False)]
        distances.append(frechet_distance(half_a, sample))
        nulls.append(frechet_distance(half_a, half_b))
    return {
        "frechet_distance": float(np.mean(distances)),
        "frechet_distance_std": float(np.std(distances)),
        "null_frechet_distance": float(np.mean(nulls)),
        "null_frechet_distance_std": float(np.std(nulls)),
        "n_per_sample": int(n),
        "n_reference": int(reference_features.shape[0]),
        "n_generated": int(generated_features.shape[0]),
        "n_features": int(reference.shape[1]),
    }


def _whiten(reference: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise each feature on the reference (constant ones dropped), then rotate and scale to unit covariance.

    Standardising first makes the result independent of each feature's units; principal directions with
    less than 1e-10 of the largest correlation eigenvalue (exact linear dependencies) are dropped.
    """
    mean, std = reference.mean(axis=0), reference.std(axis=0)
    varying = std > 0
    if not varying.any():
        raise ValueError("Every reference feature is constant; whitening needs at least one that varies.")
    reference = (reference[:, varying] - mean[varying]) / std[varying]
    other = (other[:, varying] - mean[varying]) / std[varying]
    eigenvalues, eigenvectors = np.linalg.eigh(np.atleast_2d(np.cov(reference, rowvar=False)))
    keep = eigenvalues > 1e-10 * eigenvalues.max()
    projection = eigenvectors[:, keep] / np.sqrt(eigenvalues[keep])
    return reference @ projection, other @ projection


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _paired(values: np.ndarray, redshifts: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64).ravel()
    redshifts = np.asarray(redshifts, dtype=np.float64).ravel()
    if values.shape != redshifts.shape:
        raise ValueError(
            f"{name}_values and {name}_z must have one entry per galaxy; got {values.size} and {redshifts.size}."
        )
    return values, redshifts


def _features(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2; got {features.shape}.")
    if not np.isfinite(features).all():
        bad = int((~np.isfinite(features).all(axis=1)).sum())
        raise ValueError(f"{name} has {bad} rows with NaN or inf; drop them before computing a Frechet distance.")
    return features
