"""The Gradio demo (built, not served) and the Space export."""

import json
import os
import runpy
import sys
import types

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from conftest import make_tiny_pipeline

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

from huggingface_hub import SpaceCard  # noqa: E402

from galaxy_pipeline import hub  # noqa: E402
from galaxy_pipeline.cli import main  # noqa: E402
from galaxy_pipeline.demo import build_demo, generate_galaxies, measurement_table  # noqa: E402
from galaxy_pipeline.generate import with_scheduler  # noqa: E402
from galaxy_pipeline.hub_ids import ModelSource  # noqa: E402
from galaxy_pipeline.space import export_space  # noqa: E402

MORPHOLOGY_MODULE = "galaxy_pipeline.evaluation.morphology"


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline(redshift_max=1.5)


@pytest.fixture
def without_morphology(monkeypatch):
    """Make ``import galaxy_pipeline.evaluation.morphology`` fail, as before that module exists."""
    monkeypatch.setitem(sys.modules, MORPHOLOGY_MODULE, None)


def test_the_page_names_the_model_and_its_training_data_from_its_folder(pipe, tmp_path):
    folder = tmp_path / "deep" / "path" / "my-mock-model"
    pipe.save_pretrained(folder)
    (folder / "training_config.json").write_text(json.dumps({"dataset_dir": None, "mock_galaxies": 4000, "seed": 3}))
    demo = build_demo(pipe, source=ModelSource(model_id=str(folder), local_dir=folder, commit=None))
    text = " ".join(str(block.value) for block in demo.blocks.values() if isinstance(block, gr.Markdown))
    assert "trained on the GalSim mock of GalaxiesML" in text and "4000 simulated galaxies, seed 3" in text
    assert "(`my-mock-model`)" in text and str(tmp_path) not in text
    assert "0.00 <= z <= 1.50" in text
    odd = make_tiny_pipeline(sample_size=16, redshift_max=3.068390369415283)
    odd.unet.register_to_config(redshift_min=0.025056421756744385)
    components = {block.elem_id: block for block in build_demo(odd).blocks.values() if getattr(block, "elem_id", None)}
    assert (components["redshift"].minimum, components["redshift"].maximum) == (0.03, 3.06)
    (folder / "training_config.json").unlink()
    text = " ".join(str(block.value) for block in build_demo(pipe).blocks.values() if isinstance(block, gr.Markdown))
    assert "training data not recorded" in text and "GalSim" not in text


