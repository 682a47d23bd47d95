"""Batched PSF-convolved Sersic profile fits in torch.

The model of one image stamp is::

    model(x, y) = A * (PSF * S)(x, y) + sky,   S = exp(-b_n * ((R / r_e) ** (1 / n) - 1))

with ``R`` the elliptical radius along the semi-major axis (``R**2 = x_maj**2 + (y_min / q)**2``), so
``r_e`` is the semi-major half-light radius and ``A`` the surface brightness at ``r_e``. ``b_n`` is exact
(``gammaincinv(2n, 1/2)``, tabulated).

Rendering. The profile is sampled at pixel centres, except in the central box of the stamp, where each
pixel is the mean of ``oversampling**2`` sub-pixels, and the cusp inside ``R < 0.5`` pixel, whose flux is
computed analytically (incomplete gamma function) and shared bilinearly between the four pixels around
the centre (a de Vaucouleurs cusp cannot be sampled on any grid). This pixel-integrated profile is
convolved by FFT with the PSF divided by the pixel response (``sinc`` in Fourier space), because PSF
images such as HSC's, and :mod:`galaxy_pipeline.evaluation.psf`, already include the pixel. Against
GalSim drawings of PSF-convolved n = 0.5-4 profiles the rendering is good to ~1% of the peak pixel.

Fitting. Free parameters: ``log r_e``, ``log n`` (kept smoothly inside [0.3, 8]), the reduced shear
``(g1, g2)`` (axis ratio ``q = (1 - |g|) / (1 + |g|)``, position angle ``atan2(g2, g1) / 2``) and the
centre ``(x0, y0)``. For every trial of these, the amplitude ``A`` and a constant ``sky`` are solved in
closed form by weighted linear least squares (variable projection): fitting the sky, rather than
subtracting a median, keeps de Vaucouleurs wings from being absorbed. The nonlinear parameters are found
by Levenberg-Marquardt with analytic Jacobians (profile derivatives convolved by the same FFT; centre
derivatives by spectral differentiation), for a whole batch of stamps at once; each stamp keeps its own
damping and stops on its own.

Bounds. A fit that ends at a bound of ``n``, ``r_e`` or ``q`` (within :data:`BOUND_TOLERANCE` of the
bound's log range: the sigmoid keeping ``n`` inside its range flattens there, so a fit pushing past a
bound stalls just short of it) has not measured that parameter: it is ``at_bound`` and not ``ok``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammaincinv

SERSIC_INDEX_RANGE: tuple[float, float] = (0.3, 8.0)
"""Bounds of the fitted Sersic index n."""

BOUND_TOLERANCE = 0.02
"""Share of a bounded parameter's log range (``n``, ``r_e``, ``q``) within which a fit counts as at the bound."""

MIN_RADIUS_PIXELS = 0.05
"""Lower bound of the fitted half-light radius r_e (pixels); the upper bound is twice the stamp side."""

CORE_RADIUS_PIXELS = 0.5
"""Elliptical radius (pixels) inside which the profile's flux is computed analytically, not sampled."""

_MAX_SHEAR = 0.9
_MIN_AXIS_RATIO = (1.0 - _MAX_SHEAR) / (1.0 + _MAX_SHEAR)
_N_SHAPE = 4
_N_PARAMS = 6
_SCALAR_STEP = 1e-5
_LOG_N_MIN, _LOG_N_MAX = math.log(SERSIC_INDEX_RANGE[0]), math.log(SERSIC_INDEX_RANGE[1])
_B_N_LOG_N = np.linspace(_LOG_N_MIN, _LOG_N_MAX, 2048)
_B_N_TABLE = gammaincinv(2.0 * np.exp(_B_N_LOG_N), 0.5)


