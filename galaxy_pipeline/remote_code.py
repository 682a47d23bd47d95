"""The pipeline's own code inside a pipeline folder, so that diffusers alone can load it (``trust_remote_code``).

    >>> write_remote_code("my-pipeline")                 # push_pipeline does this to what it uploads
    >>> DiffusionPipeline.from_pretrained("my-pipeline", trust_remote_code=True)   # no galaxy_pipeline needed

diffusers loads a custom component from a module file in the component's folder when ``model_index.json``
names it ``[module, class]``, and a custom pipeline class from a module file at the folder's root when
``_class_name`` is such a pair. Each module travels with the package modules it imports, copied beside it
with ``from galaxy_pipeline.X import`` rewritten to ``from .X import`` (diffusers copies relative imports
along). The weights and configs are untouched; ``GalaxyRedshiftPipeline.from_pretrained`` reads both forms.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from galaxy_pipeline.atomic import atomic_write

PIPELINE_MODULE = ("pipeline", "GalaxyRedshiftPipeline")
COMPONENT_MODULES = {"unet": ("unet", "RedshiftUNet2DModel"), "flux_transform": ("normalization", "FluxTransform")}
"""Component folder -> (module of galaxy_pipeline, class) whose code is written into that folder."""

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_IMPORT = re.compile(r"^(\s*)from galaxy_pipeline\.(\w+) import", flags=re.MULTILINE)


def module_closure(module: str) -> list[str]:
    """``module`` and every galaxy_pipeline module it imports, directly or not (top-level modules only)."""
    found, todo = [], [module]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.append(name)
        todo += [imported for _, imported in PACKAGE_IMPORT.findall((PACKAGE_DIR / f"{name}.py").read_text())]
    return sorted(found)


def standalone_source(module: str, closure: list[str]) -> str:
    """The source of a galaxy_pipeline module with its package imports made relative.

    diffusers copies the modules that a loaded module imports relatively, but not theirs: every other module
    of ``closure`` is therefore imported once more at the end of the folder's main module.
    """
    original = (PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8")
    direct = {imported for _, imported in PACKAGE_IMPORT.findall(original)}
    source = PACKAGE_IMPORT.sub(r"\1from .\2 import", original)
    indirect = [name for name in closure if name != module and name not in direct]
    if indirect:
        source += (
            "\n# Imported by the modules above; named here so that diffusers copies them into its module cache too.\n"
        )
        source += "".join(f"from .{name} import __doc__ as _{name}_doc  # noqa: E402, F401\n" for name in indirect)
    return source


def write_remote_code(folder: str | os.PathLike) -> list[str]:
    """Write the pipeline's and its components' modules into a saved pipeline folder and point
    ``model_index.json`` at them; return the written paths (relative, POSIX), ``model_index.json`` included.

    Files are replaced, never edited in place (a hard-linked upload copy leaves its source unchanged).
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    written = []
    for subfolder, (module, class_name) in [("", PIPELINE_MODULE), *COMPONENT_MODULES.items()]:
        closure = module_closure(module)
        for name in closure:
            relative = f"{subfolder}/{name}.py" if subfolder else f"{name}.py"
            source = standalone_source(name, closure if name == module else [])
            atomic_write(folder / relative, lambda temporary, text=source: temporary.write_text(text, encoding="utf-8"))
            written.append(relative)
        if subfolder:
            index[subfolder] = [module, class_name]
        else:
            index["_class_name"] = [module, class_name]
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    atomic_write(index_path, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return sorted([*written, "model_index.json"])


def carries_remote_code(model_index: dict) -> bool:
    """Whether a ``model_index.json`` (as a dict) points at module files inside its folder."""
    return isinstance(model_index.get("_class_name"), list)
