"""MNIST-layout IDX files from a local folder, gz or plain, checked by content rather than by md5.

Mirrors and distributions re-compress the published gz files or ship them uncompressed: the
images are the same, the md5 is not. So the md5 is only reported, and what is refused is data
that cannot be the dataset: a wrong magic number, image size or label, a truncated file, or
images and labels that do not pair up.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
import zlib
from pathlib import Path

import numpy as np

from vae_model.errors import UserError

# IDX magic: two zero bytes, the element type (0x08 = uint8), the number of dimensions.
_MAGIC = {"images": b"\x00\x00\x08\x03", "labels": b"\x00\x00\x08\x01"}
_SIDE = 28
_CLASSES = 10


def find(folder: Path, gz_name: str) -> Path | None:
    """The gz file as published, else its uncompressed IDX form (what several mirrors ship)."""
    for candidate in (folder / gz_name, folder / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path, kind: str, scratch: Path) -> tuple[np.ndarray, str]:
    """Decoded array and md5 of the file as stored; torchvision parses, this names what went wrong."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = path.read_bytes()
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    # gzip's own magic decides, not the suffix: mirrors name and pack their copies either way.
    packed = raw[:2] == b"\x1f\x8b"
    if packed:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:
            raise UserError(f"{path}: truncated or corrupt gzip data ({exc})") from None
    if raw[:4] != _MAGIC[kind]:
        what = f"not an IDX {kind} file" if packed else f"neither gzip data nor an IDX {kind} file"
        raise UserError(f"{path}: {what} (magic number {raw[:4].hex()}, expected {_MAGIC[kind].hex()})")
    # torchvision's readers take a path to an uncompressed file.
    plain = scratch / path.name.removesuffix(".gz")
    plain.write_bytes(raw)
    try:
        array = (read_image_file if kind == "images" else read_label_file)(str(plain)).numpy()
    except (RuntimeError, ValueError, AssertionError) as exc:
        # A size mismatch surfaces as torch's "shape [...] is invalid for input of size N".
        raise UserError(f"{path}: truncated or corrupt IDX data, the header's sizes do not fit ({exc})") from None
    return array, md5


def read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray, dict[Path, str]]:
    """(N, 1, 28, 28) uint8 images, int64 labels in 0..9, and the md5 of each file as stored."""
    with tempfile.TemporaryDirectory(prefix="vae-idx-") as scratch:
        images, images_md5 = _read(images_path, "images", Path(scratch))
        labels, labels_md5 = _read(labels_path, "labels", Path(scratch))
    if images.shape[1:] != (_SIDE, _SIDE):
        raise UserError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected {_SIDE}x{_SIDE}")
    if len(labels) != len(images):
        raise UserError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path.name}")
    if len(labels) and labels.max() >= _CLASSES:
        row = int(np.argmax(labels))
        raise UserError(f"{labels_path}: item {row}: label {labels[row]} is outside 0..{_CLASSES - 1}")
    return images[:, None].copy(), labels.astype(np.int64), {images_path: images_md5, labels_path: labels_md5}
