"""Training: a short run exports a loadable pipeline; resume is exact; SIGKILL is survivable; 2 processes."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from galaxiesml_files import write_galaxiesml_splits
from safetensors.torch import load_file

from galaxy_pipeline import GalaxyRedshiftPipeline, paper_scheduler
from galaxy_pipeline.data.galaxiesml import convert_galaxiesml
from galaxy_pipeline.data.loading import redshift_balanced_indices
from galaxy_pipeline.normalization import colour_basis_mixing
from galaxy_pipeline.training import trainer
from galaxy_pipeline.training.config import PRESETS, parse_training_config
from galaxy_pipeline.training.trainer import NonFiniteLossError, train

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "train_scripts" / "train.py"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """A converted GalaxiesML-schema dataset of a few dozen 64x64 galaxies."""
    folder = tmp_path_factory.mktemp("galaxiesml")
    files = write_galaxiesml_splits(folder / "hdf5")
    convert_galaxiesml(files, folder / "dataset", progress=False)
    return folder / "dataset"


def tiny_args(dataset_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--dataset_dir", str(dataset_dir),
        "--output_dir", str(output_dir),
        "--unet_preset", "tiny",
        "--train_batch_size", "4",
        "--max_train_steps", "4",
        "--learning_rate", "1e-3",
        "--lr_scheduler", "cosine",
        "--lr_warmup_steps", "1",
        "--checkpointing_steps", "2",
        "--logging_steps", "1",
        "--sample_every_steps", "0",
        "--flux_fit_images", "16",
        *extra,
    ]  # fmt: skip


def test_short_run_exports_a_loadable_pipeline(dataset_dir, tmp_path):
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "3", "--sample_every_steps", "3")
    args += ["--sample_inference_steps", "2", "--sample_images_per_redshift", "1"]
    pipeline_dir = train(parse_training_config(args))
    assert pipeline_dir == tmp_path / "pipeline"
    assert (pipeline_dir / "training_config.json").is_file()
    assert (tmp_path / "samples" / "step-0000003.png").is_file()
    assert list((tmp_path / "logs").rglob("events.out.tfevents*"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3"]
    pipe = GalaxyRedshiftPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    low, high = pipe.redshift_range
    assert 0 <= low < high <= 4
    out = pipe(z=[low, high], generator=torch.Generator().manual_seed(0), num_inference_steps=3)
    assert out.images.shape == (2, 5, 64, 64) and np.isfinite(out.images).all()
    ema_weights = load_file(
        tmp_path / "checkpoints" / "checkpoint-3" / "unet_ema" / "diffusion_pytorch_model.safetensors"
    )
    exported = load_file(pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors")
    torch.testing.assert_close(exported["conv_in.weight"], ema_weights["conv_in.weight"])


def test_resume_reproduces_an_uninterrupted_run(dataset_dir, tmp_path):
    train(parse_training_config(tiny_args(dataset_dir, tmp_path)))
    uninterrupted = tmp_path / "uninterrupted-checkpoint-4"
    shutil.move(tmp_path / "checkpoints" / "checkpoint-4", uninterrupted)
    shutil.rmtree(tmp_path / "pipeline")
    train(parse_training_config(tiny_args(dataset_dir, tmp_path, "--resume_from_checkpoint", "latest")))
    resumed = tmp_path / "checkpoints" / "checkpoint-4"
    for weights in ("unet", "unet_ema"):
        expected = load_file(uninterrupted / weights / "diffusion_pytorch_model.safetensors")
        actual = load_file(resumed / weights / "diffusion_pytorch_model.safetensors")
        assert expected.keys() == actual.keys()
        for name in expected:
            torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_limit_keeps_the_newest(dataset_dir, tmp_path):
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "6", "--checkpoints_total_limit", "2")
    train(parse_training_config(args))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-6"]


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(dataset_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    huber = trainer.F.huber_loss

    def poisoned_huber(*args, **kwargs):
        calls["n"] += 1
        loss = huber(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 4 else loss  # calls: steps 1, 2, the check at 2, step 3

    monkeypatch.setattr(trainer.F, "huber_loss", poisoned_huber)
    with pytest.raises(NonFiniteLossError, match="by step 3.*checkpoint-2"):
        train(parse_training_config(tiny_args(dataset_dir, tmp_path)))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert not (tmp_path / "pipeline").exists()


def test_diverged_weights_are_never_checkpointed(dataset_dir, tmp_path, monkeypatch):
    """An update that blows the weights up (~1e30, still finite) at a checkpoint step is caught before saving."""

    class DivergingAdamW(torch.optim.AdamW):
        updates = 0

        def step(self, closure=None):
            loss = super().step(closure)
            DivergingAdamW.updates += 1
            if DivergingAdamW.updates == 4:
                with torch.no_grad():
                    for group in self.param_groups:
                        for parameter in group["params"]:
                            parameter.mul_(1e30)
            return loss

    monkeypatch.setattr(trainer.torch.optim, "AdamW", DivergingAdamW)
    with pytest.raises(NonFiniteLossError, match="by step 4.*--resume_from_checkpoint .*checkpoint-2 "):
        train(parse_training_config(tiny_args(dataset_dir, tmp_path, "--max_train_steps", "6")))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2"]
    weights = load_file(tmp_path / "checkpoints" / "checkpoint-2" / "unet" / "diffusion_pytorch_model.safetensors")
    assert max(float(w.abs().max()) for w in weights.values()) < 1e3


def test_divergence_stop_is_one_line_with_exit_code_2(dataset_dir, tmp_path):
    # The warm-up step runs at learning rate 0; the next at 1e30 leaves weights that give an infinite loss.
    args = tiny_args(dataset_dir, tmp_path, "--learning_rate", "1e30", "--checkpointing_steps", "1")
    result = run_script(*args)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: stopped: Training diverged by step 2") and "checkpoint-1 " in last
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-1"]


def test_a_used_output_dir_is_refused_and_overwrite_starts_clean(dataset_dir, tmp_path):
    train(parse_training_config(tiny_args(dataset_dir, tmp_path)))
    (tmp_path / "flux_transform" / "preprocessor_config.json").write_text("{}")  # would be reused if kept
    result = run_script(*tiny_args(dataset_dir, tmp_path, "--max_train_steps", "2"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not empty" in lines[0] and "--overwrite_output_dir" in lines[0], lines
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    (tmp_path / ".pipeline-orphan").mkdir()  # left by a run killed while exporting
    (tmp_path / "checkpoints" / ".checkpoint-6.incomplete").mkdir()
    train(parse_training_config(tiny_args(dataset_dir, tmp_path, "--max_train_steps", "2", "--overwrite_output_dir")))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-2"]
    assert not (tmp_path / ".pipeline-orphan").exists()
    assert GalaxyRedshiftPipeline.from_pretrained(tmp_path / "pipeline").flux_transform.config.scale is not None


def test_a_missing_resume_checkpoint_is_reported_before_anything_is_written(dataset_dir, tmp_path):
    missing = str(tmp_path / "out" / "checkpoints" / "checkpoint-9")
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        train(parse_training_config(tiny_args(dataset_dir, tmp_path / "out", "--resume_from_checkpoint", missing)))
    assert not (tmp_path / "out").exists()


def run_script(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], capture_output=True, text=True, env=env, **kwargs)


def test_sigkilled_run_resumes_from_its_last_checkpoint(dataset_dir, tmp_path):
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "1000")
    process = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (tmp_path / "checkpoints" / "checkpoint-2").is_dir():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    killed_at = max(int(p.name.split("-")[1]) for p in (tmp_path / "checkpoints").glob("checkpoint-*"))
    result = run_script(*tiny_args(dataset_dir, tmp_path, "--max_train_steps", str(killed_at + 2)),
                        "--resume_from_checkpoint", "latest")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming from {tmp_path / 'checkpoints' / f'checkpoint-{killed_at}'}" in result.stdout
    assert (tmp_path / "checkpoints" / f"checkpoint-{killed_at + 2}").is_dir()
    assert (tmp_path / "pipeline" / "model_index.json").is_file()


def test_two_gloo_processes_train_and_export_once(dataset_dir, tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        str(TRAIN_SCRIPT), *tiny_args(dataset_dir, tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Pipeline saved to") == 2  # each process returns the same folder
    exported = [p for p in tmp_path.iterdir() if "pipeline" in p.name]
    assert exported == [tmp_path / "pipeline"]
    assert GalaxyRedshiftPipeline.from_pretrained(tmp_path / "pipeline").unet.config.sample_size == 64


def test_v_prediction_trains_against_the_velocity_and_samples(dataset_dir, tmp_path):
    scheduler = paper_scheduler(prediction_type="v_prediction")
    torch.manual_seed(0)
    images, noise = torch.randn(2, 2, 5, 8, 8)
    timesteps = torch.tensor([5, 900])
    config = parse_training_config(["--prediction_type", "v_prediction", "--loss", "mse"])
    velocity = scheduler.get_velocity(images, noise, timesteps)
    assert trainer._denoising_loss(velocity, images, noise, timesteps, scheduler, config) == 0
    assert trainer._denoising_loss(noise, images, noise, timesteps, scheduler, config) > 0.1
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "2", "--prediction_type", "v_prediction")
    pipe = GalaxyRedshiftPipeline.from_pretrained(train(parse_training_config(args + ["--snr_gamma", "5"])))
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    pipe.set_progress_bar_config(disable=True)
    out = pipe(z=[0.5], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(out.images).all()


def test_cpu_threads_are_shared_among_local_processes(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert trainer.cpu_threads_per_process() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert trainer.cpu_threads_per_process() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    threads = torch.get_num_threads()
    try:
        train(parse_training_config(tiny_args(dataset_dir, tmp_path, "--max_train_steps", "1", "--cpu_threads", "3")))
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


def test_min_snr_weighting_downweights_nearly_clean_timesteps():
    scheduler = paper_scheduler()
    torch.manual_seed(0)
    predicted, images, noise = torch.randn(3, 2, 5, 8, 8)
    timesteps = torch.tensor([5, 900])

    def loss(*flags: str) -> torch.Tensor:
        config = parse_training_config(list(flags))
        return trainer._denoising_loss(predicted, images, noise, timesteps, scheduler, config)

    torch.testing.assert_close(loss("--snr_gamma", "1e12"), loss())
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    assert snr[0] > 5 > snr[1]
    per_image = torch.nn.functional.huber_loss(predicted, noise, reduction="none").mean(dim=(1, 2, 3))
    expected = (per_image * torch.stack([5 / snr[0], torch.tensor(1.0)])).mean()
    torch.testing.assert_close(loss("--snr_gamma", "5"), expected)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--learning_rate", "-1", "learning_rate=-1.0 must be > 0"),
        ("--unet_preset", "huge", "unet_preset='huge'"),
        ("--loss", "l1", "loss='l1'"),
        ("--beta_end", "2", "beta_start < beta_end < 1"),
        ("--snr_gamma", "0", "snr_gamma=0.0 must be > 0"),
        ("--prediction_type", "sample", "prediction_type='sample'"),
        ("--cpu_threads", "0", "cpu_threads=0 must be >= 1"),
    ],
)
def test_bad_config_values_raise(flag, value, message):
    with pytest.raises(ValueError, match=message):
        parse_training_config([flag, value])


def test_preset_config_file_and_flags_layer_in_order(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("preset: quickstart\nlearning_rate: 0.0005\ntrain_batch_size: 8\n")
    config = parse_training_config(["--preset", "paper", "--config", str(config_file), "--train_batch_size", "4"])
    assert config.unet_preset == PRESETS["paper"]["unet_preset"]
    assert config.learning_rate == 0.0005 and config.train_batch_size == 4
    config_file.write_text("learnin_rate: 1\n")
    with pytest.raises(ValueError, match="unknown fields"):
        parse_training_config(["--config", str(config_file)])


def test_standard_preset_trains_the_colour_basis_on_a_larger_mock():
    config = parse_training_config(["--preset", "standard"])
    assert (config.unet_preset, config.flux_channel_basis, config.mock_galaxies) == ("standard", "colour", 20000)
    assert config.prediction_type == "v_prediction" and config.output_dir == "outputs/standard"
    assert parse_training_config(["--preset", "quickstart"]).flux_channel_basis == "colour"
    assert (
        parse_training_config(["--preset", "quickstart", "--flux_channel_basis", "bands"]).flux_channel_basis == "bands"
    )


def test_the_readme_paper_config_command_resolves_to_the_paper_recipe(monkeypatch):
    readme = (REPO / "README.md").read_text()
    commands = [line.split("#")[0].strip() for line in readme.splitlines()]
    command = next(line for line in commands if line.endswith("train_scripts/train.py --config configs/paper.yaml"))
    argv = shlex.split(command)
    argv = argv[argv.index("train_scripts/train.py") + 1 :]
    monkeypatch.chdir(REPO)
    config = parse_training_config(argv)
    assert (config.unet_preset, config.max_train_steps, config.mixed_precision) == ("paper", 300_000, "bf16")
    assert config == parse_training_config(["--preset", "paper", "--dataset_dir", "data/galaxiesml"])


def test_a_config_file_with_a_yaml_syntax_error_is_one_line_with_exit_code_2(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("preset: paper\nlearning_rate: [1e-4\n")
    result = run_script("--config", str(config_file))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"Config file {config_file} is not valid YAML (line" in lines[0], lines


def test_an_unwritable_output_dir_is_one_line_with_exit_code_2(dataset_dir, tmp_path):
    (tmp_path / "a-file").write_text("")
    result = run_script(*tiny_args(dataset_dir, tmp_path / "a-file" / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "a-file") in lines[0] and "writable" in lines[0], lines


def test_push_to_hub_checks_the_repo_id_before_training():
    with pytest.raises(ValueError, match="hub_model_id 'no spaces allowed'"):
        parse_training_config(["--push_to_hub", "--hub_model_id", "no spaces allowed"])


def test_wrong_dataset_path_fails_before_training_with_one_line(tmp_path):
    result = run_script("--dataset_dir", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "galaxy-pipeline data convert" in lines[0]
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.slow
def test_quickstart_preset_trains_a_pipeline(tmp_path):
    """The README's main job, end to end on the GalSim mock (about 15 minutes on 2 cores)."""
    pytest.importorskip("galsim")
    args = ["--preset", "quickstart", "--output_dir", str(tmp_path / "run"), "--mock_cache_dir", str(tmp_path / "mock")]
    pipeline_dir = train(parse_training_config(args))
    pipe = GalaxyRedshiftPipeline.from_pretrained(pipeline_dir)
    out = pipe(z=[0.2, 1.0], generator=torch.Generator().manual_seed(0), num_inference_steps=20)
    assert np.isfinite(out.images).all()
    assert list((tmp_path / "run" / "samples").glob("*.png"))


