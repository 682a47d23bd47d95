"""The galaxy population of the GalSim mock: which galaxies exist, how bright, how large, what shape.

Every galaxy is a de Vaucouleurs bulge with the CWW elliptical (E) spectrum plus an exponential
disk with a CWW Sbc, Scd or Im spectrum (Coleman, Wu & Weedman 1980, extended by Bolzonella et
al. 2000; the templates ship with GalSim). LSST g,r,i,z,y throughputs (also shipped with GalSim)
stand in for the HSC filters. Each galaxy is drawn from its own random stream, so galaxy ``index``
of seed ``seed`` is the same whatever else is drawn.

The recipe, in drawing order, with the numbers of the ``fiducial`` population (:data:`POPULATIONS`
holds every population's numbers; ``blue_compact`` changes the luminosity function, SED mix, size
evolution and bulge fractions, so that a recipe can be examined on galaxies it was not tuned on):

1. Redshift from p(z) ~ z^1.5 exp(-z / 0.294) on [0.01, 4] (93% below z = 1.5), or given.
2. Early type (bulge-dominated) with probability 0.45 / (1 + z); otherwise late type, whose disk
   spectrum is Sbc, Scd or Im, shifting towards Im at high redshift.
3. Rest-frame r-band bulge-to-total ratio: U(0.6, 1) for early types, 0.4 Beta(1, 4) for late.
4. Rest-frame r-band absolute magnitude from a Schechter luminosity function per type whose L*
   brightens as (1 + z)^p, restricted to M* - 3 and brighter than the apparent limits, and
   weighted by a spectroscopic completeness that falls through i = 22.5; apparent magnitudes
   follow from the Planck18 distance modulus and K-corrections through the redshifted templates
   (with Madau 1995 intergalactic absorption). Renormalising per galaxy keeps high-redshift
   galaxies above the noise, as a spectroscopic sample is.
5. Half-light radii: disks 4.5 kpc (1 + z)^-0.75, bulges 2.8 kpc (1 + z)^-1.3 (van der Wel et al.
   2014-like), scaled by (L / L*)^slope with log-normal scatter, turned into angles with the
   Planck18 angular diameter distance and capped at very low redshift.
6. Shapes: disk axis ratio from a random inclination of a disk of thickness 0.2, bulge axis ratio
   ~ N(0.75, 0.15), one position angle, and a sub-pixel offset from the stamp centre.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT

BULGE_TEMPLATE = "E"
DISK_TEMPLATES: tuple[str, ...] = ("Sbc", "Scd", "Im")
TEMPLATES: tuple[str, ...] = (BULGE_TEMPLATE, *DISK_TEMPLATES)
"""CWW spectral templates, files ``CWW_<name>_ext.sed`` of GalSim's share folder."""
REFERENCE_BAND = "r"
"""Absolute magnitudes are AB magnitudes in the rest-frame LSST r band."""

MOCK_REDSHIFT_RANGE: tuple[float, float] = (0.01, 4.0)
"""Redshifts the mock draws and tabulates (every population)."""
BRIGHTEST_BELOW_MSTAR = 3.0
"""The luminosity function is cut at M* - 3 mag."""
I_MAG_BRIGHT_LIMIT = 17.0
"""Brightest apparent i magnitude (HSC Wide saturates near i = 17-18)."""
I_MAG_FAINT_LIMIT = 25.0
"""Faintest apparent i magnitude drawn."""
COMPLETENESS_MAG, COMPLETENESS_WIDTH = 22.5, 0.5
"""Spectroscopic completeness 1 / (1 + exp((i - 22.5) / 0.5)) weighting the luminosity function."""
MAX_DISK_RADIUS_ARCSEC, MAX_BULGE_RADIUS_ARCSEC = 3.0, 2.0
"""Caps of the half-light radii (a z < 0.03 giant would fill and overflow the 10.75" stamp)."""
DISK_THICKNESS = 0.2
"""Edge-on axis ratio of disks."""


