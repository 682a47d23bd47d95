"""Hub ids: checking them, resolving a pipeline's id or folder to a local folder, and one-line Hub errors.

    >>> source = resolve_model("user/galaxies-ddpm")   # a local folder is returned as it is
    >>> source.local_dir, source.commit

The pipeline (``GalaxyRedshiftPipeline.from_pretrained``), the dataset card and :mod:`galaxy_pipeline.hub`
all use this module; it imports neither torch nor any other module of the package.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

UPLOAD_ALLOW_PATTERNS: list[str] = ["*.json", "*.safetensors", "*.py", "README.md", "figures/*"]
"""What a pipeline upload may contain (patterns relative to the pipeline folder, ``*`` crosses folders); the
``.py`` files are the pipeline's own code (``remote_code.write_remote_code``)."""

UPLOAD_IGNORE_PATTERNS: list[str] = [
    "checkpoint-*",
    "*/checkpoint-*",
    "logs/*",
    "*/logs/*",
    "runs/*",
    ".*",
    "*/.*",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.pkl",
    "*.pickle",
    "*.npy",
    "*.npz",
]
"""What a pipeline upload never contains: training checkpoints, logs, hidden files, non-safetensors weights."""


@dataclass(frozen=True)
class ModelSource:
    """Where a loaded pipeline came from.

    Args:
        model_id: the Hub id or local folder the user asked for.
        local_dir: the local folder the pipeline was read from (a Hub snapshot for Hub ids).
        commit: the Hub commit hash of the snapshot, or ``None`` for a local folder.
    """

    model_id: str
    local_dir: Path
    commit: str | None

    @property
    def display_name(self) -> str:
        """The name to show users: the Hub id, or a local folder's name (never this machine's full path)."""
        return self.model_id if self.commit is not None else self.local_dir.name


@contextmanager
def hub_errors(repo_id: str) -> Iterator[None]:
    """Turn the Hub refusing an upload to ``repo_id``, or being out of reach, into a one-line ValueError."""
    try:
        yield
    except HfHubHTTPError as error:
        raise ValueError(
            f"The Hub refused the upload to {repo_id}: {error}. Check that the token has write access to that "
            "namespace (`hf auth whoami`)."
        ) from error
    except _unreachable_errors() as error:
        raise ValueError(
            f"Could not reach the Hugging Face Hub at {constants.ENDPOINT} to upload to {repo_id} "
            f"({type(error).__name__}: {error}). Check the network connection; offline mode (HF_HUB_OFFLINE=1) "
            "must be off to push."
        ) from error


def _unreachable_errors() -> tuple[type[Exception], ...]:
    """Errors meaning the Hub could not be reached, of whichever HTTP client huggingface_hub uses."""
    errors: list[type[Exception]] = [ConnectionError, TimeoutError]  # OfflineModeIsEnabled is a ConnectionError
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def check_repo_id(repo_id: str, problem: str) -> None:
    """Raise ValueError starting with ``problem`` unless ``repo_id`` is a valid 'user/name' Hub id."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{problem} {repo_id!r}: use the form 'user/name'. ({error})") from error
    if "/" not in repo_id:
        raise ValueError(f"{problem} {repo_id!r}: use the form 'user/name'.")


def resolve_model(
    model: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> ModelSource:
    """Find the local folder of a pipeline given a folder path or a Hub id (downloading it if needed).

    Hub ids are fetched with ``huggingface_hub.snapshot_download`` (safetensors and configs only;
    ``revision``, ``token``, ``cache_dir`` and ``local_files_only`` are passed on). Something that
    looks like a path (exists, starts with ``.``, ``/`` or ``~``, or has more than one ``/``) is
    never sent to the Hub.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    looks_like_path = path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1 or "\\" in text
    if looks_like_path:
        if not path.is_dir():
            raise FileNotFoundError(
                f"Model folder {text!r} does not exist: pass a folder written by save_pretrained "
                "or a Hub id 'user/name'."
            )
        check_model_dir(path)
        return ModelSource(model_id=text, local_dir=path.resolve(), commit=None)
    try:
        local_dir = snapshot_download(
            text,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            ignore_patterns=UPLOAD_IGNORE_PATTERNS,
        )
    except HFValidationError as error:
        raise ValueError(f"{text!r} is neither a model folder nor a valid Hub id 'user/name'. ({error})") from error
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise FileNotFoundError(
            f"Hub model {text!r} (revision {revision or 'main'}) was not found, and no local folder has that name; "
            "or it is private and no token gives access: check the id, or log in with `hf auth login`."
        ) from error
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"Hub model {text!r} is not in the local cache and the Hub cannot be reached (offline?): "
            "connect once to download it, or pass a local model folder."
        ) from error
    local_dir = Path(local_dir)
    commit = local_dir.name if re.fullmatch(r"[0-9a-f]{40}", local_dir.name) else None
    return ModelSource(model_id=text, local_dir=local_dir, commit=commit)


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """``model_dir`` as a Path; FileNotFoundError unless it is a saved pipeline with safetensors weights."""
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a pipeline folder (no model_index.json): pass the folder written by "
            "GalaxyRedshiftPipeline.save_pretrained (e.g. the 'pipeline' folder of a training run)."
        )
    if not any((model_dir / "unet").glob("*.safetensors")):
        raise FileNotFoundError(
            f"{model_dir / 'unet'} holds no .safetensors weights: save the pipeline with "
            "save_pretrained(..., safe_serialization=True)."
        )
    return model_dir
