"""The GalaxiesML HDF5 schema (Do et al. 2024, Zenodo 11117528), shared by conversion and the mock.

A file ``5x64x64_{training,validation,testing}_with_morphology.hdf5`` holds one row per galaxy:
``image`` (N, 5, 64, 64) float32 fluxes (HSC coadd units, AB zero point 27, bands g,r,i,z,y),
``specz_redshift`` (N,), ``object_id`` (N,), and catalog columns, many of them per band as
``{band}_{quantity}``. Some columns are byte strings stored with shape (N, 1).
"""

from galaxy_pipeline.hsc import BANDS, IMAGE_SIZE

IMAGE_KEY = "image"
REDSHIFT_KEY = "specz_redshift"
REDSHIFT_ERROR_KEY = "specz_redshift_err"
OBJECT_ID_KEY = "object_id"
REDSHIFT_COLUMN = "redshift"
"""Name of the spectroscopic redshift column in the converted dataset (the file's ``specz_redshift``)."""

REQUIRED_KEYS: tuple[str, ...] = (IMAGE_KEY, REDSHIFT_KEY)

IMAGE_SHAPE: tuple[int, int, int] = (len(BANDS), IMAGE_SIZE, IMAGE_SIZE)
"""Shape of one image row: (bands, height, width)."""

VALID_REDSHIFT_RANGE: tuple[float, float] = (0.0, 6.0)
"""Spectroscopic redshifts accepted by conversion (GalaxiesML spans 0-4)."""

PER_BAND_QUANTITIES: tuple[str, ...] = (
    "cmodel_mag",
    "ellipticity",
    "sersic_index",
    "major_axis",
    "minor_axis",
    "isophotal_area",
    "half_light_radius",
    "petro_rad",
    "pos_angle",
)
"""Catalog quantities that GalaxiesML stores once per band, as ``{band}_{quantity}``."""

PER_BAND_COLUMNS: tuple[str, ...] = tuple(f"{band}_{quantity}" for band in BANDS for quantity in PER_BAND_QUANTITIES)

SCALAR_COLUMNS: tuple[str, ...] = ("ra", "dec", REDSHIFT_ERROR_KEY)
"""Catalog columns with one value per galaxy (besides id and redshift)."""

SPLIT_FILE_NAMES: dict[str, str] = {
    "train": "5x64x64_training_with_morphology.hdf5",
    "validation": "5x64x64_validation_with_morphology.hdf5",
    "test": "5x64x64_testing_with_morphology.hdf5",
}
"""Dataset split -> GalaxiesML file name."""
