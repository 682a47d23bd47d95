"""GalaxiesML HDF5 -> DatasetDict conversion: round trip, validation, dropped rows, atomicity, dataset card."""

from pathlib import Path

import datasets
import h5py
import numpy as np
import pytest
from galaxiesml_files import BYTE_STRING_COLUMNS, write_galaxiesml_file, write_galaxiesml_splits
from huggingface_hub import DatasetCard, HfApi

from galaxy_pipeline import cli
from galaxy_pipeline.data import galaxiesml
from galaxy_pipeline.data.dataset_card import describe_column, push_dataset_to_hub
from galaxy_pipeline.data.galaxiesml import convert_galaxiesml, validate_galaxiesml_file
from galaxy_pipeline.data.schema import PER_BAND_COLUMNS


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    """Train (40 rows, NaN pixels in rows 3 and 17), validation (8) and test (6) files."""
    return write_galaxiesml_splits(tmp_path_factory.mktemp("galaxiesml"), sizes=(40, 8, 6), nan_rows={"train": [3, 17]})


@pytest.fixture(scope="module")
def converted(splits, tmp_path_factory) -> tuple[Path, galaxiesml.ConversionSummary]:
    out = tmp_path_factory.mktemp("converted") / "galaxiesml"
    with pytest.warns(UserWarning, match="train 2 of 40"):
        summary = convert_galaxiesml(splits, out, chunk_size=16, progress=False)
    return out, summary


def _entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _assert_split_matches_file(converted_split: datasets.Dataset, path: Path) -> None:
    """Every row of ``path`` with finite pixels and redshift is in ``converted_split``, in order, unchanged."""
    assert converted_split.features["image"] == datasets.Array3D(shape=(5, 64, 64), dtype="float32")
    rows = converted_split[:]
    with h5py.File(path, "r") as file:
        images = file["image"][...]
        keep = np.isfinite(images).all(axis=(1, 2, 3)) & np.isfinite(file["specz_redshift"][...])
        stored_images = converted_split.with_format("numpy")[:]["image"]
        np.testing.assert_array_equal(stored_images.view(np.uint32), images[keep].view(np.uint32))
        for name, key in [("redshift", "specz_redshift"), ("object_id", "object_id"), ("ra", "ra")]:
            stored = np.asarray(rows[name])
            np.testing.assert_array_equal(stored, file[key][...][keep], err_msg=name)
            assert converted_split.features[name].dtype == file[key].dtype.name
        for name in PER_BAND_COLUMNS + ("dec", "specz_redshift_err", "skymap_id"):
            stored = np.asarray(rows[name], dtype=file[name].dtype)
            np.testing.assert_array_equal(stored, file[name][...][keep], err_msg=name)
            assert converted_split.features[name].dtype == file[name].dtype.name
        for name in BYTE_STRING_COLUMNS:
            assert file[name].shape == (len(images), 1)
            expected = [value.decode() for value in file[name][...][keep, 0]]
            assert rows[name] == expected


def test_round_trip_keeps_pixels_ids_and_catalog(splits, converted):
    out, _ = converted
    dataset = datasets.load_from_disk(str(out))
    assert list(dataset) == ["train", "validation", "test"]
    for split, path in splits.items():
        _assert_split_matches_file(dataset[split], path)
    assert "specz_redshift" not in dataset["train"].column_names


