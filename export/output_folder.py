"""The output folder: refuse to overwrite without --force, write under a temporary name, rename at the end.

Everything is written into a hidden staging folder beside the target (same filesystem, so the final rename
is atomic); a failure or Ctrl-C removes it, so a half-written export never appears under the target name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from memgpt_runtime.errors import ExportError


def check_output_folder(output: str | os.PathLike, force: bool) -> Path:
    """Return the target folder as an absolute path; raise ExportError if it holds something and not `force`."""
    if output is None or str(output) == "":
        raise ExportError("no output folder given; pass -o DIR")
    target = Path(output).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ExportError(f"output {target} exists and is not a folder; choose another path with -o DIR")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ExportError(f"output folder {target} exists and is not empty; use --force to overwrite")
    return target


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """Yield an empty folder beside `target`; on success it replaces `target`, on any failure it is removed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    except OSError as exc:
        raise ExportError(f"cannot create a folder beside {target} ({exc.strerror}); choose a writable -o DIR") from None
    try:
        yield staging
        if target.exists():  # checked empty or --force by check_output_folder
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
