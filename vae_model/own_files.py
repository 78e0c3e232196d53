"""The files `generate` writes into an output folder, recognised by name, so that replacing an
output removes them and nothing else: a user's files beside or inside it are never touched.

Every file a shard record or the manifest lists has one of these names, and a killed run can
leave only these (its temporary files included) unrecorded.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

# `atomic_path` names its temporary file `.<name>.<12 hex>.tmp`, `AtomicFolder` `.<name>.tmp`.
_TMP = r"\.(?:{})(?:\.[0-9a-f]{{12}})?\.tmp"
_TOP = r"part-\d{5,}\.parquet|preview\.png|manifest\.json"
_RECORDS = r"part-\d{5,}\.json|request\.json"
_PNG = r"\d{9,}\.png"
# Label folders are the decimal form of an integer label, or `unlabelled`.
_LABEL = re.compile(r"unlabelled|\d+")


def _names(pattern: str, temporary_only: bool) -> re.Pattern[str]:
    tmp = _TMP.format(pattern)
    return re.compile(tmp if temporary_only else f"{pattern}|{tmp}")


def _files(folder: Path, names: re.Pattern[str]) -> list[Path]:
    # Symbolic links are never the tool's: neither they nor what they point to are taken.
    if folder.is_symlink() or not folder.is_dir():
        return []
    with os.scandir(folder) as entries:
        return [Path(e.path) for e in entries if e.is_file(follow_symlinks=False) and names.fullmatch(e.name)]


def _label_folders(out: Path) -> list[Path]:
    images = out / "images"
    if images.is_symlink() or not images.is_dir():
        return []
    with os.scandir(images) as entries:
        return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and _LABEL.fullmatch(e.name)]


def own_files(out: Path, temporary_only: bool = False) -> list[Path]:
    """The tool's files in `out` (only its temporary files if asked), the request record last:
    a removal killed halfway leaves a folder still marked as the tool's, which a rerun finishes."""
    found = _files(out, _names(_TOP, temporary_only)) + _files(out / ".shards", _names(_RECORDS, temporary_only))
    for folder in _label_folders(out):
        found += _files(folder, _names(_PNG, temporary_only))
    return sorted(found, key=lambda p: (p.parent.name == ".shards" or p.name == "manifest.json", p.name == "request.json"))


def remove_own_files(out: Path, temporary_only: bool = False) -> None:
    """Delete the tool's files in `out`, then the folders it made there if they are now empty."""
    for path in own_files(out, temporary_only):
        path.unlink(missing_ok=True)
    if temporary_only:
        return
    for folder in [*_label_folders(out), out / "images", out / ".shards"]:
        with contextlib.suppress(OSError):  # not empty (a user's file) or already gone
            folder.rmdir()
