"""Mistakes a user can make end in one line on stderr and exit code 2 (the Python API raises ValueError)."""

import errno
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline
from huggingface_hub import constants

from galaxy_pipeline import cli
from galaxy_pipeline.cli import main
from galaxy_pipeline.evaluation.evaluate import load_predictor
from galaxy_pipeline.generate import generated_rows
from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline

WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"
SECRET = "hf_thisIsNotARealTokenButMustStaySecret"
FAST = ["--z", "0.5", "--n", "1", "--scheduler", "ddim", "--steps", "1", "--format", "npy"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """A tiny pipeline folder (trained range 0-4)."""
    folder = tmp_path_factory.mktemp("model") / "pipeline"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture
def model_copy(saved_model, tmp_path) -> Path:
    """A copy of the tiny pipeline folder that a test may damage."""
    return Path(shutil.copytree(saved_model, tmp_path / "copy"))


@pytest.fixture
def afile(tmp_path) -> Path:
    """A regular file: paths below it cannot be created, even by root."""
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return path


def one_line_error(capsys, argv: list, *needles: str) -> str:
    """Run the CLI; check exit code 2, exactly one non-empty stderr line, no traceback; return that line."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.out + captured.err
    command = " ".join(str(arg) for arg in argv[: 2 if argv[0] == "data" else 1])
    assert lines[0].startswith(f"galaxy-pipeline {command}: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def overwrite_middle_with_ff(path: Path, size: int = 50_000) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle - size // 2 : middle + size // 2] = b"\xff" * size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (overwrite_middle_with_ff, "NaN or infinite"),
        (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), "save the pipeline again"),
        (lambda path: path.write_bytes(bytes(path.stat().st_size)), "download it again"),
    ],
    ids=["ff-bytes", "truncated", "all-zero"],
)
def test_damaged_weights_are_one_line(model_copy, tmp_path, capsys, damage, message):
    damage(model_copy / WEIGHTS)
    out = tmp_path / "out"
    one_line_error(capsys, ["generate", "--model", model_copy, *FAST, "--out", out], str(model_copy / WEIGHTS), message)
    assert not out.exists()


def test_invalid_unet_config_is_one_line(model_copy, tmp_path, capsys):
    (model_copy / "unet" / "config.json").write_text("{not json")
    one_line_error(capsys, ["generate", "--model", model_copy, *FAST, "--out", tmp_path / "out"], "unet/config.json")


def test_python_api_refuses_non_finite_weights(model_copy):
    overwrite_middle_with_ff(model_copy / WEIGHTS)
    with pytest.raises(ValueError, match="NaN or infinite") as raised:
        GalaxyRedshiftPipeline.from_pretrained(model_copy)
    assert str(model_copy / WEIGHTS) in str(raised.value)


@pytest.mark.filterwarnings("ignore:.*outside the model-space range:UserWarning")  # random weights diverge
def test_overwrite_replaces_a_larger_earlier_run(saved_model, tmp_path, capsys):
    out = tmp_path / "out"
    arguments = ["generate", "--model", str(saved_model), "--z", "0.5", "--scheduler", "ddim", "--steps", "1"]
    assert main([*arguments, "--n", "7", "--format", "npy", "fits", "--out", str(out)]) == 0
    assert main([*arguments, "--n", "1", "--format", "npy", "--out", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert [row["npy"] for row in generated_rows(out / "manifest.json")] == ["npy/galaxy_00000_z0.5000.npy"]
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*")) == [
        "generate.json",
        "manifest.json",
        "npy",
        "npy/galaxy_00000_z0.5000.npy",
        "shards",
        "shards/shard-00000.json",
    ]
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_generate_never_replaces_a_folder_that_is_no_earlier_run(saved_model, tmp_path, capsys, overwrite):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    one_line_error(capsys, ["generate", "--model", saved_model, *FAST, "--out", out, *overwrite], str(out), "manifest")
    assert (out / "chapter1.tex").read_text() == "precious" and len(list(out.iterdir())) == 1


@pytest.mark.parametrize(
    "command",
    [
        ["generate", "--model", "MODEL", *FAST],
        ["data", "convert", "--train", "missing.hdf5"],
        ["data", "mock", "--n", "4"],
        ["data", "mock", "--n", "4", "--splits"],
    ],
    ids=["generate", "convert", "mock", "mock-splits"],
)
def test_unwritable_out_is_one_line(saved_model, afile, capsys, command):
    out = afile / "out"
    argv = [saved_model if arg == "MODEL" else arg for arg in command]
    one_line_error(capsys, [*argv, "--out", out], str(out), "is a file, not a folder")


@pytest.mark.parametrize(
    ("error", "needles"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/out.fits"), ["/data/out.fits", "permission"]),
        (OSError(errno.ENOSPC, "No space left on device", "/data/big.npy"), ["/data/big.npy", "disk is full"]),
        (OSError(errno.EADDRINUSE, "Address already in use"), ["Address already in use", "--port"]),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/etc/hosts/out"), ["/etc/hosts/out"]),
        (OSError("Cannot find empty port in range: 7860-7860.\nSet GRADIO_SERVER_PORT"), ["7860-7860", "GRADIO"]),
    ],
    ids=["permission", "disk-full", "address-in-use", "not-a-directory", "multi-line"],
)
def test_os_errors_are_one_line(monkeypatch, capsys, error, needles):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "run_info", fail)
    one_line_error(capsys, ["info"], *needles)


def test_bugs_keep_their_traceback(monkeypatch):
    def fail(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "run_info", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info"])


@pytest.mark.parametrize(
    ("device", "message"),
    [("cuda", "CUDA is not available on this machine; use --device cpu"), ("gpu7", "Unknown device 'gpu7'")],
)
def test_unavailable_or_unknown_device_is_one_line(saved_model, tmp_path, capsys, monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(GalaxyRedshiftPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
    out = tmp_path / "out"
    one_line_error(capsys, ["generate", "--model", saved_model, *FAST, "--out", out, "--device", device], message)
    one_line_error(capsys, ["demo", "--model", saved_model, "--port", free_port(), "--device", device], message)


def test_invalid_or_busy_port_is_one_line(saved_model, capsys, monkeypatch):
    monkeypatch.setattr(GalaxyRedshiftPipeline, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
    one_line_error(capsys, ["demo", "--model", saved_model, "--port", "99999"], "99999", "between 1 and 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(capsys, ["demo", "--model", saved_model, "--port", port], f"127.0.0.1:{port}", "--port")


@pytest.mark.parametrize(
    ("setting", "value", "needle"),
    [("HF_HUB_OFFLINE", True, "offline"), ("ENDPOINT", "http://127.0.0.1:9", "127.0.0.1:9")],
)
def test_push_without_the_hub_is_one_line(saved_model, capsys, monkeypatch, setting, value, needle):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(constants, setting, value)
    line = one_line_error(capsys, ["push", "--model", saved_model, "--repo", "astro-user/galaxies"], "Could not reach")
    assert needle in line and SECRET not in line


@pytest.mark.parametrize("z", [True, "0.5", [0.5, False], np.array([True])])
def test_pipeline_refuses_booleans_and_text_as_redshifts(tiny_pipeline, z):
    with pytest.raises(ValueError, match="z must"):
        tiny_pipeline(z=z, num_inference_steps=1)


def test_many_bad_redshifts_give_a_short_message(tiny_pipeline):
    z = np.linspace(5.0, 9.0, 200_000)
    with pytest.raises(ValueError, match="outside the trained redshift range") as raised:
        tiny_pipeline(z=z, num_inference_steps=1)
    message = str(raised.value)
    assert len(message) < 400 and "200000 values in [5, 9]" in message


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"guidance_scale": "abc"}, "guidance_scale"), ({"generator": 0}, "generator"), ({"generator": [0]}, "generator")],
)
def test_pipeline_refuses_wrong_argument_types_with_value_error(tiny_pipeline, kwargs, name):
    with pytest.raises(ValueError, match=name):
        tiny_pipeline(z=0.5, num_inference_steps=1, **kwargs)


def test_missing_predictor_names_the_real_training_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_scripts/train_redshift_predictor.py"):
        load_predictor(tmp_path / "no-predictor")
    assert (Path(__file__).resolve().parents[1] / "train_scripts" / "train_redshift_predictor.py").is_file()
