"""Images/s of the training DataLoader against images/s of a quickstart-UNet training step, in one run.

    OMP_NUM_THREADS=1 python benchmarks/data_loading.py [--rows 4096] [--batch-size 16] [--steps 10]
        [--num-workers 0] [--device cpu|cuda]

Writes a GalaxiesML-schema file of ``--rows`` galaxies (tests/galaxiesml_files.py), converts it,
and times (1) full epochs of ``make_dataloader`` (shuffled, dihedral augmentation, flux transform,
``--num-workers`` reader processes) and (2) training steps of ``RedshiftUNet2DModel.from_preset("quickstart")``
at the same batch size on ``--device`` (DDPM noising, Huber loss, backward, AdamW step). The
loader should be far faster than the step it feeds: target ratio >= 10x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from galaxiesml_files import write_galaxiesml_file  # noqa: E402

from galaxy_pipeline import RedshiftUNet2DModel, paper_scheduler  # noqa: E402
from galaxy_pipeline.data.galaxiesml import convert_galaxiesml  # noqa: E402
from galaxy_pipeline.data.loading import fit_flux_transform, load_split, make_dataloader  # noqa: E402

TARGET_RATIO = 10.0


def loader_images_per_second(loader: torch.utils.data.DataLoader, epochs: int) -> float:
    """Images per second over ``epochs`` full passes of ``loader``."""
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            images += batch["images"].shape[0]
    return images / (time.perf_counter() - start)


def training_images_per_second(batch: dict[str, torch.Tensor], steps: int, device: str) -> float:
    """Images per second of quickstart-UNet training steps on ``batch`` (one untimed warm-up step)."""
    torch.manual_seed(0)
    unet = RedshiftUNet2DModel.from_preset("quickstart").to(device)
    scheduler = paper_scheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    images, redshifts = batch["images"].to(device), batch["redshifts"].to(device)

    def step() -> None:
        noise = torch.randn_like(images)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (images.shape[0],), device=device)
        predicted = unet(scheduler.add_noise(images, noise, timesteps), timesteps, redshifts).sample
        F.huber_loss(predicted, noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096, help="galaxies in the converted split (default 4096)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (default 10)")
    parser.add_argument("--epochs", type=int, default=2, help="timed loader epochs (default 2)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="training-step device")
    args = parser.parse_args()

    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as folder:
        source = write_galaxiesml_file(Path(folder) / "train.hdf5", args.rows)
        convert_galaxiesml({"train": source}, Path(folder) / "converted", progress=False)
        train = load_split(Path(folder) / "converted", "train")
        flux_transform = fit_flux_transform(train)
        loader = make_dataloader(
            train, flux_transform, batch_size=args.batch_size, augment=True, num_workers=args.num_workers
        )
        loader_rate = loader_images_per_second(loader, args.epochs)
        step_rate = training_images_per_second(next(iter(loader)), args.steps, args.device)

    ratio = loader_rate / step_rate
    print(f"loader (batch {args.batch_size}, augment, {args.num_workers} workers): {loader_rate:8.1f} images/s")
    print(f"quickstart UNet training step (batch {args.batch_size}, {args.device}): {step_rate:8.1f} images/s")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"ratio loader / training step: {ratio:.1f}x; target >= {TARGET_RATIO:g}x: {verdict}")


if __name__ == "__main__":
    main()
