"""RedshiftPredictor: a CNN that predicts spectroscopic redshift from a 5-band HSC flux cutout.

It is a ``transformers`` model (``save_pretrained`` / ``from_pretrained`` with safetensors,
``push_to_hub``, ``AutoModel``) built on a ResNet backbone configured for 5 input channels and
trained from scratch. The model is self-contained: it takes raw fluxes (HSC units, AB zero point
27) and applies its own per-band arcsinh stretch, whose softening and scale are fitted from
training images (:meth:`RedshiftPredictorConfig.from_preset` takes them from a
:class:`~galaxy_pipeline.normalization.FluxTransform`) and stored in ``config.json``.

The head maps the pooled backbone output to ``feature_dim`` features (the penultimate layer,
used for Frechet distances between real and generated images) and then to one number ``u``;
the prediction ``log(1 + z) = log(1 + z_min) + (log(1 + z_max) - log(1 + z_min)) * sigmoid(u)``
always lies in the trained redshift range. The default loss is the HSC photo-z loss
``1 - 1 / (1 + (dz / 0.15)^2)`` with ``dz = (z_pred - z_spec) / (1 + z_spec)``, robust to
catastrophic outliers; ``loss_type="huber"`` uses a Huber loss on ``log(1 + z)`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel, ResNetConfig, ResNetModel
from transformers.utils import ModelOutput

from galaxy_pipeline.evaluation.photoz_metrics import hsc_loss
from galaxy_pipeline.hsc import BANDS
from galaxy_pipeline.normalization import FluxTransform

__all__ = [
    "PREDICTOR_PRESETS",
    "RedshiftPredictor",
    "RedshiftPredictorConfig",
    "RedshiftPredictorOutput",
    "predict_redshifts",
    "predictor_features",
]

PREDICTOR_PRESETS: dict[str, dict] = {
    # ResNet-10-like with narrow stages (~1.2 M weights): 64x64 -> 16x16 after the stem, 2x2 at the end.
    "small": dict(
        backbone_config=dict(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1]),
        feature_dim=64,
    ),
    # A few thousand weights, for tests.
    "tiny": dict(backbone_config=dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]), feature_dim=8),
}
"""Named sizes of the predictor: keyword arguments of :class:`RedshiftPredictorConfig`."""

_LOSS_TYPES = ("hsc", "huber")
_HUBER_DELTA = 0.05


@strict
class RedshiftPredictorConfig(PreTrainedConfig):
    r"""Configuration of :class:`RedshiftPredictor`.

    Args:
        backbone_config: a ``ResNetConfig`` (or its dict); ``num_channels`` must equal the number of bands.
        feature_dim: width of the penultimate layer (the features returned by the model).
        flux_softening: per-band arcsinh softening in flux units (HSC, zero point 27), band order g,r,i,z,y.
        flux_scale: per-band divisor of the stretched pixels (dimensionless).
        redshift_min: lowest redshift the model can predict.
        redshift_max: highest redshift the model can predict.
        loss_type: ``"hsc"`` (HSC photo-z loss on z) or ``"huber"`` (Huber loss on log(1+z)).
    """

    model_type: ClassVar[str] = "galaxy_redshift_predictor"
    sub_configs_defaults: ClassVar[dict] = {"backbone_config": ResNetConfig}

    backbone_config: dict | PreTrainedConfig | None = None
    feature_dim: int = 64
    flux_softening: list[float] | tuple[float, ...] = (1.0,) * len(BANDS)
    flux_scale: list[float] | tuple[float, ...] = (1.0,) * len(BANDS)
    redshift_min: float = 0.0
    redshift_max: float = 4.0
    loss_type: str = "hsc"

    def __post_init__(self, **kwargs):
        if self.backbone_config is None:
            self.backbone_config = dict(PREDICTOR_PRESETS["small"]["backbone_config"])
        if isinstance(self.backbone_config, dict):
            self.backbone_config = ResNetConfig(
                **{"num_channels": len(BANDS), "layer_type": "basic"} | self.backbone_config
            )
        self.flux_softening = [float(value) for value in self.flux_softening]
        self.flux_scale = [float(value) for value in self.flux_scale]
        self.redshift_min = float(self.redshift_min)
        self.redshift_max = float(self.redshift_max)
        super().__post_init__(**kwargs)
        self._check_values()

    def _check_values(self) -> None:
        channels = self.backbone_config.num_channels
        for name in ("flux_softening", "flux_scale"):
            values = getattr(self, name)
            if len(values) != channels or not all(math.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"{name} needs {channels} finite values > 0 (one per band); got {values}.")
        if not -1 < self.redshift_min < self.redshift_max:
            raise ValueError(
                f"Need -1 < redshift_min < redshift_max; got redshift_min={self.redshift_min}, "
                f"redshift_max={self.redshift_max}."
            )
        if self.loss_type not in _LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {_LOSS_TYPES}; got {self.loss_type!r}.")

    @classmethod
    def from_preset(
        cls, size: str = "small", flux_transform: FluxTransform | None = None, **overrides
    ) -> RedshiftPredictorConfig:
        """Config of a named size (``"small"`` or ``"tiny"``), with the stretch of ``flux_transform`` if given.

        Args:
            size: a key of :data:`PREDICTOR_PRESETS`.
            flux_transform: a fitted transform; its softening and scale become the model's input stretch.
            overrides: any other config field (``redshift_max=...``, ``loss_type=...``).
        """
        if size not in PREDICTOR_PRESETS:
            raise ValueError(f"Unknown predictor size {size!r}; choose one of {sorted(PREDICTOR_PRESETS)}.")
        fields = dict(PREDICTOR_PRESETS[size])
        if flux_transform is not None:
            fields |= {"flux_softening": flux_transform.softening, "flux_scale": flux_transform.scale}
        return cls(**fields | overrides)


@dataclass
class RedshiftPredictorOutput(ModelOutput):
    """Output of :class:`RedshiftPredictor`.

    Args:
        loss: mean loss over the batch (only when redshifts are given).
        redshift: predicted redshift, shape (N,).
        features: penultimate-layer features, shape (N, feature_dim).
    """

    loss: torch.Tensor | None = None
    redshift: torch.Tensor | None = None
    features: torch.Tensor | None = None


class RedshiftPredictor(PreTrainedModel):
    """ResNet redshift regressor on raw HSC fluxes; see the module docstring for the head and the loss."""

    config_class = RedshiftPredictorConfig
    config: RedshiftPredictorConfig
    base_model_prefix = "predictor"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def __init__(self, config: RedshiftPredictorConfig):
        super().__init__(config)
        self.backbone = ResNetModel(config.backbone_config)
        self.feature_layer = nn.Sequential(
            nn.Flatten(), nn.Linear(config.backbone_config.hidden_sizes[-1], config.feature_dim), nn.SiLU()
        )
        self.regressor = nn.Linear(config.feature_dim, 1)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """ResNet's initialisation (Kaiming) for every layer, the head included."""
        self.backbone._init_weights(module)

    def stretch(self, fluxes: torch.Tensor) -> torch.Tensor:
        """The model's input stretch ``asinh(flux / softening) / scale`` per band, on (N, bands, H, W) fluxes."""
        shape = (1, -1, 1, 1)
        softening = torch.tensor(self.config.flux_softening, device=fluxes.device, dtype=fluxes.dtype).view(shape)
        scale = torch.tensor(self.config.flux_scale, device=fluxes.device, dtype=fluxes.dtype).view(shape)
        return torch.asinh(fluxes / softening) / scale

    def forward(self, pixel_values: torch.Tensor, redshifts: torch.Tensor | None = None) -> RedshiftPredictorOutput:
        """Predict redshifts from fluxes.

        Args:
            pixel_values: fluxes (N, bands, H, W) in HSC units (AB zero point 27), not normalised.
            redshifts: spectroscopic redshifts (N,); when given, the output carries the mean loss.
        """
        stretched = self.stretch(pixel_values.float()).to(self.dtype)
        pooled = self.backbone(stretched).pooler_output
        features = self.feature_layer(pooled)
        low, high = math.log1p(self.config.redshift_min), math.log1p(self.config.redshift_max)
        log1p_z = low + (high - low) * torch.sigmoid(self.regressor(features).squeeze(-1).float())
        redshift = torch.expm1(log1p_z)
        loss = None
        if redshifts is not None:
            redshifts = redshifts.to(redshift).reshape(-1)
            if self.config.loss_type == "hsc":
                loss = hsc_loss(redshift, redshifts).mean()
            else:
                loss = nn.functional.huber_loss(log1p_z, torch.log1p(redshifts), delta=_HUBER_DELTA)
        return RedshiftPredictorOutput(loss=loss, redshift=redshift, features=features)