@dataclass(frozen=True)
class Population:
    """The numbers of one mock galaxy population (redshift law, types, luminosities, sizes).

    Magnitudes are rest-frame LSST-r AB; radii are half-light radii in kpc at z = 0 and M*.
    """

    redshift_power: float
    """p(z) ~ z^power exp(-z / scale)."""
    redshift_scale: float
    early_fraction_at_z0: float
    """Probability of an early (bulge-dominated) type at z = 0 ..."""
    early_fraction_evolution: float
    """... times (1 + z)^-evolution."""
    disk_template_weights: tuple[float, float, float]
    """Sbc, Scd, Im shares of late-type disks at z = 0; scaled by (1+z)^-1, 1, (1+z) at redshift z."""
    early_bulge_to_total: tuple[float, float]
    """Early types: r-band bulge-to-total ratio ~ U(low, high)."""
    late_bulge_to_total: tuple[float, float, float]
    """Late types: (scale, a, b): bulge-to-total ratio ~ scale Beta(a, b)."""
    schechter: dict[bool, tuple[float, float, float]]
    """Early type? -> (M* at z = 0 in mag, faint-end slope alpha, evolution p of L* ~ (1+z)^p)."""
    disk_radius: tuple[float, float, float, float]
    """Disks: (kpc at z = 0, exponent of (1 + z), slope in L / L*, log-normal scatter in dex)."""
    bulge_radius: tuple[float, float, float, float]
    """Bulges: the same four numbers."""


POPULATIONS: dict[str, Population] = {
    # The mock every preset was developed on.
    "fiducial": Population(
        redshift_power=1.5,
        redshift_scale=0.294,
        early_fraction_at_z0=0.45,
        early_fraction_evolution=1.0,
        disk_template_weights=(0.45, 0.35, 0.20),
        early_bulge_to_total=(0.6, 1.0),
        late_bulge_to_total=(0.4, 1.0, 4.0),
        schechter={True: (-21.4, -0.5, 1.0), False: (-21.1, -1.3, 1.5)},
        disk_radius=(4.5, -0.75, 0.2, 0.18),
        bulge_radius=(2.8, -1.3, 0.3, 0.15),
    ),
    # A held-out population, never used to choose a recipe: fewer bulges that vanish faster with
    # redshift and carry less of the light, bluer disks, a steeper and faster-brightening luminosity
    # function for late types, and smaller galaxies that shrink faster.
    "blue_compact": Population(
        redshift_power=1.2,
        redshift_scale=0.33,
        early_fraction_at_z0=0.30,
        early_fraction_evolution=2.0,
        disk_template_weights=(0.25, 0.40, 0.35),
        early_bulge_to_total=(0.45, 0.9),
        late_bulge_to_total=(0.25, 1.5, 5.0),
        schechter={True: (-21.0, -0.6, 0.6), False: (-20.8, -1.5, 2.2)},
        disk_radius=(4.0, -1.0, 0.25, 0.22),
        bulge_radius=(2.4, -1.1, 0.45, 0.2),
    ),
}
"""Mock populations by name (``galaxy-pipeline data mock --population NAME``)."""
DEFAULT_POPULATION = "fiducial"


def get_population(name: str) -> Population:
    """The population called ``name``; ValueError naming the choices otherwise."""
    if name not in POPULATIONS:
        raise ValueError(f"population must be one of {sorted(POPULATIONS)}; got {name!r}.")
    return POPULATIONS[name]


SKY_PATCH_DEG: tuple[float, float, float, float] = (149.0, 151.0, 1.0, 3.0)
"""(ra_min, ra_max, dec_min, dec_max) of the uniform random positions, around COSMOS."""

_REDSHIFT_GRID_STEP = 0.01
_WAVELENGTH_STEP_NM = 1.0
_LYMAN_SERIES_NM = np.array([121.567, 102.572, 97.254, 94.974])
_LYMAN_SERIES_STRENGTH = np.array([3.6e-3, 1.7e-3, 1.2e-3, 9.3e-4])
_LYMAN_LIMIT_NM = 91.2
_ARCSEC_PER_RADIAN = 180.0 / np.pi * 3600.0


def import_galsim():
    """Import GalSim, or raise an ImportError that says how to install it."""
    try:
        import galsim
    except ImportError as error:
        raise ImportError(
            "The GalSim mock needs GalSim: pip install 'galaxy-pipeline[mock]' (or pip install galsim)."
        ) from error
    return galsim