@dataclass
class SersicFit:
    """Best-fit Sersic parameters of a batch of stamps (one entry per stamp, numpy arrays).

    Attributes:
        sersic_index: Sersic index n (dimensionless).
        half_light_radius_pix: semi-major half-light radius r_e in pixels (intrinsic, before the PSF).
        axis_ratio: minor/major axis ratio q of the profile.
        position_angle: angle of the major axis from the +x (column) axis, radians in (-pi/2, pi/2].
        x_centre, y_centre: profile centre in stamp pixel coordinates (pixel centres are integers).
        amplitude: surface brightness at r_e in stamp units per pixel.
        sky: constant background in stamp units per pixel.
        reduced_chi2: chi-square per weighted pixel of the best fit.
        unexplained_fraction: share of the source's signal chi-square (above the noise) left in the
            residual inside the fit's ``source_mask``, beyond 3 sigma of the residual's noise: 0 for a
            model as good as the noise allows, 1 for no model. Two blended galaxies 10 pixels apart
            give ~0.16; 99% of real HSC galaxies give < 0.09.
        iterations: Levenberg-Marquardt iterations used.
        converged: the iterations met the tolerance before ``max_iter``.
        at_bound: n at either bound, r_e at either bound, or q at its lower bound (see :func:`near_bound`).
        ok: converged, finite, positive amplitude, radius in range, centre inside the supersampled
            box, not ``at_bound``, and ``unexplained_fraction`` below the limit given to :func:`fit_sersic`.
    """

    sersic_index: np.ndarray
    half_light_radius_pix: np.ndarray
    axis_ratio: np.ndarray
    position_angle: np.ndarray
    x_centre: np.ndarray
    y_centre: np.ndarray
    amplitude: np.ndarray
    sky: np.ndarray
    reduced_chi2: np.ndarray
    unexplained_fraction: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    at_bound: np.ndarray
    ok: np.ndarray


def near_bound(values: np.ndarray, low: float, high: float, tolerance: float = BOUND_TOLERANCE) -> np.ndarray:
    """Bool per value: within ``tolerance`` (share of ``log(high / low)``) of ``low`` or of ``high``.

    Args:
        values: positive parameter values (e.g. Sersic indices); NaN gives False.
        low, high: the parameter's bounds (0 < low < high), in the values' unit.
        tolerance: closeness as a share of the log range; 0 flags nothing.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        position = np.log(np.asarray(values, dtype=np.float64) / low) / math.log(high / low)
    return (position < tolerance) | (position > 1.0 - tolerance)


def _shape_scalars(params: torch.Tensor) -> torch.Tensor:
    """Per-stamp scalars of the profile, (B, 7): quadratic form (a, b, c) of R**2, log r_e, log n, b_n, core flux.

    ``R**2 = a dx**2 + b dx dy + c dy**2``; the core flux is the unit-amplitude flux inside
    ``R < CORE_RADIUS_PIXELS``. Computed in float64 (it is differentiated by finite differences).
    """
    log_r, u_n, eta1, eta2 = params[:, :_N_SHAPE].double().unbind(-1)
    log_n = _LOG_N_MIN + (_LOG_N_MAX - _LOG_N_MIN) * torch.sigmoid(u_n)
    eta = torch.sqrt(eta1**2 + eta2**2 + 1e-20)
    shear = _MAX_SHEAR * torch.tanh(eta)
    q = (1.0 - shear) / (1.0 + shear)
    p = q**-2
    k = (p - 1.0) / (2.0 * eta)
    mean = (1.0 + p) / 2.0
    position = (log_n - _LOG_N_MIN) / (_LOG_N_MAX - _LOG_N_MIN) * (len(_B_N_LOG_N) - 1)
    # A NaN trial (from extreme pixels) must index safely; its NaN chi2 then rejects the step.
    low = torch.nan_to_num(position.floor(), nan=0.0).clamp(0, len(_B_N_LOG_N) - 2)
    table = torch.as_tensor(_B_N_TABLE, device=params.device)
    b = torch.lerp(table[low.long()], table[low.long() + 1], position - low)
    n = log_n.exp()
    log_total = (
        math.log(2 * math.pi) + torch.log(q) + log_n + 2 * log_r + b - 2 * n * torch.log(b) + torch.lgamma(2 * n)
    )
    core = torch.exp(log_total) * torch.special.gammainc(
        2 * n, b * torch.exp((math.log(CORE_RADIUS_PIXELS) - log_r) / n)
    )
    return torch.stack([mean - k * eta1, -2.0 * k * eta2, mean + k * eta1, log_r, log_n, b, core], dim=-1)


def _shape_scalars_and_derivatives(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_shape_scalars` (B, 7) and their central-difference derivatives (B, 4, 7) w.r.t. the shape parameters."""
    values = _shape_scalars(params)
    steps = _SCALAR_STEP * torch.eye(_N_PARAMS, dtype=torch.float64, device=params.device)[:_N_SHAPE]
    probes = params.double()[:, None, :] + torch.cat([steps, -steps])[None]
    shifted = _shape_scalars(probes.reshape(-1, _N_PARAMS)).view(-1, 2 * _N_SHAPE, 7)
    derivatives = (shifted[:, :_N_SHAPE] - shifted[:, _N_SHAPE:]) / (2 * _SCALAR_STEP)
    return values, derivatives


