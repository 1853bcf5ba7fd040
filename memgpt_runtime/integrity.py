"""The files of an export folder: recorded at export (size and SHA-256 each), checked at load and by `memgpt verify`.

The manifest's `files` maps every file of the folder but the manifest itself (paths relative to the folder, with
`/` separators) to `{"size": bytes, "sha256": hex digest}`. A load compares sizes only (a stat per file); `verify`
hashes every byte. Paths that leave the folder are refused wherever a manifest names a file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from .errors import ModelFolderError

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def inside(folder: Path, name: object, field: str) -> Path:
    """`folder / name` for a relative path that stays inside `folder`; ModelFolderError naming `field` otherwise."""
    if not isinstance(name, str) or not name:
        raise ModelFolderError(
            f"the manifest's {field} must be a file name inside the folder, got {name!r}; re-export the folder"
        )
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or (os.name == "nt" and ":" in name):
        raise ModelFolderError(f"the manifest's {field} {name!r} points outside its folder; re-export the folder")
    return folder / Path(*relative.parts)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def record_files(folder: str | os.PathLike) -> dict[str, dict[str, object]]:
    """{relative path: {"size", "sha256"}} of every file under `folder` but the manifest, sorted by path."""
    folder = Path(folder)
    records = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name != MANIFEST:
            records[name] = {"size": path.stat().st_size, "sha256": sha256(path)}
    return records


def size_problems(folder: Path, files: dict) -> list[str]:
    """One line per recorded file that is missing or whose size changed (a stat each: cheap enough for every load)."""
    problems = []
    for name, record in files.items():
        path = inside(folder, name, "files entry")
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != record.get("size"):
            problems.append(f"{name}: {path.stat().st_size} bytes, the export wrote {record.get('size')}")
    return problems


def content_problems(folder: Path, files: dict) -> list[str]:
    """One line per recorded file that is missing, resized or whose bytes changed, and per file nobody recorded."""
    problems = size_problems(folder, files)
    damaged = {line.split(":")[0] for line in problems}
    for name, record in files.items():
        if name not in damaged and sha256(inside(folder, name, "files entry")) != record.get("sha256"):
            problems.append(f"{name}: contents changed (SHA-256 differs from the export's)")
    known = set(files) | {MANIFEST}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in known:
            problems.append(f"{name}: not written by the export")
    return problems
