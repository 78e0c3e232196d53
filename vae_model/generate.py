"""Writing a request's samples to files: streamed, resumable shards, manifest last.

The draws come from `vae_model.sampling`. A shard is made by one thread, block after block, so
memory holds a few blocks, never a shard or the request; cores are used by making shards side by
side. Each finished shard leaves a record under `.shards/`; a rerun of the same request skips
recorded shards, and `manifest.json` is written last, when every shard is recorded.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Collection, Iterator
from concurrent.futures import (
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from pathlib import Path
from typing import Any

from vae_model import sampling
from vae_model.atomic import sha256_file, write_json
from vae_model.config import EvaluateConfig, GenerateConfig
from vae_model.errors import UserError
from vae_model.model import VAE, Sampler
from vae_model.own_files import remove_own_files
from vae_model.sample_files import parquet_shard, save_preview, write_pngs
from vae_model.sampling import (
    Decoder,
    Request,
    SamplerSpec,
    draw_shard,
    num_shards,
    one_torch_thread,
    parse_labels,
    shard_rows,
)

UNLABELLED = "unlabelled"
# PNG blocks of one shard queued or being written while it decodes the next: enough to keep
# every writer process busy when one shard is left, few enough to bound memory.
PNG_BLOCKS_IN_FLIGHT = 2

def _exit_with_parent(parent: int) -> None:
    """A PNG worker whose generating process was killed stops at once, instead of writing on
    into a directory that a rerun may already be filling."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


# The pool `png_writers` opened: shards made inside its block hand it their PNG blocks.
_pool: ProcessPoolExecutor | None = None


@contextlib.contextmanager
def png_writers(workers: int) -> Iterator[None]:
    """Processes that encode and write the PNG blocks of the shards made inside the block, shut
    down when it ends. Pillow's per-image work holds the GIL, so threads would not run it side
    by side. Outside the block, and in a daemonic Dask worker (which may have no children: the
    cluster's processes are the parallelism there), a shard writes its own PNGs.

    Forked, not spawned: a spawned worker would re-import the caller's main module (the CLI,
    hence torch and MLflow) and start seconds later with its own gigabyte. Open it before the
    shard threads start: the workers run only numpy, Pillow and file calls, never torch.
    """
    global _pool
    if _pool is not None or multiprocessing.current_process().daemon:
        yield
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    pool.submit(int).result()  # with fork, the first task starts every worker
    _pool = pool
    try:
        yield
    finally:
        _pool = None
        pool.shutdown(wait=True, cancel_futures=True)


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
    `png_writers` when it is open, at most `PNG_BLOCKS_IN_FLIGHT` at a time. Memory holds a few blocks, never the
    shard. More cores: make several shards at once (`make_shards`, or a task runner).
    """
    if (record := _finished(out, shard)) is not None:
        return record
    start, n = shard_rows(request, shard)
    parquet_path = out / f"part-{shard:05d}.parquet"
    pngs: list[dict[str, Any]] = []
    pending: deque[Future] = deque()
    preview = None
    pngs_pool = _pool if "png" in request.formats else None
    with one_torch_thread(), contextlib.ExitStack() as stack:
        stack.callback(_abandon, pending)
        write_rows = None
        if "parquet" in request.formats:
            write_rows = stack.enter_context(parquet_shard(parquet_path, spec.channels * spec.height * spec.width, request,
                                                           start, spec.class_names))
        for ids, images, labels in draw_shard(decode, spec, request, shard):
            if write_rows is not None:
                write_rows(images, labels, ids)
            if "png" in request.formats:
                folders = [UNLABELLED] * len(ids) if labels is None else [str(v) for v in labels.tolist()]
                if pngs_pool is None:
                    pngs.extend(write_pngs(out, images, folders, ids))
                else:
                    pending.append(pngs_pool.submit(write_pngs, out, images, folders, ids))
                if len(pending) > PNG_BLOCKS_IN_FLIGHT:
                    pngs.extend(pending.popleft().result())
            if shard == 0 and ids[0] == 0:
                preview = save_preview(out / "preview.png", images, labels, spec.class_names)
        while pending:
            pngs.extend(pending.popleft().result())
    files: list[dict[str, Any]] = []
    if write_rows is not None:
        files.append({"path": parquet_path.name, "rows": n, "sha256": sha256_file(parquet_path)})
    files.extend(pngs)
    if preview is not None:
        files.append({"path": "preview.png", "rows": preview, "sha256": sha256_file(out / "preview.png")})
    record = {"shard": shard, "rows": n, "files": files}
    write_json(_record_path(out, shard), record, indent=None)
    return record


def _abandon(pending: Collection[Future]) -> None:
    """After a failure: drop the work not started (PNG blocks, shards) and wait for what runs."""
    for future in pending:
        future.cancel()
    wait(pending)


def make_shards(decode: Decoder, spec: SamplerSpec, request: Request, out: Path, workers: int | None = None) -> None:
    """Every shard of the request, `workers` at a time (default: one per core)."""
    workers = workers or cores()
    writers = png_writers(cores()) if "png" in request.formats else contextlib.nullcontext()
    with writers, ThreadPoolExecutor(workers, thread_name_prefix="shard") as pool:
        futures = [pool.submit(make_shard, decode, spec, request, i, out) for i in range(num_shards(request))]
        try:
            for future in futures:
                future.result()
        except BaseException:
            # A failed shard, Ctrl-C or SIGTERM: the shards not started are left to a rerun, and
            # only those being made are waited for (the pool's exit would make every one).
            _abandon(futures)
            raise


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
    out = prepare_output(out_dir, request, overwrite=True)
    make_shards(Sampler.of(model), SamplerSpec.of(model.cfg), request, out)
    write_manifest(out, request, model.cfg.class_names)
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
            raise UserError(f"{out}: not empty and holds another request's output; replace it with overwrite=true (--overwrite), or choose another folder")
        # Same request: only the temporary files of a killed run go, their shards are made again.
        remove_own_files(out, temporary_only=previous == request.to_dict())
    try:
        (out / ".shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the output directory ({exc.strerror})") from None
    if not record.exists():
        write_json(record, request.to_dict())
    return out


def write_manifest(out: Path, request: Request, class_names: tuple[str, ...] = ()) -> Path:
    """Gather the shard records into `manifest.json`, written last: its presence says the request
    is complete. `class_names`: the name of each label, where the model's classes have names."""
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
        "decode_block": sampling.DECODE_BLOCK,
        **({"class_names": list(class_names)} if class_names else {}),
        "files": files,
    }
    write_json(out / "manifest.json", manifest, indent=None)
    return out / "manifest.json"
