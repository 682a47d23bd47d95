"""An offline stand-in for GalaxiesML: GalSim bulge + disk galaxies written in the GalaxiesML HDF5 schema.

    >>> write_mock("mock_train.hdf5", n=20000, seed=0)
    >>> write_mock_splits("mock/", n=20000, seed=0)  # the three GalaxiesML file names

Every galaxy is a de Vaucouleurs bulge plus an exponential disk whose fluxes in g,r,i,z,y come from
redshifted CWW templates (the population is described in :mod:`galaxy_pipeline.data.mock_population`),
convolved with a Moffat PSF per band (``hsc.PSF_FWHM_ARCSEC``, ``hsc.PSF_MOFFAT_BETA``), integrated
over 0.168" pixels, and given Gaussian sky noise whose per-pixel sigma makes a point source of the
5-sigma depth (``hsc.DEPTH_5SIGMA_MAG``) a 5-sigma detection through the PSF's effective area.
Galaxy ``i`` of seed ``s`` has its own random streams (``numpy.random.SeedSequence([s, i])``), so a
file is byte-identical whatever the number of worker processes. GalSim is an optional dependency:
``pip install 'galaxy-pipeline[mock]'``.

Columns (N rows; shapes after N; float32 unless said otherwise):

- ``image`` (5, 64, 64): fluxes in HSC units (AB zero point 27: mag = 27 - 2.5 log10(sum of flux)),
  bands g,r,i,z,y; the galaxy centre is pixel (32, 32) plus ``true_x/y_offset_pix``.
- ``specz_redshift``: the true redshift (a perfect spectroscopic redshift).
- ``specz_redshift_err``: nominal 1e-4 (1 + z).
- ``object_id`` (int64): the galaxy index, unique across the files of one seed's splits.
- ``ra``, ``dec`` (float64, degrees): uniform positions in a 2x2 degree patch around COSMOS.
- ``{g,r,i,z,y}_cmodel_mag``: true total AB magnitude (noiseless; the mock has no measurement).
- ``true_redshift`` (float64): the redshift the galaxy was drawn at.
- ``true_i_mag``: total observed i-band AB magnitude.
- ``true_abs_mag_r``: rest-frame LSST-r AB absolute magnitude (Planck18, K-corrected through the templates).
- ``true_galaxy_type`` (bytes, (1,)): ``b"early"`` (bulge-dominated) or ``b"late"``.
- ``true_bulge_sed``, ``true_disk_sed`` (bytes, (1,)): CWW template of each component (``b"E"``; ``b"Sbc"``,
  ``b"Scd"`` or ``b"Im"``).
- ``true_bulge_fraction``: bulge share of the observed i-band flux.
- ``true_bulge_hlr_arcsec``, ``true_disk_hlr_arcsec``: half-light radius of each component, arcsec,
  circularised (sqrt(a b), as GalSim shears preserve area); the bulge is truncated at 8 radii.
- ``true_bulge_sersic_index`` (4), ``true_disk_sersic_index`` (1), ``true_sersic_index``: i-band
  light-weighted mean of the two.
- ``true_bulge_axis_ratio``, ``true_disk_axis_ratio``, ``true_axis_ratio``: minor/major axis ratios,
  the last one i-band light-weighted.
- ``true_position_angle_deg``: major axis (of both components), degrees counter-clockwise from the
  +x (column) axis of ``image``, in [0, 180).
- ``true_x_offset_pix``, ``true_y_offset_pix``: sub-pixel offset of the centre from pixel (32, 32).

File attributes record the generator, seed, population, pixel scale, PSF and per-band pixel noise sigma.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from galaxy_pipeline.atomic import atomic_write
from galaxy_pipeline.data.mock_population import (
    DEFAULT_POPULATION,
    MOCK_REDSHIFT_RANGE,
    MockGalaxy,
    draw_galaxy,
    get_population,
    import_galsim,
    photometry_tables,
)
from galaxy_pipeline.data.schema import (
    IMAGE_KEY,
    IMAGE_SHAPE,
    OBJECT_ID_KEY,
    REDSHIFT_ERROR_KEY,
    REDSHIFT_KEY,
    SPLIT_FILE_NAMES,
)
from galaxy_pipeline.hsc import (
    BANDS,
    DEPTH_5SIGMA_MAG,
    IMAGE_SIZE,
    MAG_ZERO_POINT,
    PIXEL_SCALE_ARCSEC,
    PSF_FWHM_ARCSEC,
    PSF_MOFFAT_BETA,
)

BULGE_TRUNCATION = 8.0
"""The de Vaucouleurs bulge is truncated at this many half-light radii."""
SPECZ_ERROR_PER_1PZ = 1e-4
"""Nominal ``specz_redshift_err`` / (1 + z)."""
WRITE_CHUNK_ROWS = 256
"""Galaxies held in memory between two writes to the HDF5 file."""
NOISE_NEIGHBOUR_CORRELATION = 0.18
"""Correlation of the sky noise in adjacent pixels. Warping into the coadd correlates HSC noise: we
measured 0.09-0.19 (by band) on the HSC Wide cutout of shared/realdata, 0.15-0.5 on COSMOS ones."""
_FFT_MARGIN_PIXELS = 16

_BYTES = "S8"
COLUMNS: dict[str, str] = {
    REDSHIFT_KEY: "float32",
    REDSHIFT_ERROR_KEY: "float32",
    OBJECT_ID_KEY: "int64",
    "ra": "float64",
    "dec": "float64",
    **{f"{band}_cmodel_mag": "float32" for band in BANDS},
    "true_redshift": "float64",
    "true_i_mag": "float32",
    "true_abs_mag_r": "float32",
    "true_galaxy_type": _BYTES,
    "true_bulge_sed": _BYTES,
    "true_disk_sed": _BYTES,
    "true_bulge_fraction": "float32",
    "true_bulge_hlr_arcsec": "float32",
    "true_disk_hlr_arcsec": "float32",
    "true_bulge_sersic_index": "float32",
    "true_disk_sersic_index": "float32",
    "true_sersic_index": "float32",
    "true_bulge_axis_ratio": "float32",
    "true_disk_axis_ratio": "float32",
    "true_axis_ratio": "float32",
    "true_position_angle_deg": "float32",
    "true_x_offset_pix": "float32",
    "true_y_offset_pix": "float32",
}
"""Catalog columns (everything but ``image``) and their dtypes; byte strings are stored with shape (N, 1)."""


@functools.cache
def _psf(band: str):
    """The Moffat PSF of ``band`` (a GalSim profile; FWHM in arcsec)."""
    galsim = import_galsim()
    return galsim.Moffat(beta=PSF_MOFFAT_BETA, fwhm=PSF_FWHM_ARCSEC[band])


def _noise_kernel() -> np.ndarray:
    """Taps (a, 1, a) of the separable kernel whose output has :data:`NOISE_NEIGHBOUR_CORRELATION`.

    White noise smoothed by (a, 1, a) along each axis has neighbour correlation 2a / (1 + 2a^2).
    """
    rho = NOISE_NEIGHBOUR_CORRELATION
    a = (1 - np.sqrt(1 - 2 * rho**2)) / (2 * rho) if rho > 0 else 0.0
    return np.array([a, 1.0, a])


def _smooth(array: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Correlate the last two axes with the separable 3-tap kernel; the output is 2 pixels smaller per axis."""
    rows = taps[0] * array[..., :-2, :] + taps[1] * array[..., 1:-1, :] + taps[2] * array[..., 2:, :]
    return taps[0] * rows[..., :-2] + taps[1] * rows[..., 1:-1] + taps[2] * rows[..., 2:]


