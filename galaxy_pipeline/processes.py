"""The processes of an ``accelerate launch`` run: which one this is, and how many work together."""

from __future__ import annotations

import os

import torch
from accelerate import PartialState


def process_state() -> PartialState:
    """accelerate's state of this process; processes launched on a machine without CUDA work together over gloo.

    ``PartialState()`` alone leaves CPU-only processes of ``accelerate launch --multi_gpu`` unaware of each
    other; ``cpu=True`` (only when several were launched) makes them one MULTI_CPU group, as in training.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=launched and not torch.cuda.is_available())
