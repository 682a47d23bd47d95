"""SHA-256 of a model's configs and weights: same hash, same model (names cached or resumed work)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def fingerprint(model: Any) -> str:
    """SHA-256 of a pipeline's UNet and flux transform, or of one model with a ``config`` (a predictor).

    A pipeline (anything with ``unet`` and ``flux_transform``) hashes the transform's softening, scale and
    band names, then the UNet; a ``torch.compile`` wrapper hashes as the module it wraps.
    """
    digest = hashlib.sha256()
    module = model
    if hasattr(model, "unet") and hasattr(model, "flux_transform"):
        transform = model.flux_transform
        digest.update(json.dumps([transform.softening, transform.scale, transform.band_names]).encode())
        module = getattr(model.unet, "_orig_mod", model.unet)
    config = module.config.to_dict() if hasattr(module.config, "to_dict") else dict(module.config)
    config = {key: value for key, value in config.items() if not key.startswith("_")}  # bookkeeping, unordered
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
