"""Sampler names -> diffusers schedulers, in one place for `generate`, `evaluate`, the demo and the benchmarks.

    >>> pipe.scheduler = make_scheduler("dpm", pipe.scheduler.config)   # DPM-Solver++ 2M, same noise schedule

Every scheduler is built with ``from_config`` from the trained (DDPM) scheduler's config, so the
noise schedule (betas, number of training steps, prediction type) is the one the model learnt.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
"""Sampler name -> (name of the diffusers scheduler class, settings overriding the base config).

Classes are named rather than imported so that the command line can list the samplers without
loading diffusers (and torch).

``ddpm`` is the ancestral sampler the models are trained with; ``ddim`` is deterministic;
``dpm`` is DPM-Solver++ 2M (second-order multistep); ``unipc`` is UniPC (Zhao et al. 2023).
"""

SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)
"""The accepted sampler names, for command-line choices."""


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """A fresh scheduler of kind ``name`` sharing the noise schedule of ``base_config``.

    Args:
        name: one of :data:`SCHEDULER_NAMES`.
        base_config: the config of the scheduler the model was trained with (``pipe.scheduler.config``).
    """
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {sorted(SCHEDULERS)}.")
    class_name, overrides = SCHEDULERS[name]
    scheduler_class = getattr(importlib.import_module("diffusers"), class_name)
    return scheduler_class.from_config(base_config, **overrides)
