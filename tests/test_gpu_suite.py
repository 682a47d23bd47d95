"""The GPU suite's smoke run: every stage on a CPU in seconds, every field of gpu_suite.json with its unit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import gpu_suite  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*outside the model-space range:UserWarning")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("smoke") / "suite"
    command = [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--smoke", "--out", str(out)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "gpu_suite.md").read_text().startswith("# GPU suite")
    return json.loads((out / "gpu_suite.json").read_text())


def test_every_stage_runs(smoke):
    assert list(smoke["stages"]) == list(gpu_suite.STAGES)
    assert {name: stage["status"] for name, stage in smoke["stages"].items()} == dict.fromkeys(gpu_suite.STAGES, "done")
    assert smoke["suite"]["smoke"] is True and smoke["suite"]["elapsed_s"] <= smoke["suite"]["budget_s"]


def test_sampling_fields_have_units(smoke):
    rows = smoke["sampling"]
    assert {(r["dtype"], r["channels_last"]) for r in rows} == {(d, c) for d in ("float32", "bfloat16") for c in (0, 1)}
    for row in rows:
        assert row["forward_ms"] > 0 and row["peak_memory_mib"] is None  # no GPU memory on a CPU
        for sampler in row["samplers"].values():
            assert sampler["ms_per_galaxy"] * sampler["galaxies_per_s"] == pytest.approx(1e3)
    end_to_end = smoke["sampling_end_to_end"]
    assert [r["sampler"] for r in end_to_end] == ["ddim", "dpm"]
    assert all(
        r["galaxies_per_s"] > 0 and r["ms_per_galaxy"] == pytest.approx(1e3 / r["galaxies_per_s"]) for r in end_to_end
    )


def test_mfu_training_scale_catalogue_and_bf16_fields(smoke):
    (mfu,) = smoke["mfu"]["rows"]
    assert mfu["flops_per_forward"] > 1e6 and mfu["achieved_tflops"] > 0
    assert mfu["mfu"] is None and "GPUs only" in smoke["mfu"]["peak_entry"]
    training = smoke["training"]
    ratio = training["ours_images_per_s"] / training["bare_images_per_s"]
    assert training["ratio_ours_to_bare"] == pytest.approx(ratio) and training["ema"] is True
    scale = smoke["scale_check"]
    assert scale["mock_galaxies"] == 60 and scale["train_steps"] >= 2 and scale["exam"]["n"] == 6
    assert scale["images_seen"] == scale["train_steps"] * scale["train_batch_size"]
    catalogue = smoke["catalogue"]
    assert catalogue["n_galaxies"] == 8 and catalogue["galaxies_per_s"] > 0 and catalogue["format"] == "hf"
    fidelity = smoke["bf16_fidelity"]
    assert 0 < fidelity["pixel_rms_difference_over_rms"] < 1  # bf16 rounds: close to fp32, not identical
    assert fidelity["median_i_flux_ratio_bf16_to_fp32"] > 0 and isinstance(fidelity["bf16_supported"], bool)
    assert fidelity["n"] == 6 and fidelity["cells_judged"] == 0  # 6 galaxies fill no bin of 30 real ones


def test_an_exhausted_budget_skips_stages_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["gpu_suite.py", "--smoke", "--budget-s", "0.5", "--out", str(tmp_path / "s")])
    assert gpu_suite.main() == 0
    stages = json.loads((tmp_path / "s" / "gpu_suite.json").read_text())["stages"]
    assert {stage["status"] for stage in stages.values()} == {"skipped"}
    assert all("no time left" in stage["note"] for stage in stages.values())


def test_a_used_output_folder_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "gpu_suite.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["gpu_suite.py", "--smoke", "--out", str(tmp_path)])
    assert gpu_suite.main() == 2
    assert "choose a new --out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
    ],
)
def test_bf16_peak_is_looked_up_from_the_device_name(monkeypatch, name, peak):
    monkeypatch.setattr(gpu_suite.torch.cuda, "get_device_name", lambda device: name)
    found, entry = gpu_suite.bf16_peak(gpu_suite.torch.device("cuda"))
    assert found == peak and name in entry
