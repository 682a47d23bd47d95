"""RedshiftUNet2DModel: conditioning, presets, config persistence, bf16."""

import numpy as np
import pytest
import torch

from galaxy_pipeline import RedshiftUNet2DModel
from galaxy_pipeline.unet import UNET_PRESETS


@pytest.fixture
def unet() -> RedshiftUNet2DModel:
    torch.manual_seed(0)
    return RedshiftUNet2DModel.from_preset("tiny", sample_size=16).eval()


def test_output_shape_and_redshift_dependence(unet):
    sample = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        low = unet(sample, 500, torch.tensor([0.30, 0.30])).sample
        near = unet(sample, 500, 0.31).sample
        far = unet(sample, 500, 2.0).sample
    assert low.shape == sample.shape
    assert not torch.allclose(low, near)
    assert not torch.allclose(low, far)


def test_redshift_embedding_resolves_small_differences(unet):
    embedding = unet.embed_redshift(torch.tensor([0.30, 0.31]))
    assert torch.dist(embedding[0], embedding[1]) > 0.05


def test_config_round_trip_keeps_redshift_fields(unet, tmp_path):
    unet.register_to_config(redshift_min=0.01, redshift_max=3.5)
    unet.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    loaded = RedshiftUNet2DModel.from_pretrained(tmp_path)
    for key in ("redshift_embedding_dim", "redshift_scale", "redshift_min", "redshift_max", "block_out_channels"):
        assert np.array_equal(loaded.config[key], unet.config[key])
    sample = torch.randn(1, 5, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, 10, 1.0).sample, unet(sample, 10, 1.0).sample, rtol=0, atol=1e-5)


def test_bfloat16_forward(unet):
    unet = unet.to(torch.bfloat16)
    with torch.no_grad():
        out = unet(torch.randn(2, 5, 16, 16, dtype=torch.bfloat16), torch.tensor([3, 900]), [0.1, 1.5]).sample
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", ["quickstart", "quickstart_coarse", "standard"])
def test_cpu_presets_fold_pixels_and_keep_four_heads(name):
    unet = RedshiftUNet2DModel.from_preset(name).eval()
    assert unet.config.pixel_unshuffle_factor == 2 and unet.mid_block.attentions[0].heads == 4
    with torch.no_grad():
        out = unet(torch.randn(2, 5, 64, 64), torch.tensor([10, 900]), torch.tensor([0.3, 2.0])).sample
    assert out.shape == (2, 5, 64, 64) and torch.isfinite(out).all()


def test_paper_preset_has_four_head_attention():
    config = UNET_PRESETS["paper"]
    attention_channels = [
        channels
        for channels, block in zip(config["block_out_channels"], config["down_block_types"], strict=True)
        if block.startswith("Attn")
    ]
    assert attention_channels
    assert all(channels // config["attention_head_dim"] == 4 for channels in attention_channels)
    unet = RedshiftUNet2DModel.from_preset("paper")
    assert unet.config.in_channels == 5 and unet.config.sample_size == 64
    assert unet.mid_block.attentions[0].heads == 4


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="Unknown UNet preset"):
        RedshiftUNet2DModel.from_preset("huge")
    with pytest.raises(ValueError, match="redshift_min"):
        RedshiftUNet2DModel.from_preset("tiny", redshift_min=2.0, redshift_max=1.0)
    with pytest.raises(ValueError, match="class_embed_type"):
        RedshiftUNet2DModel.from_preset("tiny", class_embed_type="timestep")
    unet = RedshiftUNet2DModel.from_preset("tiny", sample_size=8)
    with pytest.raises(ValueError, match="one per image"):
        unet(torch.randn(2, 5, 8, 8), 1, torch.tensor([0.1, 0.2, 0.3]))


def test_pixel_unshuffle_factor_folds_pixels_and_round_trips(tmp_path):
    torch.manual_seed(0)
    unet = RedshiftUNet2DModel.from_preset("tiny", sample_size=16, pixel_unshuffle_factor=2).eval()
    # The network itself sees 4x as many channels at half the side; the config keeps the image's shape.
    assert unet.conv_in.in_channels == 20 and unet.conv_out.out_channels == 20
    assert unet.config.in_channels == 5 and unet.config.out_channels == 5 and unet.config.sample_size == 16
    sample = torch.randn(2, 5, 16, 16)
    with torch.no_grad():
        out = unet(sample, 500, torch.tensor([0.3, 2.0])).sample
    assert out.shape == sample.shape and torch.isfinite(out).all()
    unet.save_pretrained(tmp_path)
    loaded = RedshiftUNet2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.pixel_unshuffle_factor == 2 and loaded.conv_in.in_channels == 20
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, 500, torch.tensor([0.3, 2.0])).sample, out, rtol=0, atol=1e-5)


def test_pixel_unshuffle_factor_must_divide_the_image():
    with pytest.raises(ValueError, match="pixel_unshuffle_factor"):
        RedshiftUNet2DModel.from_preset("tiny", sample_size=16, pixel_unshuffle_factor=3)
    unet = RedshiftUNet2DModel.from_preset("tiny", sample_size=16, pixel_unshuffle_factor=2)
    with pytest.raises(ValueError, match="multiples of pixel_unshuffle_factor=2"):
        unet(torch.randn(1, 5, 15, 15), 1, 0.5)


def test_an_attention_head_wider_than_its_block_names_a_width_that_works():
    arguments = dict(
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        layers_per_block=1,
    )
    with pytest.raises(ValueError, match="attention_head_dim=128 .* 32 channels.*attention_head_dim=8"):
        RedshiftUNet2DModel(**arguments)
    unet = RedshiftUNet2DModel(**arguments, attention_head_dim=8)
    sample = torch.randn(1, 5, 64, 64)
    assert unet(sample, 10, 0.5).sample.shape == sample.shape
