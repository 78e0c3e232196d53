"""PNG encoders and writers for the sample shards. Encoders: OpenCV's (what `generate` uses)
against Pillow's per-image path (the reference, what it used before) and imagecodecs', at the same
zlib level, on the same MNIST test images, checking that each decodes to the same pixels. Writers: `AtomicFolder` (names relative to
the open folder, what `generate` uses) against `write_bytes` (full paths), both atomic, into
`--scratch` (a tmpfs such as /dev/shm shows the CPU cost without the disk's writeback).
imagecodecs is not a dependency of the project: install it beside it (`pip install --target DIR
imagecodecs`, then `PYTHONPATH=DIR`) to compare; if it is not installed, that is reported.

    python benchmarks/png_encoders.py [--n 5000] [--scratch DIR]
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vae_model.atomic import AtomicFolder, write_bytes  # noqa: E402
from vae_model.sample_files import PNG_COMPRESS_LEVEL, encode_png  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist" / "raw" / "t10k-images-idx3-ubyte.gz"


def pillow(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[0]).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encoders() -> dict:
    found = {"opencv (project)": encode_png, "pillow (reference)": pillow}
    try:
        import imagecodecs

        found["imagecodecs"] = lambda im: imagecodecs.png_encode(im[0], level=PNG_COMPRESS_LEVEL)
    except ImportError:
        print("imagecodecs: not installed")
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--scratch", type=Path, default=None, help="where the writers write (default: a temp dir)")
    args = parser.parse_args()
    if MNIST.exists():
        images = np.frombuffer(gzip.decompress(MNIST.read_bytes()), np.uint8, offset=16).reshape(-1, 1, 28, 28)[: args.n]
    else:
        images = np.random.default_rng(0).integers(0, 256, (args.n, 1, 28, 28), dtype=np.uint8)
    print(f"{len(images)} images 28x28, zlib level {PNG_COMPRESS_LEVEL}, one thread")
    for name, encode in encoders().items():
        started = time.perf_counter()
        out = [encode(image) for image in images]
        seconds = time.perf_counter() - started
        same = all(np.array_equal(np.asarray(Image.open(io.BytesIO(b))), im[0]) for b, im in zip(out, images, strict=True))
        print(f"{name:18s} {len(images) / seconds:9,.0f} images/s  {np.mean([len(b) for b in out]):5.0f} bytes/image  "
              f"same pixels: {same}")

    data = [encode_png(image) for image in images]
    for name, write in (("AtomicFolder (project)", _folder_writer), ("write_bytes", _path_writer)):
        with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
            started = time.perf_counter()
            write(Path(folder), data)
            print(f"{name:22s} {len(data) / (time.perf_counter() - started):9,.0f} files/s")


def _folder_writer(folder: Path, data: list[bytes]) -> None:
    with AtomicFolder(folder) as writer:
        for i, blob in enumerate(data):
            writer.write(f"{i:09d}.png", blob)


def _path_writer(folder: Path, data: list[bytes]) -> None:
    for i, blob in enumerate(data):
        write_bytes(folder / f"{i:09d}.png", blob)


if __name__ == "__main__":
    main()
