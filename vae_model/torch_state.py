"""Process-wide torch settings (thread count, flushing of subnormal floats, the global random
generator), set for a scope only.

The thread count and denormal mode belong to the calling thread, the generator to the process;
each outlives any function that sets it, so a library that set them bare would change the speed
and the bytes of its caller's next computation."""

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


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded with `seed`, then give the caller
    back its own stream: for what can only draw from the global generator, such as the initial
    weights of modules built on the CPU. Other devices' generators are not touched."""
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        yield
