"""Flux <-> model-space transform: a per-band arcsinh stretch, exactly invertible.

GalaxiesML pixels are fluxes (HSC coadd units, AB zero point 27) with Gaussian sky noise around
zero and a long bright tail. The diffusion model works in *model space*::

    y_b = asinh(x_b / s_b) / c_b          x_b = s_b * sinh(c_b * y_b)

where ``s_b`` is the softening of band ``b`` (flux units; the stretch is linear below it and
logarithmic above it) and ``c_b`` is chosen so that the 99th-percentile training pixel maps to 2.
Model-space images then have a spread (std ~0.5) like the [-1, 1] images DDPM noise schedules are
designed for. (Mapping the 99.9th percentile to 1 instead gives std ~0.2, and the linear
1e-4..0.02 schedule drowns the galaxies by step ~100 of 1000: the network then learns little.)
Both are fitted per band from data by :meth:`FluxTransform.fit`, which streams over chunks and
never holds a dataset in memory.

The transform is a ``transformers`` image processor: it saves itself as a readable
``preprocessor_config.json`` inside a pipeline folder, so a downloaded pipeline returns physical
fluxes with no extra file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch
from transformers import ImageProcessingMixin

from galaxy_pipeline.hsc import BANDS

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

MODEL_SPACE_LIMIT = 8.0
"""Generated model-space pixels are clipped to [-8, 8]: 4x the 99th-percentile training pixel, beyond
the brightest GalaxiesML cores; a guard against diverging samplers, not a limit on real galaxies."""

_HISTOGRAM_HALF_WIDTH = 30.0
_HISTOGRAM_BINS = 24_000


class FluxTransform(ImageProcessingMixin):
    """Per-band arcsinh stretch between HSC fluxes and model space.

    Args:
        softening: per-band softening ``s_b`` in flux units (positive), band order g,r,i,z,y.
        scale: per-band divisor ``c_b`` of the stretched pixels (positive, dimensionless).
        band_names: names of the bands along the channel axis.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        softening: Sequence[float] = (1.0,) * len(BANDS),
        scale: Sequence[float] = (1.0,) * len(BANDS),
        band_names: Sequence[str] = BANDS,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
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

    @property
    def num_bands(self) -> int:
        """Number of bands (channels) the transform expects."""
        return len(self.band_names)

    def forward(self, flux: ArrayT) -> ArrayT:
        """Map fluxes (..., bands, H, W) to model space; same type, dtype and device as the input.

        Computed in float64 for float64 input and in float32 otherwise (relative error ~1e-7).
        """
        self._check(flux, "flux")
        softening, scale = self._parameters(flux)
        if isinstance(flux, torch.Tensor):
            return (torch.asinh(flux.to(softening.dtype) / softening) / scale).to(flux.dtype)
        return (np.arcsinh(flux.astype(softening.dtype) / softening) / scale).astype(flux.dtype)

    def inverse(self, model_values: ArrayT) -> ArrayT:
        """Map model-space images (..., bands, H, W) back to fluxes; exact inverse of :meth:`forward`."""
        self._check(model_values, "model-space values")
        softening, scale = self._parameters(model_values)
        if isinstance(model_values, torch.Tensor):
            return (softening * torch.sinh(model_values.to(softening.dtype) * scale)).to(model_values.dtype)
        return (softening * np.sinh(model_values.astype(softening.dtype) * scale)).astype(model_values.dtype)

    __call__ = forward

    @classmethod
    def fit(
        cls,
        batches: Iterable[np.ndarray | torch.Tensor],
        softening_in_noise_sigmas: float = 1.0,
        upper_quantile: float = 0.99,
        upper_value: float = 2.0,
        band_names: Sequence[str] = BANDS,
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
        return cls(softening=softening, scale=scale, band_names=band_names)

    def _parameters(self, like: np.ndarray | torch.Tensor):
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
