"""Sharing pipelines on the Hugging Face Hub: model card rendering, push, and download.

    >>> url = push_pipeline("runs/quickstart/pipeline", "user/galaxies-ddpm", report_dir="runs/quickstart/eval")
    >>> pipe, source = load_pipeline("user/galaxies-ddpm")     # source.commit: the exact Hub revision

The card is rendered from the Jinja template ``galaxy_pipeline/templates/pipeline_card.md``
(installed with the package; ``model_cards/pipeline_card.md`` links to it). Only the files a
pipeline needs travel to the Hub: configs, safetensors weights, the card, and evaluation figures.
Training checkpoints, logs and pickled or non-safetensors weights never do. Tokens come from
``huggingface_hub`` (``HF_TOKEN`` or ``hf auth login``) and are never printed or logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.utils import filter_repo_objects

from galaxy_pipeline.hsc import BANDS, MAG_ZERO_POINT, PIXEL_SCALE_ARCSEC
from galaxy_pipeline.hub_ids import (
    UPLOAD_ALLOW_PATTERNS,
    UPLOAD_IGNORE_PATTERNS,
    check_model_dir,
    check_repo_id,
    hub_errors,
    resolve_model,
)
from galaxy_pipeline.provenance import read_training_config, trained_on_mock, training_data_sentence
from galaxy_pipeline.remote_code import write_remote_code

logger = logging.getLogger(__name__)

CARD_TEMPLATE = "pipeline_card.md"
"""File name of the model card template inside ``galaxy_pipeline/templates``."""

REPORT_FILE = "report.json"
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")

CARD_TAGS: tuple[str, ...] = ("diffusers", "astronomy", "galaxies", "redshift", "hsc", "ddpm")


def render_model_card(
    model_dir: str | os.PathLike,
    repo_id: str,
    report_dir: str | os.PathLike | None = None,
    license: str = "cc-by-4.0",
    datasets: Sequence[str] | None = None,
) -> ModelCard:
    """Render the model card of a saved pipeline folder.

    Args:
        model_dir: a folder written by ``GalaxyRedshiftPipeline.save_pretrained`` (may hold a
            ``training_config.json``, rendered as a table).
        repo_id: the Hub id the card describes (``user/name``), used in the usage code.
        report_dir: an output folder of ``galaxy-pipeline evaluate`` holding ``report.json`` and
            PNG figures; its metrics become the evaluation table and its figures are embedded
            from ``figures/``.
        license: license of the weights (GalaxiesML, the training data, is CC BY 4.0).
        datasets: training datasets listed in the card metadata; default from ``training_config.json``
            (none for a model trained on the GalSim mock, else GalaxiesML).
    """
    model_dir = check_model_dir(model_dir)
    unet_config = _read_json(model_dir / "unet" / "config.json")
    scheduler_config = _read_json(model_dir / "scheduler" / "scheduler_config.json")
    training_config = read_training_config(model_dir)
    training_rows = _flatten(training_config) if training_config is not None else []
    training_data = training_data_sentence(training_config)
    if datasets is None:
        datasets = [] if trained_on_mock(training_config) else ["GalaxiesML"]
    report_dir = _check_report_dir(report_dir) if report_dir is not None else None
    evaluation_tables = report_tables(_read_json(report_dir / REPORT_FILE)) if report_dir else []
    figures = [{"name": path.stem, "path": f"figures/{path.name}"} for path in _figures(report_dir)]

    sample_size = unet_config.get("sample_size", 64)
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=list(CARD_TAGS),
        datasets=list(datasets),
        license=license,
    )
    template = resources.files("galaxy_pipeline").joinpath("templates", CARD_TEMPLATE).read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        redshift_min=_plain(unet_config.get("redshift_min", 0.0)),
        redshift_max=_plain(unet_config.get("redshift_max", 4.0)),
        num_bands=unet_config.get("in_channels", len(BANDS)),
        bands=list(BANDS),
        image_size=sample_size if isinstance(sample_size, int) else sample_size[0],
        pixel_scale=PIXEL_SCALE_ARCSEC,
        mag_zero_point=_plain(MAG_ZERO_POINT),
        num_parameters=_count_parameters(model_dir / "unet"),
        block_out_channels=", ".join(str(c) for c in unet_config.get("block_out_channels", [])),
        scheduler_class=scheduler_config.get("_class_name", "unknown"),
        num_train_timesteps=scheduler_config.get("num_train_timesteps", "?"),
        beta_schedule=scheduler_config.get("beta_schedule", "?"),
        training_data=training_data,
        training_rows=training_rows,
        evaluation_tables=evaluation_tables,
        figures=figures,
    )


def report_tables(report: Any) -> list[dict[str, Any]]:
    """Turn an evaluation ``report.json`` of any shape into Markdown-ready tables.

    A list of row dicts (e.g. one per redshift bin) becomes one table with the union of their
    keys as columns; the scalar entries of a dict (nested dicts flattened with dots) become a
    ``metric | value`` table; each list of row dicts inside a dict becomes its own table, titled
    by its key. Returns dicts with ``title``, ``header`` and ``rows`` (formatted strings).
    """
    tables: list[dict[str, Any]] = []

    def visit(value: Any, title: str) -> None:
        if _is_row_list(value):
            header = list(dict.fromkeys(key for row in value for key in row))
            rows = [[_cell(row.get(key, "")) for key in header] for row in value]
            tables.append({"title": title, "header": [_escape(h) for h in header], "rows": rows})
        elif isinstance(value, Mapping):
            scalars, nested = [], []
            for key, item in value.items():
                name = f"{title}.{key}" if title else str(key)
                (nested if _is_row_list(item) else scalars).append((name, item))
            rows = [[key, text] for key, text in _flatten(dict(scalars))]
            if rows:
                tables.append({"title": title, "header": ["metric", "value"], "rows": rows})
            for name, item in nested:
                visit(item, name)
        else:
            tables.append({"title": title, "header": ["value"], "rows": [[_cell(value)]]})

    visit(report, "")
    return tables


def push_pipeline(
    model_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    report_dir: str | os.PathLike | None = None,
    commit_message: str = "Upload GalaxyRedshiftPipeline",
    license: str = "cc-by-4.0",
) -> str:
    """Upload a saved pipeline, its model card and evaluation figures to the Hub in one commit.

    Args:
        model_dir: a folder written by ``GalaxyRedshiftPipeline.save_pretrained``.
        repo_id: target model repository, ``user/name`` (created if missing).
        private: create the repository as private (an existing repository keeps its visibility).
        revision: branch to commit to (created from main if missing); default the main branch.
        token: Hub token; default the standard places (``HF_TOKEN``, ``hf auth login``).
        report_dir: output folder of ``galaxy-pipeline evaluate`` (``report.json`` + PNG figures).
        commit_message: message of the commit.
        license: license of the weights, written into the card metadata.

    Returns:
        The URL of the repository (of the branch when ``revision`` is given).
    """
    model_dir = check_model_dir(model_dir)
    check_repo_id(repo_id, "Invalid Hub repository id")
    card = render_model_card(model_dir, repo_id, report_dir=report_dir, license=license)
    if token is None and get_token() is None:
        raise ValueError(
            "No Hugging Face token found: run `hf auth login` or set HF_TOKEN to a token with write access."
        )
    api = HfApi(token=token)
    with hub_errors(repo_id):
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        with tempfile.TemporaryDirectory(prefix="galaxy-pipeline-upload-") as staging:
            files = _stage_upload(model_dir, Path(staging), card, report_dir)
            logger.info("Uploading %d files from %s to %s", len(files), model_dir, repo_id)
            api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                repo_type="model",
                revision=revision,
                commit_message=commit_message,
                allow_patterns=UPLOAD_ALLOW_PATTERNS,
                ignore_patterns=UPLOAD_IGNORE_PATTERNS,
            )
    url = str(repo_url).rstrip("/")
    return f"{url}/tree/{revision}" if revision else url


def upload_file_list(model_dir: str | os.PathLike) -> list[str]:
    """Paths (relative, POSIX) of the pipeline files :func:`push_pipeline` uploads from ``model_dir``."""
    model_dir = Path(model_dir)
    paths = sorted(path.relative_to(model_dir).as_posix() for path in model_dir.rglob("*") if path.is_file())
    return [
        path
        for path in filter_repo_objects(
            paths, allow_patterns=UPLOAD_ALLOW_PATTERNS, ignore_patterns=UPLOAD_IGNORE_PATTERNS
        )
        if path != "README.md" and not path.startswith("figures/")
    ]


def load_pipeline(
    model: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    channels_last: bool = False,
    compile_unet: bool = False,
):
    """Load a ``GalaxyRedshiftPipeline`` from a folder or a Hub id onto ``device``.

    Args:
        model: a folder written by ``save_pretrained`` or a Hub id ``user/name``.
        revision: Hub branch, tag or commit; default main.
        token: Hub token for private models; default the standard places.
        device: torch device the pipeline runs on (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        dtype: weights dtype, ``float32`` or ``bfloat16`` (sampling stays in float32).
        cache_dir: Hub cache folder; default the standard one.
        local_files_only: never contact the Hub, use the cache only.
        channels_last: store the UNet weights in ``channels_last`` memory format (faster convolutions
            on recent GPUs; outputs agree to float round-off).
        compile_unet: wrap the UNet in ``torch.compile`` (the first call compiles: minutes; worth it
            for long generation runs on GPU).

    Returns:
        ``(pipeline, ModelSource)``.
    """
    import torch

    from galaxy_pipeline.pipeline import GalaxyRedshiftPipeline

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}; got {dtype!r}.")
    check_device(device)
    source = resolve_model(
        model, revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only
    )
    pipe = GalaxyRedshiftPipeline.from_pretrained(source.local_dir, dtype=dtypes[dtype]).to(device)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    return pipe, source


def check_device(device: str) -> None:
    """Raise ValueError unless ``device`` names a torch device this machine has (``cpu``, ``cuda[:N]``, ``mps``)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or mps.") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"CUDA is not available on this machine; use --device cpu (asked for {device!r}).")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"No CUDA device {parsed.index} on this machine (it has {torch.cuda.device_count()}): "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("MPS (Apple GPU) is not available on this machine; use --device cpu.")
    elif parsed.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}: use cpu, cuda, cuda:N or mps.")


