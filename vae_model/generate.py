"""Sampling from the prior into shards: deterministic, streamed to disk, resumable.

A request is split into fixed-size shards and each shard into blocks of `DECODE_BLOCK` rows.
Shard i draws its latent codes (and labels), block after block, from a generator seeded by
(seed, i) alone, and is decoded in batches of `DECODE_BATCH` rows by single-threaded matmuls,
so a shard's bytes depend only on the model, the seed and i: shards can be made in any order,
in any process, on any number of cores (of one CPU architecture: BLAS kernels differ between
instruction sets).
A shard is made by one thread, block after block, so memory holds a few blocks, never a shard
or the request; cores are used by making shards side by side. Each finished shard leaves a
record under `.shards/`; a rerun of the same request skips recorded shards, and
`manifest.json` is written last, when every shard is recorded.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vae_model import __version__
from vae_model.atomic import sha256_file, write_json
from vae_model.config import EvaluateConfig, GenerateConfig
from vae_model.errors import UserError
from vae_model.model import VAE, Sampler, sampler_input
from vae_model.own_files import remove_own_files
from vae_model.sample_files import parquet_shard, save_preview, write_pngs
from vae_model.torch_state import torch_state

Decoder = Callable[[torch.Tensor], torch.Tensor]
UNLABELLED = "unlabelled"
# Rows per decoder call. Part of what defines the output: the batch shape picks the BLAS kernel,
# so another size may change the last bit of some pixels. Small enough that a call's float
# activations (a few MB for 784 pixels) stay in cache-sized, reused allocations.
DECODE_BATCH = 512
# Rows decoded at a time by a shard, and per Parquet row group.
DECODE_BLOCK = 4096
# PNG blocks of one shard queued or being written while it decodes the next: enough to keep
# every writer process busy when one shard is left, few enough to bound memory.
PNG_BLOCKS_IN_FLIGHT = 2


@dataclass(frozen=True)
class SamplerSpec:
    """What a registered sampler takes and gives: z (plus one-hot labels) in, pixels out."""

    latent_dim: int
    channels: int
    height: int
    width: int
    num_classes: int = 0


def check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{name}: expected a positive number, got {value}")


@dataclass(frozen=True)
class Request:
    num_samples: int
    seed: int
    model_uri: str
    model_name: str
    model_version: str
    formats: tuple[str, ...] = ("parquet", "png")
    shard_size: int = 65536
    labels: tuple[float, ...] | None = None
    labels_are_proportions: bool = False
    # Scales the prior's noise: below 1 trades diversity for fidelity, above 1 the reverse.
    temperature: float = 1.0
    tool_version: str = field(default=__version__)

    def __post_init__(self) -> None:
        check_positive("--num-samples", self.num_samples)
        check_positive("generate.shard_size", self.shard_size)
        if not self.temperature > 0:
            raise UserError(f"generate.temperature: expected a positive number, got {self.temperature}")
        unknown = set(self.formats) - {"parquet", "png"}
        if unknown or not self.formats:
            raise UserError(f"--format: expected parquet and/or png, got {','.join(self.formats) or 'nothing'}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        labels = data.get("labels")
        return cls(**{**data, "formats": tuple(data["formats"]), "labels": None if labels is None else tuple(labels)})


def parse_labels(text: str | None, num_classes: int) -> tuple[tuple[float, ...] | None, bool]:
    """`3` or `0,1,2` (cycled) or `0:0.5,1:0.5` (proportions over classes)."""
    if text is None or text == "":
        if num_classes:
            return tuple(range(num_classes)), False
        return None, False
    if not num_classes:
        raise UserError("--labels: this model is not conditional, it takes no labels")
    try:
        if ":" in text:
            weights = [0.0] * num_classes
            for item in text.split(","):
                label, weight = item.split(":")
                weights[_label(label, num_classes)] = float(weight)
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError
            return tuple(w / sum(weights) for w in weights), True
        return tuple(float(_label(item, num_classes)) for item in text.split(",")), False
    except ValueError:
        raise UserError(
            f"--labels {text!r}: expected a label, a list such as 0,1,2 or proportions such as 0:0.7,1:0.3"
        ) from None


def _label(text: str, num_classes: int) -> int:
    value = int(text)
    if not 0 <= value < num_classes:
        raise UserError(f"--labels: label {value} is outside 0..{num_classes - 1}")
    return value


def shard_generator(seed: int, shard: int) -> torch.Generator:
    # SeedSequence mixes (seed, shard) so nearby seeds and shards give unrelated streams.
    state = np.random.SeedSequence([seed, shard]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def shard_rows(request: Request, shard: int) -> tuple[int, int]:
    start = shard * request.shard_size
    return start, min(request.shard_size, request.num_samples - start)


def num_shards(request: Request) -> int:
    return -(-request.num_samples // request.shard_size)


def shard_blocks(spec: SamplerSpec, request: Request, shard: int) -> Iterator[tuple[np.ndarray, torch.Tensor, np.ndarray | None]]:
    """(sample ids, sampler input, labels) of each block of one shard, drawn in order. The input
    is what `vae_model.model.Sampler` takes: noise times the temperature, the uniform number
    that picks the prior's component, and the one-hot label."""
    start, n = shard_rows(request, shard)
    generator = shard_generator(request.seed, shard)
    for offset in range(0, n, DECODE_BLOCK):
        rows = min(DECODE_BLOCK, n - offset)
        ids = np.arange(start + offset, start + offset + rows, dtype=np.int64)
        noise = torch.randn(rows, spec.latent_dim, generator=generator).mul_(request.temperature)
        labels = _draw_labels(request, ids, generator) if spec.num_classes else None
        uniform = torch.rand(rows, 1, generator=generator)
        yield ids, sampler_input(noise, uniform, labels, spec.num_classes), labels


