"""The registered model, logged from this file (MLflow models from code, no pickle): a request
in, its samples out, the very draws `vae-pipeline generate` writes for the same request.

Input: one row per request, the fields of `vae_model.config.SampleRequest` as columns, its
defaults for those left out: `num_samples` (required), `seed`, `labels` ("3", "0,1,2" or
"0:0.7,1:0.3", by number or by the model's class names), `temperature` and `shard_size` (part of what defines the draws). Output: a row
per sample, `request` (the input row), `sample_id`, `label` (null for an unconditional model),
`label_name` (its class name; null where the classes have no names) and `pixels` (uint8, C*H*W). The weights are the artifact `weights.pt` (vae_model.weights), read with
`weights_only=True`; the package `vae_model` must be importable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from pydantic import ValidationError

from vae_model.config import SampleRequest
from vae_model.errors import UserError
from vae_model.weights import load_sampler
from vae_model.sampling import (
    Request,
    SamplerSpec,
    draw_shard,
    num_shards,
    one_torch_thread,
)


class SampleRequests(PythonModel):
    def load_context(self, context) -> None:
        # "sampler": the decoder-and-prior file of versions logged before the one weights layout.
        path = context.artifacts.get("weights") or context.artifacts["sampler"]
        self.decode = load_sampler(path)
        self.spec = SamplerSpec.of(self.decode.cfg)

    def request(self, row: dict) -> Request:
        # A column a row leaves empty (null, or NaN where other rows fill it) takes its default.
        given = {k: v for k, v in row.items() if not (v is None or (isinstance(v, float) and np.isnan(v)))}
        if "num_samples" not in given:
            raise KeyError("num_samples")
        return Request.of(SampleRequest(**given), self.spec.num_classes, class_names=self.spec.class_names)

    def samples(self, request: Request) -> pd.DataFrame:
        with one_torch_thread():
            blocks = [b for shard in range(num_shards(request)) for b in draw_shard(self.decode, self.spec, request, shard)]
        images = np.concatenate([images for _, images, _ in blocks]).reshape(request.num_samples, -1)
        labels = None if self.spec.num_classes == 0 else np.concatenate([labels for _, _, labels in blocks])
        names = self.spec.class_names
        return pd.DataFrame({
            "sample_id": np.concatenate([ids for ids, _, _ in blocks]),
            "label": pd.array(labels if labels is not None else [None] * request.num_samples, dtype="Int64"),
            "label_name": [names[v] for v in labels.tolist()] if labels is not None and names else [None] * request.num_samples,
            "pixels": list(images),
        })

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        try:
            requests = [self.request(row) for row in model_input.to_dict("records")]
        except ValidationError as exc:
            error = exc.errors()[0]
            raise MlflowException(f"bad request: {error['loc'][0]}: {error['msg']} (got {error['input']!r})",
                                  INVALID_PARAMETER_VALUE) from None
        except (UserError, KeyError) as exc:
            message = f"missing column {exc}" if isinstance(exc, KeyError) else str(exc)
            raise MlflowException(f"bad request: {message}", INVALID_PARAMETER_VALUE) from None
        return pd.concat([self.samples(r).assign(request=i) for i, r in enumerate(requests)], ignore_index=True)


set_model(SampleRequests())
