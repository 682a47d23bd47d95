"""A pipeline folder that carries its own code loads with diffusers alone (``trust_remote_code=True``)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_tiny_pipeline

from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline
from galaxy_pipeline.remote_code import module_closure, write_remote_code

REMOTE_LOAD = """
import sys
sys.modules["galaxy_pipeline"] = None  # importing galaxy_pipeline now raises ImportError: as if not installed
import numpy as np
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
images = pipe(z=[0.3, 1.2], seeds=[0, 1], num_inference_steps=3, output_type="np").images
np.save(sys.argv[2], images)
loaded = sorted(name for name, mod in sys.modules.items() if mod and name.split(".")[0] == "galaxy_pipeline")
print("classes", type(pipe).__name__, type(pipe.unet).__name__, type(pipe.flux_transform).__name__)
print("galaxy_pipeline modules", loaded)
"""


@pytest.fixture
def folder_with_code(tmp_path):
    pipe = make_tiny_pipeline(redshift_max=2.0)
    pipe.save_pretrained(tmp_path / "model")
    written = write_remote_code(tmp_path / "model")
    return tmp_path / "model", written


def test_the_folder_names_its_own_modules(folder_with_code):
    folder, written = folder_with_code
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "GalaxyRedshiftPipeline"]
    assert index["unet"] == ["unet", "RedshiftUNet2DModel"] and index["flux_transform"] == [
        "normalization",
        "FluxTransform",
    ]
    assert {"pipeline.py", "unet/unet.py", "flux_transform/normalization.py", "flux_transform/hsc.py"} <= set(written)
    for path in written:
        assert not re.search(r"^\s*(from|import) galaxy_pipeline", (folder / path).read_text(), re.MULTILINE), path
    assert module_closure("normalization") == ["hsc", "normalization"]


def test_diffusers_alone_loads_it_and_samples_the_same_galaxies(folder_with_code, tmp_path):
    folder, _ = folder_with_code
    environment = os.environ | {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(folder), str(tmp_path / "remote.npy")],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "classes GalaxyRedshiftPipeline RedshiftUNet2DModel FluxTransform" in result.stdout
    assert "galaxy_pipeline modules []" in result.stdout
    ours = GalaxyRedshiftPipeline.from_pretrained(folder)
    ours.set_progress_bar_config(disable=True)
    expected = ours(z=[0.3, 1.2], seeds=[0, 1], num_inference_steps=3, output_type="np").images
    np.testing.assert_allclose(np.load(tmp_path / "remote.npy"), expected, rtol=1e-5, atol=1e-5)


def test_this_package_reads_a_folder_with_code_with_its_own_classes(folder_with_code):
    folder, _ = folder_with_code
    pipe = GalaxyRedshiftPipeline.from_pretrained(folder)
    assert type(pipe) is GalaxyRedshiftPipeline and type(pipe.unet).__module__ == "galaxy_pipeline.unet"
    assert type(pipe.scheduler).__name__ == "DDPMScheduler"
    reference = make_tiny_pipeline(redshift_max=2.0)
    for key, value in reference.unet.state_dict().items():
        np.testing.assert_array_equal(pipe.unet.state_dict()[key].numpy(), value.numpy())
