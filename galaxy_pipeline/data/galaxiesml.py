"""GalaxiesML HDF5 -> Hugging Face ``DatasetDict``: validation and streaming conversion.

    >>> summary = convert_galaxiesml({"train": "5x64x64_training_with_morphology.hdf5"}, "galaxiesml")
    >>> print(summary)                      # rows written / dropped per split, MB/s
    >>> datasets.load_from_disk("galaxiesml")["train"].features["image"]
    Array3D(shape=(5, 64, 64), dtype='float32')

Each split gets the columns ``image`` (5x64x64 float32 fluxes, bands g,r,i,z,y, HSC coadd units
with AB zero point 27), ``redshift`` (the file's ``specz_redshift``), ``object_id`` and every other
per-row column of the file (per-band and scalar catalog columns), in the file's dtype; byte
strings, including those stored with shape (N, 1), become ``str``. Keys that are not one value
per row (groups, (N, k) arrays) are skipped and listed in the summary.

Every input file is validated before anything is written. Rows whose image has a non-finite
pixel, or whose redshift is non-finite, are dropped and counted. The files are streamed in
chunks of ``chunk_size`` rows through :meth:`datasets.Dataset.from_generator`, with its cache in
a temporary folder beside the output (never in ``~/.cache``), one piece of :data:`PIECE_BYTES`
at a time: each piece is saved with :meth:`datasets.Dataset.save_to_disk` and dropped, and the
pieces' Arrow files make up the split. Memory (RSS, memory-mapped files included) stays bounded
whatever the file size; the temporary folder needs room for the output plus two pieces.
The finished dataset is renamed into place, so an interrupted run leaves nothing that loads at
the output path.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import h5py
import numpy as np
from tqdm.auto import tqdm

from galaxy_pipeline.atomic import atomic_folder
from galaxy_pipeline.data.schema import (
    IMAGE_KEY,
    IMAGE_SHAPE,
    OBJECT_ID_KEY,
    REDSHIFT_COLUMN,
    REDSHIFT_KEY,
    SPLIT_FILE_NAMES,
    VALID_REDSHIFT_RANGE,
)
from galaxy_pipeline.hsc import BANDS
from galaxy_pipeline.version import __version__

DEFAULT_CHUNK_SIZE = 512
"""Rows read from HDF5 (and written to Arrow) at a time: 512 images are 42 MB."""

PIECE_BYTES = 256 * 2**20
"""Bytes of a split converted and saved at a time (whole chunks of rows, at least one chunk).

