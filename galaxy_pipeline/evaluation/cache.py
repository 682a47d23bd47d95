"""The resumable cache of an evaluation: one file per batch and step, written atomically, checked on reading.

Layout under the output folder::

    settings.json                                    the cache key the batches were made with
    generated/rows_<start>-<stop>.npz                generated fluxes, their redshifts and seeds
    measurements/{real,generated}/rows_*.ecsv        morphology of each batch
    measurements/predictor-<hash>/*.npz              predicted redshifts and features of each batch

Every file records the redshifts of its rows, and reading checks them, so a folder made for another
split or ``n`` is refused rather than mixed in.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.table import MaskedColumn, Table, vstack

from galaxy_pipeline.atomic import atomic_write
from galaxy_pipeline.evaluation.redshift_model import RedshiftPredictor
from galaxy_pipeline.fingerprint import fingerprint

SETTINGS_FILE = "settings.json"


@dataclass
class Measurements:
    """Every batch read back: the measured tables (one row per galaxy) and what the report needs of the rest.

    ``real_features`` / ``generated_features`` and ``predictor_seconds`` are ``None`` without a predictor.
    """

    real: Table
    generated: Table
    generation_seconds: float
    n_clipped: int
    real_features: np.ndarray | None = None
    generated_features: np.ndarray | None = None
    predictor_seconds: float | None = None


class EvaluationCache:
    """Where the cached batches of one evaluation live, and the check that they match the settings.

    Args:
        out_dir: the evaluation's output folder.
        real_cache: folder of the real sample's morphology (default ``out_dir/measurements/real``).
        predictor: the redshift predictor, whose fingerprint names its folder; ``None``: no predictions.
    """

    def __init__(self, out_dir: Path, real_cache: Path | None, predictor: RedshiftPredictor | None):
        self.out_dir = out_dir
        self.generated = out_dir / "generated"
        self.generated_morphology = out_dir / "measurements" / "generated"
        self.real_morphology = real_cache or out_dir / "measurements" / "real"
        self.predictor = out_dir / "measurements" / f"predictor-{fingerprint(predictor)[:12]}" if predictor else None

    def prepare(self, key: dict, overwrite: bool) -> None:
        """Create the folders; refuse (or with ``overwrite`` clear) generated batches made with another key."""
        path = self.out_dir / SETTINGS_FILE
        if path.is_file():
            previous = json.loads(path.read_text(encoding="utf-8"))
            changed = sorted(name for name in key.keys() | previous.keys() if key.get(name) != previous.get(name))
            if changed and not overwrite:
                raise FileExistsError(
                    f"{self.out_dir} holds an evaluation made with other settings ({', '.join(changed)} differ): "
                    "choose another output folder, or pass --overwrite to discard its generated galaxies."
                )
            if changed:
                shutil.rmtree(self.generated, ignore_errors=True)
                shutil.rmtree(self.generated_morphology, ignore_errors=True)
                for folder in (self.out_dir / "measurements").glob("predictor-*"):
                    shutil.rmtree(folder, ignore_errors=True)
        for folder in (self.generated, self.generated_morphology, self.real_morphology, self.predictor):
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda temporary: temporary.write_text(json.dumps(key, indent=2), encoding="utf-8"))

    @staticmethod
    def name(start: int, stop: int) -> str:
        """File stem of the batch of rows ``start:stop``."""
        return f"rows_{start:07d}-{stop:07d}"

    def morphology(self, kind: str) -> Path:
        """Folder of the morphology tables of ``kind`` (``"real"`` or ``"generated"``)."""
        return self.real_morphology if kind == "real" else self.generated_morphology

    def read(self, batches: Sequence[tuple[int, int]], redshifts: np.ndarray) -> Measurements:
        """Read every batch back (each checked against the redshifts of its rows)."""
        names = [self.name(start, stop) for start, stop in batches]
        batch_redshifts = [redshifts[start:stop] for start, stop in batches]
        generated_files = [
            read_npz(self.generated / f"{name}.npz", ("seeds", "seconds", "clipped"), z)
            for name, z in zip(names, batch_redshifts, strict=True)
        ]
        tables = {
            kind: read_tables([self.morphology(kind) / f"{name}.ecsv" for name in names], batch_redshifts)
            for kind in ("real", "generated")
        }
        tables["generated"]["seed"] = np.concatenate([file["seeds"] for file in generated_files])
        measurements = Measurements(
            real=tables["real"],
            generated=tables["generated"],
            generation_seconds=sum(float(file["seconds"]) for file in generated_files),
            n_clipped=sum(bool(file["clipped"]) for file in generated_files),
        )
        if self.predictor is not None:
            keys = ("predicted_redshift", "features", "seconds")
            predictions = {
                kind: [
                    read_npz(self.predictor / f"{kind}_{name}.npz", keys, z)
                    for name, z in zip(names, batch_redshifts, strict=True)
                ]
                for kind in ("real", "generated")
            }
            for kind, files in predictions.items():
                tables[kind]["predicted_redshift"] = np.concatenate([file["predicted_redshift"] for file in files])
            measurements.real_features = np.concatenate([file["features"] for file in predictions["real"]])
            measurements.generated_features = np.concatenate([file["features"] for file in predictions["generated"]])
            every_file = predictions["real"] + predictions["generated"]
            measurements.predictor_seconds = sum(float(file["seconds"]) for file in every_file)
        return measurements


def ensure(path: Path, redshifts: np.ndarray, compute: Callable[[], Table | dict[str, np.ndarray]]) -> None:
    """Unless ``path`` exists, compute a table (written as ECSV) or arrays (NPZ) and write them atomically,
    with the ``redshifts`` of their rows (which readers check)."""
    if path.is_file():
        return
    result = compute()
    if isinstance(result, Table):
        result.add_column(redshifts, name="redshift", index=0)
        result["redshift"].description = "spectroscopic redshift (real) or conditioning redshift (generated)"
        atomic_write(path, lambda temporary: result.write(temporary, format="ascii.ecsv"))
    else:
        atomic_write(path, lambda temporary: np.savez(temporary, **result, redshifts=redshifts))


def read_npz(path: Path, keys: Sequence[str], redshifts: np.ndarray) -> dict[str, np.ndarray]:
    """``keys`` of a cached NPZ made for ``redshifts`` (other arrays, such as images, stay on disk)."""
    with np.load(path) as arrays:
        _check_redshifts(path, arrays["redshifts"], redshifts)
        return {key: arrays[key] for key in keys}


def read_tables(paths: list[Path], redshifts: list[np.ndarray]) -> Table:
    """Stack cached morphology tables, checking each was made for its ``redshifts``; ``meta["seconds"]`` adds up."""
    tables = [_read_table(path) for path in paths]
    for path, table, expected in zip(paths, tables, redshifts, strict=True):
        _check_redshifts(path, np.asarray(table["redshift"]), expected)
    merged = vstack(tables, metadata_conflicts="silent")
    merged.meta.pop("detection_rate", None)
    merged.meta["seconds"] = sum(float(table.meta.get("seconds", 0.0)) for table in tables)
    return merged


def _read_table(path: Path) -> Table:
    table = Table.read(path, format="ascii.ecsv")
    for name in table.colnames:
        if isinstance(table[name], MaskedColumn) and table[name].dtype.kind == "U":
            table[name] = table[name].filled("")  # ECSV reads empty strings back as masked
    return table


def _check_redshifts(path: Path, cached: np.ndarray, expected: np.ndarray) -> None:
    if not np.array_equal(cached, expected):
        raise FileExistsError(
            f"{path} was made for other redshifts than rows of this split: the output folder belongs to another "
            "dataset or --n; choose another output folder."
        )
