"""The training loop: Accelerate + diffusers DDPM + EMA, checkpoints that survive SIGKILL, export.

``train(config)`` reads top to bottom: data, model, optimisation, (resume), loop, export. The
output folder holds::

    output_dir/checkpoints/checkpoint-<step>/   accelerate state + unet/ + unet_ema/ (atomic)
    output_dir/logs/                            TensorBoard scalars and sample grids
    output_dir/samples/step-<step>.png          EMA sample grids, one row per redshift
    output_dir/pipeline/                        the exported GalaxyRedshiftPipeline (EMA weights)

A fresh run refuses a non-empty output folder unless ``--overwrite_output_dir`` (which deletes the
earlier run's folders above) or ``--resume_from_checkpoint``; temporary folders of a killed run are
removed at the next start.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers import DDIMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from PIL import Image
from tqdm.auto import tqdm

from galaxy_pipeline.atomic import atomic_folder
from galaxy_pipeline.data.loading import (
    fit_flux_transform,
    load_split,
    make_dataloader,
    random_dihedral,
    redshift_balanced_indices,
    transformed_split_gigabytes,
)
from galaxy_pipeline.data.mock_dataset import ensure_mock_dataset
from galaxy_pipeline.data.schema import VALID_REDSHIFT_RANGE
from galaxy_pipeline.normalization import FluxTransform, channel_mixing_for
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline, paper_scheduler
from galaxy_pipeline.provenance import TRAINING_CONFIG_FILE
from galaxy_pipeline.training.config import TrainingConfig
from galaxy_pipeline.unet import RedshiftUNet2DModel
from galaxy_pipeline.visualization import image_grid, rgb_composite

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or inf; the run stopped without saving the bad state."""


