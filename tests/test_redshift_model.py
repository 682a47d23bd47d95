"""Redshift predictor (transformers ResNet on raw fluxes), photo-z metrics, and its training script."""

import json
import os
import subprocess
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from transformers import AutoModel

from galaxy_pipeline import FluxTransform
from galaxy_pipeline.evaluation.photoz_metrics import hsc_loss, photoz_metrics, photoz_metrics_by_bin
from galaxy_pipeline.evaluation.redshift_model import (
    RedshiftPredictor,
    RedshiftPredictorConfig,
    predict_redshifts,
    predictor_features,
)
from galaxy_pipeline.evaluation.train_predictor import main


def toy_galaxies(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Round galaxies whose brightness falls and colour reddens with z, in sky noise (fluxes, z in 0.05-2)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 2.0, n).astype(np.float32)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    profile = np.exp(-(xx**2 + yy**2) / (2 * 2.5**2))
    colour = np.linspace(0.5, 1.5, 5)[None, :] ** (2 * z[:, None])
    fluxes = 50 * np.exp(-1.5 * z)[:, None, None, None] * colour[:, :, None, None] * profile
    return (fluxes + rng.normal(0, 0.5, fluxes.shape)).astype(np.float32), z


def tiny_predictor(seed: int = 0, **overrides) -> RedshiftPredictor:
    torch.manual_seed(seed)
    return RedshiftPredictor(RedshiftPredictorConfig.from_preset("tiny", **overrides))


# --- photo-z metrics -------------------------------------------------------------------------


def test_hsc_loss_values():
    z_spec = np.array([0.5, 1.0, 1.0, 3.0])
    z_pred = z_spec + np.array([0.0, 0.15, -0.30, 100.0]) * (1 + z_spec)
    np.testing.assert_allclose(hsc_loss(z_pred, z_spec)[:3], [0.0, 0.5, 0.8])
    assert 0.999 < hsc_loss(z_pred, z_spec)[3] < 1
    torch.testing.assert_close(
        hsc_loss(torch.tensor(z_pred), torch.tensor(z_spec)), torch.tensor(hsc_loss(z_pred, z_spec))
    )


def test_photoz_metrics_recover_a_known_bias_scatter_and_outlier_rate():
    rng = np.random.default_rng(0)
    z_spec = rng.uniform(0, 3, 20_000)
    dz = 0.01 + rng.normal(0, 0.03, z_spec.size)
    outliers = rng.random(z_spec.size) < 0.08
    dz[outliers] = rng.choice([-0.6, 0.6], outliers.sum())
    metrics = photoz_metrics(z_spec + dz * (1 + z_spec), z_spec)
    assert metrics["n"] == 20_000 and metrics["n_nonfinite"] == 0
    assert metrics["bias"] == pytest.approx(0.01, abs=0.002)
    assert metrics["sigma_mad"] == pytest.approx(0.03 * 1.09, rel=0.05)  # 8% outliers widen the MAD by ~9%
    # The Gaussian core lies within 4.7 sigma of 0.15: only the injected outliers count.
    assert metrics["outlier_rate"] == pytest.approx(outliers.mean(), abs=1e-4)
    assert metrics["loss"] == pytest.approx(np.mean(hsc_loss(z_spec + dz * (1 + z_spec), z_spec)))


def test_photoz_metrics_exact_on_constructed_cases():
    z_spec = np.linspace(0.1, 2.0, 10)
    shifted = photoz_metrics(z_spec + 0.02 * (1 + z_spec), z_spec)
    assert shifted["bias"] == pytest.approx(0.02)
    assert shifted["sigma_mad"] == pytest.approx(0.0, abs=1e-12)
    assert shifted["outlier_rate"] == 0.0
    z_pred = z_spec.copy()
    z_pred[:3] += 0.5 * (1 + z_spec[:3])
    with_outliers = photoz_metrics(np.append(z_pred, np.nan), np.append(z_spec, 1.0))
    assert with_outliers["outlier_rate"] == pytest.approx(0.3)
    assert with_outliers["bias"] == 0.0
    assert (with_outliers["n"], with_outliers["n_nonfinite"]) == (10, 1)