@functools.cache
def pixel_noise_sigma() -> dict[str, float]:
    """Per-band sky noise sigma per pixel (HSC flux units) from the 5-sigma point-source depths.

    The flux F of a point source measured with the pixel-integrated PSF p as weight,
    F = sum(p x) / sum(p^2), has sigma_F = sigma_pixel sqrt(sum((K * p)^2)) / (|K| sum(p^2)) for sky
    noise of per-pixel sigma sigma_pixel made by the smoothing kernel K (K = 1 for white noise:
    sigma_F = sigma_pixel / sqrt(N_eff), N_eff = 1 / sum(p^2) the PSF's effective area in pixels).
    Setting F(depth) = 5 sigma_F gives sigma_pixel.
    """
    taps = _noise_kernel()
    kernel_norm = np.sum(taps**2)  # the 2-D kernel's Euclidean norm
    sigma = {}
    for band in BANDS:
        psf = _psf(band).drawImage(nx=IMAGE_SIZE, ny=IMAGE_SIZE, scale=PIXEL_SCALE_ARCSEC).array
        psf = psf / psf.sum()
        smoothed_psf = _smooth(np.pad(psf, 2), taps)
        depth_flux = 10 ** (-0.4 * (DEPTH_5SIGMA_MAG[band] - MAG_ZERO_POINT))
        sigma[band] = float(depth_flux / 5.0 * np.sum(psf**2) * kernel_norm / np.sqrt(np.sum(smoothed_psf**2)))
    return sigma


