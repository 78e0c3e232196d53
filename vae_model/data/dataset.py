"""The in-memory image dataset every source is turned into, and its checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from vae_model.errors import UserError


@dataclass(frozen=True)
class ImageData:
    """uint8 images shaped (N, C, H, W) with optional int64 labels in [0, num_classes)."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    # Facts about the input worth recording but not refusing, e.g. a file that is not the published one.
    notes: tuple[str, ...] = ()
    # The name of each label (an image folder's class folders); empty: the labels are their own names.
    class_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        if self.class_names:
            return len(self.class_names)  # a named class may be absent from one split
        return 0 if self.labels is None else int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> ImageData:
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, self.source, self.notes, self.class_names)

    def check(self, min_examples: int = 1, num_classes: int | None = None) -> ImageData:
        """Raise a UserError naming the source when the arrays are not a usable image dataset."""
        x = self.images
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"{self.source}: expected images shaped (N, 1 or 3, H, W), got {x.shape}")
        if x.dtype != np.uint8:
            raise UserError(f"{self.source}: expected uint8 pixels, got {x.dtype}")
        if len(x) < min_examples:
            raise UserError(
                f"{self.source}: {len(x)} example(s), expected at least {min_examples}"
            )
        if self.labels is not None:
            y = self.labels
            if y.shape != (len(x),):
                raise UserError(f"{self.source}: {len(y)} labels for {len(x)} images")
            if len(y) and y.min() < 0:
                row = int(np.argmin(y))
                raise UserError(f"{self.source}: row {row}: label {y[row]} is negative")
            if self.class_names and len(y) and y.max() >= len(self.class_names):
                raise UserError(f"{self.source}: label {y.max()} has no name among {len(self.class_names)} class names")
            if num_classes is not None and len(y) and y.max() >= num_classes:
                row = int(np.argmax(y))
                raise UserError(
                    f"{self.source}: row {row}: label {y[row]} is outside 0..{num_classes - 1} (data.num_classes)"
                )
        return self


def split_by_seed(data: ImageData, val_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Shuffle with `seed` and hold out `val_fraction` of the examples (at least one each side)."""
    data.check(min_examples=2)
    n = len(data)
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))


def row_hashes(data: ImageData) -> np.ndarray:
    """sha256 of each row's shape, label (-1 when unlabelled) and pixels, shaped (N, 32) uint8: the
    row's identity in any snapshot, whatever its position, so exact duplicates share it."""
    images = np.ascontiguousarray(data.images)
    labels = (data.labels if data.labels is not None else np.full(len(images), -1)).astype("<i8")
    shape = repr(data.shape).encode()
    out = np.empty((len(images), 32), np.uint8)
    for i in range(len(images)):
        out[i] = np.frombuffer(hashlib.sha256(shape + labels[i].tobytes() + images[i].tobytes()).digest(), np.uint8)
    return out


def split_by_hash(data: ImageData, val_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
    """Hold out the rows whose content hash, salted with `seed`, falls below `val_fraction`.

    A row's side depends on the row alone, so rows keep their split as a dataset grows and a
    model's held-out rows stay unseen by it in the next snapshot. When the hashes put every row on
    one side, the row with the lowest (or highest) hash crosses over."""
    data.check(min_examples=2)
    salt = seed.to_bytes(16, "little", signed=True)
    draws = np.array([int.from_bytes(hashlib.sha256(salt + row.tobytes()).digest()[:8], "little")
                      for row in row_hashes(data)], dtype=np.float64) / 2.0**64
    val = draws < val_fraction
    if not val.any():
        val[np.argmin(draws)] = True
    if val.all():
        val[np.argmax(draws)] = False
    return data.subset(np.flatnonzero(~val)), data.subset(np.flatnonzero(val))
