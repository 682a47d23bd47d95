"""Model cards, Hub push (patched HfApi) and download (fake offline cache, patched snapshot_download)."""

import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects

from galaxy_pipeline import GalaxyRedshiftPipeline, hub, hub_ids
from galaxy_pipeline.cli import main

SECRET = "hf_TESTtokenTHATmustNEVERbePRINTED"
REPO = "astro-user/galaxies-ddpm"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory) -> tuple[Path, GalaxyRedshiftPipeline]:
    """A tiny pipeline (trained range 0-1.5) saved with training leftovers that must never be uploaded."""
    folder = tmp_path_factory.mktemp("model") / "pipeline"
    pipe = make_tiny_pipeline(redshift_max=1.5)
    pipe.save_pretrained(folder)
    config = {"learning_rate": 1e-4, "train_batch_size": 64, "ema": {"decay": 0.9999}, "mixed_precision": "bf16"}
    (folder / "training_config.json").write_text(json.dumps(config))
    leftovers = [
        "checkpoint-500/model.safetensors",
        "checkpoint-500/optimizer.bin",
        "checkpoint-500/random_states_0.pkl",
        "logs/train/events.out.tfevents.1700000000.host",
        "logs/metrics.json",
        "unet/diffusion_pytorch_model.bin",
        "ema.pt",
        "weights.ckpt",
        "README.md",
    ]
    for name in leftovers:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"not for the Hub")
    return folder, pipe


@pytest.fixture
def report_dir(tmp_path) -> Path:
    folder = tmp_path / "eval"
    folder.mkdir()
    report = {
        "n_generated": 512,
        "detection_rate": 0.981,
        "fid": {"value": 3.21, "null": 0.47},
        "bins": [
            {"z_min": 0.0, "z_max": 0.5, "ks_sersic_index": 0.0812, "w1_ellipticity": 0.0123},
            {"z_min": 0.5, "z_max": 1.5, "ks_sersic_index": 0.1534, "w1_ellipticity": 0.0311},
        ],
    }
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "sersic_index.png").write_bytes(b"\x89PNG fake figure")
    (folder / "notes.txt").write_text("not a figure")
    return folder


class FakeHub:
    """Records what push_pipeline asks of the Hub, with the files upload_folder would send."""

    def __init__(self, monkeypatch):
        self.calls: dict[str, dict] = {}
        self.uploaded: list[str] = []
        self.readme = ""
        fake = self

        def create_repo(self, repo_id, **kwargs):
            fake.calls["create_repo"] = {"repo_id": repo_id, "token": self.token, **kwargs}
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_branch(self, repo_id, **kwargs):
            fake.calls["create_branch"] = {"repo_id": repo_id, **kwargs}

        def upload_folder(self, **kwargs):
            fake.calls["upload_folder"] = {"token": self.token, **kwargs}
            folder = Path(kwargs["folder_path"])
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            fake.uploaded = sorted(
                filter_repo_objects(
                    files, allow_patterns=kwargs["allow_patterns"], ignore_patterns=kwargs["ignore_patterns"]
                )
            )
            fake.readme = (folder / "README.md").read_text(encoding="utf-8")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def test_push_uploads_pipeline_card_and_report_but_no_training_leftovers(saved_pipeline, report_dir, monkeypatch):
    folder, _ = saved_pipeline
    fake = FakeHub(monkeypatch)
    url = hub.push_pipeline(folder, REPO, private=True, token=SECRET, report_dir=report_dir)

    assert url == f"https://huggingface.co/{REPO}"
    assert fake.calls["create_repo"]["private"] is True
    assert fake.calls["create_repo"]["token"] == fake.calls["upload_folder"]["token"] == SECRET
    assert "create_branch" not in fake.calls
    code = ["atomic.py", "checks.py", "flux_transform/hsc.py", "flux_transform/normalization.py", "hsc.py"]
    code += ["hub_ids.py", "normalization.py", "pipeline.py", "remote_code.py", "unet.py", "unet/unet.py"]
    assert fake.uploaded == sorted(
        [
            *code,
            "visualization.py",
            "README.md",
            "evaluation/report.json",
            "figures/sersic_index.png",
            "flux_transform/preprocessor_config.json",
            "model_index.json",
            "scheduler/scheduler_config.json",
            "training_config.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
        ]
    )
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "GalaxyRedshiftPipeline"