AutoConfig.register(RedshiftPredictorConfig.model_type, RedshiftPredictorConfig, exist_ok=True)
AutoModel.register(RedshiftPredictorConfig, RedshiftPredictor, exist_ok=True)


@torch.no_grad()
def predict_redshifts(
    model: RedshiftPredictor, fluxes: np.ndarray, batch_size: int = 256, progress: bool = False
) -> np.ndarray:
    """Predicted redshifts (N,) of flux cutouts (N, bands, H, W) in HSC units; any sliceable array works.

    Runs in eval mode on the model's device, ``batch_size`` cutouts at a time.
    """
    return _run(model, fluxes, batch_size, progress, "redshift")


@torch.no_grad()
def predictor_features(
    model: RedshiftPredictor, fluxes: np.ndarray, batch_size: int = 256, progress: bool = False
) -> np.ndarray:
    """Penultimate-layer features (N, feature_dim) of flux cutouts (N, bands, H, W), for Frechet distances."""
    return _run(model, fluxes, batch_size, progress, "features")


def _run(model: RedshiftPredictor, fluxes: np.ndarray, batch_size: int, progress: bool, output: str) -> np.ndarray:
    channels = model.config.backbone_config.num_channels
    if len(fluxes.shape) != 4 or fluxes.shape[1] != channels:
        raise ValueError(f"Expected fluxes of shape (N, {channels}, H, W); got {tuple(fluxes.shape)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    model.eval()
    results = []
    for start in tqdm(range(0, fluxes.shape[0], batch_size), desc=f"predictor {output}", disable=not progress):
        batch = np.asarray(fluxes[start : start + batch_size], dtype=np.float32)
        if not np.isfinite(batch).all():
            raise ValueError(
                f"Fluxes {start}-{start + len(batch) - 1} contain NaN or inf pixels; replace or drop those cutouts."
            )
        pixel_values = torch.from_numpy(batch).to(model.device)
        results.append(getattr(model(pixel_values), output).float().cpu().numpy())
    if not results:
        return np.zeros((0,) if output == "redshift" else (0, model.config.feature_dim), dtype=np.float32)
    return np.concatenate(results)