def test_build_demo_controls_follow_the_trained_range_and_limits(pipe):
    demo = build_demo(pipe, max_images=3, max_steps=7, queue_size=5)
    assert isinstance(demo, gr.Blocks)
    components = {block.elem_id: block for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert (components["redshift"].minimum, components["redshift"].maximum) == (0.0, 1.5)
    assert components["count"].maximum == 3 and components["steps"].maximum == 7
    assert {"gallery", "bands", "measurements", "fits", "generate", "status"} <= set(components)
    assert demo._queue.max_size == 5 and demo._queue.default_concurrency_limit == 1
    with pytest.raises(ValueError, match="max_images"):
        build_demo(pipe, max_images=0)


def test_request_is_clamped_and_says_so(pipe, tmp_path, without_morphology):
    result = generate_galaxies(pipe, 0.8, 50, 4, "ddim", 500, tmp_path, max_images=3, max_steps=2, model_id="u/m")
    assert "Asked for 50 galaxies" in result.status and "Asked for 500 steps" in result.status
    assert len(result.composites) == 3 and [caption for _, caption in result.composites][0] == "z = 0.80, seed 4"
    assert [caption for _, caption in result.band_images] == [f"{band} band" for band in "grizy"]
    assert result.composites[0][0].mode == "RGB" and result.band_images[0][0].mode == "L"
    assert list(result.table["seed"]) == [4, 5, 6] and "mag_i" in result.table

    with fits.open(result.fits_path) as hdus:
        assert len(hdus) == 4 and hdus[0].header["NGALAXY"] == 3
        assert [hdu.header["SEED"] for hdu in hdus[1:]] == [4, 5, 6]
        assert hdus[2].header["REDSHIFT"] == pytest.approx(0.8) and hdus[2].header["STEPS"] == 2
        cube = hdus[2].data
    # Galaxy k of the demo is the image of seed + k, as `galaxy-pipeline generate` makes it.
    alone = with_scheduler(pipe, "ddim")(z=0.8, generator=[torch.Generator().manual_seed(5)], num_inference_steps=2)
    np.testing.assert_allclose(cube, alone.images[0], rtol=1e-3, atol=1e-3)


def test_request_within_limits_has_no_warning(pipe, tmp_path, without_morphology):
    result = generate_galaxies(pipe, 0.2, 2, None, "ddpm", 2, tmp_path, max_images=3, max_steps=2)
    assert "Asked" not in result.status and "2 galaxies" in result.status
    assert list(result.table["seed"]) == [0, 1]  # an empty seed box means seed 0


@pytest.mark.parametrize(("z", "sampler", "seed"), [(3.0, "ddim", 0), (0.5, "euler", 0), (0.5, "ddim", -1)])
def test_bad_requests_raise_value_error(pipe, tmp_path, z, sampler, seed):
    with pytest.raises(ValueError):
        generate_galaxies(pipe, z, 1, seed, sampler, 1, tmp_path)


def test_measurement_table_uses_the_morphology_module_when_present(monkeypatch):
    module = types.ModuleType(MORPHOLOGY_MODULE)
    module.measure_morphology = lambda fluxes: Table(
        {"ellipticity": np.full(len(fluxes), 0.25), "sersic_index": np.arange(len(fluxes)) + 1.0}
    )
    monkeypatch.setitem(sys.modules, MORPHOLOGY_MODULE, module)
    table = measurement_table(np.ones((2, 5, 8, 8), np.float32), 0.4, [10, 11])
    assert list(table.columns) == ["galaxy", "redshift", "seed", "ellipticity", "sersic_index"]
    assert list(table["sersic_index"]) == [1.0, 2.0]


def test_measurement_table_without_the_morphology_module(without_morphology):
    fluxes = np.zeros((2, 5, 8, 8), np.float32)
    fluxes[0, 2, 4, 4] = 100.0  # i band: magnitude 27 - 2.5 log10(100) = 22
    table = measurement_table(fluxes, 0.4, [0, 1])
    assert table["mag_i"][0] == pytest.approx(22.0) and np.isnan(table["mag_i"][1])


def test_export_space_writes_a_runnable_space(tmp_path, monkeypatch, pipe):
    folder = export_space(tmp_path / "space", "astro-user/galaxies-ddpm", max_images=2)
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.sdk_version == gr.__version__
    assert card.data.app_file == "app.py" and card.data.models == ["astro-user/galaxies-ddpm"]
    assert card.data.license == "cc-by-4.0" and card.data.title and card.data.emoji
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert requirements[0].startswith("galaxy-pipeline[demo]==")
    assert requirements[1] == f"torch=={torch.__version__.split('+')[0]}"

    loaded = []
    monkeypatch.setattr(hub, "load_pipeline", lambda model, **kwargs: loaded.append(model) or (pipe, None))
    namespace = runpy.run_path(str(folder / "app.py"), run_name="space_app")
    assert loaded == ["astro-user/galaxies-ddpm"]
    assert isinstance(namespace["demo"], gr.Blocks)

    with pytest.raises(FileExistsError, match="--overwrite"):
        export_space(folder, "astro-user/galaxies-ddpm")


def test_cli_export_space_and_demo_errors(tmp_path, capsys):
    assert main(["export-space", str(tmp_path / "s"), "--model", "astro-user/galaxies", "--package", "pkg @ x"]) == 0
    assert (tmp_path / "s" / "requirements.txt").read_text().startswith("pkg @ x\n")
    assert main(["export-space", str(tmp_path / "t"), "--model", "not/a/valid/id"]) == 2
    assert main(["demo", "--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "Hub id" in err[0] and "does not exist" in err[1]


def test_measurement_table_with_the_real_morphology_module():
    pytest.importorskip(MORPHOLOGY_MODULE)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:48, :48] - 23.5
    galaxy = 200.0 * np.exp(-(x**2 / (2 * 4.0**2) + y**2 / (2 * 2.0**2)))  # a 2:1 Gaussian ellipse
    fluxes = (galaxy + rng.normal(0, 0.05, size=(1, 5, 48, 48))).astype(np.float32)
    table = measurement_table(fluxes, 0.4, [0])
    assert {"detected", "ellipticity", "semimajor_axis_arcsec", "sersic_index", "mag_i"} <= set(table.columns)
    assert bool(table["detected"][0]) and 0.3 < table["ellipticity"][0] < 0.7
