"""Constants of the Hyper Suprime-Cam (HSC-SSP PDR2) imaging that GalaxiesML is cut from.

Pixel values in GalaxiesML (and in the GalSim mock) are HSC coadd fluxes with an AB zero point
of 27: ``mag = MAG_ZERO_POINT - 2.5 * log10(flux)``.
"""

BANDS: tuple[str, ...] = ("g", "r", "i", "z", "y")
"""Band order of the image axis (channel 0 is g, channel 4 is y)."""

PIXEL_SCALE_ARCSEC: float = 0.168
"""Angular size of one pixel in arcseconds."""

MAG_ZERO_POINT: float = 27.0
"""AB magnitude of a source whose summed pixel flux is 1."""

IMAGE_SIZE: int = 64
"""Side of a GalaxiesML cutout in pixels (64 x 0.168" = 10.75")."""

PSF_FWHM_ARCSEC: dict[str, float] = {"g": 0.77, "r": 0.76, "i": 0.58, "z": 0.68, "y": 0.68}
"""Median seeing (PSF full width at half maximum, arcsec) of the PDR2 Wide layer per band."""

DEPTH_5SIGMA_MAG: dict[str, float] = {"g": 26.5, "r": 26.1, "i": 25.9, "z": 25.1, "y": 24.4}
"""5-sigma point-source limiting AB magnitude of the PDR2 Wide layer per band."""

PSF_MOFFAT_BETA: float = 3.0
"""Moffat slope used to model the HSC PSF (mock images and PSF-convolved Sersic fits alike)."""
