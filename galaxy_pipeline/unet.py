"""RedshiftUNet2DModel: a diffusers ``UNet2DModel`` conditioned on a continuous redshift.

The redshift ``z`` is multiplied by ``redshift_scale``, embedded with the same sinusoidal
features as the timestep, passed through a two-layer MLP, and added to the timestep embedding.
Scaling matters: diffusers' sinusoid has ``max_period=10000``, so raw z in [0, 4] would barely
move it (embedding distance z=0.30 vs 0.31 is ~0.01; with z x 1000 it is ~3.4).

This module's path is written into every saved ``model_index.json``
(``["galaxy_pipeline.unet", "RedshiftUNet2DModel"]``): never move or rename it. diffusers looks
the load method up as an attribute of this module, hence the by-name ``ModelMixin`` import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.utils import BaseOutput
from torch import nn

__all__ = ["ModelMixin", "RedshiftUNet2DModel", "RedshiftUNet2DOutput", "UNET_PRESETS"]

UNET_PRESETS: dict[str, dict] = {
    # The paper's network for 5x64x64 GalaxiesML cutouts: self-attention with 4 heads
    # (head width 128 at 512 channels) at 16x16 and 8x8 and in the middle block.
    "paper": dict(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        attention_head_dim=128,
        norm_num_groups=32,
    ),
    # A small network that trains on 2 CPU cores in minutes: 2x2 pixel blocks folded into
    # channels (20 x 32 x 32 inside), 4-head attention at 8x8 (16x16 pixels of the image), the
    # timestep + redshift embedding scaling and shifting every ResNet block's features (FiLM), and
    # z x 100 in the sinusoid (finest period 0.06 in z, not 0.006: fewer features that only tell
    # training galaxies apart).
    "quickstart": dict(
        pixel_unshuffle_factor=2,
        resnet_time_scale_shift="scale_shift",
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=16,
        norm_num_groups=8,
        redshift_embedding_dim=64,
        redshift_scale=100.0,
    ),
    # A network of ~50k weights, for tests (4-head attention at 1/4 of the input size).
    "tiny": dict(
        block_out_channels=(8, 16, 16),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=4,
        norm_num_groups=4,
        redshift_embedding_dim=16,
    ),
}
# The quickstart network widened 1.5x (2.7M weights), for the `standard` training preset: about 1.7x the
# quickstart's cost per image on a CPU.
UNET_PRESETS["standard"] = {
    **UNET_PRESETS["quickstart"],
    "block_out_channels": (48, 96, 96),
    "attention_head_dim": 24,
}
# The quickstart network with twice the channels at 16x16 and 8x8, where a big galaxy's shape is set (4-head
# attention at 128 channels; 4.0M weights, 2x the quickstart's training time). Measured for the round
# low-redshift galaxies and refuted (docs/colour_basis.md); kept so that the ablation can be rerun.
UNET_PRESETS["quickstart_coarse"] = {
    **UNET_PRESETS["quickstart"],
    "block_out_channels": (32, 128, 128),
    "attention_head_dim": 32,
}
# The quickstart network at full resolution (no 2x2 fold; attention at 16x16): 4.9x its training time. Measured
# for the round low-redshift galaxies and refuted (docs/colour_basis.md); kept so that the ablation can be rerun.
UNET_PRESETS["quickstart_unfolded"] = {**UNET_PRESETS["quickstart"], "pixel_unshuffle_factor": 1}


@dataclass
class RedshiftUNet2DOutput(BaseOutput):
    """Output of :class:`RedshiftUNet2DModel`.

    Args:
        sample: the predicted noise, shape (batch, channels, height, width).
    """

    sample: torch.Tensor


class RedshiftUNet2DModel(UNet2DModel):
    """``UNet2DModel`` with a continuous redshift embedding added to the timestep embedding.

    All ``UNet2DModel`` arguments keep their meaning (``class_embed_type`` is fixed to
    ``"identity"``: the redshift embedding is the class label). Redshift fields:

    Args:
        redshift_embedding_dim: width of the sinusoidal redshift features (default 256).
        redshift_scale: factor applied to z before the sinusoid (default 1000).
        redshift_min: lowest spectroscopic redshift the model was trained on.
        redshift_max: highest spectroscopic redshift the model was trained on; the pipeline
            refuses to extrapolate beyond it unless asked to.
        learned_null_redshift: add a learned "no redshift" embedding, used where ``drop_redshift``
            is True; training with redshift dropout makes classifier-free guidance possible.
        pixel_unshuffle_factor: side ``f`` of the pixel blocks folded into channels before the UNet
            (``torch.nn.functional.pixel_unshuffle``) and unfolded after it: the network runs on
            (f*f*in_channels, H/f, W/f), an exact rearrangement that makes it about f*f times cheaper.
            1 (default) runs at full resolution.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] | None = 64,
        in_channels: int = 5,
        out_channels: int = 5,
        center_input_sample: bool = False,
        time_embedding_type: str = "positional",
        time_embedding_dim: int | None = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: tuple[str, ...] = UNET_PRESETS["paper"]["down_block_types"],
        mid_block_type: str | None = "UNetMidBlock2D",
        up_block_types: tuple[str, ...] = UNET_PRESETS["paper"]["up_block_types"],
        block_out_channels: tuple[int, ...] = UNET_PRESETS["paper"]["block_out_channels"],
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int | None = 128,
        norm_num_groups: int = 32,
        attn_norm_num_groups: int | None = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        class_embed_type: str | None = "identity",
        num_class_embeds: int | None = None,
        num_train_timesteps: int | None = None,
        redshift_embedding_dim: int = 256,
        redshift_scale: float = 1000.0,
        redshift_min: float = 0.0,
        redshift_max: float = 4.0,
        learned_null_redshift: bool = False,
        pixel_unshuffle_factor: int = 1,
    ) -> None:
        if class_embed_type != "identity":
            raise ValueError(
                f"RedshiftUNet2DModel embeds the redshift itself; class_embed_type must be 'identity', "
                f"got {class_embed_type!r}."
            )
        if num_class_embeds is not None:
            raise ValueError("RedshiftUNet2DModel takes no num_class_embeds: the redshift is continuous.")
        if not 0 <= redshift_min < redshift_max:
            raise ValueError(
                f"Need 0 <= redshift_min < redshift_max; got redshift_min={redshift_min}, redshift_max={redshift_max}."
            )
        _check_attention_head_dim(
            attention_head_dim, block_out_channels, down_block_types, up_block_types, mid_block_type, add_attention
        )
        factor = pixel_unshuffle_factor
        sizes = (sample_size,) if isinstance(sample_size, int) else tuple(sample_size or ())
        if factor < 1 or any(size % factor for size in sizes):
            raise ValueError(
                f"pixel_unshuffle_factor must be >= 1 and divide sample_size; got {factor} for {sample_size}."
            )
        super().__init__(
            sample_size=_divide_size(sample_size, factor),
            in_channels=in_channels * factor**2,
            out_channels=out_channels * factor**2,
            center_input_sample=center_input_sample,
            time_embedding_type=time_embedding_type,
            time_embedding_dim=time_embedding_dim,
            freq_shift=freq_shift,
            flip_sin_to_cos=flip_sin_to_cos,
            down_block_types=down_block_types,
            mid_block_type=mid_block_type,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            mid_block_scale_factor=mid_block_scale_factor,
            downsample_padding=downsample_padding,
            downsample_type=downsample_type,
            upsample_type=upsample_type,
            dropout=dropout,
            act_fn=act_fn,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            attn_norm_num_groups=attn_norm_num_groups,
            norm_eps=norm_eps,
            resnet_time_scale_shift=resnet_time_scale_shift,
            add_attention=add_attention,
            class_embed_type="identity",
            num_class_embeds=None,
            num_train_timesteps=num_train_timesteps,
        )
        # UNet2DModel registered the folded shapes; the config keeps the image's own.
        self.register_to_config(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels)
        time_embed_dim = time_embedding_dim or block_out_channels[0] * 4
        self.redshift_proj = Timesteps(redshift_embedding_dim, flip_sin_to_cos, freq_shift)
        self.redshift_embedding = TimestepEmbedding(redshift_embedding_dim, time_embed_dim)
        self.null_redshift_embedding = nn.Parameter(torch.zeros(time_embed_dim)) if learned_null_redshift else None

    @classmethod
    def from_preset(cls, name: str, **overrides) -> RedshiftUNet2DModel:
        """Build a freshly initialised network from a named preset (``paper``, ``quickstart``, ``tiny``).

        Keyword overrides replace preset values, e.g. ``redshift_max=3.0``.
        """
        if name not in UNET_PRESETS:
            raise ValueError(f"Unknown UNet preset {name!r}; choose one of {sorted(UNET_PRESETS)}.")
        return cls(**{**UNET_PRESETS[name], **overrides})

    def embed_redshift(self, redshift: torch.Tensor, drop_redshift: torch.Tensor | None = None) -> torch.Tensor:
        """Redshift embedding (batch, time_embed_dim) in the model dtype for z of shape (batch,).

        Where the boolean ``drop_redshift`` (batch,) is True the learned null embedding replaces it.
        """
        features = self.redshift_proj(redshift.float() * self.config.redshift_scale)
        embedding = self.redshift_embedding(features.to(self.dtype))
        if drop_redshift is None:
            return embedding
        if self.null_redshift_embedding is None:
            raise ValueError(
                "This model has no learned null-redshift embedding, so it cannot drop the redshift "
                "(classifier-free guidance); train it with --redshift_dropout > 0."
            )
        null = self.null_redshift_embedding.to(embedding.dtype).expand_as(embedding)
        return torch.where(drop_redshift.to(embedding.device)[:, None], null, embedding)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        redshift: torch.Tensor | float,
        drop_redshift: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> RedshiftUNet2DOutput | tuple[torch.Tensor]:
        """Predict the noise in ``sample`` (batch, channels, H, W) at ``timestep`` for redshift z.

        ``redshift`` is a float or a tensor of shape (batch,) or (); it is broadcast to the batch.
        ``drop_redshift`` (bool, (batch,)) marks images to denoise without redshift (needs
        ``learned_null_redshift``).
        """
        redshift = torch.as_tensor(redshift, device=sample.device)
        if redshift.ndim > 1:
            raise ValueError(f"redshift must be a scalar or shape (batch,); got shape {tuple(redshift.shape)}.")
        redshift = redshift.expand(sample.shape[0]) if redshift.ndim == 0 else redshift
        if redshift.shape[0] != sample.shape[0]:
            raise ValueError(
                f"Got {redshift.shape[0]} redshifts for a batch of {sample.shape[0]} images; give one per image."
            )
        factor = self.config.pixel_unshuffle_factor
        if sample.shape[-1] % factor or sample.shape[-2] % factor:
            raise ValueError(
                f"Image sides {tuple(sample.shape[-2:])} must be multiples of pixel_unshuffle_factor={factor}."
            )
        folded = F.pixel_unshuffle(sample, factor) if factor > 1 else sample
        embedding = self.embed_redshift(redshift, drop_redshift)
        noise = super().forward(folded, timestep, class_labels=embedding).sample
        noise = F.pixel_shuffle(noise, factor) if factor > 1 else noise
        if not return_dict:
            return (noise,)
        return RedshiftUNet2DOutput(sample=noise)


