"""Sampling speed against fidelity: DDPM 1000, DDIM 50/100, DPM-Solver++ 2M 10/20/25 and UniPC 10/20 steps.

    OMP_NUM_THREADS=1 python benchmarks/sampling.py --model runs/quickstart/pipeline --data galaxiesml \\
        --predictor runs/predictor --n 256 --out bench_sampling [--ddpm] [--batch-sizes 8 32 64]
    python benchmarks/sampling.py --random-preset quickstart --data galaxiesml --speed-only --ddpm \\
        --batch-sizes 4 8 16 --out bench_speed     # CPU: small batches keep DDPM-1000 to minutes

Speed: a batch-size sweep (2 DDIM steps per size, after a warm-up) picks the batch size with the most
network evaluations per second; each sampler then generates one batch of that size with its full number
of steps. Reported: images/s, seconds per 1,000 galaxies, and peak memory (CUDA: peak allocated by torch;
CPU: the process's peak resident set while sampling, model and data included).

Fidelity: :func:`galaxy_pipeline.evaluation.evaluate.evaluate_pipeline` on the first ``--n`` rows of the
split, for each sampler (same seeds, so the samplers start from the same noise; the real sample is
measured once and shared). Summaries: the mean over quantities and redshift bins of W1 / (median W1 of
the permutation null) -- about 1 when generated and real galaxies cannot be told apart at this N,
larger when they can -- the mean KS statistic, the generated detection rate, the size-redshift Spearman
difference, and with a predictor the Frechet distance (next to its null) and the generated photo-z loss.

``--guidance-scale G`` samples every configuration with classifier-free guidance on redshift (two network
evaluations per step; models trained with ``--redshift_dropout``); the table then also shows what
guidance does to the Spearman correlation of predicted with conditioned redshift.

``--random-preset`` times a randomly initialised network of a UNet preset (no trained model needed): its
speed is that of a trained one, its fidelity numbers are meaningless (use ``--speed-only``).
Writes sampling_benchmark.md, sampling_benchmark.json and fidelity_vs_nfe.png to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from galaxy_pipeline import GalaxyRedshiftPipeline, RedshiftUNet2DModel, paper_scheduler
from galaxy_pipeline.data.loading import fit_flux_transform, load_split
from galaxy_pipeline.evaluation.evaluate import evaluate_pipeline, load_predictor
from galaxy_pipeline.evaluation.report import to_jsonable
from galaxy_pipeline.generate import with_scheduler
from galaxy_pipeline.hub import load_pipeline

SAMPLER_CONFIGS: tuple[tuple[str, int], ...] = (
    ("ddim", 50),
    ("ddim", 100),
    ("dpm", 10),
    ("dpm", 20),
    ("dpm", 25),
    ("unipc", 10),
    ("unipc", 20),
)
DDPM_CONFIG = ("ddpm", 1000)
LABELS = {"ddpm": "DDPM", "ddim": "DDIM", "dpm": "DPM-Solver++ 2M", "unipc": "UniPC"}
MARKERS = {"ddpm": "o", "ddim": "s", "dpm": "^", "unipc": "D"}


@contextmanager
def peak_memory(device: torch.device):
    """Yield a dict that holds ``peak_mb`` (MiB) after the block: CUDA peak allocated, or CPU peak RSS."""
    result: dict[str, float | None] = {"peak_mb": None}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    statm = Path("/proc/self/statm")
    if not statm.exists():
        yield result
        return
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    peak, done = [0.0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], int(statm.read_text().split()[1]) * page_mb)
            done.wait(0.01)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()
        result["peak_mb"] = peak[0]


def sample(
    pipe: GalaxyRedshiftPipeline, batch_size: int, steps: int, seed: int = 0, guidance_scale: float = 1.0
) -> float:
    """Seconds to generate ``batch_size`` galaxies (redshifts 0.1-1.5) in ``steps`` steps with ``pipe``'s sampler."""
    low, high = pipe.redshift_range
    z = np.linspace(max(low, 0.1), min(high, 1.5), batch_size)
    generators = [torch.Generator().manual_seed(seed + k) for k in range(batch_size)]
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)
    start = time.perf_counter()
    with warnings.catch_warnings():  # clipping of a diverging sampler shows in its fidelity, not here
        warnings.simplefilter("ignore")
        pipe(z=z, generator=generators, num_inference_steps=steps, output_type="np", guidance_scale=guidance_scale)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize(pipe.device)
    return time.perf_counter() - start


