"""Sersic fits of real HSC cutouts: how many end at a parameter bound, with which PSF, and an astropy cross-check.

    OMP_NUM_THREADS=1 python benchmarks/sersic_real_cutouts.py [--realdata PATH] [--max-files 100]

Reads the real HSC COSMOS blends of ``shared/realdata/scarlet_test_blends/set1`` (beside the repository, or
``../shared/realdata``; skips with a message where absent; nothing is copied). Every detected peak gives a
64x64 cutout centred on it; repeated central objects (two peaks of one blend finding the same galaxy) are
measured once. Each cutout is measured by :func:`measure_morphology` with four PSFs:

* ``cutout``: the PSF images delivered with the cutout;
* ``model``: the HSC PDR2 Wide median Moffat model (beta 3), what the evaluation uses when no PSF is given;
* ``moffat fitted``: a Moffat whose FWHM and beta are fitted (astropy ``Moffat2D``) to the cutout PSF;
* ``moffat fwhm``: a beta-3 Moffat with the FWHM of that fit (the model's shape, the cutout's width).

For each it prints the fits that would be reported successful without the bound check (``bound_tolerance=0``),
how many of them sit at a bound (n = 8, n = 0.3, r_e or q; :data:`BOUND_TOLERANCE` of the log range), and
how many are successful with the check. Then well-resolved, bright galaxies are refitted with an independent
astropy ``Sersic2D`` model (5x oversampled, convolved with the same PSF, free sky, TRF least squares) on the
same stamps and weights, and the two indices compared.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.modeling import Fittable2DModel, Parameter, fitting, models
from scipy.signal import fftconvolve
from scipy.stats import spearmanr

from galaxy_pipeline.evaluation import morphology
from galaxy_pipeline.evaluation.psf import moffat_psf_image, prepare_psf
from galaxy_pipeline.evaluation.sersic import BOUND_TOLERANCE, SERSIC_INDEX_RANGE, fit_sersic
from galaxy_pipeline.hsc import MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC

CUTOUT_SIZE = 64
PSF_MODES = ("cutout", "model", "moffat fitted", "moffat fwhm")
ASTROPY_OVERSAMPLING = 5


def find_realdata(given: str | None) -> Path | None:
    """The real-data folder: ``given``, else shared/realdata beside the repository, else ../shared/realdata."""
    candidates = [Path(given)] if given else []
    candidates += [Path(__file__).resolve().parents[2] / "shared" / "realdata", Path("../shared/realdata")]
    return next((path for path in candidates if (path / "scarlet_test_blends" / "set1").is_dir()), None)


def cutout(images: np.ndarray, y: int, x: int) -> np.ndarray:
    """A (bands, 64, 64) cutout centred on pixel (y, x), zero-padded (= missing) where it leaves the image."""
    out = np.zeros(images.shape[:-2] + (CUTOUT_SIZE, CUTOUT_SIZE), np.float32)
    y0, x0 = y - CUTOUT_SIZE // 2, x - CUTOUT_SIZE // 2
    src_y = slice(max(y0, 0), min(y0 + CUTOUT_SIZE, images.shape[-2]))
    src_x = slice(max(x0, 0), min(x0 + CUTOUT_SIZE, images.shape[-1]))
    out[..., src_y.start - y0 : src_y.stop - y0, src_x.start - x0 : src_x.stop - x0] = images[..., src_y, src_x]
    return out


def fit_moffat(psf: np.ndarray) -> tuple[float, float]:
    """FWHM (arcsec) and beta of an astropy Moffat2D fitted to one PSF image (peak-centred, odd side)."""
    half = psf.shape[-1] // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    start = models.Moffat2D(amplitude=psf.max(), x_0=0.0, y_0=0.0, gamma=3.0, alpha=3.0)
    fitted = fitting.LevMarLSQFitter()(start, x, y, psf)
    return float(fitted.fwhm) * PIXEL_SCALE_ARCSEC, float(fitted.alpha.value)


def psf_variants(psf: np.ndarray) -> dict[str, np.ndarray | None]:
    """The four PSF cubes (5, h, w) of :data:`PSF_MODES` for one cutout's delivered PSF (None = the model)."""
    cube = prepare_psf(psf, 41)
    shapes = [fit_moffat(band) for band in cube]
    return {
        "cutout": psf,
        "model": None,
        "moffat fitted": np.stack([moffat_psf_image(fwhm, beta=beta, size=41) for fwhm, beta in shapes]),
        "moffat fwhm": np.stack([moffat_psf_image(fwhm, size=41) for fwhm, _ in shapes]),
    }