def test_colour_basis_is_fitted_saved_and_inverted_on_output(dataset_dir, tmp_path):
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "2", "--flux_channel_basis", "colour")
    pipe = GalaxyRedshiftPipeline.from_pretrained(train(parse_training_config(args)))
    assert pipe.flux_transform.config.channel_mixing == colour_basis_mixing()
    pipe.set_progress_bar_config(disable=True)
    model = pipe(z=[0.5], num_inference_steps=2, output_type="model", generator=torch.Generator().manual_seed(0))
    fluxes = pipe(z=[0.5], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_allclose(pipe.flux_transform.forward(fluxes), model.images, atol=1e-4)
    with pytest.raises(ValueError, match="flux_channel_basis='lab'"):
        parse_training_config(["--flux_channel_basis", "lab"])


def test_colour_basis_weights_are_a_flag(dataset_dir, tmp_path):
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "1", "--flux_channel_basis", "colour")
    pipe = GalaxyRedshiftPipeline.from_pretrained(
        train(parse_training_config([*args, "--flux_colour_weights", "0.5", "3"]))
    )
    assert pipe.flux_transform.config.channel_mixing == colour_basis_mixing(luminosity_weight=0.5, colour_weight=3.0)
    with pytest.raises(ValueError, match="flux_colour_weights"):
        parse_training_config(["--flux_colour_weights", "0.5", "0"])


