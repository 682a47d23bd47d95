"""The redshift column of a catalogue table (.csv, .fits, .parquet): the redshifts ``generate`` draws galaxies at.

>>> z = read_redshifts("survey.parquet", "z_spec")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.table import MaskedColumn, Table

TABLE_FORMATS = {".csv": "ascii.csv", ".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".parquet": "parquet"}
"""astropy.table reader of each catalogue file extension."""


def read_redshifts(path: str | os.PathLike, column: str) -> np.ndarray:
    """The redshifts of a catalogue file (.csv, .fits or .parquet) as a float64 array, one per row.

    Raises FileNotFoundError for a missing file and ValueError for an unknown extension, an unreadable
    table, a missing column, or values that are not finite numbers >= 0 (empty cells included).
    """
    path = Path(path).expanduser()
    suffix = next((ext for ext in TABLE_FORMATS if path.name.lower().endswith(ext)), None)
    if suffix is None:
        raise ValueError(f"--redshifts {path}: unknown table type; give a {', '.join(TABLE_FORMATS)} file.")
    if not path.is_file():
        raise FileNotFoundError(2, "No such catalogue file", str(path))
    try:
        table = Table.read(path, format=TABLE_FORMATS[suffix])
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Cannot read {path} as a {TABLE_FORMATS[suffix]} table: {error}") from error
    if column not in table.colnames:
        raise ValueError(
            f"{path} has no column {column!r}; its columns are {table.colnames[:20]}: choose one with "
            "--redshift-column."
        )
    values = table[column]
    if len(values) == 0:
        raise ValueError(f"{path} has no rows: nothing to generate.")
    if values.dtype.kind not in "iuf" or getattr(values, "ndim", 1) != 1:
        raise ValueError(f"Column {column!r} of {path} must hold one number per row; it holds {values.dtype} values.")
    bad = np.asarray(values.mask) if isinstance(values, MaskedColumn) else np.zeros(len(values), dtype=bool)
    redshifts = np.asarray(values, dtype=np.float64)
    bad |= ~np.isfinite(redshifts) | (redshifts < 0)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"Column {column!r} of {path} must hold finite redshifts >= 0; {rows.size} row(s) do not "
            f"(rows {rows[:5].tolist()}, counting from 0): fix or drop them."
        )
    return redshifts
