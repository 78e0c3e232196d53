"""Atomic writes of many small files into one directory (the PNG shards' writer)."""

from __future__ import annotations

import os
import sys

import pytest

from vae_model.atomic import AtomicFolder, atomic_path, write_json


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named_tmp"])
def test_folder_writes_whole_files_and_leaves_no_temporaries(tmp_path, unnamed):
    if unnamed and not sys.platform.startswith("linux"):
        pytest.skip("O_TMPFILE is Linux-only")
    (tmp_path / "b.png").write_bytes(b"left whole by a killed run")
    with AtomicFolder(tmp_path) as folder:
        folder.unnamed = unnamed
        for i in range(50):
            folder.write(f"{i:03d}.png", bytes([i]) * (i * 1000))
        folder.write("b.png", b"new")
        # On Linux's usual filesystems the unnamed-inode path must be the one taken, not the fallback.
        assert folder.unnamed is unnamed
    assert sorted(os.listdir(tmp_path)) == sorted([f"{i:03d}.png" for i in range(50)] + ["b.png"])
    assert all((tmp_path / f"{i:03d}.png").read_bytes() == bytes([i]) * (i * 1000) for i in range(50))
    assert (tmp_path / "b.png").read_bytes() == b"new"
    assert (tmp_path / "007.png").stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path, mask):
    """Parquet shards, manifests, previews and checkpoints go through atomic_path: a temporary
    file's 0600 must not survive the rename."""
    previous = os.umask(mask)
    try:
        write_json(tmp_path / "manifest.json", {"a": 1})
        with atomic_path(tmp_path / "part-00000.parquet") as tmp:
            tmp.write_bytes(b"rows")
        with open(tmp_path / "plain.txt", "w"):
            pass
    finally:
        os.umask(previous)
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert plain == 0o666 & ~mask
    for name in ("manifest.json", "part-00000.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == plain, name
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "part-00000.parquet", "plain.txt"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
