"""Atomic file writes: write to a temporary file beside the target, then `os.replace`.

`AtomicFolder` writes many small files into one directory: each is an unnamed O_TMPFILE inode
given its name by one link once written, and falls back to a named temporary file plus
`os.replace` where the filesystem or platform has no O_TMPFILE.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


# What a plain open() creates with: the kernel takes the umask off. mkstemp's 0600 would
# survive the rename and leave datasets written for a team unreadable to it.
FILE_MODE = 0o666


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; it replaces the target only on success.
    The file gets the mode a plain open() would give it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class AtomicFolder:
    """Writes whole files into one directory: a reader sees each complete or not at all."""

    def __init__(self, path: str | Path):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        # Half the kernel work of create + rename: on ext4 the rename doubles a small file's
        # cost, and a killed writer leaves no temporary file behind.
        self.unnamed = hasattr(os, "O_TMPFILE")

    def write(self, name: str, data: bytes) -> None:
        if self.unnamed and self._link_unnamed(name, data):
            return
        tmp = f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE, dir_fd=self.fd)
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd)
            raise

    def _link_unnamed(self, name: str, data: bytes) -> bool:
        """False where the file could not be made this way (the caller writes it by name)."""
        try:
            fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, FILE_MODE, dir_fd=self.fd)
        except OSError:  # no O_TMPFILE on this filesystem (EOPNOTSUPP, EISDIR on old kernels)
            self.unnamed = False
            return False
        try:
            _write_all(fd, data)
            # dst_dir_fd makes os.link call linkat with AT_SYMLINK_FOLLOW, which names the
            # inode behind the /proc fd link rather than the link itself.
            os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=self.fd)
            return True
        except FileExistsError:
            return False  # left whole by a killed run: replaced by name, atomically
        except OSError:
            # No /proc, or a sandbox that refuses the link: write by name from now on (a
            # genuine write error, such as a full disk, then surfaces from there).
            self.unnamed = False
            return False
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> AtomicFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | Path, obj: Any, indent: int | None = 2) -> None:
    """`indent=None` for lists of thousands of entries: json's C encoder does not indent, and
    the Python one costs ~35 us per file entry."""
    write_bytes(target, (json.dumps(obj, indent=indent, sort_keys=True) + "\n").encode())


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_writable_dir(path: str | Path, what: str) -> None:
    """Raise a UserError unless `path` is, or can be created as, a writable directory."""
    from vae_model.errors import UserError

    path = Path(path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what} {path}: cannot be created, {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {probe} is not writable")
