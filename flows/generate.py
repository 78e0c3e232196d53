"""Step 5, and the on-demand flow: sample a registered model into Parquet and PNG shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from flows import registry, tracking
from vae_model.generate import (
    Request, SamplerSpec, make_shard, num_shards, parse_labels, prepare_output, write_manifest,
)


@task(name="generate-shard")
def generate_shard(model: dict[str, Any], request: dict[str, Any], shard: int, out_dir: str, tracking_uri: str | None) -> dict[str, Any]:
    """Sample one shard and write its files; a finished shard is kept as it is."""
    tracking.use({"uri": tracking_uri})
    decode = registry.load_sampler(model["name"], model["version"])
    return make_shard(decode, SamplerSpec(**model["spec"]), Request(**request), shard, Path(out_dir))


@flow(name="generate", task_runner=ThreadPoolTaskRunner(max_workers=1))
def generate(
    model_uri: str,
    num_samples: int,
    out_dir: str,
    seed: int = 0,
    formats: list[str] | None = None,
    labels: str | None = None,
    shard_size: int = 65536,
    overwrite: bool = False,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Generate `num_samples` from a registered model into `out_dir`, manifest last."""
    tracking.use({"uri": tracking_uri})
    model = registry.resolve(model_uri)
    label_spec, proportions = parse_labels(labels, model["spec"]["num_classes"])
    request = Request(
        num_samples=num_samples, seed=seed, model_uri=model_uri, model_name=model["name"],
        model_version=model["version"], formats=tuple(sorted(set(formats or ["parquet", "png"]))),
        shard_size=shard_size, labels=label_spec, labels_are_proportions=proportions,
    )
    out = prepare_output(out_dir, request, overwrite)
    futures = generate_shard.map(
        unmapped(model), unmapped(request.to_dict()), range(num_shards(request)), unmapped(str(out)), unmapped(tracking_uri)
    )
    manifest = write_manifest(out, request, futures.result())
    return {"out_dir": str(out), "manifest": str(manifest), "model_version": model["version"], "rows": num_samples}
