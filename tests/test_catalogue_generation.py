"""Generation at a catalogue's redshifts: tables in, a sharded HF dataset out, resumed after a kill, over processes."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
from astropy.table import Table
from conftest import make_tiny_pipeline

from galaxy_pipeline import generate
from galaxy_pipeline.catalogue import read_redshifts
from galaxy_pipeline.cli import main
from galaxy_pipeline.generate import generate_to_files, generated_rows

pytestmark = pytest.mark.filterwarnings("ignore:.*outside the model-space range:UserWarning")  # random weights

CATALOGUE_Z = [0.1, 0.45, 0.8, 1.3, 0.2, 1.9, 0.6]
ROUND_OFF = {"rtol": 1e-3, "atol": 1e-3}


@pytest.fixture
def tiny_pipe():
    pipe = make_tiny_pipeline(redshift_max=2.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def model_dir(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".parquet"])
def test_read_redshifts_from_each_table_type(tmp_path, suffix):
    path = tmp_path / f"catalogue{suffix}"
    Table({"object_id": np.arange(len(CATALOGUE_Z)), "z_spec": CATALOGUE_Z}).write(path)
    redshifts = read_redshifts(path, "z_spec")
    assert redshifts.dtype == np.float64
    np.testing.assert_array_equal(redshifts, CATALOGUE_Z)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("z", [0.1, 0.2], "no column 'z'"),
        ("z_spec", [0.1, float("nan")], "rows [1]"),
        ("z_spec", [0.1, -0.3], "finite redshifts >= 0"),
        ("z_spec", ["a", "b"], "one number per row"),
    ],
)
def test_bad_catalogues_get_one_line_and_exit_2(model_dir, tmp_path, capsys, column, values, message):
    path = tmp_path / "catalogue.csv"
    Table({"z_spec": values}).write(path)
    arguments = ["generate", "--model", str(model_dir), "--redshifts", str(path), "--redshift-column", column]
    assert main([*arguments, "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error
    assert not (tmp_path / "out").exists()


def test_unknown_table_type_is_refused(tmp_path):
    (tmp_path / "catalogue.txt").write_text("z\n0.1\n")
    with pytest.raises(ValueError, match="unknown table type"):
        read_redshifts(tmp_path / "catalogue.txt", "z")


def _run(pipe, out_dir, **kwargs):
    request = dict(n_per_redshift=1, seed=5, formats=("npy", "hf"), scheduler="ddim", steps=2, progress=False)
    return generate_to_files(pipe, CATALOGUE_Z, out_dir=out_dir, **{**request, **kwargs})


def test_hf_shards_load_as_one_dataset_equal_to_the_npy_files(tiny_pipe, tmp_path):
    manifest_path = _run(tiny_pipe, tmp_path / "out", shard_size=3)
    manifest = json.loads(manifest_path.read_text())
    assert [(shard["start"], shard["stop"]) for shard in manifest["shards"]] == [(0, 3), (3, 6), (6, 7)]
    loaded = datasets.load_dataset("parquet", data_dir=str(tmp_path / "out" / "hf"), split="train")
    assert loaded.features["image"].shape == (5, 16, 16)
    columns = loaded.with_format("numpy")[:]
    assert columns["index"].tolist() == list(range(len(CATALOGUE_Z)))
    np.testing.assert_allclose(columns["redshift"], CATALOGUE_Z)
    assert columns["seed"].tolist() == [5 + k for k in range(len(CATALOGUE_Z))]
    npy = np.stack([np.load(tmp_path / "out" / row["npy"]) for row in generated_rows(manifest_path)])
    assert columns["image"].dtype == np.float32
    np.testing.assert_array_equal(columns["image"], npy)


def test_shard_size_does_not_change_the_galaxies(tiny_pipe, tmp_path):
    small = _run(tiny_pipe, tmp_path / "small", shard_size=2, batch_size=1)
    whole = _run(tiny_pipe, tmp_path / "whole")
    read = [np.stack([np.load(m.parent / r["npy"]) for r in generated_rows(m)]) for m in (small, whole)]
    np.testing.assert_allclose(read[0], read[1], **ROUND_OFF)


def test_a_killed_run_resumes_and_redoes_only_the_missing_shards(tiny_pipe, tmp_path, monkeypatch, capsys):
    reference = _run(tiny_pipe, tmp_path / "reference", shard_size=2)
    real_write_shard, written = generate._write_shard, []

    def killed_after_two(sampler, request, out_dir, shard, *rest):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(shard)
        real_write_shard(sampler, request, out_dir, shard, *rest)

    monkeypatch.setattr(generate, "_write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_pipe, tmp_path / "out", shard_size=2)
    assert not (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(FileExistsError, match="other settings \\(seed\\)"):
        _run(tiny_pipe, tmp_path / "out", shard_size=2, seed=6)

    written.clear()
    monkeypatch.setattr(generate, "_write_shard", lambda *a: written.append(a[3]) or real_write_shard(*a))
    resumed = _run(tiny_pipe, tmp_path / "out", shard_size=2, progress=True)
    assert written == [2, 3] and "Resuming" in capsys.readouterr().err
    first, second = (np.stack([np.load(m.parent / r["npy"]) for r in generated_rows(m)]) for m in (reference, resumed))
    np.testing.assert_allclose(second, first, **ROUND_OFF)
    assert not (tmp_path / "out" / ".partial").exists()
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(tiny_pipe, tmp_path / "out", shard_size=2)


def test_two_gloo_processes_write_the_same_galaxies_as_one(model_dir, tmp_path):
    """``accelerate launch --num_processes 2`` on CPU: each writes its shards; the union is a 1-process run."""
    catalogue = tmp_path / "catalogue.csv"
    Table({"redshift": CATALOGUE_Z}).write(catalogue)
    arguments = ["generate", "--model", str(model_dir), "--redshifts", str(catalogue), "--n", "1", "--seed", "5"]
    arguments += ["--scheduler", "ddim", "--steps", "2", "--format", "hf", "npy", "--shard-size", "2", "--quiet"]
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533"),
        *("-m", "galaxy_pipeline.cli", *arguments, "--out", str(tmp_path / "two")),
    ]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Wrote 7 galaxies") == 1
    assert main([*arguments, "--out", str(tmp_path / "one")]) == 0

    def dataset(folder):
        return datasets.load_dataset("parquet", data_dir=str(folder / "hf"), split="train").with_format("numpy")[:]

    two, one = dataset(tmp_path / "two"), dataset(tmp_path / "one")
    assert two["index"].tolist() == one["index"].tolist() == list(range(7))
    assert two["seed"].tolist() == one["seed"].tolist()
    np.testing.assert_allclose(two["image"], one["image"], **ROUND_OFF)