def _draw_labels(request: Request, ids: np.ndarray, generator: torch.Generator) -> np.ndarray:
    assert request.labels is not None
    if request.labels_are_proportions:
        weights = torch.tensor(request.labels, dtype=torch.float64)
        return torch.multinomial(weights, len(ids), replacement=True, generator=generator).numpy()
    cycle = np.asarray(request.labels, dtype=np.int64)
    return cycle[ids % len(cycle)]


def decode_block(decode: Decoder, spec: SamplerSpec, z: torch.Tensor) -> np.ndarray:
    """uint8 images (n, C, H, W) of one block. Call it under `one_torch_thread`."""
    images = np.empty((len(z), spec.channels, spec.height, spec.width), np.uint8)
    flat = torch.from_numpy(images).view(len(z), -1)
    with torch.inference_mode():
        for start in range(0, len(z), DECODE_BATCH):
            pixels = decode(z[start : start + DECODE_BATCH].clone()).float()
            # Pixel means are in [0, 1], so 255·p rounds to 0..255 and the cast to uint8 is exact.
            flat[start : start + DECODE_BATCH].copy_(pixels.mul_(255).round_())
    return images


def one_torch_thread() -> contextlib.AbstractContextManager[None]:
    """torch on the calling thread alone, so that the bytes do not depend on the core count.
    The setting is the thread's own: shards made side by side, each on its thread, use one core each.
    Threads inherit their creator's denormal mode (training turns flushing on): fix it here."""
    return torch_state(threads=1, flush_denormal=True)


