"""The output folder: refuse a target that would lose anyone's files, write under a temporary name, rename at the end.

A target is refused when it is, holds or lies inside the model being exported, and when it holds anything
but an earlier memgpt export (`--force` replaces only that, and only if every file in it is the export's own).
Everything is written into a hidden staging folder beside the target, `.NAME.<pid>.XXXXXXXX.partial` (same
filesystem, so the final rename is atomic); any exception, Ctrl-C included, removes it, and an export to the
same target removes the ones left by processes that are gone (a SIGKILL, a power cut). It does not decide
what goes into the folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from memgpt_runtime.errors import ExportError
from memgpt_runtime.manifest import FILENAME as MANIFEST_FILE
from memgpt_runtime.manifest import FORMAT as MANIFEST_FORMAT

CHOOSE = "pick an empty or new folder with -o DIR, or remove it yourself"
_RANDOM = r"[a-z0-9_]{8}"  # tempfile.mkdtemp's random part


def check_output_folder(output: str | os.PathLike, force: bool, model_paths: Iterable[Path] = ()) -> Path:
    """Return the target folder as an absolute path; raise ExportError if writing it could lose anyone's files.

    `model_paths` are the files or folders the export reads (the model folder, the .gguf file): the target may
    not be one of them, hold one, or lie inside one. A non-empty target is replaced only with `force`, and
    only if it is an earlier memgpt export holding nothing but the export's own files.
    """
    if output is None or str(output) == "":
        raise ExportError("no output folder given; pass -o DIR")
    target = Path(output).expanduser().absolute()
    try:
        _check_not_the_model(target, model_paths)
        if target.is_symlink():
            raise ExportError(f"output {target} is a symbolic link; pass the folder it points to with -o DIR")
        if target.exists() and not target.is_dir():
            raise ExportError(f"output {target} exists and is not a folder; choose another path with -o DIR")
        occupied = target.is_dir() and any(target.iterdir())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Path.resolve)
        raise ExportError(f"cannot inspect output {target} ({exc}); choose another folder with -o DIR") from None
    if occupied:
        foreign = _files_not_exported(target)
        if foreign is None:
            raise ExportError(f"output folder {target} is not empty and is not a memgpt export; {CHOOSE}")
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ExportError(f"output folder {target} holds files the export did not write ({shown}); {CHOOSE}")
        if not force:
            raise ExportError(f"output folder {target} holds an earlier export; use --force to overwrite it")
    return target


def _check_not_the_model(target: Path, model_paths: Iterable[Path]) -> None:
    real = target.resolve()  # symlinks resolved on both sides: a link to the model folder is the model folder
    for path in model_paths:
        model = Path(path).resolve()
        if real == model:
            raise ExportError(f"output {target} is the model being exported; choose another folder with -o DIR")
        if real in model.parents:
            raise ExportError(
                f"output folder {target} contains the model being exported ({path}); choose another folder with -o DIR"
            )
        if model in real.parents:
            raise ExportError(
                f"output folder {target} is inside the model folder {path}; choose a folder outside it with -o DIR"
            )


def _files_not_exported(folder: Path) -> list[str] | None:
    """None if `folder` holds no memgpt manifest; else the paths in it that no export writes (sorted)."""
    try:
        body = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
        return None
    ours = {MANIFEST_FILE, *_exported_names(body)}
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())
    return [name for name in present if name not in ours]


def _exported_names(body: dict) -> set[str]:
    """The files a manifest says its export wrote: `files` (version 3), else the graphs, their data and the tokenizer."""
    files = body.get("files")
    if isinstance(files, dict) and files:
        return {name for name in files if isinstance(name, str)}
    encoder = body.get("encoder") if isinstance(body.get("encoder"), dict) else {}
    graphs = [name for name in (body.get("model_file"), encoder.get("model_file")) if isinstance(name, str)]
    tokenizer = body.get("tokenizer_file")
    return {*graphs, *(f"{name}.data" for name in graphs), *([tokenizer] if isinstance(tokenizer, str) else [])}


def staging_name(target: Path) -> re.Pattern[str]:
    """The names of staging folders beside `target`; group 1 is the owning process id."""
    return re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.{_RANDOM}\.partial")


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders beside `target` whose process is gone; return them. Others are left alone."""
    pattern, removed = staging_name(target), []
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":
        return True  # another export in this process; on Windows os.kill(pid, 0) would signal, not probe
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (OverflowError, OSError):
        return True  # it exists but is someone else's (PermissionError), or we cannot tell: leave its folder
    return True


@contextmanager
def staging_folder(target: Path) -> Iterator[Path]:
    """Yield an empty folder beside `target`; on success it replaces `target`, on any exception it is removed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    except OSError as exc:
        raise ExportError(
            f"cannot create a folder beside {target} ({exc.strerror}); choose a writable -o DIR"
        ) from None
    try:
        yield staging
        if target.exists():  # empty, or an earlier export (check_output_folder)
            if any(target.iterdir()) and _files_not_exported(target) != []:  # subtle: changed while we exported
                raise ExportError(
                    f"output folder {target} changed during the export and now holds files it did not write; {CHOOSE}"
                )
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