def test_photoz_metrics_by_bin_split_by_spectroscopic_redshift():
    z_spec = np.array([0.1, 0.2, 0.6, 0.7, 3.0, 4.5])
    z_pred = z_spec + np.array([0.0, 0.0, 0.1, 0.1, 0.0, 0.0]) * (1 + z_spec)
    rows = photoz_metrics_by_bin(z_pred, z_spec, bin_edges=[0, 0.5, 1.0, 4.0])
    assert [(row["z_min"], row["z_max"], row["n"]) for row in rows] == [(0, 0.5, 2), (0.5, 1.0, 2), (1.0, 4.0, 1)]
    assert [row["bias"] for row in rows] == pytest.approx([0.0, 0.1, 0.0])
    empty = photoz_metrics_by_bin(z_pred, z_spec, bin_edges=[5, 6])[0]
    assert empty["n"] == 0 and np.isnan(empty["bias"])
    with pytest.raises(ValueError, match="same length"):
        photoz_metrics(z_pred, z_spec[:3])


# --- the model ---------------------------------------------------------------------------------


def test_forward_shapes_range_and_losses():
    fluxes, z = toy_galaxies(6, seed=1)
    for loss_type in ("hsc", "huber"):
        model = tiny_predictor(redshift_max=2.5, loss_type=loss_type)
        output = model(torch.from_numpy(fluxes), redshifts=torch.from_numpy(z))
        assert output.redshift.shape == (6,)
        assert output.features.shape == (6, model.config.feature_dim)
        assert ((output.redshift >= 0) & (output.redshift <= 2.5)).all()
        assert output.loss.ndim == 0 and torch.isfinite(output.loss)
        output.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model(torch.from_numpy(fluxes)).loss is None


