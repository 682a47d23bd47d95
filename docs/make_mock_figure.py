"""Draw docs/figures/mock_galaxies.png: RGB composites of GalSim mock galaxies in rows of increasing redshift.

    python docs/make_mock_figure.py [--seed 0] [--per-row 8] [--stretch 0.4] [--q 8]

Each row holds galaxies drawn at one redshift with the mock's population (sky noise included);
colours are Lupton i,r,g composites from :func:`galaxy_pipeline.visualization.rgb_composite`.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from galaxy_pipeline.data.mock import simulate_galaxies
from galaxy_pipeline.hsc import IMAGE_SIZE
from galaxy_pipeline.visualization import image_grid, rgb_composite

ROW_REDSHIFTS: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0, 1.5, 2.5)
OUTPUT = Path(__file__).resolve().parent / "figures" / "mock_galaxies.png"


def make_figure(output: Path, seed: int, per_row: int, stretch: float, q: float) -> Path:
    """Simulate ``per_row`` galaxies at each of :data:`ROW_REDSHIFTS` and save their composites to ``output``."""
    redshifts = np.repeat(ROW_REDSHIFTS, per_row)
    images, catalog = simulate_galaxies(len(redshifts), seed, redshifts=redshifts, workers=2, progress=True)
    # Flip each stamp so that pixel row 0 is at the bottom (astronomical convention) in a top-down grid.
    composites = rgb_composite(images, stretch=stretch, q=q)[:, ::-1]
    grid = image_grid(composites, rows=len(ROW_REDSHIFTS))
    figure, axes = plt.subplots(figsize=(0.9 * per_row + 0.6, 0.9 * len(ROW_REDSHIFTS) + 0.3), dpi=100)
    axes.imshow(grid, interpolation="nearest")
    axes.set_yticks((np.arange(len(ROW_REDSHIFTS)) + 0.5) * IMAGE_SIZE, [f"z = {z:g}" for z in ROW_REDSHIFTS])
    axes.set_xticks([])
    i_mag = catalog["i_cmodel_mag"].reshape(len(ROW_REDSHIFTS), per_row)
    for row in range(len(ROW_REDSHIFTS)):
        for column in range(per_row):
            x, y = (column + 0.04) * IMAGE_SIZE, (row + 0.13) * IMAGE_SIZE
            axes.text(x, y, f"i={i_mag[row, column]:.1f}", color="white", fontsize=6)
    axes.set_title(f"GalSim mock (seed {seed}); Lupton i,r,g stretch={stretch:g}, Q={q:g}", fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    # A 256-colour palette keeps the noisy figure small (< 300 kB) at no visible cost.
    Image.open(buffer).convert("RGB").quantize(colors=256).save(output, optimize=True)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-row", type=int, default=8)
    parser.add_argument("--stretch", type=float, default=0.4, help="Lupton linear stretch, flux units")
    parser.add_argument("--q", type=float, default=8.0, help="Lupton asinh softening Q")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    print(make_figure(args.out, args.seed, args.per_row, args.stretch, args.q))


if __name__ == "__main__":
    main()
