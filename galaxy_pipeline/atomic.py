"""Write-then-rename: a file or folder appears complete at its path, or not at all.

    >>> atomic_write(Path("report.json"), lambda temporary: temporary.write_text(text))
    >>> with atomic_folder(Path("runs/pipeline")) as staged:
    ...     pipe.save_pretrained(staged)

The temporary file or folder lies beside the target (same file system, so the rename is atomic) under
a hidden name; an interrupted write leaves at most that hidden name behind, never a partial target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary)`` with a path beside ``path`` (same suffix), then rename it to ``path``.

    The folder of ``path`` is created if needed; an existing file at ``path`` is replaced. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging folder; when the block ends without error it becomes ``path``.

    An existing ``path`` is replaced only then (moved aside and deleted). The staging folder's parent is
    a private work folder beside ``path``, free for scratch files; it is deleted whatever happens.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".incomplete", dir=path.parent))
    try:
        staged = work_dir / "staged"
        staged.mkdir()
        yield staged
        if path.exists():
            os.replace(path, work_dir / "previous")
        os.replace(staged, path)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