def test_the_input_stretch_is_the_flux_transform_of_the_training_data():
    fluxes, _ = toy_galaxies(16, seed=2)
    transform = FluxTransform.fit([fluxes])
    model = RedshiftPredictor(RedshiftPredictorConfig.from_preset("tiny", flux_transform=transform))
    assert model.config.flux_softening == pytest.approx(transform.softening)
    torch.testing.assert_close(model.stretch(torch.from_numpy(fluxes)), transform(torch.from_numpy(fluxes)))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="flux_softening needs 5"):
        RedshiftPredictorConfig.from_preset("tiny", flux_softening=[1.0, 2.0])
    with pytest.raises(ValueError, match="flux_scale"):
        RedshiftPredictorConfig.from_preset("tiny", flux_scale=[1.0, 1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="redshift_min < redshift_max"):
        RedshiftPredictorConfig.from_preset("tiny", redshift_min=2.0, redshift_max=1.0)
    with pytest.raises(ValueError, match="loss_type"):
        RedshiftPredictorConfig.from_preset("tiny", loss_type="l2")
    with pytest.raises(ValueError, match="Unknown predictor size"):
        RedshiftPredictorConfig.from_preset("huge")


def test_a_few_training_steps_learn_brightness_and_colour():
    fluxes, z = toy_galaxies(128, seed=3)
    held_out_fluxes, held_out_z = (torch.from_numpy(array) for array in toy_galaxies(64, seed=30))
    pixels, redshifts = torch.from_numpy(fluxes), torch.from_numpy(z)
    model = tiny_predictor(seed=0, redshift_max=2.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch.no_grad():
        held_out_before = model(held_out_fluxes, redshifts=held_out_z).loss.item()
    losses = []
    for _ in range(15):
        loss = model(pixels, redshifts=redshifts).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.3 * np.mean(losses[:3])
    with torch.no_grad():  # train mode: batch statistics, as BatchNorm running averages lag after 15 steps
        assert model(held_out_fluxes, redshifts=held_out_z).loss.item() < 0.3 * held_out_before


def test_save_and_reload_give_identical_predictions(tmp_path):
    fluxes, _ = toy_galaxies(5, seed=4)
    model = tiny_predictor(seed=5, flux_softening=[0.5, 0.6, 0.7, 0.8, 0.9], redshift_max=3.0)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for reloaded in (RedshiftPredictor.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(reloaded, RedshiftPredictor)
        assert reloaded.config.flux_softening == [0.5, 0.6, 0.7, 0.8, 0.9]
        assert reloaded.config.redshift_max == 3.0
        np.testing.assert_array_equal(predict_redshifts(reloaded, fluxes), predict_redshifts(model, fluxes))
        np.testing.assert_array_equal(predictor_features(reloaded, fluxes), predictor_features(model, fluxes))


def test_predictions_do_not_depend_on_the_batching():
    fluxes, _ = toy_galaxies(7, seed=6)
    model = tiny_predictor(seed=6)
    whole = predict_redshifts(model, fluxes, batch_size=256)
    assert whole.shape == (7,) and whole.dtype == np.float32
    np.testing.assert_allclose(predict_redshifts(model, fluxes, batch_size=3), whole, rtol=1e-5)
    assert predictor_features(model, fluxes, batch_size=2).shape == (7, model.config.feature_dim)
    with torch.no_grad():
        np.testing.assert_allclose(model.eval()(torch.from_numpy(fluxes)).redshift.numpy(), whole, rtol=1e-5)


def test_prediction_rejects_bad_inputs():
    model = tiny_predictor()
    fluxes, _ = toy_galaxies(3, seed=7)
    with pytest.raises(ValueError, match=r"\(N, 5, H, W\)"):
        predict_redshifts(model, fluxes[:, :3])
    fluxes[1, 2, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        predictor_features(model, fluxes)


# --- training --------------------------------------------------------------------------------


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons: start and leave each training test with none."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def write_converted_dataset(path, sizes=(("train", 24), ("validation", 4), ("test", 10))) -> None:
    features = datasets.Features(
        {"image": datasets.Array3D((5, 64, 64), "float32"), "redshift": datasets.Value("float32")}
    )
    splits = {}
    for seed, (split, n) in enumerate(sizes):
        fluxes, z = toy_galaxies(n, seed=10 + seed, size=64)
        splits[split] = datasets.Dataset.from_dict({"image": fluxes, "redshift": z}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(path))


def test_training_script_runs_end_to_end(tmp_path, fresh_accelerate_state, capsys):
    write_converted_dataset(tmp_path / "data")
    out = tmp_path / "model"
    args = ["--dataset", str(tmp_path / "data"), "--output_dir", str(out), "--size", "tiny"]
    metrics = main([*args, "--max_steps", "3", "--batch_size", "8", "--warmup_steps", "1", "--log_every", "1"])
    assert "Photo-z metrics on the test split after 3 steps" in capsys.readouterr().out

    written = json.loads((out / "test_metrics.json").read_text())
    assert written["steps"] == 3 and written["overall"]["n"] == 10
    assert sum(row["n"] for row in written["by_redshift_bin"]) == 10
    assert written["overall"]["bias"] == pytest.approx(metrics["overall"]["bias"])
    model = RedshiftPredictor.from_pretrained(out)
    assert 0 < model.config.flux_softening[0] < 5 and model.config.redshift_max <= 2.0
    test = datasets.load_from_disk(str(tmp_path / "data"))["test"].with_format("numpy")
    saved = np.load(out / "test_predictions.npz")
    np.testing.assert_allclose(saved["z_spec"], test["redshift"])
    np.testing.assert_allclose(predict_redshifts(model, np.asarray(test["image"])), saved["z_pred"], rtol=1e-5)

    with pytest.raises(FileExistsError, match="overwrite_output_dir"):
        main([*args, "--max_steps", "1"])
    with pytest.raises(FileNotFoundError, match="converted dataset"):
        main(["--dataset", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "other")])


@pytest.mark.slow
def test_training_script_runs_on_two_processes(tmp_path):
    """``accelerate launch`` with two gloo processes on CPU: metrics cover every test row exactly once."""
    write_converted_dataset(tmp_path / "data")
    out = tmp_path / "model"
    script = Path(__file__).resolve().parents[1] / "train_scripts" / "train_redshift_predictor.py"
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    args = ["--dataset", str(tmp_path / "data"), "--output_dir", str(out), "--size", "tiny", "--max_steps", "3"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    subprocess.run([*launch, *args, "--batch_size", "4", "--eval_batch_size", "3"], check=True, env=env)
    written = json.loads((out / "test_metrics.json").read_text())
    assert written["steps"] == 3 and written["overall"]["n"] == 10
    assert RedshiftPredictor.from_pretrained(out).config.loss_type == "hsc"