def _exit_with_parent(parent: int) -> None:
    """A PNG worker whose generating process was killed stops at once, instead of writing on
    into a directory that a rerun may already be filling."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


_PNG_POOLS: dict[int, ProcessPoolExecutor] = {}
_PNG_POOLS_LOCK = threading.Lock()


def png_pool(workers: int) -> Executor | None:
    """This process's pool of PNG-writing processes, or None where it may have no children (a
    daemonic Dask worker: there the cluster's processes are the parallelism).

    One pool per process, reused by every shard. Forked, not spawned: a spawned worker would
    re-import the caller's main module (the CLI, hence torch, Prefect and MLflow) and start
    seconds later with its own gigabyte. The workers run only numpy, Pillow and file calls,
    never torch, so the parent's threads do not matter to them.
    """
    if multiprocessing.current_process().daemon:
        return None
    with _PNG_POOLS_LOCK:
        if workers not in _PNG_POOLS:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_exit_with_parent, initargs=(os.getpid(),))
            pool.submit(int).result()  # with fork, the first task starts every worker
            _PNG_POOLS[workers] = pool
        return _PNG_POOLS[workers]


def _written(pool: Executor, future: Future) -> list[dict[str, Any]]:
    try:
        return future.result()
    except BrokenProcessPool:
        # A worker died (killed, out of memory): this shard fails, the next one starts a new pool.
        with _PNG_POOLS_LOCK:
            for key in [k for k, v in _PNG_POOLS.items() if v is pool]:
                del _PNG_POOLS[key]
        raise


def cores() -> int:
    """The CPUs this process may run on (taskset, cpusets), not the machine's."""
    return len(os.sched_getaffinity(0))


def _record_path(out: Path, shard: int) -> Path:
    return out / ".shards" / f"part-{shard:05d}.json"


def _finished(out: Path, shard: int) -> dict[str, Any] | None:
    """The record of a finished shard whose files are all still there, else None."""
    path = _record_path(out, shard)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return record if all((out / f["path"]).exists() for f in record["files"]) else None


def make_shard(decode: Decoder, spec: SamplerSpec, request: Request, shard: int, out: Path) -> dict[str, Any]:
    """Write one shard's files unless its record exists; return the record.

    The calling thread decodes on one core and writes the Parquet row groups; PNG blocks go to
    `png_pool`, at most `PNG_BLOCKS_IN_FLIGHT` at a time. Memory holds a few blocks, never the
    shard. More cores: make several shards at once (`make_shards`, or a task runner).
    """
    if (record := _finished(out, shard)) is not None:
        return record
    start, n = shard_rows(request, shard)
    parquet_path = out / f"part-{shard:05d}.parquet"
    pngs: list[dict[str, Any]] = []
    pending: deque[Future] = deque()
    preview = None
    pngs_pool = png_pool(cores()) if "png" in request.formats else None
    with one_torch_thread(), contextlib.ExitStack() as stack:
        stack.callback(_abandon, pending)
        write_rows = None
        if "parquet" in request.formats:
            write_rows = stack.enter_context(parquet_shard(parquet_path, spec.channels * spec.height * spec.width, request, start))
        for ids, z, labels in shard_blocks(spec, request, shard):
            images = decode_block(decode, spec, z)
            if write_rows is not None:
                write_rows(images, labels, ids)
            if "png" in request.formats:
                folders = [UNLABELLED] * len(ids) if labels is None else [str(v) for v in labels.tolist()]
                if pngs_pool is None:
                    pngs.extend(write_pngs(out, images, folders, ids))
                else:
                    pending.append(pngs_pool.submit(write_pngs, out, images, folders, ids))
                if len(pending) > PNG_BLOCKS_IN_FLIGHT:
                    pngs.extend(_written(pngs_pool, pending.popleft()))
            if shard == 0 and ids[0] == 0:
                preview = save_preview(out / "preview.png", images, labels)
        while pending:
            pngs.extend(_written(pngs_pool, pending.popleft()))
    files: list[dict[str, Any]] = []
    if write_rows is not None:
        files.append({"path": parquet_path.name, "rows": n, "sha256": sha256_file(parquet_path)})
    files.extend(pngs)
    if preview is not None:
        files.append({"path": "preview.png", "rows": preview, "sha256": sha256_file(out / "preview.png")})
    record = {"shard": shard, "rows": n, "files": files}
    write_json(_record_path(out, shard), record, indent=None)
    return record


def _abandon(pending: deque[Future]) -> None:
    """After a failure: drop the PNG blocks not started and wait for those being written."""
    for future in pending:
        future.cancel()
    wait(pending)


