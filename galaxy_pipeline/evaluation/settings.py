"""What one evaluation is made with, in one frozen dataclass that checks itself.

The first six fields decide the generated galaxies and are the cache key written to ``settings.json``
(:meth:`EvaluationSettings.cache_key`); the others decide only how the cached batches are read,
compared and reported, so changing them never regenerates anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from galaxy_pipeline.checks import check_positive_int
from galaxy_pipeline.evaluation.statistics import REDSHIFT_BIN_EDGES

CACHE_KEY_FIELDS: tuple[str, ...] = (
    "model_fingerprint",
    "scheduler",
    "scheduler_config",
    "num_inference_steps",
    "guidance_scale",
    "seed",
)
"""Fields that decide the generated galaxies, in the order ``settings.json`` lists them."""


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of one evaluation.

    Args:
        model_fingerprint: SHA-256 of the pipeline's weights and configs.
        scheduler: class name of the sampling scheduler.
        scheduler_config: its config (JSON form, bookkeeping keys dropped).
        num_inference_steps: denoising steps per galaxy.
        guidance_scale: classifier-free guidance on redshift (1: none).
        seed: base seed; generated galaxy ``k`` uses ``seed + k``.
        batch_size: galaxies generated and measured at a time (results do not depend on it).
        bin_edges: redshift bin edges of the per-bin comparisons.
        n_permutations: label shuffles of the Wasserstein-1 null distribution.
        n_bootstrap: bootstrap resamples of the confidence intervals.
        n_requested: the ``n`` asked for (``None``: the whole split).
        n_available: rows of the real split.
        sampler: sampler name asked for (``None``: the pipeline's own).
        model_id, data_id, predictor_id: names recorded in the report.
        morphology_workers: processes of the photutils stage of the morphology measurement.
        num_processes: processes sharing the evaluation.
        device: torch device the pipeline samples on.
    """

    model_fingerprint: str
    scheduler: str
    scheduler_config: dict[str, Any]
    num_inference_steps: int
    guidance_scale: float
    seed: int
    batch_size: int = 64
    bin_edges: tuple[float, ...] = field(default=REDSHIFT_BIN_EDGES)
    n_permutations: int = 1000
    n_bootstrap: int = 1000
    n_requested: int | None = None
    n_available: int = 0
    sampler: str | None = None
    model_id: str | None = None
    data_id: str | None = None
    predictor_id: str | None = None
    morphology_workers: int = 1
    num_processes: int = 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_permutations", "n_bootstrap", "num_inference_steps"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("n", self.n_requested, none_means="the whole split")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**62:
            raise ValueError(f"seed must be an integer in [0, 2**62); got {self.seed!r}.")

    def cache_key(self) -> dict[str, Any]:
        """The fields that decide the generated galaxies, as ``settings.json`` holds them (JSON round trip)."""
        values = asdict(self)
        return json.loads(json.dumps({name: values[name] for name in CACHE_KEY_FIELDS}, default=str))
