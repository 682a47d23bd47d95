"""Train the :class:`~galaxy_pipeline.evaluation.redshift_model.RedshiftPredictor` with Accelerate.

Reads a converted dataset (``datasets.DatasetDict`` saved with ``save_to_disk``; splits
``train`` and ``test``, columns ``image`` float32 (5, 64, 64) fluxes and ``redshift``), fits the
model's input stretch on a sample of training images, trains with AdamW, a cosine learning rate
with warm-up and random flips / 90-degree rotations, then saves the model with
``save_pretrained`` and writes photo-z metrics of the evaluation split (overall and per redshift
bin) to ``<output_dir>/<split>_metrics.json``. Works single- and multi-process::

    accelerate launch train_scripts/train_redshift_predictor.py --dataset DIR --output_dir OUT
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from astropy.table import Table
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_cosine_schedule_with_warmup

from galaxy_pipeline.data.loading import fit_flux_transform, random_dihedral
from galaxy_pipeline.evaluation.photoz_metrics import photoz_metrics, photoz_metrics_by_bin
from galaxy_pipeline.evaluation.redshift_model import RedshiftPredictor, RedshiftPredictorConfig
from galaxy_pipeline.evaluation.statistics import REDSHIFT_BIN_EDGES

COLUMNS = ["image", "redshift"]


@dataclass
class PredictorTrainingArguments:
    """Command-line arguments of the redshift-predictor training."""

    dataset: str = field(metadata={"help": "Folder of a converted dataset (DatasetDict.save_to_disk)."})
    output_dir: str = field(metadata={"help": "Where the model, metrics and TensorBoard logs are written."})
    size: Literal["small", "tiny"] = field(default="small", metadata={"help": "Predictor size preset."})
    loss_type: Literal["hsc", "huber"] = field(
        default="hsc", metadata={"help": "HSC photo-z loss on z, or Huber loss on log(1+z)."}
    )
    max_steps: int = field(default=20_000, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=128, metadata={"help": "Training cutouts per step and process."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=500, metadata={"help": "Linear warm-up steps before the cosine decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    stretch_sample_size: int = field(
        default=4096, metadata={"help": "Training images used to fit the per-band arcsinh input stretch."}
    )
    eval_split: str = field(default="test", metadata={"help": "Split on which the final metrics are computed."})
    eval_batch_size: int = field(default=256, metadata={"help": "Cutouts per evaluation batch and process."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    log_every: int = field(default=50, metadata={"help": "Steps between TensorBoard loss points."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow writing into a non-empty folder."})


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and spectroscopic redshifts of every row of ``loader``, gathered over processes."""
    model.eval()
    predicted, true = [], []
    for batch in tqdm(loader, desc="evaluating", disable=not accelerator.is_local_main_process):
        redshift = model(pixel_values=batch["image"]).redshift
        gathered_pred, gathered_true = accelerator.gather_for_metrics((redshift, batch["redshift"]))
        predicted.append(gathered_pred.float().cpu().numpy())
        true.append(gathered_true.float().cpu().numpy())
    return np.concatenate(predicted), np.concatenate(true)


