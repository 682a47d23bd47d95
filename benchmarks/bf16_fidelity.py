"""bf16 against fp32 sampling on one trained model and the same seeds: does bfloat16 keep the exam's numbers?

    python benchmarks/bf16_fidelity.py --model runs/qs_s0/pipeline \\
        --data ~/.cache/galaxy_pipeline/mock/mock-n4000-seed0 --n 200 --out bf16_exam

Runs the exam (``evaluate_pipeline``: DDIM, the scorecard, no predictor) twice, with the UNet's weights in
float32 and in bfloat16 (the sampler's arithmetic stays float32), on the first ``--n`` test galaxies with the
same seeds; the real galaxies are measured once. Compared: every scorecard cell's generated median (the
difference in units of the cell's tolerance), the passing cells, and the images themselves (median i-band
flux ratio bf16/fp32, pixel RMS difference over the fp32 pixel RMS). bf16 is supported when no generated
median of a cell the scorecard judges (>= 30 real galaxies) moves by more than half its tolerance; the
largest shift over all cells is reported beside it (medians of a few galaxies move with any perturbation).
Writes ``bf16_fidelity.json`` and ``bf16_fidelity.md``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from galaxy_pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.data.loading import load_split
from galaxy_pipeline.evaluation.evaluate import evaluate_pipeline

SUPPORT_SHIFT = 0.5
"""bf16 is supported when every judged cell's generated median moves by at most this fraction of its tolerance."""


def exam(model: Path, data: Path, out: Path, n: int, steps: int, dtype: str, device: str | torch.device) -> dict:
    """The exam of a saved pipeline with its UNet in ``dtype`` (DDIM ``steps``, the scorecard; no predictor).

    The real galaxies' measurements are cached in ``out.parent / "real"``, shared by both dtypes.
    """
    pipe = GalaxyRedshiftPipeline.from_pretrained(model, dtype=getattr(torch, dtype)).to(device)
    return evaluate_pipeline(
        pipe, load_split(data, "test"), out, n=n, scheduler="ddim", num_inference_steps=steps, batch_size=64,
        morphology_workers=os.cpu_count() or 1, n_permutations=200, n_bootstrap=200, figures=False,
        progress=False, real_cache=out.parent / "real",
    )  # fmt: skip


def exam_summary(report: dict) -> dict:
    """Passing cells, failing cells, every cell's generated median, and the tolerances of an exam report."""
    card = report["scorecard"]
    medians = {
        f"{cell['quantity']} {cell['z_min']:g}-{cell['z_max']:g}": cell["generated_median"]
        for cell in card["cells"]
        if cell.get("generated_median") is not None
    }
    judged = [
        f"{cell['quantity']} {cell['z_min']:g}-{cell['z_max']:g}"
        for cell in card["cells"]
        if cell["n_real"] >= card["min_real"]
    ]
    return {
        "n": report["counts"]["n_generated"], "cells_passed": card["n_pass"], "cells_judged": card["n_judged"],
        "failing": card["failing"], "generated_medians": medians, "tolerances": card["tolerances"], "judged": judged,
    }  # fmt: skip


def generated_images(exam_dir: Path) -> np.ndarray:
    """The generated fluxes (n, 5, H, W) an exam cached, in row order."""
    files = sorted((exam_dir / "generated").glob("rows_*.npz"))
    return np.concatenate([np.load(path)["images"] for path in files])