def test_upload_patterns_refuse_leftovers_even_without_staging(saved_pipeline):
    folder, _ = saved_pipeline
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    sent = list(
        filter_repo_objects(files, allow_patterns=hub.UPLOAD_ALLOW_PATTERNS, ignore_patterns=hub.UPLOAD_IGNORE_PATTERNS)
    )
    assert not [name for name in sent if name.startswith(("checkpoint-", "logs/")) or name.endswith((".bin", ".pkl"))]
    assert "unet/diffusion_pytorch_model.safetensors" in sent
    assert "README.md" not in hub.upload_file_list(folder)


def test_card_has_metadata_range_config_usage_and_evaluation(saved_pipeline, report_dir, monkeypatch):
    folder, _ = saved_pipeline
    fake = FakeHub(monkeypatch)
    hub.push_pipeline(folder, REPO, token=SECRET, report_dir=report_dir)
    card = ModelCard(fake.readme)

    assert card.data.library_name == "diffusers"
    assert card.data.pipeline_tag == "unconditional-image-generation"
    assert {"diffusers", "astronomy", "galaxies", "redshift", "hsc", "ddpm"} <= set(card.data.tags)
    assert card.data.license == "cc-by-4.0"
    assert card.data.datasets
    text = card.text
    assert "0 <= z <= 1.5" in text
    assert "| learning_rate | 0.0001 |" in text
    assert "| ema.decay | 0.9999 |" in text
    assert "| mixed_precision | bf16 |" in text
    assert f'GalaxyRedshiftPipeline.from_pretrained("{REPO}")' in text
    assert "DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)" in text and "--scheduler dpm" in text
    assert f'DiffusionPipeline.from_pretrained("{REPO}", trust_remote_code=True)' in text
    assert "93%" in text and "allow_extrapolation=True" in text
    assert "10.5281/zenodo.11117528" in text and "Learning Galaxy Evolution via Diffusion Models" in text
    assert "| z_min | z_max | ks_sersic_index | w1_ellipticity |" in text
    assert "| 0.5 | 1.5 | 0.1534 | 0.0311 |" in text
    assert "| fid.value | 3.21 |" in text
    assert "![sersic_index](figures/sersic_index.png)" in text
    assert SECRET not in fake.readme


def test_card_without_training_config_or_report(tmp_path):
    folder = tmp_path / "pipeline"
    make_tiny_pipeline(redshift_max=2.5).save_pretrained(folder)
    card = hub.render_model_card(folder, REPO)
    text = card.text
    assert "0 <= z <= 2.5" in text
    assert "No `training_config.json`" in text
    assert "trained on\nGalaxiesML (HSC-SSP PDR2" in text and card.data.datasets == ["GalaxiesML"]
    assert "## Evaluation" not in text


def test_card_of_a_mock_trained_model_says_so(tmp_path):
    folder = tmp_path / "pipeline"
    make_tiny_pipeline().save_pretrained(folder)
    (folder / "training_config.json").write_text(json.dumps({"dataset_dir": None, "mock_galaxies": 4000, "seed": 0}))
    card = hub.render_model_card(folder, REPO)
    assert "GalSim mock of GalaxiesML" in card.text and "4000" in card.text and "not real" in card.text
    assert not card.data.datasets


def test_push_to_a_branch(saved_pipeline, monkeypatch):
    folder, _ = saved_pipeline
    fake = FakeHub(monkeypatch)
    url = hub.push_pipeline(folder, REPO, revision="ema-weights", token=SECRET)
    assert url.endswith("/tree/ema-weights")
    assert fake.calls["create_branch"]["branch"] == "ema-weights"
    assert fake.calls["upload_folder"]["revision"] == "ema-weights"
    assert "evaluation/report.json" not in fake.uploaded


def test_token_is_never_printed_or_logged(saved_pipeline, report_dir, monkeypatch, capsys, caplog):
    folder, _ = saved_pipeline
    fake = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    caplog.set_level("DEBUG")
    assert main(["push", "--model", str(folder), "--repo", REPO, "--report", str(report_dir)]) == 0
    hub.push_pipeline(folder, REPO, token=SECRET)
    captured = capsys.readouterr()
    assert f"https://huggingface.co/{REPO}" in captured.out
    assert SECRET not in captured.out + captured.err + caplog.text
    assert fake.uploaded


