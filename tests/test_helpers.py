"""The package's one-of-each helpers: the atomic write, the positive-integer check, the evaluation settings."""

import json
import os

import pytest

from galaxy_pipeline.atomic import atomic_folder, atomic_write
from galaxy_pipeline.checks import check_positive_int
from galaxy_pipeline.evaluation.settings import CACHE_KEY_FIELDS, EvaluationSettings


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "report.json"
    seen = []
    atomic_write(path, lambda temporary: seen.append(temporary) or temporary.write_text("one"))
    atomic_write(path, lambda temporary: temporary.write_text("two"))
    assert path.read_text() == "two"
    assert seen[0].parent == path.parent and seen[0].suffix == ".json" and seen[0].name.startswith(".")
    assert os.listdir(path.parent) == ["report.json"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "table.ecsv"
    path.write_text("old")

    def fail(temporary):
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.ecsv"]


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "run"
    with atomic_folder(target) as staged:
        (staged / "a.txt").write_text("a")
        assert not target.exists()
    assert sorted(os.listdir(target)) == ["a.txt"]
    with pytest.raises(RuntimeError), atomic_folder(target) as staged:
        (staged / "b.txt").write_text("b")
        raise RuntimeError("interrupted")
    assert sorted(os.listdir(target)) == ["a.txt"]  # the earlier folder is untouched
    with atomic_folder(target) as staged:
        (staged / "c.txt").write_text("c")
    assert sorted(os.listdir(target)) == ["c.txt"]  # replaced as a whole
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no work folder left behind


@pytest.mark.parametrize("value", [0, -3, 1.5, "4", True, None])
def test_check_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"count must be a positive integer; got "):
        check_positive_int("count", value)


def test_check_positive_int_accepts_and_says_what_none_means():
    check_positive_int("count", 1)
    check_positive_int("n", None, none_means="the whole split")
    with pytest.raises(ValueError, match=r"n must be a positive integer or None \(the whole split\); got 0"):
        check_positive_int("n", 0, none_means="the whole split")


def _settings(**changes) -> EvaluationSettings:
    values = {
        "model_fingerprint": "abc",
        "scheduler": "DDIMScheduler",
        "scheduler_config": {"betas": (0.1, 0.2)},
        "num_inference_steps": 5,
        "guidance_scale": 1.0,
        "seed": 3,
    } | changes
    return EvaluationSettings(**values)


def test_the_cache_key_holds_only_what_decides_the_generated_galaxies():
    key = _settings(batch_size=8, n_bootstrap=10).cache_key()
    assert tuple(key) == CACHE_KEY_FIELDS
    assert key["scheduler_config"] == {"betas": [0.1, 0.2]}  # as settings.json holds it
    assert key == _settings(batch_size=64, n_bootstrap=1000, model_id="other").cache_key()
    assert key != _settings(seed=4).cache_key()
    assert json.loads(json.dumps(key)) == key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"n_bootstrap": True}, "n_bootstrap must be a positive integer"),
        ({"n_requested": 0}, r"n must be a positive integer or None"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*62\)"),
        ({"num_inference_steps": 2.0}, "num_inference_steps must be a positive integer"),
    ],
)
def test_settings_check_themselves(changes, message):
    with pytest.raises(ValueError, match=message):
        _settings(**changes)