def load_sample(root: Path, max_files: int) -> list[tuple[str, np.ndarray, dict]]:
    """(name, (5, 64, 64) cutout, PSF variants) for every peak of the first ``max_files`` set1 blends."""
    sample = []
    for path in sorted((root / "scarlet_test_blends" / "set1").glob("*.npz"))[:max_files]:
        data = np.load(path, allow_pickle=False)
        variants = psf_variants(data["psfs"])
        for k, (y, x) in enumerate(data["centers"]):
            sample.append((f"{path.stem}#{k}@{y},{x}", cutout(data["images"], int(y), int(x)), variants))
    return sample


class _Recorder:
    """Stands in for ``fit_sersic`` in :mod:`morphology`: fits with and without the bound check, keeps both."""

    def __init__(self):
        self.calls: list[tuple[dict, object, object]] = []

    def __call__(self, images, weights, psf, **kwargs):
        unchecked = fit_sersic(images, weights, psf, bound_tolerance=0.0, **kwargs)
        checked = fit_sersic(images, weights, psf, **kwargs)
        self.calls.append(({"images": images, "weights": weights, "psf": psf, **kwargs}, unchecked, checked))
        return checked


def measure(sample: list, mode: str) -> list[dict]:
    """Measure every cutout with the ``mode`` PSF; one dict per cutout (empty where nothing was fitted)."""
    results = []
    recorder = _Recorder()
    morphology.fit_sersic = recorder
    try:
        for _, image, variants in sample:
            recorder.calls.clear()
            table = morphology.measure_morphology(image[None], psf=variants[mode])
            row = {"detected": bool(table["detected"][0]), "flags": str(table["flags"][0])}
            row["centre"] = (float(table["x_centroid"][0]), float(table["y_centroid"][0]))
            row["mag_i"], row["r50"] = float(table["mag_i"][0]), float(table["half_light_radius_arcsec"][0])
            if recorder.calls:
                inputs, unchecked, checked = recorder.calls[0]
                row |= {"inputs": inputs, "unchecked": unchecked, "checked": checked}
            results.append(row)
    finally:
        morphology.fit_sersic = fit_sersic
    return results


def unique_rows(sample: list, results: list[dict]) -> list[int]:
    """Indices of fitted cutouts, one per distinct central object (same blend, centroid within 1.5 pixels)."""
    kept: list[tuple[str, float, float]] = []
    indices = []
    for i, ((name, _, _), row) in enumerate(zip(sample, results, strict=True)):
        if "checked" not in row:
            continue
        blend, peak = name.split("#")[0], name.split("@")[1].split(",")
        y = row["centre"][1] - CUTOUT_SIZE // 2 + int(peak[0])
        x = row["centre"][0] - CUTOUT_SIZE // 2 + int(peak[1])
        if any(b == blend and np.hypot(x - kx, y - ky) < 1.5 for b, kx, ky in kept):
            continue
        kept.append((blend, x, y))
        indices.append(i)
    return indices


def summarise(mode: str, results: list[dict], indices: list[int]) -> None:
    """Print the bound figures of one PSF mode over the cutouts ``indices``."""
    rows = [results[i] for i in indices if "checked" in results[i]]
    before = np.array([row["unchecked"].ok[0] for row in rows])
    at_bound = np.array([row["checked"].at_bound[0] for row in rows])
    after = np.array([row["checked"].ok[0] for row in rows])
    n = np.array([row["unchecked"].sersic_index[0] for row in rows])
    bright = np.array([row["mag_i"] < 24.0 for row in rows])
    high = n > SERSIC_INDEX_RANGE[1] * np.exp(-BOUND_TOLERANCE * np.log(SERSIC_INDEX_RANGE[1] / SERSIC_INDEX_RANGE[0]))
    reported = before.sum()
    print(
        f"{mode:14s} fitted {len(rows):3d}  reported ok without check {reported:3d}, at a bound "
        f"{(before & at_bound).sum():3d} ({(before & at_bound).sum() / max(reported, 1):.0%}; n=8: "
        f"{(before & high).sum()}, i<24: {(before & at_bound & bright).sum()}/{(before & bright).sum()})  "
        f"ok with check {after.sum():3d}  median n of ok {np.median(n[after]):.2f}"
    )


class ConvolvedSersic(Fittable2DModel):
    """astropy ``Sersic2D`` integrated over pixels (5x5 sub-pixels), convolved with a PSF image, plus a sky."""

    amplitude = Parameter(default=1.0)
    r_eff = Parameter(default=2.0, bounds=(0.2, 60.0))
    n = Parameter(default=1.5, bounds=(0.2, 12.0))
    x_0 = Parameter(default=0.0)
    y_0 = Parameter(default=0.0)
    ellip = Parameter(default=0.2, bounds=(0.0, 0.95))
    theta = Parameter(default=0.0)
    sky = Parameter(default=0.0)

    def __init__(self, psf: np.ndarray, shape: tuple[int, int], **kwargs):
        self.psf, self.shape = psf, shape
        super().__init__(**kwargs)

    def evaluate(self, x, y, amplitude, r_eff, n, x_0, y_0, ellip, theta, sky):
        """Model image (flattened like ``x``) of the stamp, pixel units."""
        s = ASTROPY_OVERSAMPLING
        sub = (np.arange(s) + 0.5) / s - 0.5
        fy = (np.arange(self.shape[0])[:, None] + sub[None, :]).reshape(-1)
        fx = (np.arange(self.shape[1])[:, None] + sub[None, :]).reshape(-1)
        profile = models.Sersic2D.evaluate(
            fx[None, :], fy[:, None], amplitude, r_eff, n, x_0, y_0, ellip, theta
        ).reshape(self.shape[0], s, self.shape[1], s)
        return (fftconvolve(profile.mean(axis=(1, 3)), self.psf, mode="same") + sky).reshape(np.shape(x))


