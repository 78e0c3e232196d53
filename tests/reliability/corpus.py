"""A corpus of bad inputs, made by the tests themselves (nothing downloaded)."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image


def png_bytes(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder(root: Path, n_per_class: int = 3, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            (root / label / f"{i}.png").write_bytes(png_bytes(rng.integers(0, 256, (size, size))))
    return root


def mnist_folder(root: Path, truncate: str | None = None, corrupt: str | None = None) -> Path:
    """The real MNIST gz files, linked, with one of them truncated or replaced by garbage."""
    from tests.conftest import MNIST_RAW, mnist_available

    if not mnist_available():
        pytest.skip(f"MNIST gz files not found in {MNIST_RAW}")
    root.mkdir(parents=True, exist_ok=True)
    for source in MNIST_RAW.glob("*.gz"):
        target = root / source.name
        if source.name == truncate:
            data = source.read_bytes()
            target.write_bytes(data[: len(data) // 2])
        elif source.name == corrupt:
            target.write_bytes(b"not a gzip file at all")
        else:
            target.symlink_to(source)
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX as MNIST publishes it: magic (uint8, number of dimensions), big-endian sizes, values."""
    sizes = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return bytes([0, 0, 8, array.ndim]) + sizes + array.astype(np.uint8).tobytes()


def idx_folder(root: Path, compress: int | None = 9, counts=(5, 3), replace: dict | None = None) -> Path:
    """A tiny synthetic MNIST layout: random 28x28 images and labels 0..9, gzipped at level
    `compress` or plain; `replace` swaps a file (named without .gz) for an array or raw bytes."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in zip(("train", "t10k"), counts, strict=True):
        files = {f"{prefix}-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28)),
                 f"{prefix}-labels-idx1-ubyte": rng.integers(0, 10, n)}
        files.update({k: v for k, v in (replace or {}).items() if k in files})
        for name, value in files.items():
            data = value if isinstance(value, bytes) else idx_bytes(value)
            if compress is None:
                (root / name).write_bytes(data)
            else:
                (root / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=compress, mtime=0))
    return root


def parquet_pixels(path: Path, rows: int = 6, side: int = 4, **replace) -> Path:
    """Numeric pixel columns p0..pN (floats in [0, 1]) and a label; `replace` swaps columns."""
    rng = np.random.default_rng(0)
    columns = {f"p{i}": pa.array(rng.random(rows)) for i in range(side * side)}
    columns["label"] = pa.array(np.arange(rows) % 2)
    columns.update(replace)
    pq.write_table(pa.table({k: v for k, v in columns.items() if v is not None}), path)
    return path


def parquet_images(path: Path, images: list[bytes | None], labels: list[int | None] | None = None) -> Path:
    columns = {"image": pa.array(images, pa.binary())}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int64())
    pq.write_table(pa.table(columns), path)
    return path