def test_report_tables_accept_rows_or_metrics():
    rows = hub.report_tables([{"z": 0.25, "ks": 0.1}, {"z": 0.75, "ks": 0.2, "note": "a|b"}])
    assert rows == [
        {"title": "", "header": ["z", "ks", "note"], "rows": [["0.25", "0.1", ""], ["0.75", "0.2", "a\\|b"]]}
    ]
    metrics = hub.report_tables({"fid": 1.23456, "bands": ["g", "r"], "photoz": {"bias": -0.001}})
    assert metrics[0]["rows"] == [["fid", "1.235"], ["bands", "g, r"], ["photoz.bias", "-0.001"]]


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda model, report: ["--model", str(model.parent), "--repo", REPO], "model_index.json"),
        (lambda model, report: ["--model", str(model), "--repo", "not a repo id"], "user/name"),
        (lambda model, report: ["--model", str(model), "--repo", REPO, "--report", str(model)], "report.json"),
    ],
)
def test_push_cli_user_errors_exit_2_with_one_line(saved_pipeline, report_dir, monkeypatch, capsys, make_args, message):
    folder, _ = saved_pipeline
    fake = FakeHub(monkeypatch)
    assert main(["push", *make_args(folder, report_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not fake.calls


def _fake_cache(tmp_path: Path, folder: Path) -> Path:
    """A Hub cache holding ``REPO`` at commit ``SHA`` (refs/main + snapshots/<sha>/), as snapshot_download leaves it."""
    cache = tmp_path / "hub-cache"
    storage = cache / f"models--{REPO.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(SHA)
    snapshot = storage / "snapshots" / SHA
    for relative in hub.upload_file_list(folder):
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / relative, snapshot / relative)
    return cache


def _same_weights(a: GalaxyRedshiftPipeline, b: GalaxyRedshiftPipeline) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values(), strict=True)
    )


def test_download_from_offline_cache(saved_pipeline, tmp_path, monkeypatch):
    folder, original = saved_pipeline
    cache = _fake_cache(tmp_path, folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    pipe, source = hub.load_pipeline(REPO, cache_dir=cache)
    assert source.commit == SHA and source.local_dir.name == SHA
    assert _same_weights(pipe, original)
    assert pipe.redshift_range == (0.0, 1.5)
    np.testing.assert_allclose(pipe.flux_transform.softening, original.flux_transform.softening)

    direct = GalaxyRedshiftPipeline.from_pretrained(REPO, cache_dir=cache)
    assert _same_weights(direct, original)

    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        hub.load_pipeline("astro-user/never-downloaded", cache_dir=cache)


def test_download_passes_revision_token_cache_and_offline_flag(saved_pipeline, tmp_path, monkeypatch):
    folder, original = saved_pipeline
    snapshot = _fake_cache(tmp_path, folder) / f"models--{REPO.replace('/', '--')}" / "snapshots" / SHA
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append({"repo_id": repo_id, **kwargs})
        return str(snapshot)

    monkeypatch.setattr(hub_ids, "snapshot_download", fake_snapshot_download)
    expected = {"revision": "v1.0", "token": SECRET, "cache_dir": tmp_path / "c", "local_files_only": True}

    pipe, source = hub.load_pipeline(REPO, **expected)
    GalaxyRedshiftPipeline.from_pretrained(REPO, **expected)

    assert len(calls) == 2
    for call in calls:
        assert call["repo_id"] == REPO
        assert {key: call[key] for key in expected} == expected
        assert "*.bin" in call["ignore_patterns"]
    assert source.commit == SHA and _same_weights(pipe, original)


def test_local_looking_paths_never_go_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_ids, "snapshot_download", lambda *args, **kwargs: pytest.fail("contacted the Hub"))
    for missing in [str(tmp_path / "missing"), "./runs/model", "runs/quickstart/pipeline"]:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            hub.resolve_model(missing)


def test_push_without_a_token_says_how_to_log_in(saved_pipeline, monkeypatch):
    folder, _ = saved_pipeline
    fake = FakeHub(monkeypatch)
    monkeypatch.setattr(hub, "get_token", lambda: None)
    with pytest.raises(ValueError, match="hf auth login"):
        hub.push_pipeline(folder, REPO)
    assert not fake.calls


def test_hub_refusal_is_a_user_error_without_the_token(saved_pipeline, monkeypatch):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    folder, _ = saved_pipeline
    FakeHub(monkeypatch)

    def refuse(self, repo_id, **kwargs):
        request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
        raise HfHubHTTPError("403 Forbidden: no write access", response=httpx2.Response(403, request=request))

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(ValueError, match="write access") as error:
        hub.push_pipeline(folder, REPO, token=SECRET)
    assert SECRET not in str(error.value)
