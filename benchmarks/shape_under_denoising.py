"""Does the denoiser keep a galaxy's shape? Real galaxies noised to step t, denoised with DDIM, measured again.

    python benchmarks/shape_under_denoising.py --model outputs/quickstart/pipeline \
        --dataset ~/.cache/galaxy_pipeline/mock/mock-n4000-seed0 --z-max 0.25 --starts 100 300 500 700 999

A model that has learned the data distribution maps real galaxies noised to any step t back to galaxies
with the same distribution of shapes (SDEdit: the reverse process from t samples the posterior given the
noisy image, and averaged over images that posterior is the data distribution). So the exam's median
ellipticity, semi-major axis, Sersic index and i magnitude of the test galaxies below ``--z-max`` should
not move with t. Where they drift, and from which t, says whether a model fails to *create* shapes at
high noise or *distorts* them already at low noise.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from pixel_texture import MEDIAN_COLUMNS, binned_medians

from galaxy_pipeline.data.loading import load_split
from galaxy_pipeline.generate import sampling_pipeline
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline


def denoise_from(
    pipe: GalaxyRedshiftPipeline, fluxes: np.ndarray, redshifts: np.ndarray, start: int, steps: int, seed: int
) -> np.ndarray:
    """Noise ``fluxes`` (N, 5, H, W) to the first DDIM timestep at or below ``start`` and denoise them (fluxes)."""
    sampling_pipe, steps = sampling_pipeline(pipe, "ddim", steps)
    scheduler = sampling_pipe.scheduler
    scheduler.set_timesteps(steps)
    timesteps = [t for t in scheduler.timesteps if t <= start]
    clean = torch.as_tensor(pipe.flux_transform.forward(fluxes.astype(np.float32)))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    sample = scheduler.add_noise(clean, noise, torch.full((len(clean),), int(timesteps[0])))
    redshift = torch.as_tensor(redshifts, dtype=torch.float32)
    with torch.no_grad():
        for timestep in timesteps:
            prediction = pipe.unet(sample, timestep, redshift).sample
            sample = scheduler.step(prediction, timestep, sample).prev_sample
    return pipe.flux_transform.inverse(sample).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pipeline folder")
    parser.add_argument("--dataset", required=True, help="converted dataset folder (its test split is used)")
    parser.add_argument("--n", type=int, default=400, help="first test galaxies to consider")
    parser.add_argument("--z-max", type=float, default=0.25, help="keep those below this redshift")
    parser.add_argument("--starts", type=int, nargs="+", default=[100, 300, 500, 700, 999], help="timesteps")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps over the whole schedule")
    args = parser.parse_args()

    rows = load_split(args.dataset, "test").with_format("numpy")[: args.n]
    redshifts = np.asarray(rows["redshift"], dtype=np.float64)
    chosen = redshifts < args.z_max
    fluxes, redshifts = np.asarray(rows["image"], dtype=np.float32)[chosen], redshifts[chosen]
    pipe = GalaxyRedshiftPipeline.from_pretrained(args.model)
    print(f"{len(fluxes)} test galaxies below z = {args.z_max:g}; DDIM {args.steps} steps over the schedule\n")
    print("| images | " + " | ".join(MEDIAN_COLUMNS) + " |")
    print("|---|" + "---|" * len(MEDIAN_COLUMNS))

    def print_row(label: str, images: np.ndarray) -> None:
        medians = binned_medians(images, redshifts, (0.0, args.z_max))
        print(f"| {label} | " + " | ".join(f"{medians[name][0]:.3g}" for name in MEDIAN_COLUMNS) + " |")

    print_row("real", fluxes)
    for start in args.starts:
        print_row(
            f"noised to t <= {start}, denoised", denoise_from(pipe, fluxes, redshifts, start, args.steps, seed=start)
        )


if __name__ == "__main__":
    main()