def sky_noise(rng: np.random.Generator) -> np.ndarray:
    """Sky noise (5, 64, 64) in HSC flux units: Gaussian, per-pixel sigma :func:`pixel_noise_sigma`,
    adjacent pixels correlated by :data:`NOISE_NEIGHBOUR_CORRELATION`."""
    taps = _noise_kernel()
    unit = _smooth(rng.standard_normal((len(BANDS), IMAGE_SIZE + 2, IMAGE_SIZE + 2)), taps) / np.sum(taps**2)
    return unit * np.array([pixel_noise_sigma()[band] for band in BANDS])[:, None, None]


@functools.cache
def _psf_kernels(size: int) -> np.ndarray:
    """Fourier transforms (5, size, size // 2 + 1) of PSF x pixel per band, in numpy's rfft2 layout."""
    galsim = import_galsim()
    k_scale = 2 * np.pi / (size * PIXEL_SCALE_ARCSEC)
    return np.stack(
        [_half_plane(galsim.Convolve(_psf(band), galsim.Pixel(PIXEL_SCALE_ARCSEC)), size, k_scale) for band in BANDS]
    )


def _half_plane(profile, size: int, k_scale: float) -> np.ndarray:
    """Fourier transform of a GalSim profile on a size x size grid in numpy's rfft2 layout (origin at [0, 0])."""
    centred = profile.drawKImage(nx=size, ny=size, scale=k_scale).array  # origin at [size // 2, size // 2]
    return np.fft.ifftshift(centred)[:, : size // 2 + 1]  # column size // 2 is the Nyquist frequency


def render_galaxy(galaxy: MockGalaxy, noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """Image (5, 64, 64) float32 of one galaxy in HSC flux units; sky noise from ``noise_rng`` if given.

    The achromatic bulge and disk are drawn once in Fourier space with GalSim, then combined per band
    with their band fluxes, multiplied by that band's PSF x pixel transform and inverse-transformed
    (the same arithmetic as ``galsim.Convolve(...).drawImage``, without redrawing the profiles per band).
    The Fourier grid is large enough that light folded back into the stamp stays below GalSim's
    ``folding_threshold``.
    """
    galsim = import_galsim()
    scale = PIXEL_SCALE_ARCSEC
    angle = galaxy.position_angle_deg * galsim.degrees
    shift = (galaxy.offset_pix[0] * scale, galaxy.offset_pix[1] * scale)
    bulge = galsim.DeVaucouleurs(
        half_light_radius=galaxy.bulge_hlr_arcsec, trunc=BULGE_TRUNCATION * galaxy.bulge_hlr_arcsec
    )
    bulge = bulge.shear(q=galaxy.bulge_axis_ratio, beta=angle).shift(shift)
    disk = galsim.Exponential(half_light_radius=galaxy.disk_hlr_arcsec)
    disk = disk.shear(q=galaxy.disk_axis_ratio, beta=angle).shift(shift)
    size = galsim.Image.good_fft_size(
        max(IMAGE_SIZE + _FFT_MARGIN_PIXELS, bulge.getGoodImageSize(scale), disk.getGoodImageSize(scale))
    )
    k_scale = 2 * np.pi / (size * scale)
    bulge_k = _half_plane(bulge, size, k_scale)
    disk_k = _half_plane(disk, size, k_scale)
    k_images = galaxy.bulge_flux[:, None, None] * bulge_k + galaxy.disk_flux[:, None, None] * disk_k
    full = np.fft.irfft2(k_images * _psf_kernels(size), s=(size, size))  # origin at [0, 0]
    rows = np.arange(-(IMAGE_SIZE // 2), IMAGE_SIZE // 2) % size  # puts the origin at pixel (32, 32)
    image = full[:, rows][:, :, rows]
    if noise_rng is not None:
        image += sky_noise(noise_rng)
    return image.astype(np.float32)


def catalog_row(galaxy: MockGalaxy, index: int) -> dict[str, Any]:
    """The catalog columns (:data:`COLUMNS`) of one galaxy, ``index`` being its ``object_id``."""
    magnitudes = galaxy.magnitudes
    bulge_fraction = galaxy.bulge_fraction_i
    z = galaxy.redshift
    row: dict[str, Any] = {
        REDSHIFT_KEY: z,
        REDSHIFT_ERROR_KEY: SPECZ_ERROR_PER_1PZ * (1 + z),
        OBJECT_ID_KEY: index,
        "ra": galaxy.ra_deg,
        "dec": galaxy.dec_deg,
    }
    row.update({f"{band}_cmodel_mag": magnitude for band, magnitude in zip(BANDS, magnitudes, strict=True)})
    row.update(
        true_redshift=z,
        true_i_mag=magnitudes[BANDS.index("i")],
        true_abs_mag_r=galaxy.absolute_mag_r,
        true_galaxy_type=b"early" if galaxy.early_type else b"late",
        true_bulge_sed=galaxy.bulge_sed.encode(),
        true_disk_sed=galaxy.disk_sed.encode(),
        true_bulge_fraction=bulge_fraction,
        true_bulge_hlr_arcsec=galaxy.bulge_hlr_arcsec,
        true_disk_hlr_arcsec=galaxy.disk_hlr_arcsec,
        true_bulge_sersic_index=4.0,
        true_disk_sersic_index=1.0,
        true_sersic_index=4.0 * bulge_fraction + 1.0 * (1 - bulge_fraction),
        true_bulge_axis_ratio=galaxy.bulge_axis_ratio,
        true_disk_axis_ratio=galaxy.disk_axis_ratio,
        true_axis_ratio=bulge_fraction * galaxy.bulge_axis_ratio + (1 - bulge_fraction) * galaxy.disk_axis_ratio,
        true_position_angle_deg=galaxy.position_angle_deg,
        true_x_offset_pix=galaxy.offset_pix[0],
        true_y_offset_pix=galaxy.offset_pix[1],
    )
    return row


def simulate_galaxy(
    seed: int, index: int, redshift: float | None = None, noise: bool = True, population: str = DEFAULT_POPULATION
) -> tuple[np.ndarray, dict[str, Any]]:
    """Image (5, 64, 64) and catalog row of galaxy ``index`` of seed ``seed`` (at ``redshift`` if given)."""
    parameter_seed, noise_seed = np.random.SeedSequence([seed, index]).spawn(2)
    galaxy = draw_galaxy(np.random.default_rng(parameter_seed), redshift=redshift, population=population)
    image = render_galaxy(galaxy, np.random.default_rng(noise_seed) if noise else None)
    return image, catalog_row(galaxy, index)


def _simulate_task(task: tuple[int, int, float | None, bool, str]) -> tuple[np.ndarray, dict[str, Any]]:
    return simulate_galaxy(*task)


def _check_request(
    n: int, seed: int, redshifts: Sequence[float] | None, workers: int | None, population: str = DEFAULT_POPULATION
) -> int:
    """Validate the arguments shared by the public functions; returns the number of workers."""
    get_population(population)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive number of galaxies; got {n!r}.")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    if redshifts is not None:
        redshifts = np.asarray(redshifts, dtype=np.float64)
        if redshifts.shape != (n,):
            raise ValueError(f"redshifts must hold one value per galaxy ({n}); got shape {redshifts.shape}.")
        low, high = MOCK_REDSHIFT_RANGE
        if not np.all((redshifts >= low) & (redshifts <= high)):
            raise ValueError(f"redshifts must lie in [{low}, {high}]; got {redshifts.min()} to {redshifts.max()}.")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive number of processes; got {workers!r}.")
    return int(min(workers, n))


def _generate(
    seed: int,
    indices: range,
    redshifts: Sequence[float] | None,
    noise: bool,
    workers: int,
    progress: bool,
    population: str = DEFAULT_POPULATION,
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Galaxies ``indices`` in order, drawn by ``workers`` processes, with a progress bar."""
    photometry_tables()  # built once here, inherited by forked workers
    pixel_noise_sigma()
    tasks = (
        (seed, index, None if redshifts is None else float(redshifts[k]), noise, population)
        for k, index in enumerate(indices)
    )
    bar = functools.partial(tqdm, total=len(indices), desc="mock galaxies", unit="gal", disable=not progress)
    if workers == 1:
        yield from bar(map(_simulate_task, tasks))
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with context.Pool(workers) as pool:
        yield from bar(pool.imap(_simulate_task, tasks, chunksize=8))


def simulate_galaxies(
    n: int,
    seed: int,
    *,
    redshifts: Sequence[float] | None = None,
    noise: bool = True,
    first_index: int = 0,
    workers: int = 1,
    progress: bool = False,
    population: str = DEFAULT_POPULATION,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """In-memory mock: images (n, 5, 64, 64) float32 and catalog columns, for galaxies
    ``first_index .. first_index + n - 1`` of ``seed`` (the same galaxies :func:`write_mock` writes).

    Args:
        redshifts: draw galaxy k at ``redshifts[k]`` instead of from p(z) (for tests and figures).
        noise: add sky noise; without it the images are the PSF-convolved, pixel-integrated galaxies.
        population: a name of :data:`~galaxy_pipeline.data.mock_population.POPULATIONS`.
    """
    workers = _check_request(n, seed, redshifts, workers, population)
    images, rows = [], []
    indices = range(first_index, first_index + n)
    for image, row in _generate(seed, indices, redshifts, noise, workers, progress, population):
        images.append(image)
        rows.append(row)
    return np.stack(images), _stack_rows(rows)


def _stack_rows(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Catalog rows -> columns with the dtypes of :data:`COLUMNS` (byte strings shaped (N, 1))."""
    columns = {}
    for name, dtype in COLUMNS.items():
        values = np.array([row[name] for row in rows], dtype=dtype)
        columns[name] = values[:, None] if values.dtype.kind == "S" else values
    return columns


def _check_writable(path: Path, overwrite: bool) -> None:
    """Refuse an output path that exists (unless ``overwrite``) or whose folder is a file."""
    folder = next((parent for parent in path.parents if parent.exists()), None)
    if folder is not None and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder; choose an output path inside a folder.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it.")
    if path.exists() and not path.is_file():
        raise FileExistsError(f"{path} exists and is not a file; choose another output path.")


def _write(
    path: Path,
    seed: int,
    indices: range,
    redshifts: Sequence[float] | None,
    workers: int,
    progress: bool,
    population: str,
) -> Path:
    """Write galaxies ``indices`` to ``path`` through a temporary file in the same folder, in chunks."""
    n = len(indices)

    def fill(temporary: Path) -> None:
        with h5py.File(temporary, "w") as file:
            images = file.create_dataset(IMAGE_KEY, shape=(n, *IMAGE_SHAPE), dtype="float32")
            columns = {
                name: file.create_dataset(name, shape=(n, 1) if dtype == _BYTES else (n,), dtype=dtype)
                for name, dtype in COLUMNS.items()
            }
            file.attrs.update(
                generator="galaxy_pipeline.data.mock",
                seed=seed,
                population=population,
                first_index=indices.start,
                bands=",".join(BANDS),
                pixel_scale_arcsec=PIXEL_SCALE_ARCSEC,
                psf_model="Moffat",
                psf_moffat_beta=PSF_MOFFAT_BETA,
                psf_fwhm_arcsec=[PSF_FWHM_ARCSEC[band] for band in BANDS],
                pixel_noise_sigma=[pixel_noise_sigma()[band] for band in BANDS],
                noise_neighbour_correlation=NOISE_NEIGHBOUR_CORRELATION,
                mag_zero_point=MAG_ZERO_POINT,
            )
            buffer_images, buffer_rows, start = [], [], 0
            for image, row in _generate(seed, indices, redshifts, True, workers, progress, population):
                buffer_images.append(image)
                buffer_rows.append(row)
                if len(buffer_rows) == WRITE_CHUNK_ROWS or start + len(buffer_rows) == n:
                    stop = start + len(buffer_rows)
                    images[start:stop] = np.stack(buffer_images)
                    for name, values in _stack_rows(buffer_rows).items():
                        columns[name][start:stop] = values
                    buffer_images, buffer_rows, start = [], [], stop

    return atomic_write(path, fill)


def write_mock(
    path: str | os.PathLike,
    n: int,
    seed: int,
    workers: int | None = None,
    progress: bool = True,
    *,
    redshifts: Sequence[float] | None = None,
    overwrite: bool = False,
    population: str = DEFAULT_POPULATION,
) -> Path:
    """Write ``n`` mock galaxies (indices 0 .. n-1 of ``seed``) to one GalaxiesML-schema HDF5 file.

    Args:
        path: output file; written atomically (a temporary file in the same folder, then renamed).
        n: number of galaxies.
        seed: random seed; the same seed gives byte-identical images for any ``workers``.
        workers: processes drawing galaxies (default: every CPU).
        progress: show a progress bar.
        redshifts: draw galaxy k at ``redshifts[k]`` (length n) instead of from p(z).
        overwrite: replace an existing file instead of raising FileExistsError.
        population: a name of :data:`~galaxy_pipeline.data.mock_population.POPULATIONS`.
    """
    workers = _check_request(n, seed, redshifts, workers, population)
    path = Path(path)
    _check_writable(path, overwrite)
    return _write(path, seed, range(n), redshifts, workers, progress, population)


def split_sizes(n: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Rows per split: ``round(n * fraction)`` for all but the first, which takes the rest."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLIT_FILE_NAMES) or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"fractions must be {len(SPLIT_FILE_NAMES)} positive numbers summing to 1 "
            f"({', '.join(SPLIT_FILE_NAMES)}); got {fractions}."
        )
    others = [round(n * fraction) for fraction in fractions[1:]]
    sizes = (n - sum(others), *others)
    if min(sizes) < 1:
        raise ValueError(f"n = {n} is too small to give every split a galaxy with fractions {fractions}.")
    return sizes


def write_mock_splits(
    out_dir: str | os.PathLike,
    n: int,
    seed: int,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int | None = None,
    progress: bool = True,
    *,
    overwrite: bool = False,
    population: str = DEFAULT_POPULATION,
) -> dict[str, Path]:
    """Write ``n`` mock galaxies of ``seed`` split into train/validation/test files named as GalaxiesML's.

    The splits hold consecutive galaxy indices (train first), so every ``object_id`` is unique and
    the files are those :func:`write_mock` would write for the same indices. Returns split -> path.
    """
    workers = _check_request(n, seed, None, workers, population)
    sizes = split_sizes(n, fractions)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir} is not a folder; give --out a folder when writing splits.")
    paths = {split: out_dir / name for split, name in SPLIT_FILE_NAMES.items()}
    for path in paths.values():
        _check_writable(path, overwrite)
    start = 0
    for path, size in zip(paths.values(), sizes, strict=True):
        _write(path, seed, range(start, start + size), None, min(workers, size), progress, population)
        start += size
    return paths
