"""How loud is each model-space channel? Per-channel spread of a training split under each channel basis.

    python benchmarks/model_space_amplitude.py --dataset ~/.cache/galaxy_pipeline/mock/mock-n4000-seed0

For the per-band basis and for colour bases of several luminosity weights, prints each channel's
standard deviation over all pixels, over the central 16 x 16 pixels of galaxies below z = 0.25 (the
big, bright ones), and its largest |value| (which must stay inside the sampler's clip,
``normalization.MODEL_SPACE_LIMIT``). A channel's amplitude sets how much the loss weighs it and up
to which noise level of the forward process its signal survives (docs/colour_basis.md).
"""

from __future__ import annotations

import argparse

import numpy as np

from galaxy_pipeline.data.loading import fit_flux_transform, load_split
from galaxy_pipeline.normalization import MODEL_SPACE_LIMIT, channel_mixing_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="converted dataset folder")
    parser.add_argument("--images", type=int, default=1000, help="training images to measure")
    parser.add_argument("--luminosity-weights", type=float, nargs="+", default=[0.2, 0.45, 0.5])
    parser.add_argument("--colour-weight", type=float, default=2.0)
    args = parser.parse_args()

    split = load_split(args.dataset, "train")
    subset = split.select(range(min(args.images, len(split)))).with_format("numpy")
    images = np.asarray(subset["image"], dtype=np.float32)
    low_redshift = np.asarray(subset["redshift"]) < 0.25
    bases = [("bands", None)] + [("colour", (w, args.colour_weight)) for w in args.luminosity_weights]
    print(f"{len(images)} images ({low_redshift.sum()} below z = 0.25); clip at +-{MODEL_SPACE_LIMIT}")
    print("| basis | std per channel | central std, z < 0.25 | max abs value |")
    print("|---|---|---|---|")
    for basis, weights in bases:
        mixing = channel_mixing_for(basis, colour_weights=weights) if weights else channel_mixing_for(basis)
        transform = fit_flux_transform(split, max_images=args.images, seed=0, channel_mixing=mixing)
        model = transform.forward(images)
        central = model[low_redshift, :, 24:40, 24:40]
        name = basis if weights is None else f"colour, weights {weights[0]:g} / {weights[1]:g}"
        cells = [
            " ".join(f"{v:.2f}" for v in model.std(axis=(0, 2, 3))),
            " ".join(f"{v:.2f}" for v in central.std(axis=(0, 2, 3))),
            " ".join(f"{v:.1f}" for v in np.abs(model).max(axis=(0, 2, 3))),
        ]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
