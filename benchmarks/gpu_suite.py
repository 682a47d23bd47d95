"""The GPU suite: sampling speed, MFU, training throughput, a paper-size model's exam, catalogue generation, bf16.

    python benchmarks/gpu_suite.py --out gpu_suite --budget-s 500      # on a GPU machine (see docs/gpu_suite.md)
    python benchmarks/gpu_suite.py --smoke --out gpu_smoke          # every stage in seconds, on a CPU

Writes ``gpu_suite.json`` and ``gpu_suite.md`` to ``--out``, and rewrites them after every stage, so a run
killed at its time limit still leaves what it measured. Never spends more than ``--budget-s`` seconds in
all: each stage gets a share of the time left (unused time passes on), stops starting new measurements
when its share is spent, and is marked ``partial`` or ``skipped`` with a note. Stages:

1. ``sampling``: UNet forward time of random ``paper`` and ``quickstart`` networks at batch sizes 64, 256 and
   1024, in float32 and bfloat16, with and without ``channels_last`` and ``torch.compile``, with the peak GPU
   memory; ms per galaxy for DDIM 50 and DPM-Solver++ 10 follow as steps x forward time / batch. Then the
   whole pipeline, both samplers, at each preset's fastest setting (measured end to end).
2. ``mfu``: FLOPs of one forward pass (``torch.utils.flop_counter.FlopCounterMode``) over its time, divided by
   the bf16 dense peak of the GPU (:data:`BF16_PEAK_TFLOPS`, looked up from the device name).
3. ``training``: images/s of ``train_scripts/train.py``'s loop (bf16, EMA) against a bare stock
   ``UNet2DModel`` loop of the same size in the same process (``benchmarks/train_throughput.py``).
4. ``scale_check``: a GalSim mock of ``--mock-galaxies`` drawn on every CPU core, the paper network trained on
   it for the stage's time with the ``standard`` recipe, then the 400-galaxy exam (DDIM 50, the scorecard).
5. ``catalogue``: ``generate`` at the test split's redshifts into a sharded Hugging Face dataset, timed.
6. ``bf16_fidelity``: the exam of stage 4's model sampled in bfloat16 against float32, same seeds
   (``benchmarks/bf16_fidelity.py``).

Random weights are used where only speed is measured (stages 1-3); speed does not depend on training.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from bf16_fidelity import compare, exam, exam_summary
from diffusers.utils import logging as diffusers_logging
from torch.utils.flop_counter import FlopCounterMode
from train_throughput import bare_loop_images_per_second, our_loop_images_per_second

from galaxy_pipeline import GalaxyRedshiftPipeline, RedshiftUNet2DModel, paper_scheduler
from galaxy_pipeline.atomic import atomic_write
from galaxy_pipeline.data.galaxiesml import convert_galaxiesml
from galaxy_pipeline.data.mock import write_mock_splits
from galaxy_pipeline.generate import generate_to_files, with_scheduler
from galaxy_pipeline.training.config import parse_training_config
from galaxy_pipeline.training.trainer import train
from galaxy_pipeline.version import __version__

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from galaxiesml_files import write_galaxiesml_splits  # noqa: E402

BF16_PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.4,
    "H100": 989.4,
    "GH200": 989.4,
    "B200": 2250.0,
    "A100": 312.0,
    "A6000": 154.8,
    "L40S": 362.1,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
}
"""Dense bfloat16 tensor-core peak (TFLOP/s, no sparsity) by a substring of the device name, from NVIDIA's data
sheets; the first entry found in the name is used (so "H100 PCIe" before "H100")."""

STAGE_SHARES = {"sampling": 0.22, "mfu": 0.03, "training": 0.12, "scale_check": 0.48, "catalogue": 0.05}
STAGE_SHARES["bf16_fidelity"] = 0.10
"""Share of the time left that each stage may spend, in order (unused time passes to the next)."""


@dataclass(frozen=True)
class Sizes:
    """How big each stage is: the GPU run's sizes, or the smoke test's."""

    presets: tuple[str, ...] = ("paper", "quickstart")
    batch_sizes: tuple[int, ...] = (64, 256, 1024)
    compile_options: tuple[bool, ...] = (False, True)
    samplers: tuple[tuple[str, int], ...] = (("ddim", 50), ("dpm", 10))
    image_side: int = 64
    timing_repeats: int = 3
    train_preset: str = "paper"
    train_batch_size: int = 64
    train_timing_steps: int = 30
    max_scale_train_steps: int = 1_000_000
    mock_galaxies: int = 50_000
    exam_galaxies: int = 400
    exam_steps: int = 50
    catalogue_galaxies: int = 8192

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(
            presets=("tiny",),
            batch_sizes=(2, 4),
            compile_options=(False,),
            samplers=(("ddim", 2), ("dpm", 2)),
            image_side=16,
            timing_repeats=1,
            train_preset="tiny",
            train_batch_size=4,
            train_timing_steps=4,
            max_scale_train_steps=4,
            mock_galaxies=60,
            exam_galaxies=6,
            exam_steps=2,
            catalogue_galaxies=8,
        )


class Budget:
    """Seconds left in all, and each stage's share of them."""

    def __init__(self, total_s: float):
        self.total_s, self.started = total_s, time.perf_counter()
        self.stage_deadline = self.started + total_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.total_s - self.elapsed()

    def open_stage(self, name: str) -> float:
        """Start stage ``name``: its deadline is its share of what is left; return its seconds."""
        names = list(STAGE_SHARES)
        share = STAGE_SHARES[name] / sum(STAGE_SHARES[n] for n in names[names.index(name) :])
        seconds = max(0.0, self.left()) * share
        self.stage_deadline = time.perf_counter() + seconds
        return seconds

    def stage_left(self) -> float:
        return self.stage_deadline - time.perf_counter()


