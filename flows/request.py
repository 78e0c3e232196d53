"""An on-demand generation request, from its `SampleRequest` to its manifest, without Prefect.

The Prefect flow (`flows.generate`) and the command's in-process path (`vae-pipeline generate`
with no Prefect API configured) share these steps and `vae_model.generate.make_shard`; they
differ only in what runs the shards. Importing this module never imports Prefect, which with
its temporary server costs a request seconds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows import registered_model, tracking
from vae_model.generate import cores, make_shards, prepare_output, write_manifest
from vae_model.config import SampleRequest
from vae_model.sampling import Request, SamplerSpec

DEFAULT_ROOT = Path("outputs")


@dataclass(frozen=True)
class Planned:
    model: dict[str, Any]
    request: Request
    out: Path

    @property
    def spec(self) -> SamplerSpec:
        return SamplerSpec(**self.model["spec"])


def default_out_dir(request: Request) -> Path:
    """A folder per model version and request, so that two requests never share one:
    outputs/<model>/v<version>/seed<seed>-n<num>-<hash of the whole request>."""
    digest = hashlib.sha256(json.dumps(request.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return DEFAULT_ROOT / request.model_name / f"v{request.model_version}" / f"seed{request.seed}-n{request.num_samples}-{digest}"


def plan(model_uri: str, request: SampleRequest, out_dir: str | None = None, overwrite: bool = False,
         tracking_uri: str | None = None) -> Planned:
    """Resolve the model, resolve the request for it (its labels checked against the model) and
    prepare the output folder (resume or refuse)."""
    tracking.use(tracking_uri)
    model = registered_model.resolve(model_uri)
    spec = SamplerSpec(**model["spec"])
    resolved = Request.of(request, spec.num_classes, model_uri, model["name"], model["version"], spec.class_names)
    out = prepare_output(out_dir if out_dir is not None else default_out_dir(resolved), resolved, overwrite).resolve()
    return Planned(model, resolved, out)


def finish(planned: Planned) -> dict[str, Any]:
    """Write the manifest (last) and say where the request's files are."""
    manifest = write_manifest(planned.out, planned.request, planned.spec.class_names)
    return {"out_dir": str(planned.out), "manifest": str(manifest), "model_version": planned.model["version"],
            "rows": planned.request.num_samples}


def generate_here(model_uri: str, request: SampleRequest, out_dir: str | None = None, **options: Any) -> dict[str, Any]:
    """The whole request in this process (`plan`'s arguments): shards on a thread each, one per core at a time."""
    planned = plan(model_uri, request, out_dir, **options)
    decode = registered_model.load_sampler(planned.model["name"], planned.model["version"])
    make_shards(decode, planned.spec, planned.request, planned.out, cores())
    return finish(planned)
