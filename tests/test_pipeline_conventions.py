"""The generic checks that diffusers runs on its own pipelines (PipelineTesterMixin), written for this one.

diffusers' mixin is part of its repository's test suite, not of the installed package, and targets
text-to-image pipelines; these are its checks that apply to a pixel-space pipeline conditioned on
redshift: the call signature, dict and tuple outputs, rebuilding from ``components``, saving and loading
and loading, batch consistency, ``to()`` and the progress bar.
"""

import inspect

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline

from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline

STEPS = 2


class TestDiffusersPipelineConventions:
    pipeline_class = GalaxyRedshiftPipeline
    params = frozenset(["z"])  # the conditioning, as `prompt` is for text-to-image pipelines
    required_optional_params = frozenset(
        ["num_inference_steps", "num_images_per_redshift", "generator", "latents", "output_type", "return_dict"]
        + ["callback_on_step_end", "callback_on_step_end_tensor_inputs"]
    )

    @pytest.fixture
    def pipe(self):
        return make_tiny_pipeline(redshift_max=2.0)

    @staticmethod
    def inputs(seed: int = 0, **overrides) -> dict:
        generator = [torch.Generator().manual_seed(seed + k) for k in range(2)]
        return {"z": [0.3, 1.2], "generator": generator, "num_inference_steps": STEPS, "output_type": "np"} | overrides

    def test_call_signature(self):
        parameters = inspect.signature(self.pipeline_class.__call__).parameters
        optional = {name for name, value in parameters.items() if value.default is not inspect.Parameter.empty}
        assert self.params <= set(parameters) - optional
        assert self.required_optional_params <= optional
        assert set(self.pipeline_class._callback_tensor_inputs) <= {"latents"}

    def test_dict_and_tuple_outputs_are_equivalent(self, pipe):
        as_dict = pipe(**self.inputs()).images
        as_tuple = pipe(**self.inputs(), return_dict=False)
        assert isinstance(as_tuple, tuple)
        np.testing.assert_array_equal(as_tuple[0], as_dict)

    def test_components_rebuild_the_same_pipeline(self, pipe):
        assert set(pipe.components) == {"unet", "scheduler", "flux_transform"}
        rebuilt = self.pipeline_class(**pipe.components)
        rebuilt.set_progress_bar_config(disable=True)
        np.testing.assert_array_equal(rebuilt(**self.inputs()).images, pipe(**self.inputs()).images)

    def test_save_load_local(self, pipe, tmp_path):
        pipe.save_pretrained(tmp_path / "saved")
        loaded = self.pipeline_class.from_pretrained(tmp_path / "saved")
        assert type(loaded) is self.pipeline_class
        loaded.set_progress_bar_config(disable=True)
        difference = np.abs(loaded(**self.inputs()).images - pipe(**self.inputs()).images).max()
        assert difference < 5e-4

    def test_inference_batch_single_identical(self, pipe):
        batched = pipe(**self.inputs(seed=4)).images
        singles = [
            pipe(z=z, generator=[torch.Generator().manual_seed(4 + k)], num_inference_steps=STEPS).images[0]
            for k, z in enumerate([0.3, 1.2])
        ]
        assert batched.shape[0] == 2
        np.testing.assert_allclose(batched, np.stack(singles), rtol=1e-3, atol=1e-3)

    def test_num_images_per_redshift(self, pipe):
        out = pipe(z=[0.3, 1.2], num_images_per_redshift=3, num_inference_steps=STEPS)
        assert out.images.shape[0] == 6 and list(out.redshifts) == [0.3] * 3 + [1.2] * 3

    def test_to_moves_every_component_and_returns_the_pipeline(self, pipe):
        assert pipe.to("cpu") is pipe and pipe.device == torch.device("cpu")
        moved = pipe.to(dtype=torch.bfloat16)
        assert moved.unet.dtype == torch.bfloat16 and moved.dtype == torch.bfloat16

    def test_progress_bar_can_be_switched_off(self, pipe, capsys):
        pipe.set_progress_bar_config(disable=True)
        pipe(**self.inputs())
        assert "it/s" not in capsys.readouterr().err
        pipe.set_progress_bar_config(disable=False)
        pipe(**self.inputs())
        shown = capsys.readouterr().err
        assert "it/s" in shown or "s/it" in shown
