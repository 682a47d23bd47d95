"""Export a ready-to-push Hugging Face Space (Gradio SDK) that serves a Hub model with the demo.

    >>> export_space("my-space", "user/galaxies-ddpm")
    >>> # hf upload user/galaxies-demo my-space --repo-type space

The Space holds three files: ``app.py`` (loads the model, builds :func:`galaxy_pipeline.demo.build_demo`),
``requirements.txt`` (``galaxy-pipeline[demo]`` and torch, pinned to the versions installed here),
and ``README.md`` whose YAML header configures the Space (title, emoji, sdk, sdk_version, app_file,
license, models).
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

from galaxy_pipeline.hub_ids import check_repo_id
from galaxy_pipeline.version import __version__

SPACE_FILES: tuple[str, ...] = ("app.py", "requirements.txt", "README.md")

APP_TEMPLATE = '''"""Hugging Face Space: galaxies generated at a chosen redshift by {model_id}."""

import torch

from galaxy_pipeline.demo import build_demo
from galaxy_pipeline.hub import load_pipeline

MODEL_ID = "{model_id}"

pipe, source = load_pipeline(MODEL_ID, device="cuda" if torch.cuda.is_available() else "cpu")
demo = build_demo(pipe, max_images={max_images}, max_steps={max_steps}, source=source)

if __name__ == "__main__":
    demo.launch()
'''

README_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

Generate 5-band (g, r, i, z, y) Hyper Suprime-Cam galaxy images at a chosen redshift with the
redshift-conditioned diffusion model [{{ model_id }}](https://huggingface.co/{{ model_id }}),
measure their morphology and download them as FITS flux cubes.

Made with [galaxy_pipeline](https://pypi.org/project/galaxy-pipeline/) `galaxy-pipeline export-space`.
"""


def export_space(
    folder: str | os.PathLike,
    model_id: str,
    title: str | None = None,
    emoji: str = "🌌",
    license: str = "cc-by-4.0",
    package: str | None = None,
    max_images: int = 8,
    max_steps: int = 100,
    overwrite: bool = False,
) -> Path:
    """Write ``app.py``, ``requirements.txt`` and ``README.md`` of a Gradio Space serving ``model_id``.

    Args:
        folder: output folder (created).
        model_id: Hub id of the model the Space serves, ``user/name``.
        title: Space title; default from the model name.
        emoji: Space emoji.
        license: license of the Space (as the model's, by default CC BY 4.0).
        package: requirement line installing this package; default ``galaxy-pipeline[demo]==<this version>``
            (give e.g. ``galaxy-pipeline[demo] @ git+https://...`` for an unreleased version).
        max_images: most galaxies per request in the Space.
        max_steps: most denoising steps per request in the Space.
        overwrite: replace the files of an earlier export.

    Returns:
        The Space folder.
    """
    import gradio
    import torch

    check_repo_id(model_id, "A Space needs --model as a Hub id, not")
    folder = Path(folder)
    existing = [name for name in SPACE_FILES if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{folder} already holds {', '.join(existing)}: pass --overwrite or another folder.")
    folder.mkdir(parents=True, exist_ok=True)

    title = title or f"{model_id.split('/')[-1]} galaxy generator"
    card_data = SpaceCardData(
        title=title,
        emoji=emoji,
        colorFrom="indigo",
        colorTo="purple",
        sdk="gradio",
        sdk_version=gradio.__version__,
        app_file="app.py",
        pinned=False,
        license=license,
        models=[model_id],
        tags=["astronomy", "galaxies", "diffusers"],
        short_description="Galaxies generated at a chosen redshift (HSC g,r,i,z,y)",
    )
    card = SpaceCard.from_template(card_data, template_str=README_TEMPLATE, title=title, model_id=model_id)
    card.save(folder / "README.md")
    (folder / "app.py").write_text(
        APP_TEMPLATE.format(model_id=model_id, max_images=max_images, max_steps=max_steps), encoding="utf-8"
    )
    torch_version = torch.__version__.split("+")[0]
    requirements = [package or f"galaxy-pipeline[demo]=={__version__}", f"torch=={torch_version}"]
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    return folder