def train_predictor(args: PredictorTrainingArguments) -> dict:
    """Train, save the model to ``args.output_dir`` and return the metrics written to ``<split>_metrics.json``.

    Phases: check the inputs, build the model and its optimizer, train for ``max_steps``, evaluate on
    ``eval_split``, save.
    """
    output_dir = Path(args.output_dir)
    dataset = _load_checked_dataset(args, output_dir)
    accelerator = Accelerator(
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    set_seed(args.seed)
    model, optimizer, scheduler = _model_and_optimizer(args, dataset["train"], accelerator.num_processes)
    train_loader = DataLoader(
        dataset["train"].with_format("torch", columns=COLUMNS),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(dataset["train"]) >= args.batch_size,
        num_workers=args.num_workers,
    )
    eval_loader = DataLoader(
        dataset[args.eval_split].with_format("torch", columns=COLUMNS),
        batch_size=args.eval_batch_size,
        num_workers=args.num_workers,
    )
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    accelerator.init_trackers("redshift_predictor", config=asdict(args))
    step = _train_loop(args, model, optimizer, scheduler, train_loader, accelerator)

    z_pred, z_spec = evaluate(model, eval_loader, accelerator)
    metrics = {
        "split": args.eval_split,
        "steps": step,
        "overall": photoz_metrics(z_pred, z_spec),
        "by_redshift_bin": photoz_metrics_by_bin(z_pred, z_spec, REDSHIFT_BIN_EDGES),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(output_dir)
        (output_dir / "training_args.json").write_text(json.dumps(asdict(args), indent=2))
        (output_dir / f"{args.eval_split}_metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2))
        np.savez(output_dir / f"{args.eval_split}_predictions.npz", z_pred=z_pred, z_spec=z_spec)
        print(format_metrics(metrics))
    accelerator.end_training()
    return metrics


def _load_checked_dataset(args: PredictorTrainingArguments, output_dir: Path) -> datasets.DatasetDict:
    """The converted dataset, once the output folder, the splits and their columns are checked."""
    if output_dir.is_dir() and any(output_dir.iterdir()) and not args.overwrite_output_dir:
        raise FileExistsError(f"{output_dir} is not empty; pick a new --output_dir or pass --overwrite_output_dir.")
    if not Path(args.dataset).is_dir():
        raise FileNotFoundError(f"No converted dataset at {args.dataset}; pass the folder written by save_to_disk.")
    dataset = datasets.load_from_disk(args.dataset)
    for split in ("train", args.eval_split):
        if split not in dataset:
            raise ValueError(f"{args.dataset} has no split {split!r} (it has {sorted(dataset)}).")
        missing = set(COLUMNS) - set(dataset[split].column_names)
        if missing:
            raise ValueError(f"Split {split!r} of {args.dataset} lacks columns {sorted(missing)}.")
    return dataset


def _model_and_optimizer(args: PredictorTrainingArguments, train: datasets.Dataset, num_processes: int):
    """The predictor (its stretch fitted on ``train``), AdamW, and the cosine schedule with warm-up."""
    redshifts = np.asarray(train.select_columns(["redshift"]).with_format("numpy")["redshift"], dtype=np.float64)
    config = RedshiftPredictorConfig.from_preset(
        args.size,
        flux_transform=fit_flux_transform(train, max_images=args.stretch_sample_size, seed=args.seed),
        redshift_min=min(0.0, float(redshifts.min())),
        redshift_max=float(redshifts.max()),
        loss_type=args.loss_type,
    )
    model = RedshiftPredictor(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    # The prepared scheduler steps once per process on every optimizer step.
    scheduler = get_cosine_schedule_with_warmup(
        optimizer,
        num_warmup_steps=min(args.warmup_steps, args.max_steps) * num_processes,
        num_training_steps=args.max_steps * num_processes,
    )
    return model, optimizer, scheduler


def _train_loop(args, model, optimizer, scheduler, train_loader, accelerator: Accelerator) -> int:
    """``max_steps`` optimizer steps over random dihedral views of the training images; returns the steps run."""
    generator = torch.Generator().manual_seed(args.seed + accelerator.process_index)
    progress = tqdm(total=args.max_steps, desc="training", disable=not accelerator.is_local_main_process)
    step = 0
    while step < args.max_steps:
        model.train()
        for batch in train_loader:
            loss = model(pixel_values=random_dihedral(batch["image"], generator), redshifts=batch["redshift"]).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            progress.update(1)
            if step % args.log_every == 0 or step == args.max_steps:
                mean_loss = accelerator.reduce(loss.detach(), reduction="mean").item()
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0]}, step=step)
            if step >= args.max_steps:
                break
    progress.close()
    return step


def format_metrics(metrics: dict) -> str:
    """A printable summary of photo-z metrics as returned by :func:`train_predictor`: overall, then per bin."""
    overall = metrics["overall"]
    table = Table(rows=metrics["by_redshift_bin"])
    for name in ("bias", "sigma_mad", "outlier_rate", "loss"):
        table[name].format = ".4f"
    return "\n".join(
        [
            f"Photo-z metrics on the {metrics['split']} split after {metrics['steps']} steps: N={overall['n']} "
            f"bias={overall['bias']:+.4f} sigma_MAD={overall['sigma_mad']:.4f} "
            f"outlier rate={overall['outlier_rate']:.4f} loss={overall['loss']:.4f}",
            *table.pformat(max_lines=-1, max_width=-1),
        ]
    )


def _json_safe(value):
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (default: ``sys.argv``) into :class:`PredictorTrainingArguments` and train."""
    (args,) = HfArgumentParser(PredictorTrainingArguments).parse_args_into_dataclasses(args=argv)
    return train_predictor(args)
