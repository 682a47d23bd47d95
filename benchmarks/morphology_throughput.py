"""Throughput and accuracy of the morphology measurement on GalSim galaxies of known Sersic truth.

    OMP_NUM_THREADS=1 python benchmarks/morphology_throughput.py [--n 1024] [--unique 256] [--workers 2]

Draws ``unique`` 5-band 64x64 galaxies (n = 1 or 4, semi-major r_e 0.2-1.5", axis ratio 0.3-1,
i = 19-24.5 AB, HSC Moffat PSFs, HSC Wide noise) and tiles them to ``n`` images. Prints images/s of
the detection stage (background, stacking, photutils), of the Sersic fit, and of the whole chain
with 1 and with ``workers`` photutils processes, then the detection rate and the Sersic accuracy.
The load average is printed: other jobs sharing the cores lower the figures.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.stats import spearmanr

from galaxy_pipeline.evaluation import morphology
from galaxy_pipeline.evaluation.psf import prepare_psf
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC, PSF_FWHM_ARCSEC, PSF_MOFFAT_BETA

NOISE_SIGMA = np.array([0.029, 0.040, 0.045, 0.106, 0.223])
BAND_OFFSET = np.array([1.2, 0.4, 0.0, -0.2, -0.3])


def draw(n_galaxies: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """GalSim galaxies (N, 5, 64, 64) in HSC units and their truth."""
    import galsim

    rng = np.random.default_rng(seed)
    truth = {
        "n": rng.choice([1.0, 4.0], n_galaxies),
        "radius": rng.uniform(0.2, 1.5, n_galaxies),
        "q": rng.uniform(0.3, 1.0, n_galaxies),
        "mag_i": rng.uniform(19.0, 24.5, n_galaxies),
    }
    images = np.zeros((n_galaxies, len(BANDS), 64, 64), np.float32)
    for k in range(n_galaxies):
        angle = rng.uniform(0, np.pi) * galsim.radians
        for b, band in enumerate(BANDS):
            flux = 10 ** (-0.4 * (truth["mag_i"][k] + BAND_OFFSET[b] - MAG_ZERO_POINT))
            radius = truth["radius"][k] * np.sqrt(truth["q"][k])
            galaxy = galsim.Sersic(n=truth["n"][k], half_light_radius=radius, flux=flux).shear(
                q=truth["q"][k], beta=angle
            )
            psf = galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=PSF_FWHM_ARCSEC[band])
            image = galsim.Convolve(galaxy, psf).drawImage(nx=64, ny=64, scale=PIXEL_SCALE_ARCSEC, offset=(0.5, 0.5))
            images[k, b] = image.array
    images += rng.normal(0.0, 1.0, images.shape) * NOISE_SIGMA[None, :, None, None]
    return images, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="images measured per run (default 1024)")
    parser.add_argument("--unique", type=int, default=256, help="distinct galaxies drawn (default 256)")
    parser.add_argument("--workers", type=int, default=2, help="photutils processes of the parallel run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tic = time.perf_counter()
    unique, truth = draw(args.unique, args.seed)
    print(f"drew {args.unique} galaxies in {time.perf_counter() - tic:.1f} s")
    images = np.resize(unique, (args.n,) + unique.shape[1:])
    morphology.measure_morphology(images[:8])
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, torch threads: ", end="")
    import torch

    print(torch.get_num_threads())

    psf = prepare_psf(None)
    detect_seconds = fit_seconds = 0.0
    for start in range(0, args.n, args.batch_size):
        tic = time.perf_counter()
        batch = morphology._prepare_batch(images[start : start + args.batch_size], psf, None)
        found = [morphology._detect_one(job) for job in batch.jobs]
        detect_seconds += time.perf_counter() - tic
        tic = time.perf_counter()
        morphology._finish_batch(batch, found, psf, "cpu", None)
        fit_seconds += time.perf_counter() - tic
    print(f"detection + photutils (1 process): {args.n / detect_seconds:7.1f} images/s")
    print(f"Sersic fit (batched torch):        {args.n / fit_seconds:7.1f} images/s")
    table = None
    for workers in (1, args.workers):
        tic = time.perf_counter()
        table = morphology.measure_morphology(images, n_workers=workers, batch_size=args.batch_size)
        print(f"whole chain, {workers} worker(s):         {args.n / (time.perf_counter() - tic):7.1f} images/s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")

    first = table[: args.unique]
    ok = np.asarray(first["sersic_ok"])
    n_fit = np.asarray(first["sersic_index"])
    print(f"detected {first['detected'].mean():.3f}, Sersic ok {ok.mean():.3f} (of {args.unique})")
    print(f"Spearman(n_fit, n_true) = {spearmanr(n_fit[ok], truth['n'][ok]).statistic:.3f}")
    for n_true in (1.0, 4.0):
        sel = ok & (truth["n"] == n_true)
        within = np.mean(np.abs(n_fit[sel] / n_true - 1) < 0.25)
        print(f"n = {n_true:g}: median fit {np.median(n_fit[sel]):.2f}, within 25%: {within:.2f}")
    r_fit = np.asarray(first["sersic_half_light_radius_arcsec"])[ok]
    print(f"Spearman(r_e fit, true) = {spearmanr(r_fit, truth['radius'][ok]).statistic:.3f}, ", end="")
    print(f"median |r_e fit / true - 1| = {np.median(np.abs(r_fit / truth['radius'][ok] - 1)):.3f}")
    ellipticity = np.asarray(first["ellipticity"])
    print(f"Spearman(ellipticity, 1 - q) = {spearmanr(ellipticity, 1 - truth['q'], nan_policy='omit').statistic:.3f}")
    axis = np.asarray(first["semimajor_axis_arcsec"])
    print(f"Spearman(semi-major axis, r_e) = {spearmanr(axis, truth['radius'], nan_policy='omit').statistic:.3f}")


if __name__ == "__main__":
    main()