Saving memory-maps the piece and reads all of it, so this bounds the file-backed part of the
conversion's peak RSS, on top of about 0.6 GB for the imports and one chunk.
"""

CONVERSION_RECORD = "galaxiesml_conversion.json"
"""File beside ``dataset_dict.json`` recording the sources and the rows dropped."""

_STRING = "string"


@dataclass(frozen=True)
class GalaxiesMLFile:
    """A validated GalaxiesML file: what conversion will read from it.

    Args:
        path: the HDF5 file.
        num_rows: number of galaxies (rows of ``image``).
        columns: HDF5 key -> dataset dtype (``"string"`` or a numpy dtype name) of every per-row
            column copied besides ``image``; ``specz_redshift`` becomes ``redshift``.
        skipped: HDF5 key -> why it is not copied.
        nonfinite_redshifts: rows whose redshift is NaN or inf (dropped).
    """

    path: Path
    num_rows: int
    columns: dict[str, str]
    skipped: dict[str, str]
    nonfinite_redshifts: int

    def features(self) -> datasets.Features:
        """The ``datasets.Features`` of the converted split (``image`` first, then ``redshift``)."""
        features = {IMAGE_KEY: datasets.Array3D(shape=IMAGE_SHAPE, dtype="float32")}
        for key, dtype in self.columns.items():
            features[_column_name(key)] = datasets.Value(dtype)
        return datasets.Features(features)


@dataclass(frozen=True)
class SplitSummary:
    """Rows of one split: read from the file, written, and dropped (by reason).

    A row with both a non-finite redshift and non-finite pixels counts as a redshift drop.
    """

    split: str
    source: str
    rows_read: int
    rows_written: int
    dropped_nonfinite_redshift: int
    dropped_nonfinite_pixels: int

    @property
    def rows_dropped(self) -> int:
        """Rows not written, for any reason."""
        return self.rows_read - self.rows_written


@dataclass(frozen=True)
class ConversionSummary:
    """What :func:`convert_galaxiesml` wrote: rows per split, skipped keys, and throughput."""

    out_dir: Path
    splits: dict[str, SplitSummary]
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    input_megabytes: float = 0.0
    seconds: float = 0.0

    @property
    def megabytes_per_second(self) -> float:
        """Input HDF5 megabytes (10^6 bytes) converted per second of wall time."""
        return self.input_megabytes / self.seconds if self.seconds > 0 else float("nan")

    def __str__(self) -> str:
        lines = [f"Converted GalaxiesML -> {self.out_dir}"]
        lines.append(f"  {'split':<11}{'read':>9}{'written':>9}{'dropped':>9}  (non-finite pixels / redshift)")
        for s in self.splits.values():
            lines.append(
                f"  {s.split:<11}{s.rows_read:>9}{s.rows_written:>9}{s.rows_dropped:>9}"
                f"  ({s.dropped_nonfinite_pixels} / {s.dropped_nonfinite_redshift})"
            )
        for split, skipped in self.skipped.items():
            for key, reason in skipped.items():
                lines.append(f"  {split}: skipped key {key!r}: {reason}")
        lines.append(
            f"  {self.input_megabytes:.1f} MB in {self.seconds:.1f} s ({self.megabytes_per_second:.1f} MB/s); "
            f"load with datasets.load_from_disk({str(self.out_dir)!r})"
        )
        return "\n".join(lines)


def validate_galaxiesml_file(path: str | Path) -> GalaxiesMLFile:
    """Check that ``path`` is a GalaxiesML HDF5 file that can be converted; read nothing big.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: one line naming the file, the key and the problem: not HDF5 or unreadable,
            missing ``image`` or ``specz_redshift``, image rows not (5, 64, 64), a column whose
            length differs from the number of images, or a finite redshift outside
            :data:`~galaxy_pipeline.data.schema.VALID_REDSHIFT_RANGE`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass the GalaxiesML .hdf5 file of this split.")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error}); pass a GalaxiesML .hdf5 file.") from None
    with file:
        for key in (IMAGE_KEY, REDSHIFT_KEY):
            if not isinstance(file.get(key), h5py.Dataset):
                raise ValueError(
                    f"{path}: missing key {key!r} (keys: {', '.join(sorted(file)) or 'none'}); "
                    "a GalaxiesML file needs 'image' (N, 5, 64, 64) and 'specz_redshift' (N,)."
                )
        image = file[IMAGE_KEY]
        if image.ndim != 4 or image.shape[1:] != IMAGE_SHAPE or image.dtype.kind != "f":
            raise ValueError(
                f"{path}: key 'image' has shape {image.shape} and dtype {image.dtype}; expected float (N, "
                f"{', '.join(map(str, IMAGE_SHAPE))}) fluxes in bands {','.join(BANDS)} (the 5x64x64 GalaxiesML files)."
            )
        num_rows = image.shape[0]
        if num_rows == 0:
            raise ValueError(f"{path}: key 'image' has no rows; the file holds no galaxies.")
        columns, skipped = {}, {}
        for key, item in file.items():
            if key == IMAGE_KEY:
                continue
            if key == REDSHIFT_COLUMN:
                raise ValueError(
                    f"{path}: key 'redshift' clashes with the converted 'specz_redshift' column; rename it."
                )
            if not isinstance(item, h5py.Dataset) or item.ndim == 0:
                skipped[key] = "not a per-row column"
                continue
            if item.shape[0] != num_rows:
                raise ValueError(
                    f"{path}: key {key!r} has {item.shape[0]} rows but 'image' has {num_rows}; "
                    "every column must have one row per image."
                )
            dtype = _column_dtype(item)
            if item.ndim > 2 or (item.ndim == 2 and item.shape[1] != 1) or dtype is None:
                if key == REDSHIFT_KEY:
                    raise ValueError(
                        f"{path}: key 'specz_redshift' has shape {item.shape}, dtype {item.dtype}; "
                        "expected one number per row."
                    )
                skipped[key] = f"shape {item.shape}, dtype {item.dtype} is not one value per row"
                continue
            columns[key] = dtype
        if columns[REDSHIFT_KEY] == _STRING:
            raise ValueError(f"{path}: key 'specz_redshift' holds strings; expected numbers.")
        try:
            redshift = file[REDSHIFT_KEY][...].reshape(num_rows).astype(np.float64)
        except OSError as error:
            raise ValueError(f"{path}: cannot read key 'specz_redshift' ({error}); is the file complete?") from None
    finite = np.isfinite(redshift)
    low, high = VALID_REDSHIFT_RANGE
    outside = np.flatnonzero(finite & ((redshift < low) | (redshift > high)))
    if outside.size:
        row = int(outside[0])
        raise ValueError(
            f"{path}: key 'specz_redshift' has {outside.size} value(s) outside [{low:g}, {high:g}] "
            f"(e.g. {redshift[row]:g} at row {row}); GalaxiesML redshifts lie in 0-4."
        )
    ordered = {REDSHIFT_KEY: columns.pop(REDSHIFT_KEY)}
    if OBJECT_ID_KEY in columns:
        ordered[OBJECT_ID_KEY] = columns.pop(OBJECT_ID_KEY)
    ordered.update(columns)
    return GalaxiesMLFile(path, num_rows, ordered, skipped, int(np.count_nonzero(~finite)))


