"""Process-wide torch settings (thread count, flushing of subnormal floats), set for a scope only.

Both settings belong to the calling thread and outlive any function that sets them, so a library
that set them bare would change the speed and the bytes of its caller's next computation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def flushing_denormals() -> bool:
    """Whether this thread flushes subnormal floats to zero (torch has no getter for it)."""
    return bool((torch.tensor([1e-39], dtype=torch.float32) * 1.0).item() == 0.0)


@contextlib.contextmanager
def torch_state(threads: int | None = None, flush_denormal: bool | None = None) -> Iterator[None]:
    """Run the block with these settings (None leaves one as it is), then restore the previous ones."""
    previous_threads = torch.get_num_threads()
    previous_flush = flushing_denormals()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if flush_denormal is not None:
            torch.set_flush_denormal(flush_denormal)
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.set_flush_denormal(previous_flush)