@pytest.mark.parametrize("num_proc", [None, 2])
def test_conversion_in_pieces_keeps_every_row_in_order(splits, tmp_path, monkeypatch, num_proc):
    # About 82 kB a row: pieces of three 4-row chunks, so the 40 training rows span 4 pieces.
    monkeypatch.setattr(galaxiesml, "PIECE_BYTES", 12 * 90_000)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="train 2 of 40"):
        summary = convert_galaxiesml(
            {"train": splits["train"], "test": splits["test"]}, out, chunk_size=4, progress=False, num_proc=num_proc
        )
    assert summary.splits["train"].rows_written == 38
    dataset = datasets.load_from_disk(str(out))
    for split in ("train", "test"):
        _assert_split_matches_file(dataset[split], splits[split])
    shards = sorted(path.name for path in (out / "train").glob("*.arrow"))
    assert len(shards) >= 3
    assert _entries(out / "train") == sorted([*shards, "dataset_info.json", "state.json"])
    assert _entries(out) == sorted(["dataset_dict.json", galaxiesml.CONVERSION_RECORD, "test", "train"])
    assert _entries(tmp_path) == ["out"]


def test_a_piece_whose_rows_are_all_dropped_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(galaxiesml, "PIECE_BYTES", 1)
    path = write_galaxiesml_file(tmp_path / "holes.hdf5", 12, nan_rows=range(4, 8))
    with pytest.warns(UserWarning, match="train 4 of 12"):
        convert_galaxiesml({"train": path}, tmp_path / "out", chunk_size=4, progress=False)
    _assert_split_matches_file(datasets.load_from_disk(str(tmp_path / "out"))["train"], path)


def test_a_file_whose_rows_are_all_dropped_is_an_error(tmp_path):
    path = write_galaxiesml_file(tmp_path / "empty.hdf5", 4, nan_rows=range(4))
    with pytest.raises(ValueError, match="all 4 rows have non-finite pixels or redshift"):
        convert_galaxiesml({"train": path}, tmp_path / "out", progress=False)
    assert _entries(tmp_path) == ["empty.hdf5"]


def test_summary_counts_dropped_rows(converted):
    out, summary = converted
    train = summary.splits["train"]
    assert (train.rows_read, train.rows_written, train.rows_dropped) == (40, 38, 2)
    assert (train.dropped_nonfinite_pixels, train.dropped_nonfinite_redshift) == (2, 0)
    assert summary.splits["validation"].rows_dropped == 0
    text = str(summary)
    assert "train" in text and "38" in text and "MB/s" in text
    assert summary.megabytes_per_second > 0
    assert len(datasets.load_from_disk(str(out))["train"]) == 38


def test_nonfinite_redshift_rows_are_dropped_and_counted(tmp_path):
    redshift = np.random.default_rng(1).uniform(0.1, 3.0, size=12)
    redshift[[2, 7]] = [np.nan, np.inf]
    path = write_galaxiesml_file(tmp_path / "z.hdf5", 12, columns={"specz_redshift": redshift})
    with pytest.warns(UserWarning, match="train 2 of 12"):
        summary = convert_galaxiesml({"train": path}, tmp_path / "out", progress=False)
    assert summary.splits["train"].dropped_nonfinite_redshift == 2
    assert summary.splits["train"].dropped_nonfinite_pixels == 0
    stored = datasets.load_from_disk(str(tmp_path / "out"))["train"][:]["redshift"]
    np.testing.assert_array_equal(stored, np.delete(redshift, [2, 7]))


def test_conversion_keeps_the_default_cache_untouched(tmp_path, monkeypatch, splits):
    default_cache = tmp_path / "hf_datasets_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", default_cache)
    out = tmp_path / "out"
    convert_galaxiesml({"validation": splits["validation"]}, out, progress=False)
    assert not default_cache.exists()
    assert _entries(tmp_path) == ["out"]
    assert list(datasets.load_from_disk(str(out))) == ["validation"]


def test_parallel_readers_give_the_same_rows(tmp_path, splits, converted):
    out = tmp_path / "parallel"
    with pytest.warns(UserWarning):
        convert_galaxiesml({"train": splits["train"]}, out, chunk_size=8, progress=False, num_proc=2)
    parallel = datasets.load_from_disk(str(out))["train"]
    serial = datasets.load_from_disk(str(converted[0]))["train"]
    assert parallel[:]["object_id"] == serial[:]["object_id"]
    np.testing.assert_array_equal(parallel.with_format("numpy")[:]["image"], serial.with_format("numpy")[:]["image"])


