"""Flux <-> model-space transform: a per-band arcsinh stretch and an optional colour basis, exactly invertible.

GalaxiesML pixels are fluxes (HSC coadd units, AB zero point 27) with Gaussian sky noise around
zero and a long bright tail. The diffusion model works in *model space*::

    y_b = asinh(x_b / s_b) / c_b          x_b = s_b * sinh(c_b * y_b)
    m   = M y                              y   = M^-1 m          (per pixel, across the bands)

where ``s_b`` is the softening of band ``b`` (flux units; the stretch is linear below it and
logarithmic above it) and ``c_b`` is chosen so that the 99th-percentile training pixel maps to 2.
Model-space images then have a spread (std ~0.5) like the [-1, 1] images DDPM noise schedules are
designed for. (Mapping the 99.9th percentile to 1 instead gives std ~0.2, and the linear
1e-4..0.02 schedule drowns the galaxies by step ~100 of 1000: the network then learns little.)
Both are fitted per band from data by :meth:`FluxTransform.fit`, which streams over chunks and
never holds a dataset in memory.

``M`` is the channel mixing: the identity (one channel per band, the paper's choice) or the
*colour basis* of :func:`colour_basis_mixing`, one luminosity channel and one scaled colour channel
per pair of adjacent bands. Its scale, not its rotation, is what matters: isotropic noise is
invariant under an orthonormal mixing, but a colour channel amplified by ``a`` weighs ``a^2`` more
in the loss and keeps its signal to higher noise levels (docs/colour_basis.md).

The transform is a diffusers ``ModelMixin`` without weights: a pipeline saves and loads it as a
component like any model, its whole state is its config (``flux_transform/preprocessor_config.json``,
readable, float64 values written exactly), and folders saved by earlier releases load unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from galaxy_pipeline.hsc import BANDS

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

MODEL_SPACE_LIMIT = 16.0
"""Generated model-space pixels are clipped to [-16, 16]: a guard against diverging samplers, not a limit
on real galaxies. The brightest mock cores reach 4.7 per band and 9.6 in the luminosity channel of a
colour basis of luminosity weight 0.45 (``benchmarks/model_space_amplitude.py``; the limit was 8 before)."""

CHANNEL_BASES = ("bands", "colour")
"""Names of the channel mixings: ``"bands"`` (identity) and ``"colour"`` (:func:`colour_basis_mixing`)."""

_HISTOGRAM_HALF_WIDTH = 30.0
_HISTOGRAM_BINS = 24_000
_LEGACY_KEYS = ("image_processor_type", "processor_class", "_processor_class")
"""Keys that folders saved by the ``transformers`` image-processor era of FluxTransform hold; ignored."""
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")


def colour_basis_mixing(
    num_bands: int = len(BANDS), luminosity_weight: float = 0.2, colour_weight: float = 2.0
) -> list[list[float]]:
    """The colour basis: row 0 is ``luminosity_weight`` x the sum of the stretched bands, row ``k``
    (1..B-1) is ``colour_weight`` x (band k-1 minus band k), i.e. g-r, r-i, i-z, z-y for grizy.

    Invertible for any non-zero weights (the rows are independent); both weights are dimensionless.
    """
    if num_bands < 2:
        raise ValueError(f"A colour basis needs at least 2 bands; got {num_bands}.")
    if not (luminosity_weight != 0 and colour_weight != 0):
        raise ValueError(
            f"luminosity_weight and colour_weight must be non-zero; got {luminosity_weight}, {colour_weight}."
        )
    rows = [[float(luminosity_weight)] * num_bands]
    for k in range(1, num_bands):
        row = [0.0] * num_bands
        row[k - 1], row[k] = float(colour_weight), -float(colour_weight)
        rows.append(row)
    return rows


def channel_mixing_for(
    basis: str, num_bands: int = len(BANDS), colour_weights: Sequence[float] = (0.2, 2.0)
) -> list[list[float]] | None:
    """The channel mixing named ``basis`` (one of :data:`CHANNEL_BASES`): ``None`` for ``"bands"``.

    ``colour_weights`` = (luminosity weight, colour weight) of :func:`colour_basis_mixing` (``"colour"`` only).
    """
    if basis not in CHANNEL_BASES:
        raise ValueError(f"Unknown channel basis {basis!r}; choose one of {CHANNEL_BASES}.")
    if basis == "bands":
        return None
    luminosity_weight, colour_weight = colour_weights
    return colour_basis_mixing(num_bands, luminosity_weight, colour_weight)


class FluxTransform(ModelMixin, ConfigMixin):
    """Per-band arcsinh stretch (and optional channel mixing) between HSC fluxes and model space.

    A weightless diffusers model: its state is its config, saved as ``preprocessor_config.json``.

    Args:
        softening: per-band softening ``s_b`` in flux units (positive), band order g,r,i,z,y.
        scale: per-band divisor ``c_b`` of the stretched pixels (positive, dimensionless).
        band_names: names of the bands along the channel axis.
        channel_mixing: invertible (bands x bands) matrix ``M`` applied across the stretched bands of
            every pixel (dimensionless), e.g. :func:`colour_basis_mixing`; ``None``: one channel per band.
    """

    config_name = "preprocessor_config.json"

    @register_to_config
    def __init__(
        self,
        softening: Sequence[float] = (1.0,) * len(BANDS),
        scale: Sequence[float] = (1.0,) * len(BANDS),
        band_names: Sequence[str] = BANDS,
        channel_mixing: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        softening = [float(s) for s in softening]
        scale = [float(c) for c in scale]
        band_names = [str(b) for b in band_names]
        if not len(softening) == len(scale) == len(band_names):
            raise ValueError(
                f"softening ({len(softening)}), scale ({len(scale)}) and band_names ({len(band_names)}) "
                "must have one entry per band."
            )
        for name, values in (("softening", softening), ("scale", scale)):
            if not all(np.isfinite(v) and v > 0 for v in values):
                raise ValueError(f"Every {name} value must be finite and > 0; got {values}.")
        self.softening = softening
        self.scale = scale
        self.band_names = band_names
        self.channel_mixing = None if channel_mixing is None else _check_mixing(channel_mixing, len(band_names))
        self._unmixing = None if self.channel_mixing is None else np.linalg.inv(np.array(self.channel_mixing))

    @property
    def num_bands(self) -> int:
        """Number of bands (channels) the transform expects."""
        return len(self.band_names)

    @property
    def dtype(self) -> torch.dtype:
        """float32: the transform has no weights, and computes in float32 (float64 for float64 input)."""
        return torch.float32

    @property
    def device(self) -> torch.device:
        """The CPU: the transform has no weights, and computes on the device of its input."""
        return torch.device("cpu")

    def forward(self, flux: ArrayT) -> ArrayT:
        """Map fluxes (..., bands, H, W) to model space; same type, dtype and device as the input.

        Computed in float64 for float64 input and in float32 otherwise (relative error ~1e-7).
        """
        self._check(flux, "flux")
        softening, scale = self._per_band(flux)
        if isinstance(flux, torch.Tensor):
            stretched = torch.asinh(flux.to(softening.dtype) / softening) / scale
            return self._mix(stretched, self.channel_mixing).to(flux.dtype)
        stretched = np.arcsinh(flux.astype(softening.dtype) / softening) / scale
        return self._mix(stretched, self.channel_mixing).astype(flux.dtype)

    def inverse(self, model_values: ArrayT) -> ArrayT:
        """Map model-space images (..., bands, H, W) back to fluxes; exact inverse of :meth:`forward`."""
        self._check(model_values, "model-space values")
        softening, scale = self._per_band(model_values)
        if isinstance(model_values, torch.Tensor):
            stretched = self._mix(model_values.to(softening.dtype), self._unmixing)
            return (softening * torch.sinh(stretched * scale)).to(model_values.dtype)
        stretched = self._mix(model_values.astype(softening.dtype), self._unmixing)
        return (softening * np.sinh(stretched * scale)).astype(model_values.dtype)

    @classmethod
    def fit(
        cls,
        batches: Iterable[np.ndarray | torch.Tensor],
        softening_in_noise_sigmas: float = 1.0,
        upper_quantile: float = 0.99,
        upper_value: float = 2.0,
        band_names: Sequence[str] = BANDS,
        channel_mixing: Sequence[Sequence[float]] | None = None,
    ) -> FluxTransform:
        """Fit softening and scale per band from flux images, streaming over ``batches``.

        Each batch is an array of shape (N, bands, H, W). One pass; memory is a fixed histogram
        per band. The sky noise sigma of a band is measured on the faint side of the pixel
        distribution (median minus 15.87th percentile), which galaxies do not bias; the softening
        is ``softening_in_noise_sigmas`` times it. The scale maps the ``upper_quantile`` pixel
        to ``upper_value`` in model space (never below 0.5, for data without sources).

        Args:
            batches: iterable of flux arrays (N, bands, H, W), e.g. chunks of a GalaxiesML file.
            softening_in_noise_sigmas: softening in units of the fitted sky noise sigma.
            upper_quantile: pixel quantile (0-1) that maps to ``upper_value``.
            upper_value: model-space value of the ``upper_quantile`` pixel (positive).
            band_names: band names, one per channel.
            channel_mixing: the channel mixing of the result (see the class), not fitted.
        """
        if not 0.5 < upper_quantile < 1:
            raise ValueError(f"upper_quantile must be in (0.5, 1); got {upper_quantile}.")
        if not upper_value > 0:
            raise ValueError(f"upper_value must be > 0; got {upper_value}.")
        if not softening_in_noise_sigmas > 0:
            raise ValueError(f"softening_in_noise_sigmas must be > 0; got {softening_in_noise_sigmas}.")
        num_bands = len(band_names)
        edges = np.linspace(-_HISTOGRAM_HALF_WIDTH, _HISTOGRAM_HALF_WIDTH, _HISTOGRAM_BINS + 1)
        counts = np.zeros((num_bands, _HISTOGRAM_BINS), dtype=np.int64)
        histogram_unit = None
        for batch in batches:
            batch = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch)
            if batch.ndim != 4 or batch.shape[1] != num_bands:
                raise ValueError(f"Expected batches of shape (N, {num_bands}, H, W); got {batch.shape}.")
            per_band = np.moveaxis(batch, 1, 0).reshape(num_bands, -1).astype(np.float64)
            per_band = [values[np.isfinite(values)] for values in per_band]
            if histogram_unit is None:
                histogram_unit = np.array([_robust_sigma(values) for values in per_band])
            for band, values in enumerate(per_band):
                counts[band] += np.histogram(np.arcsinh(values / histogram_unit[band]), bins=edges)[0]
        if histogram_unit is None or counts.sum(axis=1).min() == 0:
            raise ValueError("FluxTransform.fit received no finite pixels; pass at least one non-empty batch.")

        def quantile(band: int, q: float) -> float:
            cumulative = np.cumsum(counts[band]) / counts[band].sum()
            stretched = np.interp(q, cumulative, edges[1:])
            return float(np.sinh(stretched) * histogram_unit[band])

        softening, scale = [], []
        for band in range(num_bands):
            noise_sigma = quantile(band, 0.5) - quantile(band, 0.158655)
            if not noise_sigma > 0:
                noise_sigma = float(histogram_unit[band])
            softening.append(softening_in_noise_sigmas * noise_sigma)
            stretched = float(np.arcsinh(quantile(band, upper_quantile) / softening[-1]))
            scale.append(max(stretched / upper_value, 0.5))
        return cls(softening=softening, scale=scale, band_names=band_names, channel_mixing=channel_mixing)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Write ``preprocessor_config.json`` to ``save_directory`` (weight options such as
        ``safe_serialization`` are accepted and ignored: there are no weights)."""
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs
    ) -> FluxTransform:
        """Load from a folder (or Hub id) holding ``preprocessor_config.json``.

        Reads the folders of every release, including the ``transformers`` image-processor files of
        earlier ones. Hub options (``revision``, ``token``, ``cache_dir``, ...) are passed on; weight
        options that diffusers passes to every model (``torch_dtype``, ``device_map``, ...) are ignored.
        """
        hub_options = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        config = cls.load_config(pretrained_model_name_or_path, subfolder=subfolder, **hub_options)
        config = {key: value for key, value in config.items() if key not in _LEGACY_KEYS}
        return cls.from_config(config)

    def _per_band(self, like: np.ndarray | torch.Tensor):
        """Softening and scale shaped (bands, 1, 1), in the precision of ``like`` (at least float32)."""
        shape = (self.num_bands, 1, 1)
        if isinstance(like, torch.Tensor):
            dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
            return tuple(
                torch.tensor(values, dtype=dtype, device=like.device).reshape(shape)
                for values in (self.softening, self.scale)
            )
        dtype = np.float64 if like.dtype == np.float64 else np.float32
        return tuple(np.reshape(values, shape).astype(dtype) for values in (self.softening, self.scale))

    @staticmethod
    def _mix(values: ArrayT, matrix) -> ArrayT:
        """``matrix`` (bands x bands) applied across the band axis of ``values`` (..., bands, H, W)."""
        if matrix is None:
            return values
        if isinstance(values, torch.Tensor):
            weights = torch.as_tensor(np.asarray(matrix), dtype=values.dtype, device=values.device)
            return torch.einsum("cb,...bhw->...chw", weights, values)
        return np.einsum("cb,...bhw->...chw", np.asarray(matrix, dtype=values.dtype), values)

    def _check(self, values: np.ndarray | torch.Tensor, what: str) -> None:
        if values.ndim < 3 or values.shape[-3] != self.num_bands:
            raise ValueError(
                f"Expected {what} of shape (..., {self.num_bands}, H, W) with bands {self.band_names}; "
                f"got shape {tuple(values.shape)}."
            )
        finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
        if not finite:
            raise ValueError(
                f"The {what} contain NaN or inf pixels; replace or drop them before the transform "
                "(`galaxy-pipeline data convert` drops such rows and counts them)."
            )


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 x median absolute deviation, or 1 when that is zero (all-constant data)."""
    if values.size == 0:
        return 1.0
    sigma = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    return sigma if sigma > 0 else 1.0


def _check_mixing(matrix: Sequence[Sequence[float]], num_bands: int) -> list[list[float]]:
    """``matrix`` as a list of float rows, checked to be a finite, well-conditioned (bands x bands) matrix."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != (num_bands, num_bands) or not np.isfinite(array).all():
        raise ValueError(f"channel_mixing must be a finite {num_bands} x {num_bands} matrix; got shape {array.shape}.")
    if np.linalg.cond(array) > 1e8:
        raise ValueError("channel_mixing is singular (not invertible); use colour_basis_mixing() or None.")
    return array.tolist()