def convert_galaxiesml(
    files: Mapping[str, str | Path],
    out_dir: str | Path,
    overwrite: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    num_proc: int | None = None,
) -> ConversionSummary:
    """Convert GalaxiesML HDF5 files into a ``DatasetDict`` saved at ``out_dir``.

    Args:
        files: split (``train``, ``validation``, ``test``; any subset) -> HDF5 file.
        out_dir: folder to create; load it with ``datasets.load_from_disk(out_dir)``.
        overwrite: replace an existing converted dataset at ``out_dir`` (only once the new one is
            complete); without it an existing ``out_dir`` is an error.
        chunk_size: rows read and written at a time (bounds memory: 512 rows are 42 MB of pixels).
        progress: show progress bars.
        num_proc: processes that read chunks in parallel (default: one).

    Returns:
        Rows written and dropped per split, skipped keys, and throughput in MB/s.
    """
    if not files:
        raise ValueError("No input files; pass at least one of train, validation, test.")
    for split in files:
        if split not in SPLIT_FILE_NAMES:
            raise ValueError(f"Unknown split {split!r}; use {', '.join(SPLIT_FILE_NAMES)}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 row; got {chunk_size}.")
    if num_proc is not None and num_proc < 1:
        raise ValueError(f"num_proc must be >= 1; got {num_proc}.")
    out_dir = Path(out_dir)
    _check_output(out_dir, overwrite)
    sources = {split: validate_galaxiesml_file(path) for split, path in files.items()}

    start_time = time.perf_counter()
    with atomic_folder(out_dir) as staged:
        work_dir = staged.parent  # scratch space beside the output: the pieces and their caches
        summaries = {
            split: _convert_split(split, source, staged / split, work_dir, chunk_size, progress, num_proc)
            for split, source in sources.items()
        }
        with open(staged / datasets.config.DATASETDICT_JSON_FILENAME, "w", encoding="utf-8") as f:
            json.dump({"splits": list(summaries)}, f)
        record = {
            "galaxy_pipeline_version": __version__,
            "splits": {split: asdict(summary) for split, summary in summaries.items()},
        }
        (staged / CONVERSION_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")

    dropped = {split: s.rows_dropped for split, s in summaries.items() if s.rows_dropped}
    if dropped:
        warnings.warn(
            "Dropped rows with non-finite pixels or redshift: "
            + ", ".join(f"{split} {n} of {summaries[split].rows_read}" for split, n in dropped.items()),
            stacklevel=2,
        )
    return ConversionSummary(
        out_dir=out_dir,
        splits=summaries,
        skipped={split: source.skipped for split, source in sources.items() if source.skipped},
        input_megabytes=sum(source.path.stat().st_size for source in sources.values()) / 1e6,
        seconds=time.perf_counter() - start_time,
    )


def _check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``, and never overwrite something that is not ours."""
    if not out_dir.exists():
        return
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} already exists; pass --overwrite (overwrite=True) to replace it, or choose another output."
        )
    is_dataset = (out_dir / datasets.config.DATASETDICT_JSON_FILENAME).is_file()
    if not out_dir.is_dir() or not (is_dataset or not any(out_dir.iterdir())):
        raise FileExistsError(
            f"Refusing to overwrite {out_dir}: it is not a converted dataset (no dataset_dict.json); "
            "choose another output."
        )


def _convert_split(
    split: str,
    source: GalaxiesMLFile,
    split_dir: Path,
    work_dir: Path,
    chunk_size: int,
    progress: bool,
    num_proc: int | None,
) -> SplitSummary:
    """Convert one file in pieces of about :data:`PIECE_BYTES` and assemble them into ``split_dir``.

    Each piece goes through ``Dataset.from_generator`` (cache in ``work_dir``) and ``save_to_disk``
    into its own folder in ``work_dir``, then is dropped, so that the pages of at most one piece are
    read through a memory map at a time; the pieces' Arrow files are then moved, in order, into
    ``split_dir`` without reading them.
    """
    rows_per_piece = _rows_per_piece(source, chunk_size)
    bars_were_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    bar = tqdm(total=source.num_rows, desc=f"{split}: HDF5 -> Arrow", unit="img", disable=not progress)
    piece_dirs = []
    try:
        for index, start in enumerate(range(0, source.num_rows, rows_per_piece)):
            stop = min(start + rows_per_piece, source.num_rows)
            piece_dir = work_dir / f"{split}-piece-{index:05d}"
            if _convert_piece(split, source, start, stop, piece_dir, work_dir / "cache", chunk_size, num_proc):
                piece_dirs.append(piece_dir)
            bar.update(stop - start)
        if not piece_dirs:
            raise ValueError(
                f"{source.path}: all {source.num_rows} rows have non-finite pixels or redshift; nothing to convert."
            )
        rows_written = _assemble_split(split, piece_dirs, split_dir)
    finally:
        bar.close()
        if not bars_were_disabled:
            datasets.enable_progress_bars()
        for piece_dir in piece_dirs:
            shutil.rmtree(piece_dir, ignore_errors=True)
    dropped = source.num_rows - rows_written
    return SplitSummary(
        split=split,
        source=source.path.name,
        rows_read=source.num_rows,
        rows_written=rows_written,
        dropped_nonfinite_redshift=source.nonfinite_redshifts,
        dropped_nonfinite_pixels=dropped - source.nonfinite_redshifts,
    )


def _rows_per_piece(source: GalaxiesMLFile, chunk_size: int) -> int:
    """Whole chunks of rows that fit in :data:`PIECE_BYTES` (at least one chunk)."""
    with h5py.File(source.path, "r") as file:
        row_bytes = 4 * math.prod(IMAGE_SHAPE) + sum(file[key].dtype.itemsize for key in source.columns)
    return max(1, PIECE_BYTES // (row_bytes * chunk_size)) * chunk_size


def _convert_piece(
    split: str,
    source: GalaxiesMLFile,
    start: int,
    stop: int,
    piece_dir: Path,
    cache_dir: Path,
    chunk_size: int,
    num_proc: int | None,
) -> bool:
    """Save rows ``start:stop`` of ``source`` to ``piece_dir``; False (nothing saved) if every row is dropped."""
    starts = list(range(start, stop, chunk_size))
    num_proc = min(num_proc or 1, len(starts))
    try:
        dataset = datasets.Dataset.from_generator(
            _generate_rows,
            features=source.features(),
            cache_dir=str(cache_dir),
            writer_batch_size=chunk_size,
            num_proc=num_proc if num_proc > 1 else None,
            split=datasets.NamedSplit(split),
            gen_kwargs={
                "path": str(source.path),
                # A list is split into one generator call per chunk (spread over processes); a tuple is one call.
                "starts": starts if num_proc > 1 else tuple(starts),
                "stop": stop,
                "chunk_size": chunk_size,
                "columns": tuple(source.columns.items()),
            },
        )
    except ValueError as error:
        # datasets refuses to build a split with no rows: here, a piece whose rows were all dropped.
        if "corresponds to no data" not in str(error):
            raise
        shutil.rmtree(cache_dir, ignore_errors=True)
        return False
    dataset.save_to_disk(str(piece_dir))
    del dataset
    shutil.rmtree(cache_dir, ignore_errors=True)
    return True


def _assemble_split(split: str, piece_dirs: list[Path], split_dir: Path) -> int:
    """Move the pieces' Arrow files, in order, into one saved ``Dataset`` at ``split_dir``; return its rows.

    ``load_from_disk`` only maps the pieces and ``concatenate_datasets`` checks that their features
    agree; no page of data is read. ``split_dir`` gets the files ``save_to_disk`` writes: the Arrow
    shards, ``state.json`` (the first piece's, listing every shard) and ``dataset_info.json``.
    """
    pieces = [datasets.load_from_disk(str(piece_dir), keep_in_memory=False) for piece_dir in piece_dirs]
    dataset = datasets.concatenate_datasets(
        pieces, info=datasets.DatasetInfo(features=pieces[0].features), split=datasets.NamedSplit(split)
    )
    files = [Path(cache_file["filename"]) for piece in pieces for cache_file in piece.cache_files]
    names = [f"data-{index:05d}-of-{len(files):05d}.arrow" for index in range(len(files))]
    split_dir.mkdir(parents=True)
    for file, name in zip(files, names, strict=True):
        os.replace(file, split_dir / name)
    state_file = datasets.config.DATASET_STATE_JSON_FILENAME
    state = json.loads((piece_dirs[0] / state_file).read_text(encoding="utf-8"))
    state.update(_data_files=[{"filename": name} for name in names], _fingerprint=dataset._fingerprint)
    (split_dir / state_file).write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    dataset.info.write_to_directory(str(split_dir))
    return len(dataset)


def _generate_rows(
    path: str,
    starts: list[int] | tuple[int, ...],
    stop: int,
    chunk_size: int,
    columns: tuple[tuple[str, str], ...],
) -> Iterator[dict]:
    """Yield the rows of ``path`` before ``stop`` with finite pixels and redshift, ``chunk_size`` rows at a time."""
    with h5py.File(path, "r") as file:
        for start in starts:
            images, values = _read_chunk(file, start, min(start + chunk_size, stop), columns)
            redshift = np.asarray(values[REDSHIFT_KEY], dtype=np.float64)
            keep = np.isfinite(images).all(axis=(1, 2, 3)) & np.isfinite(redshift)
            names = [(_column_name(key), values[key]) for key, _ in columns]
            for row in np.flatnonzero(keep):
                example = {IMAGE_KEY: images[row]}
                for name, column in names:
                    example[name] = column[row]
                yield example


def _read_chunk(
    file: h5py.File, start: int, stop: int, columns: tuple[tuple[str, str], ...]
) -> tuple[np.ndarray, dict[str, list]]:
    """Rows ``start:stop``: float32 images (n, 5, 64, 64) and each column as a list (strings decoded)."""
    images = np.asarray(file[IMAGE_KEY][start:stop], dtype=np.float32)
    values = {}
    for key, dtype in columns:
        item = file[key]
        if dtype == _STRING:
            item = item.asstr(errors="replace")
        values[key] = np.asarray(item[start:stop]).reshape(stop - start).tolist()
    return images, values


def _column_dtype(item: h5py.Dataset) -> str | None:
    """``"string"`` for byte/text columns, the numpy dtype name for numbers and booleans, else None."""
    if h5py.check_string_dtype(item.dtype) is not None:
        return _STRING
    if item.dtype.kind in "biuf":
        return item.dtype.name
    return None


def _column_name(key: str) -> str:
    return REDSHIFT_COLUMN if key == REDSHIFT_KEY else key
