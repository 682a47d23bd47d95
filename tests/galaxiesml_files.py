"""Write small files in the GalaxiesML HDF5 schema, for tests and benchmarks.

The files mimic the released ``5x64x64_*_with_morphology.hdf5``: an ``image`` cube
(N, 5, S, S) of float32 fluxes (HSC coadd units, AB zero point 27: sky noise around zero plus
one Gaussian galaxy at the centre), ``specz_redshift``, ``object_id``, scalar catalog columns,
every per-band column of :data:`galaxy_pipeline.data.schema.PER_BAND_COLUMNS`, and byte-string
columns stored with shape (N, 1) as in the real files. Images are written in chunks, so a file
of several GB never sits in memory.

    >>> paths = write_galaxiesml_splits(tmp_path, sizes=(64, 16, 16))
    >>> paths["train"].name
    '5x64x64_training_with_morphology.hdf5'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from galaxy_pipeline.data.schema import (
    IMAGE_KEY,
    OBJECT_ID_KEY,
    PER_BAND_COLUMNS,
    REDSHIFT_ERROR_KEY,
    REDSHIFT_KEY,
    SPLIT_FILE_NAMES,
)
from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT

BYTE_STRING_COLUMNS: tuple[str, ...] = ("specz_name", "coord")
"""Columns written as byte strings of shape (N, 1), as GalaxiesML stores its text columns."""

SKY_NOISE_SIGMA: tuple[float, ...] = (0.04, 0.05, 0.06, 0.10, 0.18)
"""Per-band sky noise sigma of the written images, flux units (g,r,i,z,y)."""


def galaxiesml_catalog(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Catalog columns of ``n`` fake galaxies (everything but ``image``), keyed by GalaxiesML name.

    Redshifts are drawn in [0.01, 4]; ``object_id`` is a unique int64 HSC-like id; byte-string
    columns have shape (n, 1).
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {
        OBJECT_ID_KEY: 36_000_000_000_000_000 + rng.choice(10**9, size=n, replace=False).astype(np.int64),
        REDSHIFT_KEY: rng.uniform(0.01, 4.0, size=n),
        REDSHIFT_ERROR_KEY: rng.uniform(1e-5, 1e-3, size=n),
        "ra": rng.uniform(149.0, 151.0, size=n),
        "dec": rng.uniform(1.0, 3.0, size=n),
        "skymap_id": rng.integers(9_000_000, 10_000_000, size=n).astype(np.int64),
    }
    for name in PER_BAND_COLUMNS:
        columns[name] = rng.normal(20.0, 2.0, size=n).astype(np.float32)
    columns["specz_name"] = np.array([[f"SPEC-{i:07d}".encode()] for i in rng.integers(0, 10**7, size=n)], dtype="S16")
    columns["coord"] = np.array(
        [[f"({ra:.5f}, {dec:.5f})".encode()] for ra, dec in zip(columns["ra"], columns["dec"], strict=True)],
        dtype="S32",
    )
    return columns


def galaxiesml_images(n: int, seed: int = 0, image_size: int = 64, nan_rows: Iterable[int] = ()) -> np.ndarray:
    """Flux images (n, 5, image_size, image_size), float32: sky noise plus a centred Gaussian galaxy.

    Rows listed in ``nan_rows`` get a few NaN pixels (as a masked region would).
    """
    rng = np.random.default_rng(seed)
    sigma = np.asarray(SKY_NOISE_SIGMA, dtype=np.float32)[None, :, None, None]
    images = rng.standard_normal((n, len(BANDS), image_size, image_size), dtype=np.float32) * sigma
    i_mag = rng.uniform(19.0, 24.5, size=n)
    colours = rng.uniform(-0.3, 1.5, size=(n, len(BANDS))).cumsum(axis=1) * 0.25
    total_flux = 10 ** (-0.4 * (i_mag[:, None] + colours - colours[:, 2:3] - MAG_ZERO_POINT))
    size_pixels = rng.uniform(1.5, 5.0, size=n)
    grid = np.arange(image_size) - (image_size - 1) / 2
    profile = np.exp(-0.5 * (grid[None, :] / size_pixels[:, None]) ** 2)
    profile /= profile.sum(axis=1, keepdims=True)
    galaxy = profile[:, :, None] * profile[:, None, :]
    images += (total_flux[:, :, None, None] * galaxy[:, None]).astype(np.float32)
    for row in nan_rows:
        images[row, row % len(BANDS), :3, :3] = np.nan
    return images


def write_galaxiesml_file(
    path: str | Path,
    n: int,
    seed: int = 0,
    nan_rows: Iterable[int] = (),
    image_size: int = 64,
    columns: Mapping[str, np.ndarray] | None = None,
    omit: Sequence[str] = (),
    chunk_rows: int = 1024,
) -> Path:
    """Write a GalaxiesML-schema HDF5 file of ``n`` galaxies and return its path.

    Args:
        path: file to create (parent folders are created).
        n: number of rows.
        seed: random seed of the images and catalog.
        nan_rows: rows whose image gets a few NaN pixels.
        image_size: side of the cutouts in pixels (GalaxiesML: 64).
        columns: keys to add or replace, written as given (e.g. a wrong-shaped ``image``).
        omit: keys to leave out (e.g. ``"specz_redshift"``).
        chunk_rows: images generated and written per chunk, bounding memory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nan_rows = sorted(set(nan_rows))
    overrides = dict(columns or {})
    catalog = {**galaxiesml_catalog(n, seed), **overrides}
    catalog.pop(IMAGE_KEY, None)
    with h5py.File(path, "w") as file:
        if IMAGE_KEY in overrides:
            file.create_dataset(IMAGE_KEY, data=overrides[IMAGE_KEY])
        elif IMAGE_KEY not in omit:
            image = file.create_dataset(IMAGE_KEY, shape=(n, len(BANDS), image_size, image_size), dtype=np.float32)
            for start in range(0, n, chunk_rows):
                stop = min(start + chunk_rows, n)
                chunk_nan_rows = [row - start for row in nan_rows if start <= row < stop]
                image[start:stop] = galaxiesml_images(stop - start, seed + start, image_size, chunk_nan_rows)
        for name, values in catalog.items():
            if name not in omit:
                file.create_dataset(name, data=values)
    return path


def write_galaxiesml_splits(
    folder: str | Path,
    sizes: tuple[int, int, int] = (64, 16, 16),
    seed: int = 0,
    nan_rows: Mapping[str, Iterable[int]] | None = None,
    image_size: int = 64,
) -> dict[str, Path]:
    """Write train, validation and test files under their GalaxiesML names in ``folder``.

    Args:
        folder: output folder (created).
        sizes: rows of the train, validation and test files.
        seed: seed of the train file; the other splits use ``seed + 1`` and ``seed + 2``.
        nan_rows: split -> rows with NaN pixels, e.g. ``{"train": [3]}``.
        image_size: side of the cutouts in pixels.

    Returns:
        split name -> path of its file.
    """
    nan_rows = nan_rows or {}
    return {
        split: write_galaxiesml_file(
            Path(folder) / file_name, n, seed=seed + offset, nan_rows=nan_rows.get(split, ()), image_size=image_size
        )
        for offset, ((split, file_name), n) in enumerate(zip(SPLIT_FILE_NAMES.items(), sizes, strict=True))
    }
