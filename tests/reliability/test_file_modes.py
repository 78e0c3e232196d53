"""Files others can read: every file the tool writes gets the mode a plain open() gives."""

from __future__ import annotations

import os

import pytest

from vae_model.atomic import atomic_path, write_json


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
