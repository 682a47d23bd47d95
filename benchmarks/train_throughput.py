"""Training throughput: our full loop (data loading, EMA, logging) vs a bare loop with a stock UNet2DModel.

    python benchmarks/train_throughput.py --preset quickstart --steps 60 --batch-size 16 --repeats 3

Both run in this process, one after the other, on the same machine, ``--repeats`` times in alternating
order (ours-bare, bare-ours, ...): the median of the paired ratios is what counts (target >= 0.95 on
CPU); a shared machine's speed drifts by more than the difference being measured. Ours is
`galaxy_pipeline.training.trainer.train` on a small GalaxiesML-schema dataset, with checkpoints and
sample grids switched off; its images/s is the mean of the values it logs to
TensorBoard after the first logging window (warm-up). The bare loop feeds in-memory tensors to a
`diffusers.UNet2DModel` with the same blocks and channels, with Huber loss, AdamW and gradient
clipping, and nothing else.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from galaxy_pipeline.data.galaxiesml import convert_galaxiesml
from galaxy_pipeline.pipeline import paper_scheduler
from galaxy_pipeline.training.config import parse_training_config
from galaxy_pipeline.training.trainer import train
from galaxy_pipeline.unet import UNET_PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from galaxiesml_files import write_galaxiesml_splits  # noqa: E402


def bare_loop_images_per_second(
    preset: str, batch_size: int, steps: int, warmup: int, device: str, mixed_precision: str = "no", side: int = 64
) -> float:
    """Images/s of a minimal DDPM training loop around a stock UNet2DModel of the preset's size.

    ``mixed_precision="bf16"`` runs the forward pass and loss under ``torch.autocast`` in bfloat16, as
    accelerate does; ``side`` is the image size in pixels.
    """
    ours_only = ("redshift_embedding_dim", "redshift_scale", "pixel_unshuffle_factor")
    blocks = {k: v for k, v in UNET_PRESETS[preset].items() if k not in ours_only}
    # A preset that folds f x f pixel blocks into channels runs the stock network on the folded shape.
    factor = UNET_PRESETS[preset].get("pixel_unshuffle_factor", 1)
    channels, side = 5 * factor**2, side // factor
    model = UNet2DModel(sample_size=side, in_channels=channels, out_channels=channels, **blocks).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = paper_scheduler()
    images = torch.randn(batch_size, channels, side, side, device=device)
    for step in range(warmup + steps):
        if step == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        noise = torch.randn_like(images)
        timesteps = torch.randint(0, 1000, (batch_size,), device=device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=mixed_precision == "bf16"):
            loss = F.huber_loss(model(scheduler.add_noise(images, noise, timesteps), timesteps).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def our_loop_images_per_second(
    preset: str,
    batch_size: int,
    steps: int,
    logging_steps: int,
    dataset_dir: Path,
    run_dir: Path,
    num_workers: int = 0,
    in_memory_gb: float = 2.0,
    extra_args: tuple[str, ...] = (),
) -> float:
    """Mean logged images/s of the full training loop, excluding the first logging window.

    ``extra_args`` are more flags of ``train_scripts/train.py`` (e.g. ``("--mixed_precision", "bf16")``).
    """
    args = [
        "--dataset_dir", str(dataset_dir), "--output_dir", str(run_dir),
        "--unet_preset", preset, "--train_batch_size", str(batch_size), "--max_train_steps", str(steps),
        "--logging_steps", str(logging_steps), "--checkpointing_steps", str(10 * steps),
        "--sample_every_steps", "0", "--flux_fit_images", "64", "--dataloader_num_workers", str(num_workers),
        "--dataset_in_memory_gb", str(in_memory_gb), *extra_args,
    ]  # fmt: skip
    train(parse_training_config(args))
    events = EventAccumulator(str(next((run_dir / "logs").rglob("events.out.tfevents*")).parent))
    events.Reload()
    values = [event.value for event in events.Scalars("images_per_second")]
    return float(np.mean(values[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quickstart", choices=sorted(UNET_PRESETS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="pairs of measurements (order alternates)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes of our loop")
    parser.add_argument(
        "--dataset-in-memory-gb", type=float, default=2.0, help="our loop's --dataset_in_memory_gb (0: read per batch)"
    )
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as workdir:
        workdir = Path(workdir)
        files = write_galaxiesml_splits(workdir / "hdf5", sizes=(max(256, 4 * args.batch_size), 16, 16))
        convert_galaxiesml(files, workdir / "dataset", progress=False)

        def ours(repeat: int) -> float:
            return our_loop_images_per_second(
                args.preset,
                args.batch_size,
                args.steps,
                args.logging_steps,
                workdir / "dataset",
                workdir / f"run-{repeat}",
                args.num_workers,
                args.dataset_in_memory_gb,
            )

        def bare() -> float:
            return bare_loop_images_per_second(
                args.preset, args.batch_size, args.steps - args.logging_steps, args.logging_steps, device
            )

        pairs = []
        for repeat in range(args.repeats):
            # Alternate the order so that a machine slowing down or speeding up does not favour either loop.
            if repeat % 2 == 0:
                ours_rate = ours(repeat)
                bare_rate = bare()
            else:
                bare_rate = bare()
                ours_rate = ours(repeat)
            pairs.append((ours_rate, bare_rate))
    print(
        f"device: {device} ({torch.get_num_threads()} threads), preset {args.preset}, batch {args.batch_size}, "
        f"{args.num_workers} loader workers, split in memory up to {args.dataset_in_memory_gb} GB"
    )
    for repeat, (ours_rate, bare_rate) in enumerate(pairs):
        first = "ours first" if repeat % 2 == 0 else "bare first"
        print(
            f"pair {repeat + 1} ({first}): galaxy_pipeline {ours_rate:7.2f}, bare UNet2DModel {bare_rate:7.2f} "
            f"images/s, ratio {ours_rate / bare_rate:.3f}"
        )
    ratios = [ours_rate / bare_rate for ours_rate, bare_rate in pairs]
    ours_median = float(np.median([ours_rate for ours_rate, _ in pairs]))
    print(f"median ratio ours/bare: {np.median(ratios):.3f}  (target >= 0.95)")
    print(f"quickstart (1500 steps x 16 images) at the median rate: {1500 * 16 / ours_median / 60:.1f} min of training")


if __name__ == "__main__":
    main()
