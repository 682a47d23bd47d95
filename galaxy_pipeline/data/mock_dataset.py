"""A converted GalSim-mock dataset in a cache folder, made once and reused (the quickstart's data)."""

from __future__ import annotations

import os
from pathlib import Path

from galaxy_pipeline.atomic import atomic_folder
from galaxy_pipeline.data.galaxiesml import convert_galaxiesml
from galaxy_pipeline.data.mock import write_mock_splits
from galaxy_pipeline.data.mock_population import DEFAULT_POPULATION, get_population


def mock_dataset_name(n: int, seed: int, population: str = DEFAULT_POPULATION) -> str:
    """Cache folder name of a mock: ``mock-n{n}-seed{seed}``, with ``-{population}`` unless fiducial."""
    get_population(population)
    suffix = "" if population == DEFAULT_POPULATION else f"-{population}"
    return f"mock-n{n}-seed{seed}{suffix}"


def ensure_mock_dataset(
    n: int, seed: int, cache_dir: str | os.PathLike, progress: bool = True, population: str = DEFAULT_POPULATION
) -> Path:
    """Path of a converted mock of ``n`` galaxies (80/10/10 train/validation/test) for ``seed``.

    The first call draws the mock of ``population`` with GalSim and converts it (a few minutes for
    thousands of galaxies); later calls return the cached folder. The folder appears only once complete.
    """
    cache_dir = Path(cache_dir).expanduser()
    dataset_dir = cache_dir / mock_dataset_name(n, seed, population)
    if dataset_dir.is_dir():
        return dataset_dir
    with atomic_folder(dataset_dir) as staged:  # the HDF5 files go to its scratch folder, deleted with it
        files = write_mock_splits(staged.parent / "hdf5", n=n, seed=seed, progress=progress, population=population)
        convert_galaxiesml(files, staged, overwrite=True, progress=progress)  # staged is empty: filled atomically
    return dataset_dir