def compare(fp32: dict, bf16: dict, fp32_dir: Path, bf16_dir: Path) -> dict:
    """Median shifts in tolerance units, passing cells, and image-level differences of two exams."""
    differences, shifts = {}, {}
    for key in sorted(fp32["generated_medians"].keys() & bf16["generated_medians"].keys()):
        kind, tolerance = bf16["tolerances"][key.split(" ")[0]]
        reference = fp32["generated_medians"][key]
        differences[key] = bf16["generated_medians"][key] - reference
        shifts[key] = abs(differences[key]) / (tolerance * (abs(reference) if kind == "relative" else 1.0))
    judged = {key: shift for key, shift in shifts.items() if key in bf16["judged"]}
    worst = max(judged, key=judged.get) if judged else None
    worst_any = max(shifts, key=shifts.get) if shifts else None
    images = {"fp32": generated_images(fp32_dir), "bf16": generated_images(bf16_dir)}
    flux = {name: value[:, 2].sum(axis=(-2, -1)) for name, value in images.items()}
    ratio = flux["bf16"] / np.where(flux["fp32"] == 0, np.nan, flux["fp32"])
    rms = np.sqrt(np.mean((images["bf16"] - images["fp32"]) ** 2) / np.mean(images["fp32"] ** 2))
    return {
        "n": bf16["n"], "fp32_cells_passed": fp32["cells_passed"], "bf16_cells_passed": bf16["cells_passed"],
        "cells_judged": bf16["cells_judged"], "median_differences_bf16_minus_fp32": differences,
        "shifts_in_tolerances": shifts, "largest_shift_in_tolerances": shifts.get(worst),
        "largest_shift_cell": worst, "largest_shift_any_cell_in_tolerances": shifts.get(worst_any),
        "largest_shift_any_cell": worst_any, "median_i_flux_ratio_bf16_to_fp32": float(np.nanmedian(ratio)),
        "pixel_rms_difference_over_rms": float(rms),
        "bf16_supported": worst is not None and shifts[worst] <= SUPPORT_SHIFT,
        "rule": f"bf16 is supported when no generated median of a judged cell (>= 30 real galaxies) moves by more "
        f"than {SUPPORT_SHIFT:g} of its tolerance",
    }  # fmt: skip


def render_markdown(result: dict, command: str) -> str:
    lines = [
        "# bf16 against fp32 sampling", "", f"`{command}`", "",
        f"{result['n']} galaxies, same seeds. Passing cells: fp32 {result['fp32_cells_passed']}, bf16 "
        f"{result['bf16_cells_passed']} of {result['cells_judged']}. Median i-band flux ratio bf16/fp32 "
        f"{result['median_i_flux_ratio_bf16_to_fp32']:.4f}; pixel RMS difference / RMS "
        f"{result['pixel_rms_difference_over_rms']:.4f}. Largest median shift: "
        f"{result['largest_shift_in_tolerances'] or 0:.2f} tolerances in a judged cell "
        f"({result['largest_shift_cell']}), "
        f"{result['largest_shift_any_cell_in_tolerances'] or 0:.2f} in any cell ({result['largest_shift_any_cell']}). "
        f"**bf16 {'supported' if result['bf16_supported'] else 'not supported'}** ({result['rule']}).",
        "", "| cell | bf16 - fp32 median | shift / tolerance |", "|---|---|---|",
    ]  # fmt: skip
    lines += [
        f"| {key} | {value:+.4g} | {result['shifts_in_tolerances'][key]:.2f} |"
        for key, value in result["median_differences_bf16_minus_fp32"].items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="saved pipeline folder")
    parser.add_argument("--data", required=True, type=Path, help="converted dataset folder (its test split)")
    parser.add_argument("--n", type=int, default=200, help="test galaxies (default 200)")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    args = parser.parse_args()
    args.data = args.data.expanduser()
    summaries = {
        dtype: exam_summary(exam(args.model, args.data, args.out / dtype, args.n, args.steps, dtype, args.device))
        for dtype in ("float32", "bfloat16")
    }
    result = compare(summaries["float32"], summaries["bfloat16"], args.out / "float32", args.out / "bfloat16")
    result["exams"] = summaries
    (args.out / "bf16_fidelity.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    command = f"python benchmarks/bf16_fidelity.py --model {args.model} --data {args.data} --n {args.n}"
    (args.out / "bf16_fidelity.md").write_text(render_markdown(result, command), encoding="utf-8")
    print(render_markdown(result, command))


if __name__ == "__main__":
    main()
