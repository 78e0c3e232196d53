"""Atomic writes: whole files or none, no temporaries left, the mode a plain open() gives."""

from __future__ import annotations

import os

import pytest

from vae_model.atomic import AtomicFolder, atomic_path, write_bytes


@pytest.mark.parametrize("writer", ["write_bytes", "AtomicFolder"])
def test_writes_whole_files_and_leaves_no_temporaries(tmp_path, writer):
    (tmp_path / "b.png").write_bytes(b"left whole by a killed run")
    with AtomicFolder(tmp_path) as folder:
        write = (lambda name, data: write_bytes(tmp_path / name, data)) if writer == "write_bytes" else folder.write
        for i in range(50):
            write(f"{i:03d}.png", bytes([i]) * (i * 1000))
        write("b.png", b"new")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "c.png") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert sorted(os.listdir(tmp_path)) == sorted([f"{i:03d}.png" for i in range(50)] + ["b.png"])
    assert all((tmp_path / f"{i:03d}.png").read_bytes() == bytes([i]) * (i * 1000) for i in range(50))
    assert (tmp_path / "b.png").read_bytes() == b"new"
    assert (tmp_path / "007.png").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
