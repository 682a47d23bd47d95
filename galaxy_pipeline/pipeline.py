"""GalaxyRedshiftPipeline: generate 5-band HSC-like galaxy images at a chosen redshift.

    >>> pipe = GalaxyRedshiftPipeline.from_pretrained("path/or/user-repo")
    >>> out = pipe(z=[0.3, 1.2], num_images_per_redshift=4, num_inference_steps=50)
    >>> out.images.shape, out.redshifts      # (8, 5, 64, 64) fluxes, band order g,r,i,z,y

The scheduler that trained the model samples by default (DDPM, 1000 steps). Swap it in one line:
``pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import reprlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils import logging as diffusers_logging
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from galaxy_pipeline.checks import check_positive_int
from galaxy_pipeline.hub_ids import resolve_model
from galaxy_pipeline.normalization import MODEL_SPACE_LIMIT, FluxTransform
from galaxy_pipeline.remote_code import carries_remote_code
from galaxy_pipeline.unet import RedshiftUNet2DModel
from galaxy_pipeline.visualization import to_pil

OUTPUT_TYPES = ("np", "pt", "model", "pil")


DEFAULT_BATCH_SIZE = 256
"""Images a pipeline call denoises at once unless told otherwise (a 5x64x64 image is 80 KiB in float32)."""

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = 5
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60
"""Shortens values quoted in error messages to a few items and characters."""


@dataclass
class GalaxyPipelineOutput(BaseOutput):
    """Generated galaxies.

    Args:
        images: ``"np"``/``"pt"``: fluxes (N, 5, H, W), bands g,r,i,z,y, HSC units (AB zero point 27);
            ``"model"``: model-space array (N, 5, H, W); ``"pil"``: list of N RGB composites.
        redshifts: the redshift each image was generated at, shape (N,).
    """

    images: np.ndarray | torch.Tensor | list[Image.Image]
    redshifts: np.ndarray


def paper_scheduler(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    prediction_type: str = "epsilon",
) -> DDPMScheduler:
    """The paper's DDPM noise schedule: linear betas from 1e-4 to 0.02 over 1000 steps by default.

    Predicted clean images are clipped to ``MODEL_SPACE_LIMIT`` (16) in model space (the flux
    transform maps the 99th-percentile training pixel to 2), a loose guard that keeps galaxy
    cores intact. ``prediction_type`` is what the network predicts: ``"epsilon"`` (the noise, as
    in the paper) or ``"v_prediction"`` (the velocity sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) x0);
    every diffusers sampler swapped in with ``from_config`` inherits it.
    """
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule="linear",
        prediction_type=prediction_type,
        clip_sample=True,
        clip_sample_range=MODEL_SPACE_LIMIT,
    )


class GalaxyRedshiftPipeline(DiffusionPipeline):
    """Redshift-conditioned DDPM for 5-band galaxy cutouts.

    Args:
        unet: the noise-prediction network, conditioned on redshift.
        scheduler: any diffusers scheduler; the DDPM one it was trained with by default.
        flux_transform: maps model space back to physical fluxes.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, unet: RedshiftUNet2DModel, scheduler: SchedulerMixin, flux_transform: FluxTransform):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, flux_transform=flux_transform)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        **kwargs,
    ) -> GalaxyRedshiftPipeline:
        """Load from a local pipeline folder or a Hugging Face Hub id (``user/repo``).

        Hub ids are first resolved to a local snapshot by :func:`galaxy_pipeline.hub_ids.resolve_model`
        (``huggingface_hub.snapshot_download``; ``revision``, ``token``, ``cache_dir`` and
        ``local_files_only`` are passed on), because diffusers cannot resolve custom components from
        Hub ids directly. Only safetensors weights are read. Other keyword arguments (``dtype``, ...)
        go to diffusers.
        """
        source = resolve_model(
            pretrained_model_name_or_path,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        bar_enabled = diffusers_logging.is_progress_bar_enabled()
        diffusers_logging.disable_progress_bar()  # three components load in a blink: no bar
        index_path = source.local_dir / "model_index.json"
        try:
            if index_path.is_file() and carries_remote_code(json.loads(index_path.read_text(encoding="utf-8"))):
                pipe = cls._from_folder_with_code(source.local_dir, **kwargs)
            else:
                pipe = super().from_pretrained(source.local_dir, use_safetensors=True, local_files_only=True, **kwargs)
        except OSError as error:
            raise ValueError(
                f"Cannot load the pipeline in {source.local_dir}: {str(error).strip()} The folder is damaged or "
                "incomplete: save the pipeline again (save_pretrained) or download it again."
            ) from error
        finally:
            if bar_enabled:
                diffusers_logging.enable_progress_bar()
        _check_finite_weights(pipe.unet, source.local_dir)
        return pipe

    @classmethod
    def _from_folder_with_code(cls, folder: Path, **kwargs) -> GalaxyRedshiftPipeline:
        """A folder that carries its own modules (``remote_code.write_remote_code``), read with this package's
        classes: diffusers would import the folder's copies instead (``trust_remote_code``)."""
        scheduler_config = DDPMScheduler.load_config(folder / "scheduler")
        scheduler_class = getattr(importlib.import_module("diffusers"), scheduler_config["_class_name"])
        return cls(
            unet=RedshiftUNet2DModel.from_pretrained(folder / "unet", use_safetensors=True, **kwargs),
            scheduler=scheduler_class.from_config(scheduler_config),
            flux_transform=FluxTransform.from_pretrained(folder / "flux_transform"),
        )

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (diffusers' default would report the flux transform's, which has no weights)."""
        return self.unet.dtype

    @property
    def redshift_range(self) -> tuple[float, float]:
        """The (min, max) spectroscopic redshift the network was trained on."""
        return float(self.unet.config.redshift_min), float(self.unet.config.redshift_max)

    def check_redshifts(self, z: float | Sequence[float] | np.ndarray | torch.Tensor, allow_extrapolation: bool):
        """Validate requested redshifts and return them as a float64 array of shape (n,)."""
        if isinstance(z, torch.Tensor):
            z = z.detach().cpu().numpy()
        items = z if isinstance(z, list | tuple) else [z]
        if any(isinstance(item, bool | np.bool_ | str | bytes) for item in items):
            raise ValueError(f"z must be a number or a 1-D sequence of numbers, not booleans or text; got {_short(z)}.")
        try:
            raw = np.asarray(z)
            redshifts = raw.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"z must be a number or a 1-D sequence of numbers; got {_short(z)}.") from error
        if raw.dtype.kind not in "iufO":
            raise ValueError(f"z must hold numbers, not {raw.dtype} values; got {_short(z)}.")
        if redshifts.ndim > 1:
            raise ValueError(
                f"z must be a number or a 1-D sequence; got an array of shape {redshifts.shape}. "
                "Flatten it, and use num_images_per_redshift for several images per redshift."
            )
        redshifts = redshifts.reshape(-1)
        if redshifts.size == 0:
            raise ValueError("z is empty: give at least one redshift.")
        if not np.isfinite(redshifts).all():
            raise ValueError(f"z must be finite; got {_describe(redshifts[~np.isfinite(redshifts)])}.")
        if (redshifts < 0).any():
            raise ValueError(f"z must be >= 0 (a redshift); got {_describe(redshifts[redshifts < 0])}.")
        low, high = self.redshift_range
        outside = redshifts[(redshifts < low) | (redshifts > high)]
        if outside.size:
            message = f"z={_describe(outside)} lies outside the trained redshift range [{low}, {high}]"
            if not allow_extrapolation:
                raise ValueError(f"{message}. Pass allow_extrapolation=True to generate there anyway.")
            warnings.warn(f"{message}: the model extrapolates; treat these images with care.", stacklevel=3)
        return redshifts

    @torch.no_grad()
    def __call__(
        self,
        z: float | Sequence[float] | np.ndarray | torch.Tensor,
        num_images_per_redshift: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        allow_extrapolation: bool = False,
        guidance_scale: float = 1.0,
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        latents: torch.Tensor | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        seeds: Sequence[int] | np.ndarray | None = None,
    ) -> GalaxyPipelineOutput | tuple:
        """Generate galaxies at redshift(s) ``z``.

        Args:
            z: spectroscopic redshift(s), a number or a 1-D sequence, within the trained range.
            num_images_per_redshift: images generated at each redshift (positive).
            generator: a torch generator, or one per image (then image k is the same whatever the
                batching), for reproducible noise.
            num_inference_steps: denoising steps; default: all training steps for DDPM, 50 otherwise.
            output_type: ``"np"`` or ``"pt"`` (fluxes), ``"model"`` (model space), ``"pil"`` (RGB).
            return_dict: return a :class:`GalaxyPipelineOutput` rather than a tuple.
            allow_extrapolation: generate outside the trained redshift range (with a warning).
            guidance_scale: classifier-free guidance on redshift; 1 (default) is plain conditional
                sampling, > 1 pushes harder towards the redshift (needs a model trained with
                redshift dropout).
            batch_size: images denoised at once (default 256), which bounds memory for long lists such
                as all 40,914 test redshifts of GalaxiesML; ``None`` denoises all at once. With one
                ``generator`` the noise depends on the batching; with one generator per image it does not.
            latents: starting noise in model space, shape (number of images, 5, H, W), used instead of
                drawing it from ``generator`` (stochastic samplers still draw their per-step noise from it).
            callback_on_step_end: called after every denoising step as ``callback(pipe, step_index,
                timestep, {name: tensor})`` with the tensors named in ``callback_on_step_end_tensor_inputs``
                (``"latents"``: the current batch in model space); a returned ``"latents"`` replaces it.
                Setting ``pipe._interrupt = True`` inside it stops denoising (``pipe.interrupt``).
            callback_on_step_end_tensor_inputs: the tensors passed to the callback (only ``"latents"``).
            seeds: one integer seed per image, in output order; image k is drawn with
                ``torch.Generator().manual_seed(seeds[k])``, so it is the same whatever the batching or the
                other images. Instead of ``generator`` (giving both is an error).

        Returns:
            :class:`GalaxyPipelineOutput` with ``images`` and the ``redshifts`` they were made at,
            ordered redshift by redshift (all images of ``z[0]`` first).
        """
        num_inference_steps = self._check_call(
            output_type, num_images_per_redshift, num_inference_steps, guidance_scale, batch_size
        )
        redshifts = np.repeat(self.check_redshifts(z, allow_extrapolation), num_images_per_redshift)
        if seeds is not None:
            generator = _seeded_generators(seeds, generator, redshifts.size)
        _check_generator(generator, allow_list=True)
        if isinstance(generator, list) and len(generator) != redshifts.size:
            raise ValueError(f"Got {len(generator)} generators for {redshifts.size} images; give one per image.")
        self._check_latents(latents, redshifts.size)
        self._check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        self._interrupt = False
        batch_size = batch_size or redshifts.size
        starts = range(0, redshifts.size, batch_size)
        progress = self.progress_bar(total=len(starts) * num_inference_steps)
        samples = []
        for start in starts:
            stop = min(start + batch_size, redshifts.size)
            batch_generator = generator[start:stop] if isinstance(generator, list) else generator
            if latents is None:
                noise = randn_tensor(
                    (stop - start, *self._image_shape), generator=batch_generator, device=self._execution_device
                )
            else:
                noise = latents[start:stop].to(self._execution_device, torch.float32)
            sampling = _Sampling(
                batch_generator,
                num_inference_steps,
                guidance_scale,
                progress,
                callback_on_step_end,
                tuple(callback_on_step_end_tensor_inputs),
            )
            samples.append(self._denoise(noise, redshifts[start:stop], sampling))
        progress.close()
        images = self._convert(torch.cat(samples), output_type)
        if not return_dict:
            return images, redshifts
        return GalaxyPipelineOutput(images=images, redshifts=redshifts)

    @torch.no_grad()
    def sweep(
        self,
        z: Sequence[float] | np.ndarray,
        generator: torch.Generator | None = None,
        num_noise_draws: int = 1,
        num_inference_steps: int = 50,
        output_type: str = "np",
        allow_extrapolation: bool = False,
        guidance_scale: float = 1.0,
    ) -> GalaxyPipelineOutput:
        """Denoise the same initial noise at every redshift in ``z``, with a deterministic sampler.

        This shows how the model maps one noise draw across cosmic time. It is the same *noise*,
        not the same physical galaxy: nothing ties the outputs to one object's evolution. A
        stochastic scheduler (DDPM) is replaced by DDIM (eta = 0) for the sweep; a deterministic
        one is used as it is.

        Returns:
            :class:`GalaxyPipelineOutput` ordered draw by draw: images ``[d * len(z) + j]`` share
            noise draw ``d`` and have redshift ``z[j]``.
        """
        num_inference_steps = self._check_call(output_type, num_noise_draws, num_inference_steps, guidance_scale, None)
        redshifts = self.check_redshifts(z, allow_extrapolation)
        _check_generator(generator, allow_list=False)
        noise = randn_tensor((num_noise_draws, *self._image_shape), generator=generator, device=self._execution_device)
        noise = noise.repeat_interleave(redshifts.size, dim=0)
        all_redshifts = np.tile(redshifts, num_noise_draws)
        stochastic = isinstance(self.scheduler, DDPMScheduler)
        scheduler = self.scheduler
        if stochastic:
            self.scheduler = DDIMScheduler.from_config(scheduler.config)
        try:
            progress = self.progress_bar(total=num_inference_steps)
            self._interrupt = False
            sample = self._denoise(noise, all_redshifts, _Sampling(None, num_inference_steps, guidance_scale, progress))
            progress.close()
        finally:
            self.scheduler = scheduler
        return GalaxyPipelineOutput(images=self._convert(sample, output_type), redshifts=all_redshifts)

    @property
    def interrupt(self) -> bool:
        """True once a step callback has set ``pipe._interrupt = True``: the remaining steps are skipped."""
        return getattr(self, "_interrupt", False)

    @property
    def default_num_inference_steps(self) -> int:
        """Steps used when none are given: every training step for DDPM, 50 for the other schedulers."""
        if isinstance(self.scheduler, DDPMScheduler):
            return int(self.scheduler.config.num_train_timesteps)
        return 50

    @property
    def _image_shape(self) -> tuple[int, int, int]:
        config = self.unet.config
        size = (config.sample_size,) * 2 if isinstance(config.sample_size, int) else tuple(config.sample_size)
        return (config.in_channels, *size)

    def _check_call(self, output_type, count, num_inference_steps, guidance_scale, batch_size) -> int:
        """Validate call arguments; return the number of inference steps to use."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}.")
        if num_inference_steps is None:
            num_inference_steps = self.default_num_inference_steps
        check_positive_int("num_images_per_redshift", count)
        check_positive_int("num_inference_steps", num_inference_steps)
        check_positive_int("batch_size", batch_size, none_means="all images at once")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, Real):
            raise ValueError(f"guidance_scale must be a number; got {_short(guidance_scale)}.")
        if not (np.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"guidance_scale must be a finite number >= 0; got {guidance_scale!r}.")
        if guidance_scale != 1 and not self.unet.config.learned_null_redshift:
            raise ValueError(
                f"guidance_scale={guidance_scale} needs a model trained with redshift dropout "
                "(learned_null_redshift); this one was not, so use guidance_scale=1."
            )
        return num_inference_steps

    def _check_latents(self, latents: torch.Tensor | None, count: int) -> None:
        if latents is None:
            return
        expected = (count, *self._image_shape)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(
                f"latents must be a tensor of shape {expected} (one per image: redshifts x num_images_per_redshift, "
                f"then the model's channels and pixels); got {shape}."
            )

    def _check_callback(self, callback: Callable | None, tensor_inputs: Sequence[str]) -> None:
        if callback is not None and not callable(callback):
            raise ValueError(f"callback_on_step_end must be callable; got {_short(callback)}.")
        unknown = [name for name in tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not available; choose from "
                f"{self._callback_tensor_inputs}."
            )

    def _denoise(self, sample: torch.Tensor, redshifts: np.ndarray, sampling: _Sampling) -> torch.Tensor:
        """Run the reverse diffusion from noise ``sample`` (model space, float32) at ``redshifts``."""
        generator, num_inference_steps, guidance_scale = sampling.generator, sampling.steps, sampling.guidance_scale
        redshift = torch.as_tensor(redshifts, dtype=torch.float32, device=sample.device)
        guided = guidance_scale != 1
        if guided:
            redshift = redshift.repeat(2)
            drop = torch.arange(redshift.numel(), device=sample.device) >= sample.shape[0]
        was_training = self.unet.training
        self.unet.eval()
        self.scheduler.set_timesteps(num_inference_steps, device=sample.device)
        sample = sample * self.scheduler.init_noise_sigma
        # Stochastic samplers (DDPM) draw noise from the generator; others (UniPC) take no generator argument.
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}
        for index, timestep in enumerate(self.scheduler.timesteps):
            if self.interrupt:
                continue
            model_input = self.scheduler.scale_model_input(sample, timestep).to(self.unet.dtype)
            if guided:
                both = self.unet(model_input.repeat(2, 1, 1, 1), timestep, redshift, drop_redshift=drop).sample
                conditional, unconditional = both.float().chunk(2)
                noise = unconditional + guidance_scale * (conditional - unconditional)
            else:
                noise = self.unet(model_input, timestep, redshift).sample.float()
            sample = self.scheduler.step(noise, timestep, sample, **step_kwargs).prev_sample
            if sampling.callback is not None:
                tensors = {name: sample for name in sampling.callback_tensor_inputs}
                sample = sampling.callback(self, index, timestep, tensors).get("latents", sample)
            sampling.progress.update(1)
        self.unet.train(was_training)
        return self._clip_to_model_space(sample)

    @staticmethod
    def _clip_to_model_space(sample: torch.Tensor) -> torch.Tensor:
        """Clip to [-MODEL_SPACE_LIMIT, MODEL_SPACE_LIMIT], warning when a sampler left that range."""
        outside = (sample.abs() > MODEL_SPACE_LIMIT) | ~torch.isfinite(sample)
        if outside.any():
            warnings.warn(
                f"{int(outside.sum())} of {sample.numel()} generated pixels fell outside the model-space range "
                f"[-{MODEL_SPACE_LIMIT}, {MODEL_SPACE_LIMIT}] and were clipped: the sampler may be diverging "
                "(too few steps, or an undertrained model).",
                stacklevel=3,
            )
        return torch.nan_to_num(sample).clamp(-MODEL_SPACE_LIMIT, MODEL_SPACE_LIMIT)

    def _convert(self, model_values: torch.Tensor, output_type: str):
        if output_type == "model":
            return model_values.cpu().numpy()
        fluxes = self.flux_transform.inverse(model_values)
        if output_type == "pt":
            return fluxes
        if output_type == "pil":
            return to_pil(fluxes.cpu().numpy())
        return fluxes.cpu().numpy()