class _SersicModel:
    """Renders PSF-convolved unit-amplitude Sersic stamps, and their parameter derivatives, for a batch."""

    def __init__(self, psf: torch.Tensor, stamp_size: int, oversampling: int, box_half_width: int):
        device, dtype = psf.device, psf.dtype
        self.stamp_size = stamp_size
        self.grid_size = _fft_size(stamp_size + 16)
        self.margin = (self.grid_size - stamp_size) // 2
        coords = torch.arange(self.grid_size, device=device, dtype=dtype) - self.margin
        self.grid = (coords[None, None, :], coords[None, :, None])
        kernel = torch.zeros(psf.shape[0], self.grid_size, self.grid_size, device=device, dtype=dtype)
        half = psf.shape[-1] // 2
        kernel[:, : psf.shape[-2], : psf.shape[-1]] = psf
        kernel = torch.roll(kernel, shifts=(-half, -half), dims=(-2, -1))
        fy = torch.fft.fftfreq(self.grid_size, device=device, dtype=dtype)[:, None]
        fx = torch.fft.rfftfreq(self.grid_size, device=device, dtype=dtype)[None, :]
        self.psf_fft = torch.fft.rfft2(kernel) / (torch.sinc(fy) * torch.sinc(fx))
        nyquist = 0.5 if self.grid_size % 2 == 0 else math.inf
        self.ddx = (-2j * math.pi) * torch.where(fx.abs() < nyquist, fx, 0.0)
        self.ddy = (-2j * math.pi) * torch.where(fy.abs() < nyquist, fy, 0.0)
        centre = self.margin + stamp_size // 2
        self.box = slice(centre - box_half_width, centre + box_half_width + 1)
        box_coords = coords[self.box]
        sub = (torch.arange(oversampling, device=device, dtype=dtype) + 0.5) / oversampling - 0.5
        fine = (box_coords[:, None] + sub[None, :]).reshape(-1)
        self.fine = (fine[None, None, :], fine[None, :, None])
        self.box_width = box_coords.numel()
        self.oversampling = oversampling

    def _profile(self, scalars: torch.Tensor, params: torch.Tensor, points: tuple, shape_derivatives: torch.Tensor):
        """Profile (B, h, w) at ``points`` with the core cut out, and with ``shape_derivatives`` its derivatives
        (B, 4, h, w) with respect to the shape parameters: log r_e changes only r_e, u_n only n and b_n,
        (g1, g2) only the quadratic form of R**2.
        """
        view = (-1, 1, 1)
        dx = points[0] - params[:, 4].view(view)
        dy = points[1] - params[:, 5].view(view)
        a, bxy, c, log_r, log_n, b = (scalars[:, i].float().view(view) for i in range(6))
        radius2 = (a * dx**2 + c * dy**2 + bxy * dx * dy).clamp_min(1e-12)
        inside_core = radius2 < CORE_RADIUS_PIXELS**2
        inv_n = torch.exp(-log_n)
        log_ratio = 0.5 * torch.log(radius2) - log_r
        t = torch.exp(log_ratio * inv_n)
        value = torch.exp(-b * (t - 1.0)).masked_fill_(inside_core, 0.0)
        if shape_derivatives is None:
            return value, None
        d = shape_derivatives.float()
        w = value * b * t * inv_n
        d_log_n = w * log_ratio * d[:, 1, 4].view(view) - value * (t - 1.0) * d[:, 1, 5].view(view)
        d_radius2 = -0.5 * w / radius2
        derivatives = [w, d_log_n]
        for j in (2, 3):
            coeffs = d[:, j]
            quad = coeffs[:, 0].view(view) * dx**2 + coeffs[:, 2].view(view) * dy**2 + coeffs[:, 1].view(view) * dx * dy
            derivatives.append(d_radius2 * quad)
        return value, torch.stack(derivatives, dim=1)

    def _deposit(self, image: torch.Tensor, params: torch.Tensor, flux: torch.Tensor) -> None:
        """Add point fluxes (B, K) at each stamp's centre into ``image`` (B, K, G, G), shared bilinearly."""
        x = params[:, 4] + self.margin
        y = params[:, 5] + self.margin
        x_low, y_low = x.floor(), y.floor()
        fx, fy = x - x_low, y - y_low
        flat = image.view(image.shape[0], image.shape[1], -1)
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                iy = (y_low.long() + dy).clamp(0, self.grid_size - 1)
                ix = (x_low.long() + dx).clamp(0, self.grid_size - 1)
                index = (iy * self.grid_size + ix)[:, None, None].expand(-1, flat.shape[1], 1)
                flat.scatter_add_(2, index, (flux * (wx * wy)[:, None])[:, :, None])

    def render(self, params: torch.Tensor, psf_index: torch.Tensor, jacobian: bool = False) -> torch.Tensor:
        """PSF-convolved unit-amplitude stamps (B, S, S), or with ``jacobian`` (B, 7, S, S): model then d/d(params)."""
        if jacobian:
            scalars, shape_derivatives = _shape_scalars_and_derivatives(params)
        else:
            scalars, shape_derivatives = _shape_scalars(params), None
        value, derivatives = self._profile(scalars, params, self.grid, shape_derivatives)
        fine_value, fine_derivatives = self._profile(scalars, params, self.fine, shape_derivatives)
        s, w = self.oversampling, self.box_width
        layers = value[:, None] if derivatives is None else torch.cat([value[:, None], derivatives], dim=1)
        fine_layers = (
            fine_value[:, None] if derivatives is None else torch.cat([fine_value[:, None], fine_derivatives], 1)
        )
        layers[:, :, self.box, self.box] = fine_layers.view(*fine_layers.shape[:2], w, s, w, s).mean(dim=(3, 5))
        core = scalars[:, 6:7] if derivatives is None else torch.cat([scalars[:, 6:7], shape_derivatives[:, :, 6]], 1)
        self._deposit(layers, params, core.float())
        spectra = torch.fft.rfft2(layers) * self.psf_fft[psf_index][:, None]
        if jacobian:
            spectra = torch.cat([spectra, spectra[:, :1] * self.ddx, spectra[:, :1] * self.ddy], dim=1)
        convolved = torch.fft.irfft2(spectra, s=(self.grid_size, self.grid_size))
        m, n = self.margin, self.stamp_size
        convolved = convolved[:, :, m : m + n, m : m + n]
        return convolved if jacobian else convolved[:, 0]