@dataclass(frozen=True)
class PhotometryTables:
    """K-corrections and distances tabulated once on a redshift grid (Planck18 cosmology).

    ``k_correction[t, b, j]`` is m_b - M_r - DM at ``redshift[j]`` for template ``TEMPLATES[t]``:
    the apparent AB magnitude in observed band ``BANDS[b]`` of a source of rest-frame r absolute
    AB magnitude M_r, less the distance modulus.
    """

    redshift: np.ndarray
    k_correction: np.ndarray
    distance_modulus: np.ndarray
    angular_diameter_distance_kpc: np.ndarray

    def at(self, z: float) -> tuple[np.ndarray, float, float]:
        """(K-corrections (templates, bands) in mag, distance modulus in mag, D_A in kpc) at redshift z."""
        k = np.array([[np.interp(z, self.redshift, row) for row in per_template] for per_template in self.k_correction])
        return (
            k,
            float(np.interp(z, self.redshift, self.distance_modulus)),
            float(np.interp(z, self.redshift, self.angular_diameter_distance_kpc)),
        )


def igm_transmission(wavelength_nm: np.ndarray, z: float | np.ndarray) -> np.ndarray:
    """Mean intergalactic transmission exp(-tau) of Madau (1995) at observed wavelengths (nm), source at z.

    ``wavelength_nm`` and ``z`` broadcast against each other.
    """
    tau = np.zeros(np.broadcast_shapes(np.shape(wavelength_nm), np.shape(z)))
    for line, strength in zip(_LYMAN_SERIES_NM, _LYMAN_SERIES_STRENGTH, strict=True):
        tau += np.where(wavelength_nm < line * (1 + z), strength * (wavelength_nm / line) ** 3.46, 0.0)
    x_c = np.clip(wavelength_nm / _LYMAN_LIMIT_NM, 1.0, 1 + z)
    x_em = 1 + z
    continuum = (
        0.25 * x_c**3 * (x_em**0.46 - x_c**0.46)
        + 9.4 * x_c**1.5 * (x_em**0.18 - x_c**0.18)
        - 0.7 * x_c**3 * (x_c**-1.32 - x_em**-1.32)
        - 0.023 * (x_em**1.68 - x_c**1.68)
    )
    tau += np.where(wavelength_nm < _LYMAN_LIMIT_NM * (1 + z), np.maximum(continuum, 0.0), 0.0)
    return np.exp(-np.minimum(tau, 50.0))


@functools.cache
def photometry_tables() -> PhotometryTables:
    """Tabulate K-corrections of every template in every band, and distances, for 0.01 <= z <= 4.01.

    AB magnitudes are photon-counting: m = -2.5 log10(int f_nu T dlambda/lambda / int 3631 Jy T dlambda/lambda),
    with f_nu(observed lambda) = (1+z) L_nu(lambda / (1+z)) / (4 pi D_L^2) (Hogg et al. 2002).
    """
    galsim = import_galsim()
    from astropy.cosmology import Planck18

    redshift = np.arange(_REDSHIFT_GRID_STEP, MOCK_REDSHIFT_RANGE[1] + 2 * _REDSHIFT_GRID_STEP, _REDSHIFT_GRID_STEP)
    seds = [galsim.SED(f"CWW_{name}_ext.sed", wave_type="Angstrom", flux_type="flambda") for name in TEMPLATES]
    bandpasses = {band: galsim.Bandpass(f"LSST_{band}.dat", wave_type="nm") for band in BANDS}

    def band_grid(band: str) -> tuple[np.ndarray, np.ndarray]:
        bandpass = bandpasses[band]
        wavelength = np.arange(bandpass.blue_limit, bandpass.red_limit, _WAVELENGTH_STEP_NM)
        weight = bandpass(wavelength) / wavelength
        return wavelength, weight / np.trapezoid(weight, wavelength)

    def mean_fnu(sed, wavelength: np.ndarray, weight: np.ndarray, z: np.ndarray) -> np.ndarray:
        # GalSim SEDs return photons/nm, proportional to f_lambda * lambda; f_nu ~ f_lambda * lambda^2.
        rest = wavelength / (1 + z[:, None])
        fnu = (1 + z[:, None]) * sed(rest.ravel()).reshape(rest.shape) * rest
        return np.trapezoid(fnu * weight, wavelength, axis=1)

    reference = band_grid(REFERENCE_BAND)
    k_correction = np.empty((len(TEMPLATES), len(BANDS), redshift.size))
    for b, band in enumerate(BANDS):
        wavelength, weight = band_grid(band)
        weight = weight * igm_transmission(wavelength, redshift[:, None])
        for t, sed in enumerate(seds):
            rest_reference = mean_fnu(sed, *reference, np.zeros(1))
            k_correction[t, b] = -2.5 * np.log10(mean_fnu(sed, wavelength, weight, redshift) / rest_reference)
    return PhotometryTables(
        redshift=redshift,
        k_correction=k_correction,
        distance_modulus=Planck18.distmod(redshift).value,
        angular_diameter_distance_kpc=Planck18.angular_diameter_distance(redshift).to("kpc").value,
    )