def make_shards(decode: Decoder, spec: SamplerSpec, request: Request, out: Path, workers: int | None = None) -> None:
    """Every shard of the request, `workers` at a time (default: one per core)."""
    workers = workers or cores()
    if "png" in request.formats:
        png_pool(cores())  # forked before the shard threads exist, not beside one running torch
    with ThreadPoolExecutor(workers, thread_name_prefix="shard") as pool:
        for future in [pool.submit(make_shard, decode, spec, request, i, out) for i in range(num_shards(request))]:
            future.result()


def evaluation_request(model: VAE, generate: GenerateConfig, evaluate: EvaluateConfig,
                       model_uri: str, model_name: str, model_version: str) -> Request:
    """What the evaluate step draws from a trained model: the generate settings, at most
    `evaluate.max_samples` samples, labels cycled through the classes, Parquet only."""
    labels, proportions = parse_labels(None, model.cfg.num_classes)
    return Request(
        num_samples=min(generate.num_samples, evaluate.max_samples), seed=generate.seed,
        model_uri=model_uri, model_name=model_name, model_version=model_version, formats=("parquet",),
        shard_size=generate.shard_size, labels=labels, labels_are_proportions=proportions,
        temperature=generate.temperature,
    )


def sample_model(model: VAE, request: Request, out_dir: str | Path) -> Path:
    """Every shard and the manifest of `request` from a trained, not necessarily registered,
    `vae_model.model.VAE`: the same draws `generate` makes from its registered version."""
    m = model.cfg
    out = prepare_output(out_dir, request, overwrite=True)
    make_shards(Sampler.of(model), SamplerSpec(m.latent_dim, m.channels, m.height, m.width, m.num_classes), request, out)
    write_manifest(out, request)
    return out


# Keys that mark a `request.json` or `manifest.json` as this tool's.
MARKER_KEYS = frozenset({"model_uri", "model_name", "model_version", "num_samples", "seed", "shard_size", "tool_version"})


def previous_request(out: Path) -> dict[str, Any] | None:
    """The request whose output `out` holds, from `.shards/request.json` or else `manifest.json`;
    None when neither is this tool's (the folder is someone else's)."""
    for path, extra in ((out / ".shards" / "request.json", set()), (out / "manifest.json", {"files", "shards"})):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(data, dict) and MARKER_KEYS | extra <= data.keys():
            return {key: data.get(key) for key in Request.__dataclass_fields__}
    return None


def prepare_output(out_dir: str | Path, request: Request, overwrite: bool) -> Path:
    """Create or reuse `out_dir`: the same request resumes; another request's output is refused,
    or with `overwrite` its files (and only they) are deleted; any other non-empty folder is refused."""
    out = Path(out_dir)
    record = out / ".shards" / "request.json"
    if out.is_dir() and any(out.iterdir()):
        previous = previous_request(out)
        if previous is None:
            raise UserError(f"{out}: not empty and not an output of vae-pipeline generate; choose a new or empty folder")
        if previous != request.to_dict() and not overwrite:
            raise UserError(f"{out}: not empty and holds another request's output; pass --overwrite to replace it, or choose another folder")
        # Same request: only the temporary files of a killed run go, their shards are made again.
        remove_own_files(out, temporary_only=previous == request.to_dict())
    try:
        (out / ".shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the output directory ({exc.strerror})") from None
    if not record.exists():
        write_json(record, request.to_dict())
    return out


def write_manifest(out: Path, request: Request) -> Path:
    """Gather the shard records into `manifest.json`, written last: its presence says the request is complete."""
    files: list[dict[str, Any]] = []
    missing = []
    for shard in range(num_shards(request)):
        path = _record_path(out, shard)
        if not path.exists():
            missing.append(shard)
            continue
        files.extend(json.loads(path.read_text())["files"])
    if missing:
        raise RuntimeError(f"{out}: shards {missing[:5]} are not finished")
    manifest = {
        **request.to_dict(),
        "rows": request.num_samples,
        "shards": num_shards(request),
        "decode_block": DECODE_BLOCK,
        "files": files,
    }
    write_json(out / "manifest.json", manifest, indent=None)
    return out / "manifest.json"