def _stage_upload(model_dir: Path, staging: Path, card: ModelCard, report_dir: str | os.PathLike | None) -> list[str]:
    """Fill ``staging`` with what is uploaded (hard links where possible) and return the relative paths."""
    files = upload_file_list(model_dir)
    for relative in files:
        _link_or_copy(model_dir / relative, staging / relative)
    files = sorted(set(files) | set(write_remote_code(staging)))  # loadable by diffusers alone, trust_remote_code
    card.save(staging / "README.md")
    files.append("README.md")
    if report_dir is not None:
        report_dir = Path(report_dir)
        _link_or_copy(report_dir / REPORT_FILE, staging / "evaluation" / REPORT_FILE)
        files.append(f"evaluation/{REPORT_FILE}")
        for figure in _figures(report_dir):
            _link_or_copy(figure, staging / "figures" / figure.name)
            files.append(f"figures/{figure.name}")
    return files


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _check_report_dir(report_dir: str | os.PathLike) -> Path:
    report_dir = Path(report_dir)
    if not (report_dir / REPORT_FILE).is_file():
        raise FileNotFoundError(
            f"No {REPORT_FILE} in {report_dir}: pass the output folder of `galaxy-pipeline evaluate` as --report."
        )
    return report_dir


def _figures(report_dir: Path | None) -> list[Path]:
    if report_dir is None:
        return []
    return sorted(path for path in report_dir.iterdir() if path.is_file() and path.suffix.lower() in FIGURE_SUFFIXES)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: the pipeline folder is incomplete; save it again.") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or regenerate it.") from error


def _count_parameters(unet_dir: Path) -> str:
    """Number of weights in the safetensors files of ``unet_dir``, read from their headers only."""
    from safetensors import safe_open

    total = 0
    for path in unet_dir.glob("*.safetensors"):
        with safe_open(path, framework="np") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                count = 1
                for size in weights.get_slice(key).get_shape():
                    count *= size
                total += count
    return f"{total / 1e6:.1f} M" if total >= 1e6 else f"{total:,}"


def _flatten(config: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted key, table cell)`` rows of a nested dict; lists of scalars are comma-joined."""
    if not isinstance(config, Mapping):
        return [(_escape(prefix or "value"), _cell(config))]
    rows: list[tuple[str, str]] = []
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, name))
        else:
            rows.append((_escape(name), _cell(value)))
    return rows


def _is_row_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, Mapping) for row in value)


def _cell(value: Any) -> str:
    """A value as the text of a Markdown table cell: floats to 4 significant digits, lists comma-joined."""
    if isinstance(value, list | tuple) and not any(isinstance(item, Mapping | list | tuple) for item in value):
        text = ", ".join(_plain(item) for item in value)
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value)
    else:
        text = _plain(value)
    return _escape(text)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _escape(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