@dataclass(frozen=True)
class MockGalaxy:
    """True parameters of one mock galaxy (fluxes in HSC units, AB zero point 27; angles in arcsec)."""

    redshift: float
    early_type: bool
    disk_sed: str
    absolute_mag_r: float
    bulge_flux: np.ndarray
    """Bulge flux per band g,r,i,z,y."""
    disk_flux: np.ndarray
    """Disk flux per band g,r,i,z,y."""
    bulge_hlr_arcsec: float
    disk_hlr_arcsec: float
    bulge_axis_ratio: float
    disk_axis_ratio: float
    position_angle_deg: float
    """Major axis angle, counter-clockwise from the +x (column) axis of the image."""
    offset_pix: tuple[float, float]
    """(x, y) offset of the centre from pixel (32, 32) of the 64x64 stamp, in pixels."""
    ra_deg: float
    dec_deg: float
    bulge_sed: str = BULGE_TEMPLATE

    @property
    def magnitudes(self) -> np.ndarray:
        """Total AB magnitude per band g,r,i,z,y."""
        return MAG_ZERO_POINT - 2.5 * np.log10(self.bulge_flux + self.disk_flux)

    @property
    def bulge_fraction_i(self) -> float:
        """Bulge share of the observed i-band flux."""
        i = BANDS.index("i")
        return float(self.bulge_flux[i] / (self.bulge_flux[i] + self.disk_flux[i]))


def draw_redshift(rng: np.random.Generator, population: str = DEFAULT_POPULATION) -> float:
    """One redshift from p(z) ~ z^power exp(-z / scale) on [0.01, 4] (rejection from a Gamma law)."""
    numbers = get_population(population)
    while True:
        z = rng.gamma(numbers.redshift_power + 1, numbers.redshift_scale)
        if MOCK_REDSHIFT_RANGE[0] <= z <= MOCK_REDSHIFT_RANGE[1]:
            return float(z)


def _draw_absolute_magnitude(
    rng: np.random.Generator, schechter: tuple[float, float, float], z: float, i_offset: float, grid_size: int = 256
) -> float:
    """Rest-frame r absolute magnitude from the completeness-weighted Schechter law; i = M + i_offset."""
    m_star_0, alpha, evolution = schechter
    m_star = m_star_0 - 2.5 * evolution * np.log10(1 + z)
    brightest = max(m_star - BRIGHTEST_BELOW_MSTAR, I_MAG_BRIGHT_LIMIT - i_offset)
    faintest = max(I_MAG_FAINT_LIMIT - i_offset, brightest + 0.1)
    magnitude = np.linspace(brightest, faintest, grid_size)
    x = 0.4 * (m_star - magnitude)
    apparent = magnitude + i_offset
    log_weight = (
        (alpha + 1) * x * np.log(10) - 10**x - np.logaddexp(0.0, (apparent - COMPLETENESS_MAG) / COMPLETENESS_WIDTH)
    )
    cdf = np.cumsum(np.exp(log_weight - log_weight.max()))
    return float(np.interp(rng.uniform(0, cdf[-1]), cdf, magnitude))


def _radius_kpc(
    rng: np.random.Generator, numbers: tuple[float, float, float, float], z: float, luminosity_ratio: float
) -> float:
    """Half-light radius in kpc: r0 (1 + z)^evolution (L / L*)^slope, log-normal scatter."""
    radius_kpc, evolution, slope, scatter_dex = numbers
    return radius_kpc * (1 + z) ** evolution * luminosity_ratio**slope * 10 ** rng.normal(0, scatter_dex)