def _fft_size(minimum: int) -> int:
    """Smallest grid side >= ``minimum`` with only the prime factors 2, 3 and 5 (fast FFTs)."""
    size = minimum
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 1


def _linear_solve(model: torch.Tensor, data: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Weighted least-squares amplitude and sky for flattened stamps (B, P); the last pixel is the sky prior.

    The prior pixel has model 0, data 0 and sky coefficient 1, so it pulls the sky towards 0 with its weight.
    Returns amplitude (B,), sky (B,) and the weighted residuals sqrt(w) * (data - fit), (B, P).
    """
    model = torch.cat([model, torch.zeros_like(model[:, :1])], dim=1)
    sw = weight.sum(-1)
    wm = weight * model
    sm = wm.sum(-1)
    smm = (wm * model).sum(-1)
    sd = (weight * data).sum(-1)
    smd = (wm * data).sum(-1)
    det = (smm * sw - sm * sm).clamp_min(1e-30)
    amplitude = (smd * sw - sm * sd) / det
    sky = (smm * sd - sm * smd) / det
    residual = weight.sqrt() * (data - amplitude[:, None] * model - sky[:, None])
    return amplitude, sky, residual


def _initial_params(x0, y0, r_e, axis_ratio, position_angle, sersic_index) -> torch.Tensor:
    """Free-parameter vectors (B, 6) from physical starting values."""
    log_n = torch.log(sersic_index.clamp(*SERSIC_INDEX_RANGE))
    frac = ((log_n - _LOG_N_MIN) / (_LOG_N_MAX - _LOG_N_MIN)).clamp(0.02, 0.98)
    shear = ((1 - axis_ratio) / (1 + axis_ratio)).clamp(0.0, 0.95 * _MAX_SHEAR) / _MAX_SHEAR
    eta = torch.atanh(shear)
    angle = 2 * position_angle
    return torch.stack([torch.log(r_e), torch.log(frac / (1 - frac)), eta * angle.cos(), eta * angle.sin(), x0, y0], -1)


def _physical(params: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sersic index, r_e (pixels), axis ratio and position angle (radians) of free-parameter vectors."""
    log_r, u_n, eta1, eta2 = params[:, :_N_SHAPE].unbind(-1)
    shear = _MAX_SHEAR * torch.tanh(torch.sqrt(eta1**2 + eta2**2))
    return {
        "sersic_index": torch.exp(_LOG_N_MIN + (_LOG_N_MAX - _LOG_N_MIN) * torch.sigmoid(u_n)),
        "half_light_radius_pix": log_r.exp(),
        "axis_ratio": (1.0 - shear) / (1.0 + shear),
        "position_angle": 0.5 * torch.atan2(eta2, eta1),
    }


def fit_sersic(
    images: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    psf: np.ndarray | torch.Tensor,
    half_light_radius_pix: np.ndarray,
    x0: np.ndarray | None = None,
    y0: np.ndarray | None = None,
    axis_ratio: np.ndarray | None = None,
    position_angle: np.ndarray | None = None,
    sersic_index: float = 1.5,
    source_mask: np.ndarray | torch.Tensor | None = None,
    max_iter: int = 40,
    tolerance: float = 1e-4,
    max_unexplained: float = 0.15,
    sky_prior_pixels: float = 0.0,
    oversampling: int = 5,
    box_half_width: int = 2,
    bound_tolerance: float = BOUND_TOLERANCE,
    device: str | torch.device = "cpu",
) -> SersicFit:
    """Fit PSF-convolved Sersic profiles with a free constant sky to a batch of square stamps.

    The source must lie within ``box_half_width`` pixels of the stamp's centre pixel ``S // 2`` (that box is
    supersampled and bounds the fitted centre). Neighbours, bad pixels and pixels off the image get weight 0.

    Args:
        images: (N, S, S) stamps (any linear flux unit).
        weights: (N, S, S) inverse noise variance of each pixel (0 = ignore the pixel).
        psf: (k, k) or (N, k, k) PSF images (odd k <= S + 16, each summing to 1, including the pixel
            response, e.g. from :mod:`galaxy_pipeline.evaluation.psf`).
        half_light_radius_pix: (N,) starting semi-major half-light radius in pixels (> 0).
        x0, y0: (N,) starting centre in stamp pixel coordinates; the centre pixel when None.
        axis_ratio: (N,) starting axis ratio in (0, 1]; round when None.
        position_angle: (N,) starting major-axis angle from +x in radians; 0 when None.
        sersic_index: starting Sersic index of every stamp.
        source_mask: (N, S, S) bool, the source's own pixels (e.g. its segment), where
            ``unexplained_fraction`` is measured; all weighted pixels when None.
        max_iter: Levenberg-Marquardt iterations at most.
        tolerance: converged when an accepted step lowers chi-square by less than this share, or none helps.
        max_unexplained: largest ``unexplained_fraction`` of a fit still counted as ``ok``.
        sky_prior_pixels: weight, in pixels of typical weight, of a Gaussian prior pulling the sky to 0 (for
            background-subtracted stamps; it matters when a galaxy fills its stamp). 0 leaves the sky free.
        oversampling: sub-pixels per side in the supersampled central box.
        box_half_width: half-width in pixels of the supersampled central box.
        bound_tolerance: a fit within this share of the log range of a bound of n, r_e or q is
            ``at_bound`` (and not ``ok``); 0 disables the check.
        device: torch device of the fit (float32 throughout).

    Returns:
        :class:`SersicFit` with one entry per stamp.
    """
    data, weight, kernel = _checked_stamps(images, weights, psf, device)
    n_stamps, stamp_size = data.shape[0], data.shape[-1]

    # Phase 1: starting parameters, their bounds, and the pixels with the sky prior as one extra "pixel".
    start = {"x0": x0, "y0": y0, "half_light_radius_pix": half_light_radius_pix, "axis_ratio": axis_ratio}
    start.update(position_angle=position_angle, sersic_index=sersic_index)
    params, bounds = _starting_point(start, n_stamps, stamp_size, box_half_width, device)
    model = _SersicModel(kernel, stamp_size, oversampling, box_half_width)
    centre = float(stamp_size // 2)
    typical_weight = (weight.sum((-2, -1)) / (weight > 0).sum((-2, -1)).clamp_min(1))[:, None]
    data = torch.cat([data.flatten(1), torch.zeros_like(data[:, 0, :1])], dim=1)
    weight = torch.cat([weight.flatten(1), sky_prior_pixels * typical_weight], dim=1)

    with torch.no_grad():
        # Phase 2: Levenberg-Marquardt on the non-linear parameters (amplitude and sky solved linearly).
        converged, iterations = _levenberg_marquardt(model, params, data, weight, bounds, max_iter, tolerance)
        # Phase 3: the final linear solve, and whether each fit is good.
        amplitude, sky, reduced_chi2, unexplained = _final_solve(model, params, data, weight, source_mask)
        physical = _physical(params)
        offset = (params[:, 4:] - centre).abs().amax(-1)
        ok = converged & torch.isfinite(params).all(-1) & torch.isfinite(amplitude) & torch.isfinite(sky)
        radius = physical["half_light_radius_pix"]
        ok &= (amplitude > 0) & (radius > 0.1) & (radius < stamp_size) & (offset < box_half_width - 1e-3)
        ok &= unexplained < max_unexplained

    # Phase 4: flag fits that ended at a parameter bound; they are failures, not measurements.
    tensors = {**physical, "x_centre": params[:, 4], "y_centre": params[:, 5], "amplitude": amplitude, "sky": sky}
    tensors.update(reduced_chi2=reduced_chi2, unexplained_fraction=unexplained)
    return _flagged_fit(tensors, iterations, converged, ok, stamp_size, bound_tolerance)


def _flagged_fit(tensors: dict, iterations, converged, ok, stamp_size: int, bound_tolerance: float) -> SersicFit:
    """The :class:`SersicFit` of the fitted values, with ``at_bound`` set and such fits not ``ok``."""
    values = {name: value.detach().cpu().numpy().astype(np.float64) for name, value in tensors.items()}
    at_bound = near_bound(values["sersic_index"], *SERSIC_INDEX_RANGE, bound_tolerance)
    at_bound |= near_bound(values["half_light_radius_pix"], MIN_RADIUS_PIXELS, 2.0 * stamp_size, bound_tolerance)
    with np.errstate(invalid="ignore", divide="ignore"):
        q_position = np.log(values["axis_ratio"] / _MIN_AXIS_RATIO) / -math.log(_MIN_AXIS_RATIO)
    at_bound |= q_position < bound_tolerance
    return SersicFit(
        **values,
        iterations=iterations.cpu().numpy(),
        converged=converged.cpu().numpy(),
        at_bound=at_bound,
        ok=ok.cpu().numpy() & ~at_bound,
    )


def _starting_point(start: dict, n_stamps: int, stamp_size: int, box_half_width: int, device):
    """Starting parameters (N, 6) from the caller's guesses (defaults where None), and their (lower, upper)."""

    def as_vector(values, default: float) -> torch.Tensor:
        values = np.full(n_stamps, default) if values is None else np.asarray(values, dtype=np.float64)
        return torch.as_tensor(values, dtype=torch.float32, device=device).reshape(n_stamps)

    centre = float(stamp_size // 2)
    params = _initial_params(
        as_vector(start["x0"], centre).clamp(centre - box_half_width, centre + box_half_width),
        as_vector(start["y0"], centre).clamp(centre - box_half_width, centre + box_half_width),
        as_vector(start["half_light_radius_pix"], 2.0).clamp(0.3, stamp_size),
        as_vector(start["axis_ratio"], 1.0).clamp(0.05, 1.0),
        as_vector(start["position_angle"], 0.0),
        as_vector(None, start["sersic_index"]),
    )
    lower = torch.tensor([math.log(MIN_RADIUS_PIXELS), -9.0, -5.0, -5.0], device=device)
    upper = torch.tensor([math.log(2.0 * stamp_size), 9.0, 5.0, 5.0], device=device)
    lower = torch.cat([lower, torch.full((2,), centre - box_half_width, device=device)])
    upper = torch.cat([upper, torch.full((2,), centre + box_half_width, device=device)])
    return params, (lower, upper)


def _checked_stamps(images, weights, psf, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stamps, weights and one PSF per stamp as float32 tensors, once their shapes are checked."""
    data = torch.as_tensor(images, dtype=torch.float32, device=device)
    weight = torch.as_tensor(weights, dtype=torch.float32, device=device)
    if data.ndim != 3 or data.shape[-1] != data.shape[-2] or weight.shape != data.shape:
        raise ValueError(
            f"images and weights must be (N, S, S) stamps, got {tuple(data.shape)}, {tuple(weight.shape)}."
        )
    n_stamps, stamp_size = data.shape[0], data.shape[-1]
    kernel = torch.as_tensor(psf, dtype=torch.float32, device=device)
    kernel = kernel.expand(n_stamps, -1, -1) if kernel.ndim == 2 else kernel
    if kernel.ndim != 3 or kernel.shape[0] != n_stamps or kernel.shape[-1] % 2 == 0:
        raise ValueError(f"psf must be (k, k) or (N, k, k) with odd k, got {tuple(kernel.shape)}.")
    if kernel.shape[-1] != kernel.shape[-2] or kernel.shape[-1] > stamp_size + 16:
        raise ValueError(f"psf images must be square and at most {stamp_size + 16} pixels wide, got {kernel.shape}.")
    return data, weight, kernel


def _levenberg_marquardt(model, params, data, weight, bounds, max_iter: int, tolerance: float):
    """Improve ``params`` (N, 6) in place, each stamp with its own damping, until it converges or ``max_iter``.

    The Jacobian is projected off the linear parameters (amplitude, sky), which are solved exactly at every
    trial (variable projection). Returns (converged, iterations) per stamp.
    """
    lower, upper = bounds
    n_stamps, device = params.shape[0], params.device
    index = torch.arange(n_stamps, device=device)

    def residual_of(trial: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return _linear_solve(model.render(trial, rows).flatten(1), data[rows], weight[rows])[2]

    chi2 = (residual_of(params, index) ** 2).sum(-1)
    damping = torch.full((n_stamps,), 1e-3, device=device)
    active = torch.ones(n_stamps, dtype=torch.bool, device=device)
    converged = torch.zeros(n_stamps, dtype=torch.bool, device=device)
    iterations = torch.zeros(n_stamps, dtype=torch.long, device=device)
    eye = torch.eye(_N_PARAMS, device=device)
    for _ in range(max_iter):
        rows = index[active]
        if rows.numel() == 0:
            break
        iterations[rows] += 1
        base = params[rows]
        layers = model.render(base, rows, jacobian=True).flatten(2)
        layers = torch.cat([layers, torch.zeros_like(layers[:, :, :1])], dim=2)
        sqrt_w = weight[rows].sqrt()
        amplitude, _, residual = _linear_solve(layers[:, 0, :-1], data[rows], weight[rows])
        jac = layers[:, 1:] * (amplitude[:, None, None] * sqrt_w[:, None])
        basis = torch.stack([layers[:, 0] * sqrt_w, sqrt_w], dim=1)
        gram = basis @ basis.transpose(1, 2) + 1e-12 * torch.eye(2, device=device)
        jac = jac - torch.linalg.solve(gram, basis @ jac.transpose(1, 2)).transpose(1, 2) @ basis
        jtj = jac @ jac.transpose(1, 2)
        jtr = -(jac @ residual[:, :, None]).squeeze(-1)
        diag = torch.diagonal(jtj, dim1=1, dim2=2).clamp_min(1e-9)
        step = -torch.linalg.solve(jtj + (damping[rows, None] * diag)[:, :, None] * eye, jtr)
        trial = torch.maximum(torch.minimum(base + step, upper), lower)
        trial_chi2 = (residual_of(trial, rows) ** 2).sum(-1)
        improved = torch.isfinite(trial_chi2) & (trial_chi2 < chi2[rows])
        relative_gain = (chi2[rows] - trial_chi2) / chi2[rows].clamp_min(1e-30)
        params[rows] = torch.where(improved[:, None], trial, base)
        chi2[rows] = torch.where(improved, trial_chi2, chi2[rows])
        damping[rows] = torch.where(improved, damping[rows] / 5.0, damping[rows] * 10.0).clamp(1e-7, 1e7)
        done = (improved & (relative_gain < tolerance)) | (damping[rows] > 1e6)
        converged[rows] |= done
        active[rows] &= ~done
    return converged, iterations


def _final_solve(model, params, data, weight, source_mask):
    """Amplitude and sky at the fitted parameters, the reduced chi-square over the weighted pixels, and the
    share of the source's signal left unexplained."""
    index = torch.arange(params.shape[0], device=params.device)
    amplitude, sky, residual = _linear_solve(model.render(params, index).flatten(1), data, weight)
    residual, pixel_weight = residual[:, :-1], weight[:, :-1]
    reduced_chi2 = (residual**2).sum(-1) / (pixel_weight > 0).sum(-1).clamp_min(1)
    inside = pixel_weight > 0
    if source_mask is not None:
        inside &= torch.as_tensor(source_mask, device=residual.device).bool().flatten(1)
    n_inside = inside.sum(-1)
    residual_chi2 = (residual**2 * inside).sum(-1)
    signal_chi2 = (pixel_weight * (data[:, :-1] - sky[:, None]) ** 2 * inside).sum(-1)
    excess = residual_chi2 - n_inside - 3.0 * (2.0 * n_inside).sqrt()
    return amplitude, sky, reduced_chi2, excess.clamp_min(0) / (signal_chi2 - n_inside).clamp_min(1e-9)
