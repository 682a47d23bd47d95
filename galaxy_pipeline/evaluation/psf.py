"""Point-spread function images of the HSC bands, for detection filters and PSF-convolved profile fits.

The default is the HSC PDR2 Wide median seeing modelled as a circular Moffat profile
(:data:`galaxy_pipeline.hsc.PSF_FWHM_ARCSEC`, slope :data:`galaxy_pipeline.hsc.PSF_MOFFAT_BETA`),
integrated over the 0.168" pixels and normalised to sum 1 per band. Measured PSF images (for example
the per-band PSFs that come with real HSC cutouts) can be given instead; :func:`prepare_psf` checks,
centres and normalises them.
"""

from __future__ import annotations

import numpy as np

from galaxy_pipeline.hsc import BANDS, PIXEL_SCALE_ARCSEC, PSF_FWHM_ARCSEC, PSF_MOFFAT_BETA

DEFAULT_PSF_SIZE = 25
"""Side of the PSF images in pixels (25 x 0.168" = 4.2"; holds > 99% of the Moffat flux)."""


def moffat_psf_image(
    fwhm_arcsec: float,
    beta: float = PSF_MOFFAT_BETA,
    size: int = DEFAULT_PSF_SIZE,
    pixel_scale_arcsec: float = PIXEL_SCALE_ARCSEC,
    oversampling: int = 9,
) -> np.ndarray:
    """A circular Moffat PSF integrated over square pixels, centred on the central pixel, summing to 1.

    Args:
        fwhm_arcsec: full width at half maximum of the Moffat profile in arcsec.
        beta: Moffat slope (dimensionless, > 1).
        size: side of the returned image in pixels (odd, so that the PSF centre is a pixel centre).
        pixel_scale_arcsec: pixel size in arcsec.
        oversampling: sub-pixels per pixel side used to integrate the profile over each pixel.

    Returns:
        float64 array (size, size).
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"PSF size must be an odd number of pixels >= 3, got {size}.")
    if fwhm_arcsec <= 0 or beta <= 1:
        raise ValueError(f"Moffat PSF needs fwhm_arcsec > 0 and beta > 1, got fwhm={fwhm_arcsec}, beta={beta}.")
    alpha = fwhm_arcsec / pixel_scale_arcsec / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    offsets = (np.arange(size * oversampling) + 0.5) / oversampling - size / 2.0
    r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    fine = (1.0 + r2 / alpha**2) ** (-beta)
    image = fine.reshape(size, oversampling, size, oversampling).sum(axis=(1, 3))
    return image / image.sum()


def hsc_psf_model(size: int = DEFAULT_PSF_SIZE) -> np.ndarray:
    """The HSC PDR2 Wide median PSF of each band g,r,i,z,y as pixel images, shape (5, size, size), each summing to 1."""
    return np.stack([moffat_psf_image(PSF_FWHM_ARCSEC[band], size=size) for band in BANDS])


def prepare_psf(psf: np.ndarray | None, size: int = DEFAULT_PSF_SIZE) -> np.ndarray:
    """Check and standardise per-band PSF images: (5, size, size) float64, peak on the centre pixel, each summing to 1.

    Args:
        psf: per-band PSF images (5, h, w) in band order g,r,i,z,y (any h, w; for example the PSFs
            delivered with HSC cutouts), or None for :func:`hsc_psf_model`.
        size: odd side of the returned images in pixels; larger inputs are cropped around their
            peak, smaller ones zero-padded.
    """
    if psf is None:
        return hsc_psf_model(size)
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 3 or psf.shape[0] != len(BANDS):
        raise ValueError(f"psf must have shape ({len(BANDS)}, h, w) (bands {','.join(BANDS)}), got {psf.shape}.")
    if not np.all(np.isfinite(psf)):
        raise ValueError("psf contains NaN or infinite values; give finite PSF images.")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"PSF size must be an odd number of pixels >= 3, got {size}.")
    half = size // 2
    out = np.zeros((len(BANDS), size, size))
    for band, image in enumerate(psf):
        if image.sum() <= 0:
            raise ValueError(f"psf band {BANDS[band]} sums to {image.sum():.3g}; each band must have positive flux.")
        peak_y, peak_x = np.unravel_index(np.argmax(image), image.shape)
        padded = np.pad(image, half)
        out[band] = padded[peak_y : peak_y + size, peak_x : peak_x + size]
        out[band] /= out[band].sum()
    return out