def test_flux_softening_is_a_flag_in_sky_noise_sigmas(dataset_dir, tmp_path):
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "1")
    default = GalaxyRedshiftPipeline.from_pretrained(
        train(parse_training_config([*args, "--output_dir", str(tmp_path / "a")]))
    )
    softer = GalaxyRedshiftPipeline.from_pretrained(
        train(parse_training_config([*args, "--output_dir", str(tmp_path / "b"), "--flux_softening", "4"]))
    )
    np.testing.assert_allclose(
        np.asarray(softer.flux_transform.config.softening), 4 * np.asarray(default.flux_transform.config.softening)
    )
    with pytest.raises(ValueError, match="flux_softening=0.0"):
        parse_training_config(["--flux_softening", "0"])


def test_redshift_balance_sets_the_epoch_rows_and_is_checked(dataset_dir, tmp_path, monkeypatch):
    calls = []

    def recorded(redshifts, exponent):
        calls.append(exponent)
        return redshift_balanced_indices(redshifts, exponent)

    monkeypatch.setattr(trainer, "redshift_balanced_indices", recorded)
    train(parse_training_config(tiny_args(dataset_dir, tmp_path / "a", "--max_train_steps", "1")))
    assert calls == []
    args = tiny_args(dataset_dir, tmp_path / "b", "--max_train_steps", "1", "--redshift_balance", "0.5")
    train(parse_training_config(args))
    assert calls == [0.5]
    with pytest.raises(ValueError, match="redshift_balance=2.0 must be in"):
        parse_training_config(["--redshift_balance", "2"])