def _bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, text the error must contain)."""
    n = 6
    not_hdf5 = folder / "notes.hdf5"
    not_hdf5.write_text("this is not HDF5")
    out_of_range = np.full(n, 0.5)
    out_of_range[4] = -99.0
    return {
        "missing image": (write_galaxiesml_file(folder / "a.hdf5", n, omit=["image"]), "missing key 'image'"),
        "missing redshift": (
            write_galaxiesml_file(folder / "b.hdf5", n, omit=["specz_redshift"]),
            "missing key 'specz_redshift'",
        ),
        "wrong image size": (write_galaxiesml_file(folder / "c.hdf5", n, image_size=32), "(6, 5, 32, 32)"),
        "wrong band count": (
            write_galaxiesml_file(folder / "d.hdf5", n, columns={"image": np.zeros((n, 3, 64, 64), np.float32)}),
            "key 'image' has shape (6, 3, 64, 64)",
        ),
        "short column": (
            write_galaxiesml_file(folder / "e.hdf5", n, columns={"g_cmodel_mag": np.zeros(n - 1)}),
            "key 'g_cmodel_mag' has 5 rows but 'image' has 6",
        ),
        "redshift out of range": (
            write_galaxiesml_file(folder / "f.hdf5", n, columns={"specz_redshift": out_of_range}),
            "key 'specz_redshift' has 1 value(s) outside [0, 6] (e.g. -99 at row 4)",
        ),
        "not hdf5": (not_hdf5, "not a readable HDF5 file"),
    }


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    "case",
    [
        "missing image",
        "missing redshift",
        "wrong image size",
        "wrong band count",
        "short column",
        "redshift out of range",
        "not hdf5",
    ],
)
def test_bad_file_is_rejected_before_anything_is_written(case, bad_files, splits, tmp_path):
    path, message = bad_files[case]
    with pytest.raises(ValueError) as error:
        convert_galaxiesml({"train": splits["train"], "test": path}, tmp_path / "out", progress=False)
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text
    assert _entries(tmp_path) == []


def test_cli_reports_a_bad_file_in_one_line(bad_files, tmp_path, capsys):
    path, message = bad_files["short column"]
    code = cli.main(["data", "convert", "--train", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert _entries(tmp_path) == []


def test_cli_converts_and_prints_the_summary(splits, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["data", "convert", "--validation", str(splits["validation"]), "--out", str(out), "--quiet"])
    assert code == 0
    assert "validation" in capsys.readouterr().out
    assert len(datasets.load_from_disk(str(out))["validation"]) == 8


def test_cli_needs_an_input_file(tmp_path, capsys):
    assert cli.main(["data", "convert", "--out", str(tmp_path / "out")]) == 2
    assert "--train" in capsys.readouterr().err


def test_missing_input_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.hdf5"
    with pytest.raises(FileNotFoundError, match="nowhere.hdf5"):
        convert_galaxiesml({"train": missing}, tmp_path / "out", progress=False)


def test_keys_that_are_not_row_columns_are_skipped_and_reported(tmp_path):
    path = write_galaxiesml_file(tmp_path / "extra.hdf5", 5, columns={"flux_profile": np.zeros((5, 3))})
    with h5py.File(path, "a") as file:
        file.create_group("metadata")
    layout = validate_galaxiesml_file(path)
    assert set(layout.skipped) == {"flux_profile", "metadata"}
    summary = convert_galaxiesml({"train": path}, tmp_path / "out", progress=False)
    assert "flux_profile" in str(summary)
    assert "flux_profile" not in datasets.load_from_disk(str(tmp_path / "out"))["train"].column_names


def _interrupt_after(monkeypatch, calls: int) -> None:
    read_chunk = galaxiesml._read_chunk
    seen = []

    def failing_read_chunk(*args, **kwargs):
        seen.append(1)
        if len(seen) > calls:
            raise RuntimeError("simulated interruption")
        return read_chunk(*args, **kwargs)

    monkeypatch.setattr(galaxiesml, "_read_chunk", failing_read_chunk)


def test_interrupted_conversion_leaves_no_dataset_and_no_temp_folder(splits, tmp_path, monkeypatch):
    _interrupt_after(monkeypatch, calls=1)
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as error:
        convert_galaxiesml({"train": splits["train"]}, tmp_path / "out", chunk_size=8, progress=False)
    assert "simulated interruption" in str(error.value.__cause__)
    assert _entries(tmp_path) == []


def test_existing_output_needs_overwrite(splits, tmp_path):
    out = tmp_path / "out"
    convert_galaxiesml({"validation": splits["validation"]}, out, progress=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_galaxiesml({"test": splits["test"]}, out, progress=False)
    assert list(datasets.load_from_disk(str(out))) == ["validation"]

    convert_galaxiesml({"test": splits["test"]}, out, overwrite=True, progress=False)
    assert list(datasets.load_from_disk(str(out))) == ["test"]
    assert _entries(tmp_path) == ["out"]


def test_interrupted_overwrite_keeps_the_old_dataset(splits, tmp_path, monkeypatch):
    out = tmp_path / "out"
    convert_galaxiesml({"validation": splits["validation"]}, out, progress=False)
    _interrupt_after(monkeypatch, calls=0)
    with pytest.raises(datasets.exceptions.DatasetGenerationError):
        convert_galaxiesml({"test": splits["test"]}, out, overwrite=True, progress=False)
    assert list(datasets.load_from_disk(str(out))) == ["validation"]
    assert _entries(tmp_path) == ["out"]


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(splits, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a converted dataset"):
        convert_galaxiesml({"test": splits["test"]}, out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_push_uploads_the_card_then_the_splits(converted, monkeypatch):
    out, _ = converted
    calls = []
    monkeypatch.setattr(
        HfApi,
        "create_repo",
        lambda self, repo_id, **kw: calls.append(("repo", repo_id, kw)) or f"https://hf.co/{repo_id}",
    )
    monkeypatch.setattr(DatasetCard, "push_to_hub", lambda self, repo_id, **kw: calls.append(("card", str(self), kw)))
    monkeypatch.setattr(
        datasets.DatasetDict,
        "push_to_hub",
        lambda self, repo_id, **kw: calls.append(("data", {k: len(v) for k, v in self.items()}, kw)),
    )
    url = push_dataset_to_hub(out, "astro/galaxiesml", private=True)

    assert url == "https://hf.co/astro/galaxiesml"
    assert [call[0] for call in calls] == ["repo", "card", "data"]
    assert calls[0][2]["private"] is True and calls[0][2]["repo_type"] == "dataset"
    assert calls[2][1] == {"train": 38, "validation": 8, "test": 6}
    assert calls[2][2]["private"] is True
    card_text = calls[1][1]
    card = DatasetCard(card_text)
    assert card.data.license == "cc-by-4.0"
    for expected in (
        "zenodo.org/records/11117528",
        "@article{do2024galaxiesml",
        "| train | 38 | 2 | 5x64x64_training_with_morphology.hdf5 |",
        "| validation | 8 | 0 |",
        "| `g_cmodel_mag` | g band: CModel magnitude, AB mag |",
        "| `redshift` | spectroscopic redshift",
        "AB zero point 27",
    ):
        assert expected in card_text, expected


def test_column_descriptions_carry_units():
    assert "arcsec" in describe_column("image")
    assert "degrees" in describe_column("ra")
    assert describe_column("y_half_light_radius").startswith("y band: half-light radius, pixels")
    assert describe_column("mystery") == "GalaxiesML catalog column (see Do et al. 2024)"
