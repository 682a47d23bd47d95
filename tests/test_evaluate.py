"""`galaxy-pipeline evaluate`: generation + measurement + statistics, report, figures, resume, sharding."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from astropy.table import Table
from conftest import make_tiny_pipeline
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from galaxiesml_files import write_galaxiesml_file
from PIL import Image

from galaxy_pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.cli import build_parser, main
from galaxy_pipeline.data.galaxiesml import convert_galaxiesml
from galaxy_pipeline.data.loading import load_split
from galaxy_pipeline.evaluation import evaluate as evaluate_module
from galaxy_pipeline.evaluation.evaluate import evaluate_pipeline
from galaxy_pipeline.evaluation.figures import plot_redshift
from galaxy_pipeline.evaluation.redshift_model import RedshiftPredictor, RedshiftPredictorConfig
from galaxy_pipeline.evaluation.report import render_markdown, to_jsonable
from galaxy_pipeline.evaluation.scorecard import SCORECARD_TOLERANCES
from galaxy_pipeline.evaluation.summary import COMPARED_QUANTITIES, detection_summary
from galaxy_pipeline.generate import with_scheduler
from galaxy_pipeline.schedulers import SCHEDULER_NAMES, make_scheduler

N_ROWS = 16
REDSHIFT_MAX = 3.0  # the tiny model's trained range is [0, 3]; the test split reaches z = 4
FIGURES = (
    "fig2_redshift.png",
    "fig3_morphology_histograms.png",
    "fig4_morphology_vs_redshift.png",
    "fig5_galaxy_grid.png",
)
FAST = {"num_inference_steps": 2, "n_permutations": 30, "n_bootstrap": 30, "progress": False}
# Batches of different sizes agree to float32 round-off (convolution kernels change with the batch size).
ROUND_OFF = {"rtol": 1e-3, "atol": 1e-3}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("galaxiesml")
    source = write_galaxiesml_file(folder / "5x64x64_testing_with_morphology.hdf5", 24, seed=3)
    convert_galaxiesml({"test": source}, folder / "converted", progress=False)
    return folder / "converted"


@pytest.fixture(scope="module")
def split(dataset_dir):
    return load_split(dataset_dir, "test")


@pytest.fixture(scope="module")
def pipe() -> GalaxyRedshiftPipeline:
    return make_tiny_pipeline(sample_size=64, redshift_max=REDSHIFT_MAX)


@pytest.fixture(scope="module")
def predictor() -> RedshiftPredictor:
    torch.manual_seed(0)
    return RedshiftPredictor(RedshiftPredictorConfig.from_preset("tiny"))


@pytest.fixture(scope="module")
def evaluated(pipe, split, predictor, tmp_path_factory) -> tuple[dict, Path]:
    """One full evaluation with a predictor: 16 galaxies in batches of 8."""
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate_pipeline(
        pipe, split, out, n=N_ROWS, predictor=predictor, batch_size=8, model_id="tiny", **FAST
    ), out


def _generated_fluxes(out: Path) -> np.ndarray:
    files = sorted((out / "generated").glob("rows_*.npz"))
    return np.concatenate([np.load(path)["images"] for path in files])


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_report_figures_and_catalogues_with_a_predictor(evaluated, split):
    report, out = evaluated
    assert report == _strict_json(out / "report.json")
    for key in ("model", "data", "settings", "counts", "detection", "morphology", "spearman", "photoz", "frechet"):
        assert key in report
    assert report["counts"]["n_real"] == report["counts"]["n_generated"] == N_ROWS
    real_z = np.asarray(split[:N_ROWS]["redshift"])
    assert report["counts"]["n_extrapolated"] == int(np.sum(real_z > REDSHIFT_MAX)) > 0
    assert any("extrapolation" in note for note in report["notes"])

    real = Table.read(out / "galaxies_real.ecsv")
    generated = Table.read(out / "galaxies_generated.ecsv")
    assert len(real) == len(generated) == N_ROWS  # every image is a row: no filtering
    np.testing.assert_allclose(real["redshift"], real_z)
    np.testing.assert_allclose(generated["redshift"], real_z)  # one galaxy per real redshift
    assert list(generated["seed"]) == list(range(N_ROWS))
    assert report["detection"]["real"]["detection_rate"] == pytest.approx(np.mean(real["detected"]))
    assert report["detection"]["generated"]["n_detected"] == int(np.sum(generated["detected"]))

    assert set(report["morphology"]["by_bin"]) == set(COMPARED_QUANTITIES)
    first_bin = report["morphology"]["by_bin"]["ellipticity"][0]
    in_first_bin = (real_z >= first_bin["z_min"]) & (real_z < first_bin["z_max"])
    finite = np.isfinite(np.asarray(real["ellipticity"], dtype=float))
    assert first_bin["n_real"] == int(np.sum(in_first_bin & finite))

    assert report["photoz"]["real"]["overall"]["n"] == N_ROWS
    np.testing.assert_allclose(
        report["photoz"]["generated"]["overall"]["bias"],
        np.median((generated["predicted_redshift"] - generated["redshift"]) / (1 + generated["redshift"])),
    )
    assert report["frechet"]["n_per_sample"] == N_ROWS // 2
    assert report["frechet"]["null_frechet_distance"] >= 0
    spearman = report["spearman"]
    assert spearman["predicted_vs_conditioned"]["generated"]["n"] == N_ROWS
    assert spearman["size_vs_redshift"]["tolerance"] == 0.15

    markdown = (out / "report.md").read_text()
    for heading in ("## Detection", "## Spearman checks", "## Photo-z metrics", "Frechet distance"):
        assert heading in markdown
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 300
    assert report["files"]["figures"] == list(FIGURES)


def test_report_markdown_leads_with_the_scorecard(evaluated):
    report, out = evaluated
    card = report["scorecard"]
    assert card["n_judged"] + sum(cell["pass"] is None for cell in card["cells"]) == len(card["cells"])
    assert {cell["quantity"] for cell in card["cells"]} == set(SCORECARD_TOLERANCES)
    markdown = (out / "report.md").read_text()
    assert f"**{card['n_pass']} of {card['n_judged']} cells pass.**" in markdown
    section = markdown[markdown.index("## Scorecard") : markdown.index("## Detection")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| quantity")]
    assert [row.split(" | ")[0][2:] for row in rows] == list(SCORECARD_TOLERANCES)
    assert all(row.count("PASS") + row.count("FAIL") + row.count(") - ") == len(card["cells"]) // 7 for row in rows)


def test_without_predictor_the_report_says_so(pipe, split, evaluated, tmp_path):
    _, first = evaluated
    out = tmp_path / "no_predictor"
    real_cache = first / "measurements" / "real"
    report = evaluate_pipeline(pipe, split, out, n=N_ROWS, batch_size=8, real_cache=real_cache, figures=False, **FAST)
    assert report["photoz"] is None and report["frechet"] is None
    assert report["spearman"]["predicted_vs_conditioned"] is None
    assert any("No redshift predictor" in note for note in report["notes"])
    assert "Photo-z metrics" not in (out / "report.md").read_text()
    assert not list((out / "measurements").glob("predictor-*"))
    np.testing.assert_array_equal(_generated_fluxes(out), _generated_fluxes(first))  # same seeds, same galaxies

    real, generated = (Table.read(out / f"galaxies_{name}.ecsv") for name in ("real", "generated"))
    assert "predicted_redshift" not in real.colnames
    with Image.open(plot_redshift(real, generated, report, out / "fig2.png")) as image:
        assert image.format == "PNG"


def test_results_do_not_depend_on_the_batch_size(pipe, split, evaluated, tmp_path):
    report, first = evaluated
    other = evaluate_pipeline(pipe, split, tmp_path, n=N_ROWS, batch_size=5, figures=False, **FAST)
    np.testing.assert_allclose(_generated_fluxes(tmp_path), _generated_fluxes(first), **ROUND_OFF)
    detected = [Table.read(folder / "galaxies_generated.ecsv")["detected"] for folder in (first, tmp_path)]
    np.testing.assert_array_equal(*detected)
    assert other["counts"]["n_batches"] == 4 and report["counts"]["n_batches"] == 2


def test_rerun_resumes_without_regenerating(pipe, split, predictor, evaluated, monkeypatch):
    report, out = evaluated
    calls = []
    original = GalaxyRedshiftPipeline.__call__

    def counting(self, *args, **kwargs):
        calls.append(len(kwargs["z"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GalaxyRedshiftPipeline, "__call__", counting)
    again = evaluate_pipeline(pipe, split, out, n=N_ROWS, predictor=predictor, batch_size=8, figures=False, **FAST)
    assert calls == []
    assert again["detection"] == report["detection"] and again["morphology"] == report["morphology"]

    (out / "generated" / "rows_0000008-0000016.npz").unlink()  # as if interrupted during the second batch
    (out / "measurements" / "generated" / "rows_0000008-0000016.ecsv").unlink()
    evaluate_pipeline(pipe, split, out, n=N_ROWS, predictor=predictor, batch_size=8, figures=False, **FAST)
    assert calls == [8]
    with pytest.raises(FileExistsError, match="num_inference_steps"):
        evaluate_pipeline(pipe, split, out, n=N_ROWS, batch_size=8, **(FAST | {"num_inference_steps": 3}))


def test_processes_share_batches_and_the_main_one_merges(pipe, split, evaluated, tmp_path, monkeypatch):
    _, first = evaluated

    def state(rank: int) -> SimpleNamespace:
        return SimpleNamespace(
            process_index=rank, num_processes=2, is_main_process=rank == 0, wait_for_everyone=lambda: None
        )

    monkeypatch.setattr(evaluate_module, "process_state", lambda: state(1))
    with pytest.raises(FileNotFoundError, match="report.json"):  # a real run waits here for the main process
        evaluate_pipeline(pipe, split, tmp_path, n=N_ROWS, batch_size=4, figures=False, **FAST)
    assert sorted(path.name for path in (tmp_path / "generated").iterdir()) == [
        "rows_0000004-0000008.npz",
        "rows_0000012-0000016.npz",
    ]
    monkeypatch.setattr(evaluate_module, "process_state", lambda: state(0))
    report = evaluate_pipeline(pipe, split, tmp_path, n=N_ROWS, batch_size=4, figures=False, **FAST)
    assert report["counts"]["n_generated"] == N_ROWS and report["settings"]["num_processes"] == 2
    np.testing.assert_allclose(_generated_fluxes(tmp_path), _generated_fluxes(first), **ROUND_OFF)


def test_detection_summary_counts_every_image():
    table = Table(
        {
            "detected": [True, True, False, False, True],
            "sersic_ok": [True, False, False, False, False],
            "flags": ["", "fit_failed", "not_detected", "off_centre", "fit_failed|fit_at_bound"],
            "redshift": [0.1, 0.2, 1.2, 1.3, 1.4],
        }
    )
    summary = detection_summary(table, bin_edges=(0.0, 1.0, 2.0))
    assert summary["detection_rate"] == pytest.approx(0.6) and summary["fit_failure_rate"] == pytest.approx(2 / 3)
    assert summary["detection_rate_ci_low"] < 0.6 < summary["detection_rate_ci_high"]
    assert summary["flags"] == {
        "blank": 0,
        "saturated": 0,
        "not_detected": 1,
        "off_centre": 1,
        "fit_failed": 2,
        "fit_at_bound": 1,
    }
    assert [row["detection_rate"] for row in summary["by_bin"]] == [1.0, pytest.approx(1 / 3)]
    assert [row["fit_failure_rate"] for row in summary["by_bin"]] == [0.5, 1.0]


def test_to_jsonable_makes_strict_json():
    value = {"a": np.float32(1.5), "b": [np.nan, np.inf, np.int64(3)], "c": np.array([1.0, np.nan]), "d": (True,)}
    assert to_jsonable(value) == {"a": 1.5, "b": [None, None, 3], "c": [1.0, None], "d": [True]}
    json.dumps(to_jsonable(value), allow_nan=False)


def test_markdown_marks_a_failed_spearman_check(evaluated):
    report = json.loads(json.dumps(evaluated[0]))
    check = report["spearman"]["size_vs_redshift"]
    check["real"]["rho"], check["generated"]["rho"], check["difference"], check["pass"] = 0.5, 0.1, 0.4, False
    assert "**FAIL**" in render_markdown(report)
    check["pass"] = True
    assert "**PASS**" in render_markdown(report)


def test_markdown_names_the_guidance_scale_of_a_guided_run(evaluated):
    report = json.loads(json.dumps(evaluated[0]))
    report["model"]["guidance_scale"] = 1.0
    assert "guidance" not in render_markdown(report).split("\n")[2]
    report["model"]["guidance_scale"] = 1.5
    assert "classifier-free guidance scale 1.5" in render_markdown(report).split("\n")[2]


@pytest.mark.filterwarnings("ignore:.*model-space range")  # a random network diverges
def test_make_scheduler_shares_the_noise_schedule(pipe, tiny_pipeline):
    expected = {
        "ddpm": DDPMScheduler,
        "ddim": DDIMScheduler,
        "dpm": DPMSolverMultistepScheduler,
        "unipc": UniPCMultistepScheduler,
    }
    assert tuple(expected) == SCHEDULER_NAMES
    for name, cls in expected.items():
        scheduler = make_scheduler(name, pipe.scheduler.config)
        assert type(scheduler) is cls
        assert scheduler.config.beta_end == pipe.scheduler.config.beta_end
        swapped = with_scheduler(tiny_pipeline, name)  # every sampler runs with per-image generators
        images = swapped(z=[0.5], generator=[torch.Generator().manual_seed(0)], num_inference_steps=2).images
        assert images.shape == (1, 5, 16, 16) and np.isfinite(images).all()
    dpm = make_scheduler("dpm", pipe.scheduler.config)
    assert dpm.config.algorithm_type == "dpmsolver++" and dpm.config.solver_order == 2
    with pytest.raises(ValueError, match="Unknown scheduler"):
        make_scheduler("euler", pipe.scheduler.config)
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in ("evaluate", "generate"):
        option = next(a for a in commands[command]._actions if a.dest == "scheduler")
        assert tuple(option.choices) == SCHEDULER_NAMES


@pytest.mark.parametrize("missing", ["model", "data", "predictor"])
def test_cli_exits_2_with_one_line_on_a_missing_input(missing, pipe, dataset_dir, tmp_path, capsys):
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    paths = {"model": model, "data": dataset_dir, "predictor": None} | {missing: tmp_path / f"no_{missing}"}
    argv = ["evaluate", "--model", str(paths["model"]), "--data", str(paths["data"]), "--out", str(tmp_path / "out")]
    if paths["predictor"]:
        argv += ["--predictor", str(paths["predictor"])]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"no_{missing}" in error
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.slow
def test_accelerate_launch_two_processes_match_one(pipe, dataset_dir, evaluated, tmp_path):
    """Two gloo processes on CPU shard the batches; the main one merges (about a minute)."""
    _, first = evaluated
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29531"),
        *("-m", "galaxy_pipeline.cli", "evaluate", "--model", str(model), "--data", str(dataset_dir)),
        *("--n", str(N_ROWS), "--batch-size", "4", "--steps", "2", "--out", str(tmp_path / "out"), "--quiet"),
    ]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _strict_json(tmp_path / "out" / "report.json")
    assert report["settings"]["num_processes"] == 2 and report["counts"]["n_generated"] == N_ROWS
    np.testing.assert_allclose(_generated_fluxes(tmp_path / "out"), _generated_fluxes(first), **ROUND_OFF)
