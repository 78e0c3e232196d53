"""Atomic writes of many small files into one directory (the PNG shards' writer)."""

from __future__ import annotations

import os
import sys

import pytest

from vae_model.atomic import AtomicFolder


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
