"""galaxy_pipeline: redshift-conditioned diffusion models of HSC galaxy images, built on diffusers.

The package root is lazy, as diffusers' is: ``import galaxy_pipeline`` (or any light submodule such
as ``galaxy_pipeline.hsc``) loads no torch; ``galaxy_pipeline.GalaxyRedshiftPipeline`` imports the
pipeline module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from galaxy_pipeline.version import __version__

_LAZY_ATTRIBUTES: dict[str, str] = {
    "FluxTransform": "galaxy_pipeline.normalization",
    "GalaxyPipelineOutput": "galaxy_pipeline.pipeline",
    "GalaxyRedshiftPipeline": "galaxy_pipeline.pipeline",
    "RedshiftUNet2DModel": "galaxy_pipeline.unet",
    "paper_scheduler": "galaxy_pipeline.pipeline",
}
"""Public name -> the module that defines it (imported on first access)."""

__all__ = [
    "FluxTransform",
    "GalaxyPipelineOutput",
    "GalaxyRedshiftPipeline",
    "RedshiftUNet2DModel",
    "__version__",
    "paper_scheduler",
]

if TYPE_CHECKING:
    from galaxy_pipeline.normalization import FluxTransform
    from galaxy_pipeline.pipeline import GalaxyPipelineOutput, GalaxyRedshiftPipeline, paper_scheduler
    from galaxy_pipeline.unet import RedshiftUNet2DModel


def __getattr__(name: str) -> Any:
    """Import the module defining ``name`` on first access (PEP 562)."""
    if name not in _LAZY_ATTRIBUTES:
        raise AttributeError(f"module 'galaxy_pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_ATTRIBUTES))
