"""Redshift sweep figure: the same initial noise denoised at z = 0.1 ... 3 (rows: noise draws).

python docs/make_sweep_figure.py --model outputs/quickstart/pipeline --out docs/figures/redshift_sweep.png
"""

import argparse

import torch
from matplotlib.figure import Figure

from galaxy_pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.visualization import image_grid, rgb_composite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="pipeline folder or Hub id")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--z", type=float, nargs="+", default=[0.1, 0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--draws", type=int, default=4, help="noise draws (rows)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (the sweep replaces DDPM by DDIM)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pipe = GalaxyRedshiftPipeline.from_pretrained(args.model)
    low, high = pipe.redshift_range
    redshifts = [z for z in args.z if low <= z <= high]
    out = pipe.sweep(redshifts, generator=torch.Generator().manual_seed(args.seed), num_noise_draws=args.draws,
                     num_inference_steps=args.steps)  # fmt: skip
    grid = image_grid(rgb_composite(out.images), rows=args.draws)
    figure = Figure(figsize=(1.3 * len(redshifts), 1.3 * args.draws + 0.6))
    axes = figure.add_axes((0, 0, 1, 0.9))
    axes.imshow(grid)
    axes.set_axis_off()
    figure.suptitle("Same noise, rows; redshift z = " + ", ".join(f"{z:g}" for z in redshifts) + " (columns)",
                    fontsize=9)  # fmt: skip
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
