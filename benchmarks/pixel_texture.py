"""Pixel texture against brightness, real and generated: does a model put sky noise inside its galaxies?

    python benchmarks/pixel_texture.py --model outputs/quickstart/pipeline \
        --dataset ~/.cache/galaxy_pipeline/mock/mock-n4000-seed0 --inject 0.3 0.6

In a real cutout the sky noise is constant in flux, so in the stretched units ``u = asinh(flux / s)`` of
the flux transform (``s``: each band's softening) it shrinks where a galaxy is bright. This prints the
spread of the high-pass residual of ``u`` (``u`` minus ``u`` smoothed by a Gaussian of 0.7 pixels), in
bins of the local brightness (``u`` smoothed by 1.5 pixels, averaged over the bands), for the test
galaxies and for as many generated at their redshifts (DDIM). Then the exam's median ellipticity,
semi-major axis, Sersic index and i magnitude per redshift bin, for the real galaxies, the generated
ones, and the real ones with Gaussian texture of each ``--inject`` amplitude added to ``u`` everywhere:
how much of a measured difference such texture explains.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy import ndimage

from galaxy_pipeline.data.loading import load_split
from galaxy_pipeline.evaluation.morphology import measure_morphology
from galaxy_pipeline.evaluation.statistics import REDSHIFT_BIN_EDGES, redshift_bin_masks
from galaxy_pipeline.generate import sampling_pipeline
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline

BRIGHTNESS_BINS = ((-np.inf, 0.5), (0.5, 1.5), (1.5, 3.0), (3.0, 5.0), (5.0, np.inf))
"""Bins of the local stretched brightness (sky noise sigmas in the linear part of the stretch)."""

MEDIAN_COLUMNS = ("ellipticity", "semimajor_axis_arcsec", "sersic_index", "mag_i")


def texture_by_brightness(fluxes: np.ndarray, softening: np.ndarray) -> list[tuple[float, int]]:
    """Spread of the high-pass residual of asinh(flux / softening) and pixel count, per brightness bin.

    Args:
        fluxes: (N, bands, H, W) images in flux units.
        softening: (bands,) softening of each band, in flux units.
    """
    stretched = np.arcsinh(fluxes / softening[None, :, None, None])
    residual = stretched - ndimage.gaussian_filter(stretched, sigma=(0, 0, 0.7, 0.7))
    level = ndimage.gaussian_filter(stretched, sigma=(0, 0, 1.5, 1.5)).mean(axis=1)
    per_band = np.moveaxis(residual, 1, 0)
    rows = []
    for low, high in BRIGHTNESS_BINS:
        chosen = (level >= low) & (level < high)
        rows.append((float(np.std(per_band[:, chosen])) if chosen.any() else float("nan"), int(chosen.sum())))
    return rows


def binned_medians(
    fluxes: np.ndarray, redshifts: np.ndarray, edges: tuple[float, ...] = REDSHIFT_BIN_EDGES
) -> dict[str, list[float]]:
    """The exam's median of each of ``MEDIAN_COLUMNS`` per redshift bin (the exam's bins; NaN where one is empty)."""
    table = measure_morphology(fluxes, progress=True)
    medians = {}
    for name in MEDIAN_COLUMNS:
        values = np.asarray(table[name], dtype=float)
        medians[name] = [
            float(np.nanmedian(values[in_bin])) if np.isfinite(values[in_bin]).any() else float("nan")
            for _, in_bin in redshift_bin_masks(redshifts, edges)
        ]
    return medians


def generate(pipe: GalaxyRedshiftPipeline, redshifts: np.ndarray, steps: int, batch_size: int) -> np.ndarray:
    """One galaxy per redshift with DDIM, galaxy k seeded with k (fluxes, float32)."""
    sampling_pipe, steps = sampling_pipeline(pipe, "ddim", steps)
    images = []
    for start in range(0, len(redshifts), batch_size):
        chunk = redshifts[start : start + batch_size]
        seeds = [torch.Generator().manual_seed(start + k) for k in range(len(chunk))]
        out = sampling_pipe(z=chunk, num_inference_steps=steps, generator=seeds, allow_extrapolation=True)
        images.append(out.images.astype(np.float32))
    return np.concatenate(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pipeline folder")
    parser.add_argument("--dataset", required=True, help="converted dataset folder (its test split is used)")
    parser.add_argument("--n", type=int, default=400, help="test galaxies (and as many generated)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--inject", type=float, nargs="*", default=[], help="texture amplitudes to add, in u units")
    args = parser.parse_args()

    split = load_split(args.dataset, "test").with_format("numpy")
    rows = split[: args.n]
    real = np.asarray(rows["image"], dtype=np.float32)
    redshifts = np.asarray(rows["redshift"], dtype=np.float64)
    pipe = GalaxyRedshiftPipeline.from_pretrained(args.model)
    softening = np.asarray(pipe.flux_transform.config.softening, dtype=np.float32)
    generated = generate(pipe, redshifts, args.steps, args.batch_size)

    print(f"{len(real)} test galaxies and as many generated (DDIM {args.steps})\n")
    print("| local brightness (u) | " + " | ".join(f"{lo:g} to {hi:g}" for lo, hi in BRIGHTNESS_BINS) + " |")
    print("|---|" + "---|" * len(BRIGHTNESS_BINS))
    for label, images in (("real", real), ("generated", generated)):
        cells = texture_by_brightness(images, softening)
        print(f"| {label}: residual std (pixels) | " + " | ".join(f"{s:.3f} ({n})" for s, n in cells) + " |")

    rng = np.random.default_rng(0)
    stretched = np.arcsinh(real / softening[None, :, None, None])
    variants = [("real", real), ("generated", generated)] + [
        (
            f"real + texture {amplitude:g}",
            softening[None, :, None, None]
            * np.sinh(stretched + amplitude * rng.standard_normal(stretched.shape, dtype=np.float32)),
        )
        for amplitude in args.inject
    ]
    edges = REDSHIFT_BIN_EDGES
    bins = " | ".join(f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:], strict=True))
    print(f"\n| images | quantity | {bins} |")
    print("|---|---|" + "---|" * (len(edges) - 1))
    for label, images in variants:
        for name, values in binned_medians(images, redshifts).items():
            print(f"| {label} | {name} | " + " | ".join(f"{v:.3g}" for v in values) + " |")


if __name__ == "__main__":
    main()
