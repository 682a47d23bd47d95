"""Morphology of the central galaxy of HSC g,r,i,z,y cutouts, measured the same way for real and generated images.

Detection convention (one convention, applied identically to every image):

1. Bad pixels (non-finite, ``|flux| > SATURATION_FLUX``, or flagged by the caller's ``mask``) are set to
   0 and get weight 0 in the fit; pixels exactly 0 are treated as missing (zero padding, no data).
2. Per band, the background is the median and the noise sigma the robust width (median minus 15.87th
   percentile, which sources do not inflate) of the valid pixels, both after 3-sigma clipping.
3. Detection image ``D = sum_b (I_b - bkg_b) / sigma_b`` over the bands with signal: a noise-weighted
   g..y stack in which every band counts by its signal-to-noise.
4. ``D`` is smoothed with the band-averaged PSF (the matched filter for unresolved sources); pixels above
   ``DETECTION_THRESHOLD_SIGMA`` (1.5) times the smoothed image's own robust sigma, in 8-connected groups
   of at least ``DETECTION_N_PIXELS`` (5), are segments (photutils ``detect_sources``). On white noise
   this is a 1.5 sigma cut of the smoothed image, not of raw pixels (where it would be ~7 sigma).
   Segments whose isophotal S/N in ``D`` is below ``DETECTION_MIN_SNR`` (5) are noise, not sources.
5. The central source is the (significant) segment reaching closest to the image centre
   ``((W-1)/2, (H-1)/2)``, if it reaches within ``MAX_CENTRE_OFFSET_PIXELS`` (4 pixels, 0.67");
   otherwise the image is flagged ``off_centre`` (sources elsewhere only) or ``not_detected`` (none).
   Never the first or brightest object.
6. If the central segment holds two or more local maxima above twice the threshold, it is deblended
   (photutils ``deblend_sources``, SExtractor's defaults: 32 exponential levels, contrast 0.005) and the
   child closest to the centre is kept. All other segments and children are neighbours.
7. Shapes come from photutils ``SourceCatalog`` on the unsmoothed ``D`` within the central segment:
   centroid, ellipticity ``1 - b/a``, 1-sigma second-moment semi-major axis (SExtractor's A_IMAGE),
   isophotal area. The half-light radius is that of the curve of growth in circular apertures around
   the centroid, normalised to the segment's flux. Band fluxes are the background-subtracted sums over
   the segment (isophotal fluxes, HSC units, AB zero point 27).
8. The Sersic index and half-light radius come from a PSF-convolved Sersic fit with a free sky
   (:mod:`galaxy_pipeline.evaluation.sersic`) to ``D``, whose PSF is the per-band PSFs weighted by the
   source's contribution to ``D`` (``flux_b / sigma_b``); neighbours, grown by
   ``NEIGHBOUR_GROW_PIXELS``, and bad pixels get weight 0. A fit that fails is flagged ``fit_failed``; one
   that ends at a bound of n, r_e or q (n = 8 or 0.3: not a measurement) is also flagged ``fit_at_bound``.
   Both leave ``sersic_ok`` False and the Sersic columns NaN.

Every input image gives one row: an image without a central detection is a result (``detected=False``,
measurements NaN, ``flags`` says why), never dropped.
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from astropy import units as u
from astropy.table import Table
from photutils.segmentation import SegmentationImage, SourceCatalog, deblend_sources, detect_sources
from scipy import ndimage
from scipy.signal import fftconvolve

from galaxy_pipeline.evaluation.psf import prepare_psf
from galaxy_pipeline.evaluation.sersic import fit_sersic
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC

MORPHOLOGY_METRICS = ("ellipticity", "semimajor_axis_arcsec", "sersic_index", "isophotal_area_arcsec2")
"""The four morphology measurements compared between real and generated galaxies (the seed paper's four)."""

COLOURS = ("g_r", "r_i", "i_z", "z_y")
"""Colour columns (AB magnitude differences of neighbouring bands)."""

DETECTION_THRESHOLD_SIGMA = 1.5
"""Detection threshold in units of the robust noise sigma of the PSF-smoothed detection image."""

DETECTION_N_PIXELS = 5
"""Fewest connected pixels of a detected segment (and of a deblended child)."""

DETECTION_MIN_SNR = 5.0
"""Smallest isophotal signal-to-noise (segment flux over noise * sqrt(area), in the detection image) of a
source: on pure noise, 1.5-sigma segments reach S/N ~4.6 at most and a third of them touch the centre."""

MAX_CENTRE_OFFSET_PIXELS = 4.0
"""Largest distance (pixels) from the image centre to the nearest pixel of the central segment."""

DEBLEND_N_LEVELS = 32
"""Multi-threshold levels of the deblending (SExtractor's DEBLEND_NTHRESH)."""

DEBLEND_CONTRAST = 0.005
"""Smallest flux fraction of a deblended child (SExtractor's DEBLEND_MINCONT)."""

NEIGHBOUR_GROW_PIXELS = 2
"""Neighbouring segments are grown by this many pixels before being masked out of the Sersic fit."""

SKY_PRIOR_PIXELS = 100.0
"""Weight (in pixels) of the prior keeping the fitted sky near the clipped-median background (galaxies filling the
stamp leave no sky pixels to fit it from); with the ~10^3 sky pixels of a typical stamp the data decide."""

SATURATION_FLUX = 1.0e4
"""Pixel flux (HSC units) above which, in absolute value, a pixel is bad: saturated, or a broken sample."""

_DEBLEND_MIN_PEAK = 2.0
_STAMP_SIZES = (16, 24, 32, 40, 48, 64)
_STAMP_SKY_MARGIN = 2
_PSF_SIZE = 25
_SMOOTHING_SIZE = 15


def _robust_stats(values: np.ndarray, valid: np.ndarray, clip: float = 3.0, iters: int = 3) -> tuple[np.ndarray, ...]:
    """Clipped median and robust sigma of each row of ``values`` (M, P) over its ``valid`` pixels.

    The sigma is median minus the 15.87th percentile: positive sources sit in the upper tail and do
    not inflate it. Rows with fewer than 16 valid pixels, or no spread, get sigma 0.
    """
    ordered = np.sort(np.where(valid, values, np.nan), axis=1)
    rows = np.arange(len(ordered))
    n_valid = valid.sum(axis=1)
    low, high = np.zeros_like(n_valid), n_valid.copy()
    median = sigma = np.zeros(len(ordered))
    for _ in range(iters + 1):
        count = np.maximum(high - low, 1)
        median = ordered[rows, np.minimum(low + count // 2, ordered.shape[1] - 1)]
        sigma = median - ordered[rows, np.minimum(low + (count * 0.1587).astype(int), ordered.shape[1] - 1)]
        low = (ordered < (median - clip * sigma)[:, None]).sum(axis=1)
        high = np.minimum((ordered <= (median + clip * sigma)[:, None]).sum(axis=1), n_valid)
    usable = (n_valid >= 16) & np.isfinite(sigma) & (sigma > 0)
    return np.where(usable, median, 0.0), np.where(usable, sigma, 0.0)


@dataclass
class _Detection:
    """What photutils found for one image: the central segment, its neighbours and its catalogue values."""

    flags: list[str] = field(default_factory=list)
    segment: np.ndarray | None = None
    neighbours: np.ndarray | None = None
    peak: tuple[int, int] = (0, 0)
    sky: float = 0.0
    values: dict[str, float] = field(default_factory=dict)


def _central_label(labels: np.ndarray, smoothed: np.ndarray, max_offset: float, allowed: np.ndarray) -> int:
    """Label among ``allowed`` (bool per label, index 0 unused) with a pixel nearest the image centre, 0 if none.

    Ties (the central 2x2 pixels of an even-sized image) go to the brighter smoothed pixel.
    """
    ys, xs = np.nonzero(allowed[labels])
    if ys.size == 0:
        return 0
    height, width = labels.shape
    distance = np.hypot(xs - (width - 1) / 2, ys - (height - 1) / 2)
    best = np.lexsort((-smoothed[ys, xs], distance))[0]
    return int(labels[ys[best], xs[best]]) if distance[best] <= max_offset else 0


def _significant(labels: np.ndarray, detection: np.ndarray, noise: float) -> np.ndarray:
    """Bool per label (index 0 = background, False): isophotal S/N of the segment >= DETECTION_MIN_SNR."""
    flux = np.bincount(labels.ravel(), weights=detection.ravel())
    area = np.bincount(labels.ravel())
    snr = flux / (noise * np.sqrt(np.maximum(area, 1)))
    snr[0] = 0.0
    return snr >= DETECTION_MIN_SNR


def _half_light_radius(image: np.ndarray, segment: np.ndarray, x: float, y: float) -> float:
    """Radius (pixels) of the circle around (x, y) holding half the flux of the segment's pixels."""
    ys, xs = np.nonzero(segment)
    flux = image[ys, xs]
    total = flux.sum()
    if not total > 0:
        return np.nan
    order = np.argsort(np.hypot(xs - x, ys - y))
    radii = np.hypot(xs - x, ys - y)[order]
    growth = np.cumsum(flux[order])
    reached = np.nonzero(growth >= 0.5 * total)[0][0]
    if reached == 0:
        return float(radii[0])
    r0, r1, g0, g1 = radii[reached - 1], radii[reached], growth[reached - 1], growth[reached]
    return float(r0 + (0.5 * total - g0) / (g1 - g0) * (r1 - r0)) if g1 > g0 else float(r1)


def _detect_one(args: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]) -> _Detection:
    """Detect, pick the central segment, deblend it and measure it with photutils, for one image."""
    detection, smoothed, missing, is_peak, threshold, noise = args
    result = _Detection()
    segm = detect_sources(smoothed, threshold, n_pixels=DETECTION_N_PIXELS, mask=missing) if threshold > 0 else None
    significant = _significant(segm.data, detection, noise) if segm is not None else np.zeros(1, bool)
    if not significant.any():
        result.flags.append("not_detected")
        return result
    label = _central_label(segm.data, smoothed, MAX_CENTRE_OFFSET_PIXELS, significant)
    if label == 0:
        result.flags.append("off_centre")
        return result
    if np.count_nonzero(is_peak & (segm.data == label) & (smoothed > _DEBLEND_MIN_PEAK * threshold)) > 1:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The deblending mode")  # photutils' note on faint sources
            segm = deblend_sources(
                smoothed,
                segm,
                n_pixels=DETECTION_N_PIXELS,
                labels=[label],
                n_levels=DEBLEND_N_LEVELS,
                contrast=DEBLEND_CONTRAST,
                progress_bar=False,
            )
        label = _central_label(segm.data, smoothed, np.inf, _significant(segm.data, detection, noise))
        if label == 0:
            result.flags.append("not_detected")
            return result
    segment = segm.data == label
    sky = ~ndimage.binary_dilation(segm.data > 0, iterations=2 * NEIGHBOUR_GROW_PIXELS) & ~missing
    result.sky = float(np.median(detection[sky])) if sky.sum() >= 64 else 0.0
    catalog = SourceCatalog(detection, SegmentationImage(segment.astype(np.int32)))[0]
    x, y = float(catalog.x_centroid), float(catalog.y_centroid)
    ys, xs = np.nonzero(segment)
    brightest = np.argmax(smoothed[ys, xs])
    result.segment = segment
    result.neighbours = (segm.data > 0) & ~segment
    result.peak = (int(ys[brightest]), int(xs[brightest]))
    result.values = {
        "x_centroid": x,
        "y_centroid": y,
        "ellipticity": float(catalog.ellipticity),
        "semimajor_axis": float(catalog.semimajor_axis.value),
        "orientation": float(np.deg2rad(catalog.orientation.value)),
        "area": float(catalog.area.value),
        "half_light_radius": _half_light_radius(detection, segment, x, y),
    }
    return result


def _fit_stamps(
    detections: list[_Detection], indices: list[int], detection: np.ndarray, weight: np.ndarray, psf: np.ndarray
) -> Iterator[tuple[list[int], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Cut square stamps centred on each source's peak, grouped by size (the segment plus a sky margin).

    Yields (image indices, stamps, weights, segment masks, (y, x) of each stamp's corner in the image, PSFs).
    """
    height, width = detection.shape[-2:]
    groups: dict[int, list[int]] = {}
    for i in indices:
        ys, xs = np.nonzero(detections[i].segment)
        py, px = detections[i].peak
        extent = max(np.abs(ys - py).max(), np.abs(xs - px).max()) + _STAMP_SKY_MARGIN
        size = next((s for s in _STAMP_SIZES if s // 2 - 1 >= extent), _STAMP_SIZES[-1])
        groups.setdefault(size, []).append(i)
    for size, members in sorted(groups.items()):
        stamps = np.zeros((len(members), size, size), np.float32)
        weights = np.zeros_like(stamps)
        segments = np.zeros(stamps.shape, bool)
        starts = np.zeros((len(members), 2), int)
        for k, i in enumerate(members):
            py, px = detections[i].peak
            y0, x0 = py - size // 2, px - size // 2
            src = (slice(max(y0, 0), min(y0 + size, height)), slice(max(x0, 0), min(x0 + size, width)))
            dst = (slice(src[0].start - y0, src[0].stop - y0), slice(src[1].start - x0, src[1].stop - x0))
            stamps[k][dst] = detection[i][src] - detections[i].sky
            weights[k][dst] = weight[i][src]
            segments[k][dst] = detections[i].segment[src]
            starts[k] = (y0, x0)
        yield members, stamps, weights, segments, starts, psf[members]


def _open_pool(n_workers: int):
    """A process pool for the photutils stage (forked where possible: workers need no fresh imports)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(n_workers)


def measure_morphology(
    fluxes: np.ndarray,
    psf: np.ndarray | None = None,
    progress: bool = False,
    batch_size: int = 256,
    mask: np.ndarray | None = None,
    n_workers: int = 1,
    device: str = "cpu",
) -> Table:
    """Measure the central galaxy of each image: detection, shape, fluxes, colours and a Sersic fit.

    The convention (module docstring) is the same for real and generated images, so their
    distributions can be compared bin by bin.

    Args:
        fluxes: (N, 5, H, W) images in HSC flux units (AB zero point 27), bands g,r,i,z,y.
        psf: (5, h, w) per-band PSF images on the same pixel grid, or None for the HSC PDR2 median
            Moffat PSF (:func:`galaxy_pipeline.evaluation.psf.hsc_psf_model`).
        progress: show a progress bar over images.
        batch_size: images per batch (memory and the batched Sersic fit).
        mask: optional (N, 5, H, W) or (N, H, W) bool, True for bad pixels (e.g. the HSC SAT, INTRP and
            NO_DATA bits); a bad pixel in the central segment flags the image ``saturated``.
        n_workers: processes for the photutils stage; with more than 1, the next batch is detected
            while the current one is fitted.
        device: torch device of the Sersic fit.

    Returns:
        Table with one row per image, in input order (columns documented in their ``description``).
    """
    fluxes = np.asarray(fluxes)
    if fluxes.ndim != 4 or fluxes.shape[1] != len(BANDS):
        raise ValueError(
            f"fluxes must have shape (N, {len(BANDS)}, H, W) (bands {','.join(BANDS)}), got {fluxes.shape}."
        )
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim == 3:
            mask = mask[:, None]
        if mask.ndim != 4 or mask.shape[0] != fluxes.shape[0] or mask.shape[2:] != fluxes.shape[2:]:
            raise ValueError(
                f"mask must have shape (N, H, W) or (N, 5, H, W) like fluxes {fluxes.shape}, got {mask.shape}."
            )
        mask = np.broadcast_to(mask, fluxes.shape)
    if batch_size < 1 or n_workers < 1:
        raise ValueError(f"batch_size and n_workers must be >= 1, got {batch_size} and {n_workers}.")
    psf_cube = prepare_psf(psf, _PSF_SIZE)
    rows: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(fluxes), desc="morphology", unit="image")
    pool = _open_pool(n_workers) if n_workers > 1 and len(fluxes) > batch_size else None
    try:
        pending = None
        for start in range(0, len(fluxes), batch_size):
            batch = _prepare_batch(fluxes[start : start + batch_size], psf_cube, _slice(mask, start, batch_size))
            if pool is not None:
                found = pool.map_async(_detect_one, batch.jobs, chunksize=8)
            else:
                found = [_detect_one(job) for job in batch.jobs]
            if pending is not None:
                rows.extend(_finish_batch(*pending, psf_cube, device, bar))
            pending = (batch, found)
        if pending is not None:
            rows.extend(_finish_batch(*pending, psf_cube, device, bar))
    finally:
        if pool is not None:
            pool.terminate()
        if bar is not None:
            bar.close()
    return _to_table(rows, psf is None)


def _slice(mask: np.ndarray | None, start: int, size: int) -> np.ndarray | None:
    """The mask of one batch, or None."""
    return None if mask is None else mask[start : start + size]


@dataclass
class _Batch:
    """Arrays of one batch after background subtraction, stacking and smoothing (N images)."""

    subtracted: np.ndarray
    detection: np.ndarray
    band_weight: np.ndarray
    weight: np.ndarray
    mask: np.ndarray | None
    blank: np.ndarray
    corrupt: np.ndarray
    jobs: list


def _prepare_batch(fluxes: np.ndarray, psf_cube: np.ndarray, mask: np.ndarray | None) -> _Batch:
    """Bad pixels, per-band background and noise, detection image, its smoothed version and the photutils jobs."""
    n_images, n_bands, height, width = fluxes.shape
    images = fluxes.astype(np.float64)
    nonfinite = ~np.isfinite(images)
    huge = np.abs(np.where(nonfinite, 0.0, images)) > SATURATION_FLUX
    bad = nonfinite | huge if mask is None else nonfinite | huge | mask
    images = np.where(bad, 0.0, images)
    missing = (images == 0.0) | bad
    pixels = height * width
    background, sigma = _robust_stats(images.reshape(-1, pixels), ~missing.reshape(-1, pixels))
    background, sigma = background.reshape(n_images, n_bands), sigma.reshape(n_images, n_bands)
    band_weight = np.divide(1.0, sigma, out=np.zeros_like(sigma), where=sigma > 0)
    subtracted = np.where(missing, 0.0, images - background[:, :, None, None])
    detection = np.einsum("nbhw,nb->nhw", subtracted, band_weight)
    no_data = missing.all(axis=1)
    half = (_PSF_SIZE - _SMOOTHING_SIZE) // 2
    kernel = psf_cube.mean(axis=0)[half : half + _SMOOTHING_SIZE, half : half + _SMOOTHING_SIZE]
    smoothed = fftconvolve(detection, kernel[None] / kernel.sum(), mode="same", axes=(-2, -1))
    _, smoothed_sigma = _robust_stats(smoothed.reshape(n_images, -1), ~no_data.reshape(n_images, -1))
    _, detection_sigma = _robust_stats(detection.reshape(n_images, -1), ~no_data.reshape(n_images, -1))
    is_peak = smoothed == ndimage.maximum_filter(smoothed, size=(1, 3, 3))
    blank = (band_weight == 0).all(axis=1)
    threshold = np.where(blank, 0.0, DETECTION_THRESHOLD_SIGMA * smoothed_sigma)
    inverse_variance = 1.0 / np.maximum(detection_sigma, 1e-30)[:, None, None] ** 2
    return _Batch(
        subtracted=subtracted,
        detection=detection,
        band_weight=band_weight,
        weight=np.where(no_data | bad.any(axis=1), 0.0, inverse_variance),
        mask=mask,
        blank=blank,
        corrupt=(nonfinite | huge).any(axis=(1, 2, 3)),
        jobs=[
            (detection[i], smoothed[i], no_data[i], is_peak[i], threshold[i], detection_sigma[i])
            for i in range(n_images)
        ],
    )


def _finish_batch(batch: _Batch, found, psf_cube: np.ndarray, device: str, bar) -> list[dict]:
    """Flags, fluxes and the batched Sersic fit of one batch, once its detections are in."""
    detections: list[_Detection] = found if isinstance(found, list) else found.get()
    rows = []
    for i, result in enumerate(detections):
        flags = ["blank"] if batch.blank[i] else []
        if batch.corrupt[i]:
            flags.append("saturated")
        row = {"flags": flags, "detected": result.segment is not None, "sersic_ok": False}
        if result.segment is not None:
            row.update(result.values)
            row["fluxes"] = (batch.subtracted[i] * result.segment).sum(axis=(-2, -1))
            if batch.mask is not None and "saturated" not in flags and (batch.mask[i] & result.segment).any():
                flags.append("saturated")
        elif not batch.blank[i]:
            flags.extend(result.flags)
        rows.append(row)

    fitted = [i for i, result in enumerate(detections) if result.segment is not None]
    weight = batch.weight.copy()
    effective_psf = np.zeros((len(detections), _PSF_SIZE, _PSF_SIZE))
    for i in fitted:
        grown = ndimage.binary_dilation(detections[i].neighbours, iterations=NEIGHBOUR_GROW_PIXELS)
        weight[i][grown & ~detections[i].segment] = 0.0
        contribution = np.clip(rows[i]["fluxes"], 0.0, None) * batch.band_weight[i]
        contribution = contribution if contribution.sum() > 0 else batch.band_weight[i]
        effective_psf[i] = np.tensordot(contribution / contribution.sum(), psf_cube, axes=1)
    centre = _PSF_SIZE // 2
    psf_radius = _half_light_radius(psf_cube.mean(axis=0), np.ones((_PSF_SIZE, _PSF_SIZE), bool), centre, centre)
    for members, stamps, weights, segments, offsets, psfs in _fit_stamps(
        detections, fitted, batch.detection, weight, effective_psf
    ):
        values = [rows[i] for i in members]
        radius = np.sqrt(np.maximum(np.array([v["half_light_radius"] for v in values]) ** 2 - psf_radius**2, 0.25))
        axis_ratio = np.array([1.0 - v["ellipticity"] for v in values])
        fit = fit_sersic(
            stamps,
            weights,
            psfs,
            half_light_radius_pix=np.nan_to_num(radius / np.sqrt(np.clip(axis_ratio, 0.2, 1.0)), nan=2.0),
            x0=np.array([v["x_centroid"] for v in values]) - offsets[:, 1],
            y0=np.array([v["y_centroid"] for v in values]) - offsets[:, 0],
            axis_ratio=np.nan_to_num(axis_ratio, nan=1.0),
            position_angle=np.array([v["orientation"] for v in values]),
            source_mask=segments,
            sky_prior_pixels=SKY_PRIOR_PIXELS,
            device=device,
        )
        for k, row in enumerate(values):
            row["sersic_ok"] = bool(fit.ok[k])
            if fit.ok[k]:
                row["sersic_index"] = fit.sersic_index[k]
                row["sersic_half_light_radius"] = fit.half_light_radius_pix[k]
            else:
                row["flags"].append("fit_failed")
                if fit.at_bound[k]:
                    row["flags"].append("fit_at_bound")
    if bar is not None:
        bar.update(len(rows))
    return rows


def _to_table(rows: list[dict], model_psf: bool) -> Table:
    """Assemble the per-image rows into the documented astropy Table."""
    nan = np.full(len(rows), np.nan)

    def column(key: str, scale: float = 1.0) -> np.ndarray:
        return np.array([row.get(key, np.nan) for row in rows], dtype=np.float64) * scale if rows else nan

    fluxes = np.array([row.get("fluxes", np.full(len(BANDS), np.nan)) for row in rows]).reshape(-1, len(BANDS))
    with np.errstate(divide="ignore", invalid="ignore"):
        mags = np.where(fluxes > 0, MAG_ZERO_POINT - 2.5 * np.log10(np.where(fluxes > 0, fluxes, 1.0)), np.nan)
    table = Table()
    table["detected"] = np.array([row["detected"] for row in rows], dtype=bool)
    table["detected"].description = "a source was found at the image centre"
    table["sersic_ok"] = np.array([row["sersic_ok"] for row in rows], dtype=bool)
    table["sersic_ok"].description = "the Sersic fit converged with a good residual, no parameter at a bound"
    table["flags"] = np.array(["|".join(row["flags"]) for row in rows], dtype=str)
    table["flags"].description = "'|'-joined: blank, saturated, not_detected, off_centre, fit_failed, fit_at_bound"
    specs = [
        ("x_centroid", "x_centroid", 1.0, u.pix, "centroid column of the central segment (0 = first pixel centre)"),
        ("y_centroid", "y_centroid", 1.0, u.pix, "centroid row of the central segment"),
        ("ellipticity", "ellipticity", 1.0, None, "1 - b/a from the second moments of the central segment"),
        ("semimajor_axis_arcsec", "semimajor_axis", PIXEL_SCALE_ARCSEC, u.arcsec, "1-sigma second-moment a"),
        ("isophotal_area_arcsec2", "area", PIXEL_SCALE_ARCSEC**2, u.arcsec**2, "area of the central segment"),
        ("half_light_radius_arcsec", "half_light_radius", PIXEL_SCALE_ARCSEC, u.arcsec, "curve-of-growth r_50"),
        ("sersic_index", "sersic_index", 1.0, None, "PSF-convolved Sersic fit index n in [0.3, 8]"),
        (
            "sersic_half_light_radius_arcsec",
            "sersic_half_light_radius",
            PIXEL_SCALE_ARCSEC,
            u.arcsec,
            "semi-major half-light radius of the Sersic fit (PSF-deconvolved)",
        ),
    ]
    for name, key, scale, unit, description in specs:
        table[name] = column(key, scale)
        table[name].unit = unit
        table[name].description = description
    for b, band in enumerate(BANDS):
        table[f"flux_{band}"] = fluxes[:, b]
        table[f"flux_{band}"].description = f"{band}-band flux in the central segment (HSC units, AB zero point 27)"
    for b, band in enumerate(BANDS):
        table[f"mag_{band}"] = mags[:, b]
        table[f"mag_{band}"].unit = u.mag
        table[f"mag_{band}"].description = f"{band}-band AB magnitude of the segment flux (NaN if flux <= 0)"
    for name in COLOURS:
        first, second = name.split("_")
        table[name] = table[f"mag_{first}"] - table[f"mag_{second}"]
        table[name].unit = u.mag
        table[name].description = f"AB colour {first} - {second}"
    table.meta["detection"] = (
        f"noise-weighted g..y stack, PSF-smoothed, {DETECTION_THRESHOLD_SIGMA} sigma, "
        f"n_pixels {DETECTION_N_PIXELS}, central segment within {MAX_CENTRE_OFFSET_PIXELS} px, deblended"
    )
    table.meta["psf"] = "HSC PDR2 median Moffat model" if model_psf else "user-supplied"
    table.meta["detection_rate"] = float(table["detected"].mean()) if len(table) else float("nan")
    return table
