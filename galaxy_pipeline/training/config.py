"""Training configuration: one plain dataclass, presets, and the command-line/YAML parser.

Every field is a command-line flag (``--learning_rate 1e-4``) through
``transformers.HfArgumentParser``. Values are resolved in this order, later winning:
dataclass defaults < preset < ``--config file.yaml|json`` < explicit flags. The preset is
``--preset`` if given, else the file's ``preset:`` key (``configs/paper.yaml`` holds ``preset: paper``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml
from transformers import HfArgumentParser

from galaxy_pipeline.data.mock_population import DEFAULT_POPULATION, POPULATIONS
from galaxy_pipeline.hub_ids import check_repo_id
from galaxy_pipeline.normalization import CHANNEL_BASES
from galaxy_pipeline.unet import UNET_PRESETS

LOSSES = ("huber", "mse")
PREDICTION_TYPES = ("epsilon", "v_prediction")
MIXED_PRECISIONS = ("no", "bf16", "fp16")

PRESETS: dict[str, dict] = {
    # The seed paper's recipe on a converted GalaxiesML dataset (`galaxy-pipeline data convert`).
    "paper": dict(
        unet_preset="paper",
        train_batch_size=64,
        max_train_steps=300_000,
        learning_rate=2e-5,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=1000,
        loss="huber",
        max_grad_norm=1.0,
        redshift_noise_std=0.01,
        use_ema=True,
        ema_max_decay=0.9999,
        mixed_precision="bf16",
        checkpointing_steps=5000,
        sample_every_steps=5000,
        output_dir="outputs/paper",
    ),
    # A small UNet on the GalSim mock (made and converted automatically), ~9 minutes on 2 CPU cores.
    # Beyond the paper, for a short CPU budget: velocity targets (the paper's noise targets leave
    # DDIM samples noisy after thousands of steps), the colour basis in model space (colours evolve
    # with redshift only with it; docs/colour_basis.md) and redshift dropout, so that classifier-free
    # guidance can be measured on it.
    "quickstart": dict(
        unet_preset="quickstart",
        dataset_dir=None,
        mock_galaxies=4000,
        train_batch_size=16,
        max_train_steps=1500,
        learning_rate=1e-3,
        lr_scheduler="cosine",
        lr_warmup_steps=100,
        loss="huber",
        prediction_type="v_prediction",
        flux_channel_basis="colour",
        redshift_dropout=0.1,
        ema_max_decay=0.999,
        augment=True,
        checkpointing_steps=250,
        checkpoints_total_limit=2,
        sample_every_steps=500,
        sample_inference_steps=50,
        output_dir="outputs/quickstart",
    ),
}
# The quickstart's recipe with a 1.5x wider network, a 20,000-galaxy mock and 4,000 steps of 32 images:
# under an hour on 2 CPU cores.
PRESETS["standard"] = {
    **PRESETS["quickstart"],
    "unet_preset": "standard",
    "mock_galaxies": 20000,
    "train_batch_size": 32,
    "max_train_steps": 4000,
    "lr_warmup_steps": 200,
    "checkpointing_steps": 500,
    "sample_every_steps": 1000,
    "output_dir": "outputs/standard",
}


@dataclass
class TrainingConfig:
    """Everything a training run needs; saved as ``training_config.json`` beside the exported pipeline."""

    # Data
    dataset_dir: str | None = field(
        default=None,
        metadata={"help": "Converted dataset folder (`galaxy-pipeline data convert`). None: use the GalSim mock."},
    )
    train_split: str = field(default="train", metadata={"help": "Split of the dataset to train on."})
    mock_galaxies: int = field(default=4000, metadata={"help": "Galaxies in the mock made when dataset_dir is None."})
    mock_population: str = field(
        default=DEFAULT_POPULATION,
        metadata={"help": f"Galaxy population of that mock: {sorted(POPULATIONS)} (docs/data.md)."},
    )
    mock_cache_dir: str = field(
        default="~/.cache/galaxy_pipeline/mock",
        metadata={"help": "Where the mock is generated and converted once, then reused."},
    )
    augment: bool = field(default=True, metadata={"help": "Random flips and 90-degree rotations."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    dataset_in_memory_gb: float = field(
        default=2.0,
        metadata={
            "help": "Read and flux-transform the training split once into memory when it takes at most this many "
            "GB as float32 (4000 galaxies: 0.33 GB; 0 = never). Batches then cost nothing to read."
        },
    )
    redshift_balance: float = field(
        default=0.0,
        metadata={
            "help": "Exponent (0-1) of redshift-balanced epochs: a galaxy in a 0.25-wide redshift bin of n galaxies "
            "repeats round((n_max / n) ** exponent) times, at most 4; 0 = every galaxy once (the paper)."
        },
    )
    flux_fit_images: int = field(default=2048, metadata={"help": "Images used to fit the flux transform."})
    flux_channel_basis: str = field(
        default="bands",
        metadata={
            "help": f"Model-space channels {CHANNEL_BASES}: 'bands' one per stretched band (the paper); 'colour' "
            "0.2 x their sum and 2 x each adjacent difference (g-r, r-i, i-z, z-y), exactly inverted on output."
        },
    )

    flux_softening: float = field(
        default=1.0,
        metadata={
            "help": "Softening of the arcsinh stretch in units of each band's sky noise sigma: linear below it, "
            "logarithmic above (docs/colour_basis.md)."
        },
    )
    flux_colour_weights: list[float] = field(
        default_factory=lambda: [0.2, 2.0],
        metadata={
            "help": "With flux_channel_basis 'colour': the weight of the summed bands (luminosity) and of each "
            "adjacent-band difference (colours), both dimensionless (docs/colour_basis.md)."
        },
    )

    # Model and noise schedule
    unet_preset: str = field(default="quickstart", metadata={"help": f"UNet preset: {sorted(UNET_PRESETS)}."})
    num_train_timesteps: int = field(default=1000, metadata={"help": "DDPM diffusion steps."})
    beta_start: float = field(default=1e-4, metadata={"help": "First beta of the linear DDPM schedule."})
    beta_end: float = field(default=0.02, metadata={"help": "Last beta of the linear DDPM schedule."})
    redshift_noise_std: float = field(
        default=0.01, metadata={"help": "Std of Gaussian noise added to z in training (clamped at z=0)."}
    )

    redshift_dropout: float = field(
        default=0.0,
        metadata={"help": "Fraction of images trained without redshift (learned null embedding), for guidance."},
    )

    # Optimisation
    train_batch_size: int = field(default=16, metadata={"help": "Images per device per step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_train_steps: int = field(default=1500, metadata={"help": "Optimizer steps in total."})
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW peak learning rate."})
    lr_scheduler: str = field(default="constant_with_warmup", metadata={"help": "diffusers get_scheduler name."})
    lr_warmup_steps: int = field(default=500, metadata={"help": "Linear warm-up steps."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    loss: str = field(default="huber", metadata={"help": f"Noise-prediction loss: {LOSSES}."})
    prediction_type: str = field(
        default="epsilon",
        metadata={"help": f"What the network predicts: {PREDICTION_TYPES} (the paper: epsilon)."},
    )
    snr_gamma: float | None = field(
        default=None,
        metadata={"help": "Min-SNR loss weighting gamma (e.g. 5); None: unweighted, as in the paper."},
    )
    use_ema: bool = field(default=True, metadata={"help": "Keep an EMA of the weights; the export uses it."})
    ema_max_decay: float = field(default=0.9999, metadata={"help": "EMA decay after warm-up."})
    ema_inv_gamma: float = field(default=1.0, metadata={"help": "EMA warm-up inverse multiplicative factor."})
    ema_power: float = field(default=0.75, metadata={"help": "EMA warm-up exponential factor."})
    seed: int = field(default=0, metadata={"help": "Seed of weights, data order, noise."})

    # Speed
    mixed_precision: str = field(default="no", metadata={"help": f"Accelerate mixed precision: {MIXED_PRECISIONS}."})
    channels_last: bool = field(default=False, metadata={"help": "channels_last memory format (GPU speed-up)."})
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the UNet."})
    allow_tf32: bool = field(default=True, metadata={"help": "TF32 matmuls on Ampere+ GPUs."})
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "Torch threads per process when training on CPU; default: the CPUs available to this process "
            "divided by the processes on this machine (`accelerate launch` alone would leave 1)."
        },
    )

    # Output, logging, checkpoints
    output_dir: str = field(default="outputs/run", metadata={"help": "Checkpoints, logs, samples and the pipeline."})
    logging_steps: int = field(default=10, metadata={"help": "Steps between TensorBoard scalars."})
    checkpointing_steps: int = field(default=500, metadata={"help": "Steps between checkpoints."})
    checkpoints_total_limit: int | None = field(default=3, metadata={"help": "Checkpoints kept (oldest removed)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder to resume from."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start afresh in an output_dir that holds an earlier run: its checkpoints, logs, samples, "
            "pipeline and flux transform are deleted first. Without it (or --resume_from_checkpoint) a non-empty "
            "output_dir is refused."
        },
    )
    sample_every_steps: int = field(default=500, metadata={"help": "Steps between EMA sample grids (0: never)."})
    sample_redshifts: list[float] = field(
        default_factory=lambda: [0.1, 0.5, 1.0, 2.0, 3.0], metadata={"help": "Redshifts of the sample grid."}
    )
    sample_images_per_redshift: int = field(default=4, metadata={"help": "Sample-grid columns."})
    sample_inference_steps: int = field(default=100, metadata={"help": "DDIM steps for sample grids."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the exported pipeline at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for --push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self) -> None:
        problems = []
        if self.unet_preset not in UNET_PRESETS:
            problems.append(f"unet_preset={self.unet_preset!r} is not one of {sorted(UNET_PRESETS)}")
        if self.mock_population not in POPULATIONS:
            problems.append(f"mock_population={self.mock_population!r} is not one of {sorted(POPULATIONS)}")
        if self.flux_channel_basis not in CHANNEL_BASES:
            problems.append(f"flux_channel_basis={self.flux_channel_basis!r} is not one of {CHANNEL_BASES}")
        if not 0 <= self.redshift_balance <= 1:
            problems.append(f"redshift_balance={self.redshift_balance} must be in [0, 1]")
        if not (np.isfinite(self.flux_softening) and self.flux_softening > 0):
            problems.append(f"flux_softening={self.flux_softening} must be a positive number of sky noise sigmas")
        weights = self.flux_colour_weights
        if len(weights) != 2 or not all(np.isfinite(w) and w != 0 for w in weights):
            problems.append(f"flux_colour_weights={weights} must be two finite, non-zero numbers")
        if self.loss not in LOSSES:
            problems.append(f"loss={self.loss!r} is not one of {LOSSES}")
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type={self.prediction_type!r} is not one of {PREDICTION_TYPES}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            problems.append(f"cpu_threads={self.cpu_threads} must be >= 1 (or None for all available)")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            problems.append(f"snr_gamma={self.snr_gamma} must be > 0 (or None for no weighting)")
        if self.mixed_precision not in MIXED_PRECISIONS:
            problems.append(f"mixed_precision={self.mixed_precision!r} is not one of {MIXED_PRECISIONS}")
        positive = (
            "train_batch_size",
            "gradient_accumulation_steps",
            "max_train_steps",
            "learning_rate",
            "num_train_timesteps",
            "logging_steps",
            "checkpointing_steps",
            "max_grad_norm",
            "mock_galaxies",
            "flux_fit_images",
            "sample_images_per_redshift",
            "sample_inference_steps",
        )
        problems += [f"{name}={getattr(self, name)} must be > 0" for name in positive if not getattr(self, name) > 0]
        non_negative = (
            "lr_warmup_steps",
            "redshift_noise_std",
            "sample_every_steps",
            "dataloader_num_workers",
            "dataset_in_memory_gb",
        )
        problems += [f"{name}={getattr(self, name)} must be >= 0" for name in non_negative if getattr(self, name) < 0]
        if not 0 < self.beta_start < self.beta_end < 1:
            problems.append(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if not 0 <= self.redshift_dropout < 1:
            problems.append(f"redshift_dropout={self.redshift_dropout} must be in [0, 1)")
        if not 0 <= self.ema_max_decay < 1:
            problems.append(f"ema_max_decay={self.ema_max_decay} must be in [0, 1)")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            problems.append(f"checkpoints_total_limit={self.checkpoints_total_limit} must be >= 1 or None")
        if self.overwrite_output_dir and self.resume_from_checkpoint is not None:
            problems.append("overwrite_output_dir and resume_from_checkpoint exclude each other: choose one")
        if self.push_to_hub and not self.hub_model_id:
            problems.append("push_to_hub needs hub_model_id (e.g. --hub_model_id user/galaxy-ddpm)")
        if self.push_to_hub and self.hub_model_id:
            try:
                check_repo_id(self.hub_model_id, "hub_model_id")
            except ValueError as error:
                problems.append(str(error).rstrip("."))
        if problems:
            raise ValueError("Invalid training configuration: " + "; ".join(problems) + ".")

    def to_json(self, path: Path) -> None:
        """Write the configuration as JSON (the file the model card renders)."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def parse_training_config(argv: list[str] | None = None) -> TrainingConfig:
    """Parse ``--preset``, ``--config`` and per-field flags into a validated :class:`TrainingConfig`."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", choices=sorted(PRESETS))
    first.add_argument("--config", type=Path)
    known, _ = first.parse_known_args(argv)

    parser = HfArgumentParser(TrainingConfig, description="Train a redshift-conditioned galaxy DDPM.")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="Start from a named recipe.")
    parser.add_argument("--config", type=Path, help="YAML or JSON file of field values (flags override it).")
    file_values = _read_config_file(known.config) if known.config else {}
    preset = known.preset or file_values.get("preset")
    defaults = {**PRESETS.get(preset, {}), **{key: value for key, value in file_values.items() if key != "preset"}}
    parser.set_defaults(**defaults)
    config, _preset_and_file = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return config


def _read_config_file(path: Path) -> dict:
    """Field values (and an optional ``preset``) from a YAML or JSON file; ValueError names the problem."""
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"Config file {path} is not valid JSON (line {error.lineno}: {error.msg}); fix it.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise ValueError(f"Config file {path} is not valid YAML ({where}{problem}); fix it.") from None
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of field names to values.")
    known_fields = {f.name for f in fields(TrainingConfig)}
    unknown = sorted(set(values) - known_fields - {"preset"})
    if unknown:
        raise ValueError(f"Config file {path} has unknown fields {unknown}; see `train.py --help` for valid ones.")
    if "preset" in values and values["preset"] not in PRESETS:
        raise ValueError(f"Config file {path} names preset {values['preset']!r}; choose one of {sorted(PRESETS)}.")
    return values