def best_batch_size(pipe: GalaxyRedshiftPipeline, batch_sizes: list[int]) -> tuple[int, dict[int, float]]:
    """Batch size with the most network evaluations (image-steps) per second, and the rate of each."""
    sampler = with_scheduler(pipe, "ddim")
    sampler.set_progress_bar_config(disable=True)
    rates = {}
    for batch_size in batch_sizes:
        sample(sampler, batch_size, 1)  # warm-up: allocations, kernels, autotuning
        rates[batch_size] = batch_size * 2 / sample(sampler, batch_size, 2)
        print(f"  batch {batch_size:4d}: {rates[batch_size]:9.1f} image-steps/s")
    return max(rates, key=rates.get), rates


def fidelity_summary(report: dict) -> dict[str, float | None]:
    """One-line fidelity numbers of an evaluation report (see the module docstring)."""
    ratios, ks = [], []
    for rows in report["morphology"]["by_bin"].values():
        for row in rows:
            if row["wasserstein"] is not None and row["wasserstein_null_median"]:
                ratios.append(row["wasserstein"] / row["wasserstein_null_median"])
            if row["ks_statistic"] is not None:
                ks.append(row["ks_statistic"])
    size = report["spearman"]["size_vs_redshift"]
    summary = {
        "w1_over_null": float(np.mean(ratios)) if ratios else None,
        "mean_ks": float(np.mean(ks)) if ks else None,
        "detection_rate": report["detection"]["generated"]["detection_rate"],
        "size_spearman_difference": size["difference"],
        "frechet_distance": None,
        "frechet_null": None,
        "photoz_loss": None,
        "predicted_z_spearman": None,
    }
    if report.get("frechet") and "frechet_distance" in report["frechet"]:
        summary["frechet_distance"] = report["frechet"]["frechet_distance"]
        summary["frechet_null"] = report["frechet"]["null_frechet_distance"]
    if report.get("photoz"):
        summary["photoz_loss"] = report["photoz"]["generated"]["overall"]["loss"]
        summary["predicted_z_spearman"] = report["spearman"]["predicted_vs_conditioned"]["generated"]["rho"]
    return summary


def random_pipeline(preset: str, split, device: str) -> GalaxyRedshiftPipeline:
    """A randomly initialised pipeline of a UNet preset, its flux transform fitted on ``split`` (speed tests only)."""
    torch.manual_seed(0)
    unet = RedshiftUNet2DModel.from_preset(preset, sample_size=split.features["image"].shape[-1])
    pipe = GalaxyRedshiftPipeline(unet=unet, scheduler=paper_scheduler(), flux_transform=fit_flux_transform(split))
    return pipe.to(device)