def test_redshift_dropout_trains_a_guidable_pipeline(dataset_dir, tmp_path):
    args = tiny_args(dataset_dir, tmp_path, "--max_train_steps", "2", "--redshift_dropout", "0.5")
    pipe = GalaxyRedshiftPipeline.from_pretrained(train(parse_training_config(args)))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.learned_null_redshift
    low, high = pipe.redshift_range
    out = pipe(z=[low, high], guidance_scale=2.0, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert np.isfinite(out.images).all()


def test_mock_population_reaches_the_mock_it_trains_on(tmp_path, monkeypatch):
    requested = {}

    def record_and_stop(n, seed, cache_dir, population):
        requested.update(n=n, seed=seed, population=population)
        raise RuntimeError("mock requested")

    monkeypatch.setattr(trainer, "ensure_mock_dataset", record_and_stop)
    config = parse_training_config(
        ["--preset", "quickstart", "--mock_population", "blue_compact", "--output_dir", str(tmp_path / "run")]
    )
    with pytest.raises(RuntimeError, match="mock requested"):
        train(config)
    assert requested == {"n": 4000, "seed": 0, "population": "blue_compact"}
    with pytest.raises(ValueError, match="mock_population='spirals'"):
        parse_training_config(["--mock_population", "spirals"])