def draw_galaxy(
    rng: np.random.Generator, redshift: float | None = None, population: str = DEFAULT_POPULATION
) -> MockGalaxy:
    """Draw the true parameters of one galaxy of ``population`` (at ``redshift`` if given, else from p(z))."""
    numbers = get_population(population)
    tables = photometry_tables()
    drawn_redshift = draw_redshift(rng, population)
    z = drawn_redshift if redshift is None else float(redshift)
    k_correction, distance_modulus, angular_distance_kpc = tables.at(z)

    early_type = bool(rng.uniform() < numbers.early_fraction_at_z0 / (1 + z) ** numbers.early_fraction_evolution)
    weights = np.array(numbers.disk_template_weights) * np.array([1 / (1 + z), 1.0, 1 + z])
    disk_sed = DISK_TEMPLATES[int(rng.choice(len(DISK_TEMPLATES), p=weights / weights.sum()))]
    if early_type:
        disk_sed = DISK_TEMPLATES[0]
        bulge_to_total_r = rng.uniform(*numbers.early_bulge_to_total)
    else:
        scale, a, b = numbers.late_bulge_to_total
        bulge_to_total_r = scale * rng.beta(a, b)

    # Flux of each component per band for M_r = 0 at this distance, then the total i-band offset.
    bulge_unit = bulge_to_total_r * 10 ** (-0.4 * (k_correction[0] + distance_modulus - MAG_ZERO_POINT))
    disk_k = k_correction[TEMPLATES.index(disk_sed)]
    disk_unit = (1 - bulge_to_total_r) * 10 ** (-0.4 * (disk_k + distance_modulus - MAG_ZERO_POINT))
    i = BANDS.index("i")
    i_offset = MAG_ZERO_POINT - 2.5 * np.log10(bulge_unit[i] + disk_unit[i])
    schechter = numbers.schechter[early_type]
    absolute_mag = _draw_absolute_magnitude(rng, schechter, z, i_offset)
    scale = 10 ** (-0.4 * absolute_mag)

    m_star = schechter[0] - 2.5 * schechter[2] * np.log10(1 + z)
    luminosity_ratio = 10 ** (-0.4 * (absolute_mag - m_star))
    disk_kpc = _radius_kpc(rng, numbers.disk_radius, z, luminosity_ratio)
    bulge_kpc = _radius_kpc(rng, numbers.bulge_radius, z, luminosity_ratio)
    if early_type:
        disk_kpc = max(disk_kpc, 1.5 * bulge_kpc)
    else:
        bulge_kpc = min(bulge_kpc, 0.5 * disk_kpc)
    to_arcsec = _ARCSEC_PER_RADIAN / angular_distance_kpc

    cos_inclination = rng.uniform()
    disk_axis_ratio = np.sqrt(cos_inclination**2 + DISK_THICKNESS**2 * (1 - cos_inclination**2))
    bulge_axis_ratio = np.clip(rng.normal(0.75, 0.15), 0.3, 1.0)
    ra_min, ra_max, dec_min, dec_max = SKY_PATCH_DEG
    return MockGalaxy(
        redshift=z,
        early_type=early_type,
        disk_sed=disk_sed,
        absolute_mag_r=absolute_mag,
        bulge_flux=bulge_unit * scale,
        disk_flux=disk_unit * scale,
        bulge_hlr_arcsec=float(min(bulge_kpc * to_arcsec, MAX_BULGE_RADIUS_ARCSEC)),
        disk_hlr_arcsec=float(min(disk_kpc * to_arcsec, MAX_DISK_RADIUS_ARCSEC)),
        bulge_axis_ratio=float(bulge_axis_ratio),
        disk_axis_ratio=float(disk_axis_ratio),
        position_angle_deg=float(rng.uniform(0.0, 180.0)),
        offset_pix=(float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.5, 0.5))),
        ra_deg=float(rng.uniform(ra_min, ra_max)),
        dec_deg=float(np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(dec_min)), np.sin(np.radians(dec_max)))))),
    )