@dataclass
class _Sampling:
    """How one batch is denoised: its generator(s), steps, guidance, progress bar and step callback."""

    generator: torch.Generator | list[torch.Generator] | None
    steps: int
    guidance_scale: float
    progress: object
    callback: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None
    callback_tensor_inputs: Sequence[str] = ("latents",)


def _check_finite_weights(unet: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Raise ValueError if a UNet weight loaded from ``folder`` is NaN or infinite (a damaged file)."""
    damaged = [name for name, tensor in unet.state_dict().items() if not torch.isfinite(tensor).all()]
    if damaged:
        files = ", ".join(str(path) for path in sorted((Path(folder) / "unet").glob("*.safetensors")))
        raise ValueError(
            f"The UNet weights in {files} are damaged: {len(damaged)} tensor(s) hold NaN or infinite values "
            f"(e.g. {', '.join(damaged[:3])}). Save the pipeline again (save_pretrained) or download it again."
        )


def _seeded_generators(
    seeds: Sequence[int] | np.ndarray, generator: torch.Generator | list | None, count: int
) -> list[torch.Generator]:
    """One CPU generator per image, seeded ``seeds[k]``; refuses a ``generator`` given as well."""
    if generator is not None:
        raise ValueError("Pass seeds= or generator=, not both: seeds= makes one generator per image (drop generator=).")
    seeds = list(np.asarray(seeds).reshape(-1)) if isinstance(seeds, np.ndarray) else list(seeds)
    if len(seeds) != count:
        raise ValueError(f"Got {len(seeds)} seeds for {count} images; give one per image (in output order).")
    bad = [seed for seed in seeds if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0]
    if bad:
        raise ValueError(f"seeds must be integers >= 0; got {_short(bad)}.")
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def _check_generator(generator: object, allow_list: bool) -> None:
    """Raise ValueError unless ``generator`` is None, a torch.Generator or (if ``allow_list``) a list of them."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if allow_list and isinstance(generator, list) and all(isinstance(g, torch.Generator) for g in generator):
        return
    expected = "a torch.Generator, a list of them (one per image)" if allow_list else "a torch.Generator"
    raise ValueError(
        f"generator must be {expected} or None; got {_short(generator)}. For a seed, pass "
        "torch.Generator().manual_seed(seed), or seeds=[one integer per image] instead of generator=."
    )


def _short(value: object) -> str:
    """A repr of ``value`` cut to a few items and characters, for error messages."""
    return _SHORT_REPR.repr(value)


def _describe(values: np.ndarray, examples: int = 5) -> str:
    """Offending values for an error message: all of a few, else their count, range and first few."""
    if values.size <= examples:
        return str(values.tolist())
    return f"{values.size} values in [{values.min():g}, {values.max():g}], e.g. {values[:examples].tolist()}"