def train(config: TrainingConfig) -> Path:
    """Train a RedshiftUNet2DModel with ``config`` and return the exported pipeline folder.

    Training never uploads: ``config.push_to_hub`` is honoured by the entry point
    (``train_scripts/train.py``), which pushes the returned folder with
    :func:`galaxy_pipeline.hub.push_pipeline`, so that training imports nothing of the sharing layer.
    """
    output_dir = Path(config.output_dir).expanduser()
    checkpoint = _checkpoint_to_resume(config.resume_from_checkpoint, output_dir)
    _refuse_an_earlier_run(output_dir, config)
    _make_dir(output_dir)  # an unwritable folder fails here, before any data is read
    # Several processes without CUDA (`accelerate launch --multi_gpu` on a CPU machine): gloo on CPU.
    multi_process_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_process_cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    if accelerator.device.type == "cpu":
        torch.set_num_threads(config.cpu_threads or cpu_threads_per_process())
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if accelerator.is_main_process:
        _clear_output_dir(output_dir, earlier_run=config.overwrite_output_dir)
    accelerator.wait_for_everyone()
    set_seed(config.seed)

    # Data: checked before anything is trained.
    dataset_dir = config.dataset_dir
    if dataset_dir is None:
        with accelerator.main_process_first():
            dataset_dir = ensure_mock_dataset(
                config.mock_galaxies, config.seed, config.mock_cache_dir, population=config.mock_population
            )
    split = load_split(dataset_dir, config.train_split)
    redshifts = np.asarray(split.with_format("numpy")["redshift"], dtype=np.float64)
    flux_transform = _load_or_fit_flux_transform(split, output_dir, config, accelerator)
    train_dataloader = make_dataloader(
        split,
        flux_transform,
        batch_size=config.train_batch_size,
        shuffle=True,
        augment=False,
        num_workers=config.dataloader_num_workers,
        seed=config.seed,
        in_memory=transformed_split_gigabytes(split) <= config.dataset_in_memory_gb,
        indices=redshift_balanced_indices(redshifts, config.redshift_balance) if config.redshift_balance else None,
    )

    # Model, noise schedule, EMA.
    unet = RedshiftUNet2DModel.from_preset(
        config.unet_preset,
        redshift_min=float(max(VALID_REDSHIFT_RANGE[0], redshifts.min())),
        redshift_max=float(redshifts.max()),
        learned_null_redshift=config.redshift_dropout > 0,
    )
    if config.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    noise_scheduler = paper_scheduler(
        config.num_train_timesteps, config.beta_start, config.beta_end, prediction_type=config.prediction_type
    )
    ema = None
    if config.use_ema:
        ema = EMAModel(
            unet.parameters(),
            decay=config.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=config.ema_inv_gamma,
            power=config.ema_power,
            foreach=True,
            model_cls=RedshiftUNet2DModel,
            model_config=unet.config,
        )
    _register_checkpoint_hooks(accelerator, ema)

    # Optimisation.
    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
        fused=torch.cuda.is_available(),
        foreach=not torch.cuda.is_available(),  # one multi-tensor update on CPU; fused kernels on CUDA
    )
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        unet, optimizer, train_dataloader, lr_scheduler
    )
    if ema is not None:
        ema.to(accelerator.device)
    model_forward = torch.compile(unet) if config.torch_compile else unet
    steps_per_epoch = max(1, len(train_dataloader) // config.gradient_accumulation_steps)

    global_step = 0
    if checkpoint is not None:
        accelerator.print(f"Resuming from {checkpoint}")
        accelerator.load_state(str(checkpoint))
        global_step = int(checkpoint.name.removeprefix(CHECKPOINT_PREFIX))
    if accelerator.is_main_process:
        accelerator.init_trackers("galaxy_pipeline", config={k: str(v) for k, v in vars(config).items()})

    progress = tqdm(
        total=config.max_train_steps,
        initial=global_step,
        desc="Training",
        unit="step",
        disable=not accelerator.is_local_main_process,
    )
    nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
    window_images, window_start = 0, time.perf_counter()
    grad_norm = torch.zeros(())
    epoch = global_step // steps_per_epoch
    try:
        while global_step < config.max_train_steps:
            train_dataloader.set_epoch(epoch)
            batches = train_dataloader
            skipped = (global_step % steps_per_epoch) * config.gradient_accumulation_steps
            if skipped:
                batches = accelerator.skip_first_batches(train_dataloader, skipped)
            for batch in batches:
                with accelerator.accumulate(unet):
                    images = batch["images"]
                    if config.augment:
                        images = random_dihedral(images)
                    if config.channels_last:
                        images = images.contiguous(memory_format=torch.channels_last)
                    redshift = batch["redshifts"]
                    redshift = (redshift + config.redshift_noise_std * torch.randn_like(redshift)).clamp(min=0)
                    noise = torch.randn_like(images)
                    timesteps = torch.randint(
                        0, noise_scheduler.config.num_train_timesteps, (images.shape[0],), device=images.device
                    )
                    noisy_images = noise_scheduler.add_noise(images, noise, timesteps)
                    drop = None
                    if config.redshift_dropout > 0:
                        drop = torch.rand(images.shape[0], device=images.device) < config.redshift_dropout
                    predicted = model_forward(noisy_images, timesteps, redshift, drop_redshift=drop).sample
                    loss = _denoising_loss(predicted, images, noise, timesteps, noise_scheduler, config)
                    nonfinite |= ~torch.isfinite(loss.detach())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(unet.parameters(), config.max_grad_norm)
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                window_images += images.shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue

                if ema is not None:
                    ema.step(unet.parameters())
                global_step += 1
                progress.update(1)
                at_checkpoint = global_step % config.checkpointing_steps == 0 or global_step == config.max_train_steps
                if at_checkpoint:
                    sound = _weights_give_a_finite_loss(
                        accelerator.unwrap_model(unet), ema, noisy_images, timesteps, redshift, drop, images, noise,
                        noise_scheduler, config,
                    )  # fmt: skip
                    nonfinite |= ~sound
                if global_step % config.logging_steps == 0 or at_checkpoint:
                    _stop_if_nonfinite(nonfinite, global_step, output_dir, accelerator)
                if global_step % config.logging_steps == 0:
                    elapsed = time.perf_counter() - window_start
                    logs = {
                        "loss": loss.detach().item(),
                        "lr": lr_scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm),
                        "images_per_second": window_images / elapsed,
                    }
                    if ema is not None:
                        logs["ema_decay"] = ema.cur_decay_value
                    progress.set_postfix(loss=f"{logs['loss']:.4f}", img_s=f"{logs['images_per_second']:.1f}")
                    accelerator.log(logs, step=global_step)
                    window_images, window_start = 0, time.perf_counter()
                if at_checkpoint:
                    _save_checkpoint(accelerator, output_dir, global_step, config.checkpoints_total_limit)
                if config.sample_every_steps and (
                    global_step % config.sample_every_steps == 0 or global_step == config.max_train_steps
                ):
                    _write_sample_grid(accelerator, unet, ema, noise_scheduler, flux_transform, config, global_step)
                if global_step >= config.max_train_steps:
                    break
            epoch += 1
    finally:
        progress.close()  # before any error message, so that message is the last line

    pipeline_dir = output_dir / "pipeline"
    if accelerator.is_main_process:
        _export_pipeline(accelerator.unwrap_model(unet), ema, noise_scheduler, flux_transform, config, pipeline_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return pipeline_dir


def cpu_threads_per_process() -> int:
    """CPUs this process may use, shared evenly among the training processes on this machine."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, available // max(1, local_processes))


def _denoising_loss(
    predicted: torch.Tensor,
    images: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    noise_scheduler,
    config: TrainingConfig,
) -> torch.Tensor:
    """Huber or MSE between the network output and its target, per image weighted by Min-SNR-gamma if set.

    The target is the noise (``epsilon``) or the velocity (``v_prediction``, diffusers' ``get_velocity``).
    Min-SNR (Hang et al. 2023) weights an image noised at timestep t by min(SNR(t), gamma) / SNR(t) for
    noise targets and min(SNR(t), gamma) / (SNR(t) + 1) for velocity targets: nearly-clean timesteps,
    which dominate the plain loss, count less.
    """
    if config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(images, noise, timesteps)
    else:
        target = noise
    loss_function = F.huber_loss if config.loss == "huber" else F.mse_loss
    per_pixel = loss_function(predicted.float(), target.float(), reduction="none")
    if config.snr_gamma is None:
        return per_pixel.mean()
    snr = compute_snr(noise_scheduler, timesteps)
    weight = snr.clamp(max=config.snr_gamma) / (snr + 1 if config.prediction_type == "v_prediction" else snr)
    return (per_pixel.mean(dim=(1, 2, 3)) * weight).mean()


def _load_or_fit_flux_transform(split, output_dir: Path, config: TrainingConfig, accelerator) -> FluxTransform:
    """Fit the flux transform once per run (main process) and reuse it on every process and on resume."""
    transform_dir = output_dir / "flux_transform"
    if accelerator.is_main_process and not (transform_dir / "preprocessor_config.json").is_file():
        transform = fit_flux_transform(
            split,
            max_images=config.flux_fit_images,
            seed=config.seed,
            softening_in_noise_sigmas=config.flux_softening,
            channel_mixing=channel_mixing_for(config.flux_channel_basis, colour_weights=config.flux_colour_weights),
        )
        with atomic_folder(_make_dir(output_dir) / transform_dir.name) as staged:
            transform.save_pretrained(staged)
    accelerator.wait_for_everyone()
    return FluxTransform.from_pretrained(transform_dir)


RUN_ENTRIES = ("checkpoints", "logs", "samples", "pipeline", "flux_transform")
TEMPORARY_PATTERNS = (
    ".pipeline.*.incomplete",
    ".flux_transform.*.incomplete",
    ".pipeline-*",  # the names of earlier versions
    ".flux_transform-*",
    f"checkpoints/.{CHECKPOINT_PREFIX}*.incomplete",
)


def _refuse_an_earlier_run(output_dir: Path, config: TrainingConfig) -> None:
    """Raise FileExistsError when a fresh run would write into a non-empty ``output_dir``."""
    if config.resume_from_checkpoint is not None or config.overwrite_output_dir or not output_dir.is_dir():
        return
    temporary = {path for pattern in TEMPORARY_PATTERNS for path in output_dir.glob(pattern)}
    held = sorted(path.name for path in output_dir.iterdir() if path not in temporary)
    if held:
        raise FileExistsError(
            f"output_dir {output_dir} is not empty (it holds {', '.join(held[:5])}); pass "
            "--resume_from_checkpoint latest to continue that run, --overwrite_output_dir to delete it and start "
            "again, or a new --output_dir."
        )


def _clear_output_dir(output_dir: Path, earlier_run: bool) -> None:
    """Remove temporary folders a killed run left behind, and with ``earlier_run`` that run's own outputs."""
    doomed = [path for pattern in TEMPORARY_PATTERNS for path in output_dir.glob(pattern)]
    if earlier_run:
        doomed += [output_dir / name for name in RUN_ENTRIES if (output_dir / name).exists()]
    for path in doomed:
        logger.info(f"Removing {path}", main_process_only=True)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _make_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _register_checkpoint_hooks(accelerator: Accelerator, ema: EMAModel | None) -> None:
    """Save the UNet and its EMA as safetensors folders inside accelerate checkpoints, and load them back."""

    def save_hook(models, weights, checkpoint_dir):
        if accelerator.is_main_process:
            if ema is not None:
                ema.save_pretrained(os.path.join(checkpoint_dir, "unet_ema"))
            for model in models:
                model.save_pretrained(os.path.join(checkpoint_dir, "unet"))
                weights.pop()

    def load_hook(models, checkpoint_dir):
        if ema is not None:
            saved_ema = EMAModel.from_pretrained(os.path.join(checkpoint_dir, "unet_ema"), RedshiftUNet2DModel)
            ema.load_state_dict(saved_ema.state_dict())
            ema.to(accelerator.device)
        while models:
            model = models.pop()
            saved = RedshiftUNet2DModel.from_pretrained(checkpoint_dir, subfolder="unet")
            model.register_to_config(**saved.config)
            model.load_state_dict(saved.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (incomplete ones have a temporary name and are ignored)."""
    folder = output_dir / "checkpoints"
    found = [p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p.name.removeprefix(CHECKPOINT_PREFIX).isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))


def _checkpoint_to_resume(resume_from: str | None, output_dir: Path) -> Path | None:
    if resume_from is None:
        return None
    if resume_from == "latest":
        found = _checkpoints(output_dir)
        if not found:
            logger.warning(
                f"No checkpoint in {output_dir / 'checkpoints'}; starting from scratch.", main_process_only=True
            )
            return None
        return found[-1]
    path = Path(resume_from).expanduser()
    if not (path.is_dir() and path.name.removeprefix(CHECKPOINT_PREFIX).isdigit()):
        raise FileNotFoundError(
            f"resume_from_checkpoint={resume_from!r} is not a checkpoint folder ({CHECKPOINT_PREFIX}<step>); "
            "pass one, or 'latest'."
        )
    return path


def _save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, total_limit: int | None) -> None:
    """Write ``checkpoints/checkpoint-<step>`` atomically: save under a temporary name, then rename."""
    folder = output_dir / "checkpoints"
    temporary = folder / f".{CHECKPOINT_PREFIX}{step}.incomplete"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = folder / f"{CHECKPOINT_PREFIX}{step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        if total_limit is not None:
            for old in _checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _weights_give_a_finite_loss(
    unet: RedshiftUNet2DModel,
    ema: EMAModel | None,
    noisy_images: torch.Tensor,
    timesteps: torch.Tensor,
    redshift: torch.Tensor,
    drop: torch.Tensor | None,
    images: torch.Tensor,
    noise: torch.Tensor,
    noise_scheduler,
    config: TrainingConfig,
) -> torch.Tensor:
    """Whether the updated weights (and EMA) are finite and give a finite loss on the last batch (a 0-d bool).

    The training loss is computed before each update, so a diverging update (weights ~1e30) shows only in the
    next step's loss; checking here keeps such weights out of every checkpoint.
    """
    parameters = list(unet.parameters()) + (list(ema.shadow_params) if ema is not None else [])
    finite = torch.stack([torch.isfinite(p).all() for p in parameters]).all()
    with torch.no_grad():
        predicted = unet(noisy_images, timesteps, redshift, drop_redshift=drop).sample
        loss = _denoising_loss(predicted, images, noise, timesteps, noise_scheduler, config)
    return finite & torch.isfinite(loss)


def _stop_if_nonfinite(nonfinite: torch.Tensor, step: int, output_dir: Path, accelerator: Accelerator) -> None:
    if not bool(accelerator.reduce(nonfinite.float(), reduction="sum") > 0):
        return
    found = _checkpoints(output_dir)
    if found:
        resume = f"resume with --resume_from_checkpoint {found[-1]} (it passed the same check when saved)"
    else:
        resume = "start again (no checkpoint was written)"
    raise NonFiniteLossError(
        f"Training diverged by step {step} (a NaN or inf loss, or weights that give one); it stopped and saved "
        f"nothing of the diverged state. Lower --learning_rate or use --mixed_precision no, then {resume}."
    )


def _ema_pipeline(unet, ema, noise_scheduler, flux_transform) -> GalaxyRedshiftPipeline:
    """A pipeline around a copy of the UNet carrying the EMA weights (the live weights stay untouched)."""
    model = RedshiftUNet2DModel.from_config(unet.config).to(unet.device)
    model.load_state_dict(unet.state_dict())
    if ema is not None:
        ema.copy_to(model.parameters())
    return GalaxyRedshiftPipeline(unet=model.eval(), scheduler=noise_scheduler, flux_transform=flux_transform)


def _write_sample_grid(accelerator, unet, ema, noise_scheduler, flux_transform, config: TrainingConfig, step: int):
    """EMA samples at the fixed sample redshifts, one row per redshift, as PNG and in TensorBoard."""
    if not accelerator.is_main_process:
        return
    pipe = _ema_pipeline(accelerator.unwrap_model(unet), ema, noise_scheduler, flux_transform)
    pipe.scheduler = DDIMScheduler.from_config(noise_scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(config.seed)
    fluxes = pipe(
        z=config.sample_redshifts,
        num_images_per_redshift=config.sample_images_per_redshift,
        generator=generator,
        num_inference_steps=config.sample_inference_steps,
        allow_extrapolation=True,
    ).images
    grid = image_grid(rgb_composite(fluxes), rows=len(config.sample_redshifts))
    path = _make_dir(Path(config.output_dir).expanduser() / "samples") / f"step-{step:07d}.png"
    Image.fromarray(grid).save(path)
    writer = accelerator.get_tracker("tensorboard", unwrap=True)
    writer.add_image("samples", grid, step, dataformats="HWC")


def _export_pipeline(unet, ema, noise_scheduler, flux_transform, config: TrainingConfig, pipeline_dir: Path) -> None:
    """Save the EMA pipeline (with flux transform and training config) atomically to ``pipeline_dir``."""
    pipe = _ema_pipeline(unet, ema, noise_scheduler, flux_transform)
    _make_dir(pipeline_dir.parent)
    with atomic_folder(pipeline_dir) as staged:
        pipe.save_pretrained(staged)
        config.to_json(staged / TRAINING_CONFIG_FILE)