def write_outputs(rows: list[dict], out: Path, context: dict) -> None:
    """sampling_benchmark.json, sampling_benchmark.md and fidelity_vs_nfe.png."""
    (out / "sampling_benchmark.json").write_text(json.dumps(to_jsonable({**context, "rows": rows}), indent=2) + "\n")
    header = [
        "sampler",
        "steps (NFE)",
        "images/s",
        "s per 1,000",
        "peak MiB",
        "W1/null",
        "mean KS",
        "detected",
        "size rho diff",
        "FD (null)",
        "photo-z loss",
        "rho(pred z, z)",
    ]
    lines = [
        "# Sampling speed vs fidelity",
        "",
        f"Model `{context['model']}` on {context['device']}; best batch size {context['batch_size']} "
        f"(image-steps/s by batch size: {context['sweep']}); fidelity on N={context['n']} galaxies of "
        f"`{context['data']}`; guidance scale {context['guidance_scale']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        fidelity = row.get("fidelity") or {}
        fd = fidelity.get("frechet_distance")
        lines.append(
            "| "
            + " | ".join(
                [
                    LABELS[row["sampler"]],
                    str(row["steps"]),
                    _fmt(row["images_per_second"]),
                    _fmt(row["seconds_per_1000"]),
                    _fmt(row["peak_mb"]),
                    _fmt(fidelity.get("w1_over_null")),
                    _fmt(fidelity.get("mean_ks")),
                    _fmt(fidelity.get("detection_rate")),
                    _fmt(fidelity.get("size_spearman_difference")),
                    f"{_fmt(fd)} ({_fmt(fidelity.get('frechet_null'))})" if fd is not None else "n/a",
                    _fmt(fidelity.get("photoz_loss")),
                    _fmt(fidelity.get("predicted_z_spearman")),
                ]
            )
            + " |"
        )
    (out / "sampling_benchmark.md").write_text("\n".join(lines) + "\n")

    panels = [("w1_over_null", "mean W1 / permutation-null W1"), ("images_per_second", "images per second")]
    if any((row.get("fidelity") or {}).get("frechet_distance") is not None for row in rows):
        panels.insert(1, ("frechet_distance", "Frechet distance (predictor features)"))
    figure = Figure(figsize=(4.6 * len(panels), 4.0), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    for axis, (key, label) in zip(axes, panels, strict=True):
        for name in dict.fromkeys(row["sampler"] for row in rows):
            chosen = [row for row in rows if row["sampler"] == name]
            values = [row.get(key, (row.get("fidelity") or {}).get(key)) for row in chosen]
            points = [(row["steps"], value) for row, value in zip(chosen, values, strict=True) if value is not None]
            if points:
                x, y = zip(*points, strict=True)
                axis.plot(x, y, marker=MARKERS[name], label=LABELS[name])
        if key == "w1_over_null":
            axis.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="indistinguishable")
        axis.set(xscale="log", xlabel="network evaluations per image", ylabel=label)
        if key == "frechet_distance":
            axis.set_yscale("log")
        axis.legend(fontsize=8)
    figure.suptitle(f"Samplers of {context['model']} (N={context['n']} for fidelity)")
    figure.savefig(out / "fidelity_vs_nfe.png", dpi=110)


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="pipeline folder or Hub id")
    source.add_argument("--random-preset", choices=("paper", "quickstart", "tiny"), help="untrained network (speed)")
    parser.add_argument("--data", required=True, help="converted dataset folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=64, help="galaxies per fidelity evaluation (default 64, CPU-sized)")
    parser.add_argument("--predictor", default=None, help="RedshiftPredictor folder")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64], help="batch sizes to try")
    parser.add_argument("--ddpm", action="store_true", help="include DDPM with 1000 steps (slow on CPU)")
    parser.add_argument("--speed-only", action="store_true", help="skip the fidelity evaluations")
    parser.add_argument(
        "--guidance-scale", type=float, default=1.0, help="classifier-free guidance on redshift (1: none)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    split = load_split(args.data, args.split)
    if args.model:
        pipe, source_info = load_pipeline(args.model, device=args.device)
        model_name = source_info.model_id
    else:
        pipe, model_name = random_pipeline(args.random_preset, split, args.device), f"random {args.random_preset}"
    pipe.set_progress_bar_config(disable=True)
    predictor = load_predictor(args.predictor, args.device) if args.predictor else None
    configs = ((DDPM_CONFIG,) if args.ddpm else ()) + SAMPLER_CONFIGS
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}")
    print("batch-size sweep (DDIM, 2 steps):")
    batch_size, sweep = best_batch_size(pipe, args.batch_sizes)

    rows = []
    for name, steps in configs:
        sampler = with_scheduler(pipe, name)
        sampler.set_progress_bar_config(disable=True)
        with peak_memory(pipe.device) as memory:
            seconds = sample(sampler, batch_size, steps, guidance_scale=args.guidance_scale)
        row = {
            "sampler": name,
            "steps": steps,
            "batch_size": batch_size,
            "images_per_second": batch_size / seconds,
            "seconds_per_1000": 1000 * seconds / batch_size,
            "peak_mb": memory["peak_mb"],
        }
        if not args.speed_only:
            report = evaluate_pipeline(
                pipe,
                split,
                args.out / f"{name}_{steps}",
                n=args.n,
                predictor=predictor,
                batch_size=batch_size,
                scheduler=name,
                num_inference_steps=steps,
                guidance_scale=args.guidance_scale,
                model_id=model_name,
                real_cache=args.out / "real_measurements",
                figures=False,
                progress=False,
            )
            row["fidelity"] = fidelity_summary(report)
        rows.append(row)
        fidelity = row.get("fidelity") or {}
        print(
            f"{LABELS[name]:>16} {steps:5d} steps: {row['images_per_second']:8.2f} images/s, "
            f"{row['seconds_per_1000']:9.1f} s per 1,000, peak {_fmt(row['peak_mb'])} MiB, "
            f"W1/null {_fmt(fidelity.get('w1_over_null'))}, FD {_fmt(fidelity.get('frechet_distance'))}"
        )
    context = {
        "model": model_name,
        "data": f"{args.data} ({args.split})",
        "device": str(pipe.device),
        "n": None if args.speed_only else args.n,
        "guidance_scale": args.guidance_scale,
        "batch_size": batch_size,
        "sweep": {size: round(rate, 1) for size, rate in sweep.items()},
        "load_average": os.getloadavg()[0],
    }
    write_outputs(rows, args.out, context)
    print(f"wrote {args.out / 'sampling_benchmark.md'} and {args.out / 'fidelity_vs_nfe.png'}")


if __name__ == "__main__":
    main()
