"""Dataset sources: each returns (train, held-out) ImageData from one kind of input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vae_model.config import DataConfig
from vae_model.data import idx
from vae_model.data.dataset import ImageData, split_by_hash
from vae_model.errors import UserError

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_source(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    """Load the configured source; datasets with an official test split keep it as held-out, the
    others are split row by row on content hashes (`split_by_hash`)."""
    if cfg.kind in ("mnist", "fashion_mnist"):
        train, val = _torchvision_mnist(cfg)
    else:
        loader = {"digits": _digits, "imagefolder": _imagefolder, "parquet": _parquet}[cfg.kind]
        data = loader(cfg).check(num_classes=cfg.num_classes)
        train, val = split_by_hash(data, cfg.val_fraction, cfg.split_seed)
    return train.check(num_classes=cfg.num_classes), val.check(num_classes=cfg.num_classes)


def _digits(cfg: DataConfig) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # The 8x8 images hold counts 0..16; spread them over the usual 0..255 grey levels.
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    return ImageData(images, digits.target.astype(np.int64), "digits")


def _torchvision_mnist(cfg: DataConfig) -> tuple[ImageData, ImageData]:
    from torchvision import datasets

    cls = datasets.MNIST if cfg.kind == "mnist" else datasets.FashionMNIST
    if cfg.path is not None:
        return _local_mnist(cfg, cls)
    download_root = str(Path.home() / ".cache" / "vae-pipeline")
    try:
        splits = [cls(download_root, train=train, download=True) for train in (True, False)]
    except RuntimeError as exc:
        raise UserError(f"{download_root}: {cls.__name__} files failed verification ({exc})") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{download_root}: cannot read {cls.__name__} ({exc})") from None
    name = f"{cfg.kind}:download"
    return tuple(  # type: ignore[return-value]
        ImageData(s.data.numpy()[:, None].copy(), s.targets.numpy().astype(np.int64), name, class_names=_class_names(cls))
        for s in splits
    )


def _class_names(cls) -> tuple[str, ...]:
    # Fashion-MNIST's classes have names ("T-shirt/top", ...); MNIST's digits are their own.
    return () if cls.__name__ == "MNIST" else tuple(cls.classes)


def _local_mnist(cfg: DataConfig, cls) -> tuple[ImageData, ImageData]:
    """Read a folder of the four files, never downloading; the published md5s become a note."""
    source = Path(cfg.path)
    published = {url.rsplit("/", 1)[-1]: md5 for url, md5 in cls.resources}
    found = {name: idx.find(source, name) for name in published}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise UserError(
            f"{source}: missing {', '.join(missing)} (the {cls.__name__} IDX files, gz or uncompressed)"
        )
    name = f"{cfg.kind}:{cfg.path}"
    splits, stored_md5 = [], {}
    for prefix in ("train", "t10k"):
        images, labels, md5s = idx.read_pair(found[f"{prefix}-images-idx3-ubyte.gz"],
                                             found[f"{prefix}-labels-idx1-ubyte.gz"])
        splits.append((images, labels))
        stored_md5.update(md5s)
    differing = [path.name for gz, path in found.items() if stored_md5[path] != published[gz]]
    note = f"md5 of all four files matches the published {cls.__name__} gz files"
    if differing:
        note = (f"md5 differs from the published {cls.__name__} gz files for {', '.join(differing)} (a re-compressed "
                "or uncompressed copy, or other data; its IDX content passed the checks)")
    return tuple(ImageData(x, y, name, notes=(note,), class_names=_class_names(cls)) for x, y in splits)  # type: ignore[return-value]


def _decode(data: bytes | Path, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{where}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def _stack(decoded: list[tuple[Image.Image, str]], cfg: DataConfig, source: str) -> np.ndarray:
    """Stack decoded images into (N, C, H, W); mixed modes or sizes are refused unless converting."""
    if not decoded:
        raise UserError(f"{source}: no images found")
    first = decoded[0][0]
    mode = cfg.mode or ("L" if first.mode in ("1", "L", "LA", "I", "I;16") else "RGB")
    size = tuple(cfg.image_size) if cfg.image_size else first.size
    arrays = []
    for image, where in decoded:
        if (image.mode, image.size) != (first.mode, first.size) and not cfg.convert:
            raise UserError(
                f"{where}: image is {image.mode} {image.size[0]}x{image.size[1]}, expected "
                f"{first.mode} {first.size[0]}x{first.size[1]} like the first image "
                "(set data.convert=true to convert all to one mode and size)"
            )
        image = image.convert(mode)
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return np.stack(arrays)


def _imagefolder(cfg: DataConfig) -> ImageData:
    if cfg.path is None:
        raise UserError("data.path: expected a folder with one subfolder of images per class")
    root = Path(cfg.path)
    if not root.is_dir():
        raise UserError(f"{root}: expected a folder with one subfolder of images per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"{root}: no class subfolders found")
    decoded, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).iterdir()):
            if file.name.startswith(".") or not file.is_file():
                continue
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                raise UserError(f"{file}: not an image file (expected one of {', '.join(sorted(_IMAGE_SUFFIXES))})")
            decoded.append((_decode(file, str(file)), str(file)))
            labels.append(label)
    images = _stack(decoded, cfg, str(root))
    return ImageData(images, np.asarray(labels, dtype=np.int64), f"imagefolder:{root}", class_names=tuple(classes)).check()


def _parquet(cfg: DataConfig) -> ImageData:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if cfg.path is None:
        raise UserError("data.path: expected a Parquet file")
    path = Path(cfg.path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"{path}: not a readable Parquet file ({exc})") from None
    if table.num_rows == 0:
        raise UserError(f"{path}: the table is empty")
    labels, names = None, ()
    if cfg.label_column in table.column_names:
        labels, names = _labels(table.column(cfg.label_column), path, cfg.label_column)
        table = table.drop_columns([cfg.label_column])
    if cfg.image_column in table.column_names:
        column = table.column(cfg.image_column)
        if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
            raise UserError(f"{path}: column '{cfg.image_column}' is {column.type}, expected binary PNG/JPEG bytes")
        decoded = []
        for row, value in enumerate(column.to_pylist()):
            where = f"{path}: row {row}, column '{cfg.image_column}'"
            if value is None:
                raise UserError(f"{where}: missing image")
            decoded.append((_decode(value, where), where))
        images = _stack(decoded, cfg, str(path))
    else:
        images = _pixel_columns(table, path, cfg)
    return ImageData(images, labels, f"parquet:{path}", class_names=names).check()


def _labels(column, path: Path, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels as they are; class names (strings) numbered in sorted order, as an image
    folder's class folders are."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if not (pa.types.is_integer(column.type) or text):
        raise UserError(f"{path}: column '{name}' is {column.type}, expected integer class labels or class names (strings)")
    if column.null_count:
        row = column.to_pylist().index(None)
        raise UserError(f"{path}: row {row}, column '{name}': missing label")
    if not text:
        return column.to_numpy().astype(np.int64), ()
    names = sorted(pc.unique(column).to_pylist())
    return pc.index_in(column, value_set=pa.array(names, column.type)).to_numpy().astype(np.int64), tuple(names)


def _pixel_columns(table, path: Path, cfg: DataConfig) -> np.ndarray:
    import pyarrow as pa

    if table.num_columns == 0:
        raise UserError(f"{path}: no '{cfg.image_column}' column and no pixel columns")
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise UserError(
                f"{path}: column '{name}' is {column.type}, expected numeric pixels "
                f"(or a binary '{cfg.image_column}' column of PNG/JPEG bytes)"
            )
    pixels = np.column_stack([c.to_numpy(zero_copy_only=False).astype(np.float64) for c in table.columns])
    bad = ~np.isfinite(pixels)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise UserError(f"{path}: row {row}, column '{table.column_names[col]}': {pixels[row, col]} is not a finite number")
    high = 1.0 if pixels.max() <= 1.0 and any(pa.types.is_floating(c.type) for c in table.columns) else 255.0
    if pixels.min() < 0 or pixels.max() > high:
        row, col = map(int, np.argwhere((pixels < 0) | (pixels > high))[0])
        raise UserError(f"{path}: row {row}, column '{table.column_names[col]}': {pixels[row, col]} is outside 0..{high:g}")
    d = pixels.shape[1]
    if cfg.image_size:
        w, h = cfg.image_size
    else:
        side = int(round(d**0.5))
        if side * side != d:
            raise UserError(f"{path}: {d} pixel columns is not a square image; set data.image_size=[W, H]")
        w = h = side
    channels = d // (w * h)
    if channels * w * h != d or channels not in (1, 3):
        raise UserError(f"{path}: {d} pixel columns do not fit data.image_size {w}x{h} with 1 or 3 channels")
    return np.rint(pixels * (255.0 / high)).astype(np.uint8).reshape(-1, channels, h, w)