def _check_attention_head_dim(
    attention_head_dim: int | None,
    block_out_channels: tuple[int, ...],
    down_block_types: tuple[str, ...],
    up_block_types: tuple[str, ...],
    mid_block_type: str | None,
    add_attention: bool,
) -> None:
    """Raise ValueError when an attention block would get no head (head width above its channels).

    Block lists of the wrong length are left to ``UNet2DModel``, which names them.
    """
    if attention_head_dim is None:
        return
    channels = [c for c, kind in zip(block_out_channels, down_block_types, strict=False) if "Attn" in kind]
    channels += [c for c, kind in zip(reversed(block_out_channels), up_block_types, strict=False) if "Attn" in kind]
    if mid_block_type is not None and add_attention:
        channels.append(block_out_channels[-1])
    if channels and not 0 < attention_head_dim <= min(channels):
        raise ValueError(
            f"attention_head_dim={attention_head_dim} leaves no attention head in a block of {min(channels)} "
            f"channels (heads = channels // attention_head_dim); use e.g. attention_head_dim="
            f"{max(1, min(channels) // 4)} (4 heads there) or at most {min(channels)}."
        )


def _divide_size(sample_size: int | tuple[int, int] | None, factor: int) -> int | tuple[int, int] | None:
    """The sample size seen by the folded network: each side divided by ``factor``."""
    if sample_size is None:
        return None
    if isinstance(sample_size, int):
        return sample_size // factor
    return tuple(side // factor for side in sample_size)
