"""Step 5, and the on-demand flow: sample a registered model into Parquet and PNG shards.

Shards are mapped Prefect tasks, each made by one thread on one core. By default they run in
this process, one per core at a time (the command runs the same steps without Prefect:
`flows.request`); with `dask_address` they run on that Dask cluster, and
with `dask_workers` on a local cluster of that many single-threaded worker processes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import mlflow
from prefect import flow, task, unmapped
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows import registered_model, tracking
from flows.request import finish, plan
from flows.retry import network
from vae_model.config import SampleRequest
from vae_model.errors import UserError
from vae_model.generate import cores, make_shard, png_writers
from vae_model.sampling import Request, SamplerSpec, num_shards


# No task timeout: shards run in worker threads, where Prefect cannot interrupt a blocked call;
# the flow's own timeout (main thread) bounds a hung request instead.
@task(name="generate-shard", **network(timeout_s=None))
def generate_shard(model: dict[str, Any], request: dict[str, Any], shard: int, out_dir: str, tracking_uri: str) -> dict[str, int]:
    """Sample one shard and write its files; a finished shard is kept as it is."""
    tracking.use(tracking_uri)
    decode = registered_model.load_sampler(model["name"], model["version"])
    record = make_shard(decode, SamplerSpec(**model["spec"]), Request.from_dict(request), shard, Path(out_dir))
    return {"shard": shard, "rows": record["rows"], "files": len(record["files"])}


def shard_runner(dask_address: str | None, dask_workers: int) -> TaskRunner:
    """Where the shard tasks run: this process, an existing Dask cluster or a local one."""
    if dask_address and dask_workers:
        raise UserError("generate.dask_address and generate.dask_workers: set one or the other, not both")
    if dask_workers < 0:
        raise UserError(f"generate.dask_workers: expected 0 (no Dask) or more, got {dask_workers}")
    if not dask_address and not dask_workers:
        return ThreadPoolTaskRunner(max_workers=cores())
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    # One thread per worker process: a shard uses one core.
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": dask_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None,
    })


def _connect(runner: TaskRunner, dask_address: str | None) -> None:
    if dask_address is None:
        return
    try:
        runner.client  # noqa: B018  (connects now, so that a wrong address fails here, named)
    except OSError as exc:
        raise UserError(f"generate.dask_address {dask_address}: no Dask scheduler answers ({exc})") from None


@flow(name="generate", task_runner=ThreadPoolTaskRunner(max_workers=1), timeout_seconds=4 * 3600)
def generate(
    model_uri: str,
    request: SampleRequest = SampleRequest(),  # noqa: B008 (read, never changed)
    out_dir: str | None = None,
    overwrite: bool = False,
    tracking_uri: str | None = None,
    dask_address: str | None = None,
    dask_workers: int = 0,
) -> dict[str, Any]:
    """Generate `request` from a registered model into `out_dir` (default: a folder per model
    version and request, `flows.request.default_out_dir`), manifest last; returns the folder."""
    runner = shard_runner(dask_address, dask_workers)
    planned = plan(model_uri, request, out_dir, overwrite=overwrite, tracking_uri=tracking_uri)
    # Workers in other processes (Dask) must find the same store, whatever their working directory.
    store = mlflow.get_tracking_uri()
    parameters = {
        "model": unmapped(planned.model), "request": unmapped(planned.request.to_dict()),
        "shard": range(num_shards(planned.request)), "out_dir": unmapped(str(planned.out)), "tracking_uri": unmapped(store),
    }
    local_pngs = "png" in planned.request.formats and not (dask_address or dask_workers)
    # Opened before the shard threads exist: forked beside no thread running torch.
    with png_writers(cores()) if local_pngs else contextlib.nullcontext(), runner:
        _connect(runner, dask_address)
        runner.map(generate_shard, parameters).result()
    return finish(planned)