def astropy_index(inputs: dict, fit) -> float:
    """Sersic index of the independent astropy fit of the first stamp of one recorded ``fit_sersic`` call."""
    image, weight, psf = inputs["images"][0], inputs["weights"][0], inputs["psf"][0]
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    start = ConvolvedSersic(
        psf,
        image.shape,
        amplitude=max(fit.amplitude[0], 1e-3),
        r_eff=float(np.clip(inputs["half_light_radius_pix"][0], 0.3, 50.0)),
        n=1.5,
        x_0=inputs["x0"][0],
        y_0=inputs["y0"][0],
        ellip=float(np.clip(1.0 - inputs["axis_ratio"][0], 0.0, 0.9)),
        theta=inputs["position_angle"][0],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = fitting.TRFLSQFitter()(start, x, y, image, weights=np.sqrt(weight), maxiter=200)
    return float(fitted.n.value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", default=None, help="folder of the real HSC cutouts (default: shared/realdata)")
    parser.add_argument("--max-files", type=int, default=100, help="set1 blends read (default all 100)")
    args = parser.parse_args()
    root = find_realdata(args.realdata)
    if root is None:
        print("SKIPPED: real HSC cutouts not found (shared/realdata/scarlet_test_blends/set1); nothing measured.")
        sys.exit(0)
    started = time.perf_counter()
    sample = load_sample(root, args.max_files)
    results = {mode: measure(sample, mode) for mode in PSF_MODES}
    indices = unique_rows(sample, results["cutout"])
    print(f"{len(sample)} cutouts of {args.max_files} set1 blends from {root}; {len(indices)} distinct fitted objects")
    print(f"at a bound: within {BOUND_TOLERANCE:.0%} of the log range of n in {SERSIC_INDEX_RANGE}, r_e or q")
    for mode in PSF_MODES:
        summarise(mode, results[mode], indices)

    resolved = [
        i
        for i in indices
        if results["cutout"][i]["checked"].converged[0]
        and results["cutout"][i]["checked"].unexplained_fraction[0] < 0.15
        and results["cutout"][i]["r50"] / PIXEL_SCALE_ARCSEC >= 2.5
        and results["cutout"][i]["mag_i"] < 24.0
    ]
    print(f"\nastropy Sersic2D cross-check, cutout PSF, {len(resolved)} resolved galaxies (r_50 >= 2.5 px, i < 24):")
    print(f"{'object':40s} {'i':>6s} {'r50 px':>6s} {'n ours':>7s} {'n astropy':>9s} {'n ours, model PSF':>17s}")
    ours, theirs, with_model = [], [], []
    for i in resolved:
        row = results["cutout"][i]
        ours.append(row["unchecked"].sersic_index[0])
        theirs.append(astropy_index(row["inputs"], row["unchecked"]))
        model_row = results["model"][i]
        with_model.append(model_row["unchecked"].sersic_index[0] if "unchecked" in model_row else np.nan)
        print(
            f"{sample[i][0]:40s} {row['mag_i']:6.2f} {row['r50'] / PIXEL_SCALE_ARCSEC:6.2f} {ours[-1]:7.2f} "
            f"{theirs[-1]:9.2f} {with_model[-1]:17.2f}"
        )
    ours, theirs, with_model = np.array(ours), np.array(theirs), np.array(with_model)
    ratio = np.abs(np.log(ours / theirs))
    print(
        f"ours vs astropy (cutout PSF): median |ln(n_ours / n_astropy)| {np.median(ratio):.3f}, "
        f"within 20%: {np.mean(ratio < np.log(1.2)):.0%}, Spearman {spearmanr(ours, theirs).statistic:.2f}; "
        f"astropy n > 7.5: {(theirs > 7.5).sum()}, ours n > 7.5: {(ours > 7.5).sum()}, "
        f"ours with the model PSF n > 7.5: {(with_model > 7.5).sum()}; "
        f"median n ours {np.median(ours):.2f}, astropy {np.median(theirs):.2f}, "
        f"model PSF {np.nanmedian(with_model):.2f}"
    )
    print(f"zero point {MAG_ZERO_POINT}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
