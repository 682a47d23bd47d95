"""What a saved pipeline was trained on, read from the ``training_config.json`` the trainer saves beside it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

TRAINING_CONFIG_FILE = "training_config.json"


def read_training_config(model_dir: str | os.PathLike) -> dict | None:
    """The training config saved in a pipeline folder, or ``None`` when the folder holds none.

    Raises ValueError, naming the file, when it is not valid JSON.
    """
    path = Path(model_dir) / TRAINING_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or regenerate it.") from error


def trained_on_mock(training_config: Mapping | None) -> bool:
    """Whether a training config says the model was trained on the GalSim mock (no ``dataset_dir``)."""
    return training_config is not None and "dataset_dir" in training_config and training_config["dataset_dir"] is None


def training_data_sentence(training_config: Mapping | None) -> str:
    """What the model was trained on, in words, for the model card and the demo page."""
    if trained_on_mock(training_config):
        population = training_config.get("mock_population", "fiducial")
        kind = "" if population == "fiducial" else f" of the {population!r} population"
        return (
            f"the GalSim mock of GalaxiesML made by galaxy_pipeline{kind} ({training_config.get('mock_galaxies', '?')} "
            f"simulated galaxies, seed {training_config.get('seed', '?')}): simulated, not real, galaxies"
        )
    return "GalaxiesML (HSC-SSP PDR2 cutouts with spectroscopic redshifts)"