def log(message: str) -> None:
    print(f"[gpu_suite {time.strftime('%H:%M:%S')}] {message}", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory_mib(device: torch.device) -> Iterator[dict]:
    """Peak GPU memory allocated by torch inside the block, in MiB (``None`` on a CPU)."""
    result: dict = {"peak_memory_mib": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield result
    if device.type == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20


def bf16_peak(device: torch.device) -> tuple[float | None, str]:
    """The GPU's dense bf16 peak in TFLOP/s and the table entry used (``None`` on a CPU or an unknown GPU)."""
    if device.type != "cuda":
        return None, f"no peak for {platform.processor() or 'this CPU'}: MFU is given for GPUs only"
    name = torch.cuda.get_device_name(device)
    for entry, tflops in BF16_PEAK_TFLOPS.items():
        if entry in name:
            return tflops, f"{entry} ({tflops:g} TFLOP/s bf16 dense) for device {name!r}"
    return None, f"{name!r} is not in BF16_PEAK_TFLOPS: add its bf16 dense peak"


def random_pipeline(preset: str, side: int, device: torch.device) -> GalaxyRedshiftPipeline:
    """A randomly initialised pipeline of a UNet preset with an identity-like flux transform (speed only)."""
    from galaxy_pipeline.normalization import FluxTransform

    torch.manual_seed(0)
    unet = RedshiftUNet2DModel.from_preset(preset, sample_size=side)
    rng = np.random.default_rng(0)
    transform = FluxTransform.fit([rng.standard_t(3, size=(8, 5, side, side)) * 0.05])
    pipe = GalaxyRedshiftPipeline(unet=unet, scheduler=paper_scheduler(), flux_transform=transform).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_forward(unet, batch: int, side: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Median seconds of one UNet forward pass on a batch (after one warm-up pass), under inference mode."""
    channels = unet.config.in_channels
    sample = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
    timestep = torch.full((batch,), 500, device=device)
    redshift = torch.full((batch,), 0.5, device=device)
    times = []
    with torch.inference_mode():
        for attempt in range(repeats + 1):
            synchronize(device)
            start = time.perf_counter()
            unet(sample, timestep, redshift)
            synchronize(device)
            if attempt:
                times.append(time.perf_counter() - start)
    return float(np.median(times))


def forward_configs(sizes: Sizes) -> Iterator[dict]:
    """Every (preset, batch size, dtype, channels_last, compile) setting of the sampling stage, cheapest first."""
    for compiled in sizes.compile_options:
        for preset in sizes.presets:
            for batch in sizes.batch_sizes:
                for dtype in ("float32", "bfloat16"):
                    for channels_last in (False, True):
                        yield dict(preset=preset, batch_size=batch, dtype=dtype, channels_last=channels_last,
                                   compile=compiled)  # fmt: skip


def stage_sampling(sizes: Sizes, device: torch.device, budget: Budget, results: dict, work: Path) -> str:
    """Forward-pass timings of every setting, then both samplers end to end at each preset's fastest one."""
    rows, skipped = [], 0
    for config in forward_configs(sizes):
        if budget.stage_left() <= 0:
            skipped += 1
            continue
        pipe = random_pipeline(config["preset"], sizes.image_side, device)
        unet = pipe.unet.to(dtype=getattr(torch, config["dtype"]))
        if config["channels_last"]:
            unet = unet.to(memory_format=torch.channels_last)
        if config["compile"]:
            unet = torch.compile(unet)
        try:
            with peak_memory_mib(device) as memory:
                seconds = time_forward(
                    unet, config["batch_size"], sizes.image_side, getattr(torch, config["dtype"]), device,
                    sizes.timing_repeats,
                )  # fmt: skip
        except torch.OutOfMemoryError:
            rows.append({**config, "forward_ms": None, "note": "out of memory"})
            torch.cuda.empty_cache()
            continue
        per_sampler = {
            f"{name}{steps}": {"ms_per_galaxy": 1e3 * steps * seconds / config["batch_size"]}
            for name, steps in sizes.samplers
        }
        for entry in per_sampler.values():
            entry["galaxies_per_s"] = 1e3 / entry["ms_per_galaxy"]
        rows.append({**config, "forward_ms": 1e3 * seconds, **memory, "samplers": per_sampler})
        log(f"sampling {config}: forward {1e3 * seconds:.2f} ms")
    results["sampling"] = rows
    results["sampling_end_to_end"] = end_to_end(sizes, device, budget, rows)
    return f"{skipped} settings not timed (stage time spent)" if skipped else ""


def end_to_end(sizes: Sizes, device: torch.device, budget: Budget, rows: list[dict]) -> list[dict]:
    """Whole pipeline calls (``output_type="np"``) for each sampler at each preset's fastest timed setting."""
    measured = []
    for preset in sizes.presets:
        timed = [row for row in rows if row["preset"] == preset and row.get("forward_ms")]
        if not timed or budget.stage_left() <= 0:
            continue
        best = min(timed, key=lambda row: row["forward_ms"] / row["batch_size"])
        pipe = random_pipeline(preset, sizes.image_side, device)
        pipe.unet.to(dtype=getattr(torch, best["dtype"]))
        if best["channels_last"]:
            pipe.unet.to(memory_format=torch.channels_last)
        if best["compile"]:
            pipe.unet = torch.compile(pipe.unet)
        redshifts = np.linspace(0.05, 3.0, best["batch_size"])
        for name, steps in sizes.samplers:
            sampler = with_scheduler(pipe, name)
            sampler(z=redshifts[:2], num_inference_steps=2, output_type="np", seeds=[0, 1])  # warm-up
            with peak_memory_mib(device) as memory:
                synchronize(device)
                start = time.perf_counter()
                sampler(z=redshifts, num_inference_steps=steps, output_type="np", seeds=range(redshifts.size))
                synchronize(device)
                seconds = time.perf_counter() - start
            setting = {key: best[key] for key in ("preset", "batch_size", "dtype", "channels_last", "compile")}
            measured.append(
                {**setting, "sampler": name, "steps": steps, "seconds": seconds,
                 "galaxies_per_s": redshifts.size / seconds, "ms_per_galaxy": 1e3 * seconds / redshifts.size,
                 **memory}
            )  # fmt: skip
            log(f"end to end {preset} {name} {steps}: {1e3 * seconds / redshifts.size:.3f} ms/galaxy")
    return measured


def stage_mfu(sizes: Sizes, device: torch.device, budget: Budget, results: dict, work: Path) -> str:
    """Model FLOPs utilisation of the bf16 forward pass at each preset's fastest bf16 batch size."""
    peak, entry = bf16_peak(device)
    rows = []
    for preset in sizes.presets:
        timed = [r for r in results.get("sampling", []) if r["preset"] == preset and r["dtype"] == "bfloat16"]
        timed = [r for r in timed if r.get("forward_ms") and not r["compile"]]
        batch = min(timed, key=lambda r: r["forward_ms"] / r["batch_size"])["batch_size"] if timed else 2
        pipe = random_pipeline(preset, sizes.image_side, device)
        unet = pipe.unet.to(dtype=torch.bfloat16)
        sample = torch.randn(batch, unet.config.in_channels, sizes.image_side, sizes.image_side, device=device)
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            unet(
                sample.to(torch.bfloat16),
                torch.full((batch,), 500, device=device),
                torch.full((batch,), 0.5, device=device),
            )
        seconds = time_forward(unet, batch, sizes.image_side, torch.bfloat16, device, sizes.timing_repeats)
        flops = counter.get_total_flops()
        achieved = flops / seconds / 1e12
        rows.append(
            {"preset": preset, "batch_size": batch, "flops_per_forward": flops, "forward_ms": 1e3 * seconds,
             "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak if peak else None}
        )  # fmt: skip
        log(f"mfu {preset} batch {batch}: {flops / 1e9:.2f} GFLOP per forward, {achieved:.3f} TFLOP/s")
    results["mfu"] = {"peak_entry": entry, "rows": rows}
    return "" if peak else entry


def stage_training(sizes: Sizes, device: torch.device, budget: Budget, results: dict, work: Path) -> str:
    """Images/s of our loop (bf16, EMA) against a bare UNet2DModel loop; ours first, then bare."""
    mixed = "bf16" if device.type == "cuda" else "no"
    files = write_galaxiesml_splits(work / "train_hdf5", sizes=(4 * sizes.train_batch_size, 8, 8))
    convert_galaxiesml(files, work / "train_data", progress=False)
    steps = sizes.train_timing_steps
    logging = max(1, steps // 3)
    ours = our_loop_images_per_second(
        sizes.train_preset, sizes.train_batch_size, steps, logging, work / "train_data", work / "train_run",
        extra_args=("--mixed_precision", mixed, "--use_ema", "true", "--flux_fit_images", "16"),
    )  # fmt: skip
    bare = bare_loop_images_per_second(
        sizes.train_preset, sizes.train_batch_size, steps - logging, logging, device.type, mixed
    )
    results["training"] = {
        "preset": sizes.train_preset, "batch_size": sizes.train_batch_size, "mixed_precision": mixed, "ema": True,
        "steps": steps, "ours_images_per_s": ours, "bare_images_per_s": bare, "ratio_ours_to_bare": ours / bare,
    }  # fmt: skip
    log(f"training: ours {ours:.1f} images/s, bare {bare:.1f} images/s, ratio {ours / bare:.3f}")
    return "" if mixed == "bf16" else "float32 on a CPU (bf16 autocast is for GPUs)"


def stage_scale_check(sizes: Sizes, device: torch.device, budget: Budget, results: dict, work: Path) -> str:
    """Mock on every core, train the paper network for what is left of the stage, then the exam."""
    start = time.perf_counter()
    files = write_mock_splits(work / "mock_hdf5", n=sizes.mock_galaxies, seed=0, workers=os.cpu_count(), progress=False)
    convert_galaxiesml(files, work / "mock", progress=False)
    mock_s = time.perf_counter() - start
    log(f"scale check: {sizes.mock_galaxies} mock galaxies in {mock_s:.0f} s")
    rate = results.get("training", {}).get("ours_images_per_s") or 1.0
    exam_reserve = 0.3 * budget.stage_left()  # the exam and the bf16 rerun's share of generation
    train_s = max(1.0, budget.stage_left() - exam_reserve)
    steps = min(sizes.max_scale_train_steps, max(2, int(train_s * rate / sizes.train_batch_size)))
    recipe = [
        "--dataset_dir", str(work / "mock"), "--output_dir", str(work / "scale_run"), "--preset", "standard",
        "--unet_preset", sizes.train_preset, "--train_batch_size", str(sizes.train_batch_size),
        "--max_train_steps", str(steps), "--lr_warmup_steps", str(min(500, steps // 5)),
        "--sample_every_steps", "0", "--checkpointing_steps", str(10 * steps),
        "--mixed_precision", "bf16" if device.type == "cuda" else "no",
    ]  # fmt: skip
    start = time.perf_counter()
    train(parse_training_config(recipe))
    trained_s = time.perf_counter() - start
    log(f"scale check: {steps} steps of {sizes.train_preset} in {trained_s:.0f} s")
    report = exam(work / "scale_run" / "pipeline", work / "mock", work / "exam" / "float32", sizes.exam_galaxies,
                  sizes.exam_steps, "float32", device)  # fmt: skip
    results["scale_check"] = {
        "mock_galaxies": sizes.mock_galaxies, "mock_seconds": mock_s, "cpu_cores": os.cpu_count(),
        "preset": sizes.train_preset, "recipe": "standard", "train_steps": steps,
        "train_batch_size": sizes.train_batch_size, "train_seconds": trained_s,
        "images_seen": steps * sizes.train_batch_size, "exam": exam_summary(report),
    }  # fmt: skip
    return ""


def stage_catalogue(sizes: Sizes, device: torch.device, budget: Budget, results: dict, work: Path) -> str:
    """``generate_to_files`` into a sharded HF dataset at the test split's redshifts (DPM-Solver++ 10), timed."""
    trained = work / "scale_run" / "pipeline"
    if trained.is_dir():
        pipe, model = GalaxyRedshiftPipeline.from_pretrained(trained).to(device), "scale_check model"
    else:
        pipe, model = random_pipeline(sizes.presets[0], sizes.image_side, device), f"random {sizes.presets[0]}"
    z_min, z_max = pipe.unet.config.redshift_min, pipe.unet.config.redshift_max
    redshifts = np.random.default_rng(0).uniform(z_min, z_max, sizes.catalogue_galaxies)
    name, steps = sizes.samplers[-1]
    start = time.perf_counter()
    generate_to_files(
        pipe, redshifts, n_per_redshift=1, seed=0, out_dir=work / "catalogue", formats=("hf",), scheduler=name,
        steps=steps, batch_size=max(sizes.batch_sizes), shard_size=max(sizes.batch_sizes) * 4, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    results["catalogue"] = {
        "model": model, "n_galaxies": int(redshifts.size), "sampler": name, "steps": steps, "seconds": seconds,
        "galaxies_per_s": redshifts.size / seconds, "ms_per_galaxy": 1e3 * seconds / redshifts.size,
        "processes": 1, "format": "hf",
    }  # fmt: skip
    log(f"catalogue: {redshifts.size} galaxies in {seconds:.1f} s")
    return ""


def stage_bf16_fidelity(sizes: Sizes, device: torch.device, budget: Budget, results: dict, work: Path) -> str:
    """The scale check's exam again with the UNet in bfloat16, same seeds (``benchmarks/bf16_fidelity.py``)."""
    if "scale_check" not in results:
        return "no scale_check model to compare"
    model, data = work / "scale_run" / "pipeline", work / "mock"
    bf16 = exam_summary(exam(model, data, work / "exam" / "bfloat16", sizes.exam_galaxies, sizes.exam_steps,
                             "bfloat16", device))  # fmt: skip
    fp32 = results["scale_check"]["exam"]
    results["bf16_fidelity"] = compare(fp32, bf16, work / "exam" / "float32", work / "exam" / "bfloat16")
    return ""


STAGES: dict[str, Callable] = {
    "sampling": stage_sampling,
    "mfu": stage_mfu,
    "training": stage_training,
    "scale_check": stage_scale_check,
    "catalogue": stage_catalogue,
    "bf16_fidelity": stage_bf16_fidelity,
}


def write_outputs(results: dict, out: Path) -> None:
    """``gpu_suite.json`` (every figure, units in the field names) and ``gpu_suite.md`` (the tables)."""
    for name, text in (("gpu_suite.json", json.dumps(results, indent=2, default=float) + "\n"),
                       ("gpu_suite.md", render_markdown(results))):  # fmt: skip
        atomic_write(out / name, lambda temporary, text=text: temporary.write_text(text, encoding="utf-8"))


def _cell(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def render_markdown(results: dict) -> str:
    suite = results["suite"]
    lines = [
        f"# GPU suite: {suite['device']}, {suite['date']}",
        "",
        f"`{suite['command']}`; galaxy_pipeline {suite['version']}, torch {suite['torch']}; budget "
        f"{suite['budget_s']:g} s, used {_cell(suite.get('elapsed_s'))} s.",
        "",
        "| stage | status | seconds | note |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {stage['status']} | {_cell(stage.get('seconds'))} | {stage.get('note', '')} |"
        for name, stage in results["stages"].items()
    ]
    end_to_end = results.get("sampling_end_to_end", [])
    if end_to_end:
        lines += ["", "## Sampling, end to end", "", "| preset | sampler | batch | dtype | channels_last | compile | "
                  "ms/galaxy | galaxies/s | peak MiB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines += [
            f"| {r['preset']} | {r['sampler']} {r['steps']} | {r['batch_size']} | {r['dtype']} | {r['channels_last']} "
            f"| {r['compile']} | {_cell(r['ms_per_galaxy'])} | {_cell(r['galaxies_per_s'])} | "
            f"{_cell(r['peak_memory_mib'])} |"
            for r in end_to_end
        ]
    if results.get("sampling"):
        names = list(results["sampling"][0].get("samplers", {}))
        lines += ["", "## UNet forward passes (ms/galaxy = steps x forward / batch)", "",
                  "| preset | batch | dtype | channels_last | compile | forward ms | "
                  + " | ".join(f"{n} ms/galaxy" for n in names) + " | peak MiB |",
                  "|---|---|---|---|---|---|" + "---|" * len(names) + "---|"]  # fmt: skip
        for r in results["sampling"]:
            per = [_cell(r.get("samplers", {}).get(n, {}).get("ms_per_galaxy")) for n in names]
            lines.append(
                f"| {r['preset']} | {r['batch_size']} | {r['dtype']} | {r['channels_last']} | {r['compile']} | "
                f"{_cell(r.get('forward_ms'))} | " + " | ".join(per) + f" | {_cell(r.get('peak_memory_mib'))} |"
            )
    for key, title in (("training", "Training throughput"), ("scale_check", "Scale check"),
                       ("catalogue", "Catalogue generation"), ("bf16_fidelity", "bf16 against fp32")):  # fmt: skip
        if key in results:
            lines += ["", f"## {title}", "", "```json", json.dumps(results[key], indent=1, default=float)[:4000], "```"]
    if "mfu" in results:
        lines += [
            "",
            "## MFU",
            "",
            f"Peak: {results['mfu']['peak_entry']}.",
            "",
            "| preset | batch | GFLOP/forward | forward ms | TFLOP/s | MFU |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['preset']} | {r['batch_size']} | {r['flops_per_forward'] / 1e9:.3g} | {r['forward_ms']:.3g} | "
            f"{r['achieved_tflops']:.3g} | {_cell(r['mfu'])} |"
            for r in results["mfu"]["rows"]
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--budget-s", type=float, default=500.0, help="seconds for all stages (default 500)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every stage in seconds on a CPU")
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="stages to run")
    args = parser.parse_args()
    if args.budget_s <= 0:
        print(f"gpu_suite: error: --budget-s must be positive; got {args.budget_s}.", file=sys.stderr)
        return 2
    out = Path(args.out)
    if (out / "gpu_suite.json").exists():
        print(f"gpu_suite: error: {out / 'gpu_suite.json'} exists: choose a new --out folder.", file=sys.stderr)
        return 2
    sizes = Sizes.smoke() if args.smoke else Sizes()
    diffusers_logging.set_verbosity_error()  # each .to(bfloat16) of a random UNet warns about float32 modules
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    budget = Budget(args.budget_s)
    results: dict = {
        "suite": {
            "version": __version__, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["python", *sys.argv]), "smoke": args.smoke, "budget_s": args.budget_s,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count(),
        },
        "stages": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as work:
        for name in STAGES:
            if name not in args.stages:
                results["stages"][name] = {"status": "skipped", "seconds": 0.0, "note": "not in --stages"}
                continue
            seconds = budget.open_stage(name)
            if seconds < (1.0 if args.smoke else 10.0):
                results["stages"][name] = {"status": "skipped", "seconds": 0.0, "note": "no time left in --budget-s"}
                continue
            log(f"stage {name}: up to {seconds:.0f} s")
            start = time.perf_counter()
            try:
                note = STAGES[name](sizes, device, budget, results, Path(work))
                status = "partial" if note and "not timed" in note else "done"
            except Exception as error:  # a failed stage is reported, and the next ones still run
                note, status = f"{type(error).__name__}: {error}"[:500], "failed"
                log(f"stage {name} failed: {note}")
            results["stages"][name] = {"status": status, "seconds": time.perf_counter() - start, "note": note}
            results["suite"]["elapsed_s"] = budget.elapsed()
            write_outputs(results, out)
    results["suite"]["elapsed_s"] = budget.elapsed()
    write_outputs(results, out)
    log(f"wrote {out / 'gpu_suite.json'} and gpu_suite.md in {budget.elapsed():.0f} s")
    return 0 if all(stage["status"] != "failed" for stage in results["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
