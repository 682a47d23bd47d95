"""galaxy_pipeline: redshift-conditioned diffusion models of HSC galaxy images, built on diffusers."""

from galaxy_pipeline.normalization import FluxTransform
from galaxy_pipeline.pipeline import GalaxyPipelineOutput, GalaxyRedshiftPipeline, paper_scheduler
from galaxy_pipeline.unet import RedshiftUNet2DModel

__version__ = "0.1.0"

__all__ = [
    "FluxTransform",
    "GalaxyPipelineOutput",
    "GalaxyRedshiftPipeline",
    "RedshiftUNet2DModel",
    "__version__",
    "paper_scheduler",
]
