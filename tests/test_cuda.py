"""The trainer's CUDA path: the graphed step (`train.compile`) against the eager one, bf16
autocast against fp32, and a resumed run against an uninterrupted one. Skipped where torch sees
no CUDA device, as in CI; `benchmarks/device_check.sh tests` runs them on a lent GPU machine."""

from __future__ import annotations

import pytest
import torch

from vae_model.checkpoint import load_checkpoint
from vae_model.config import DataConfig, ModelConfig, TrainConfig
from vae_model.data.sources import load_source
from vae_model.train import train, vae_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device, and torch sees none")

MODEL = ModelConfig(latent_dim=8, hidden_dim=128)


@pytest.fixture(scope="module")
def digits():
    return load_source(DataConfig(kind="digits"))


def _train(digits, checkpoint=None, **train_kw):
    train_data, val_data = digits
    cfg = TrainConfig(**{"epochs": 4, "batch_size": 64, "lr": 2e-3, "seed": 3, "device": "cuda", "progress": False,
                         **train_kw})
    return train(vae_config(MODEL, train_data), cfg, train_data, val_data, checkpoint_path=checkpoint)


def test_graphed_step_reaches_the_eager_elbo(digits):
    eager, graphed = _train(digits), _train(digits, compile=True)
    # The same noise in the same order (drawn outside the graph): only the kernels differ.
    for a, b in zip(eager.history, graphed.history, strict=True):
        assert b["val_elbo"] == pytest.approx(a["val_elbo"], abs=0.2), a["epoch"]
    assert graphed.model.prior.fitted and next(graphed.model.parameters()).is_cuda


def test_bf16_autocast_on_cuda_reaches_the_fp32_elbo(digits):
    fp32, bf16 = (_train(digits, epochs=6, bf16=flag).history[-1]["val_elbo"] for flag in (False, True))
    assert bf16 != fp32  # the products did run in bf16
    assert bf16 == pytest.approx(fp32, abs=0.5)


@pytest.mark.parametrize("compile", [False, True])
def test_resumed_cuda_run_matches_an_uninterrupted_one(digits, tmp_path, compile):
    kw = {"compile": compile, "checkpoint_every_s": 0}
    straight = _train(digits, tmp_path / "straight.pt", **kw)
    _train(digits, tmp_path / "resumed.pt", **{**kw, "epochs": 2})
    # A run of 2 epochs writes the checkpoint a 4-epoch run resumes from: the cosine schedule
    # is off, so both runs' first two epochs are the same steps.
    assert load_checkpoint(tmp_path / "resumed.pt")["epoch"] == 2
    resumed = _train(digits, tmp_path / "resumed.pt", **{**kw, "resume": True})
    assert resumed.resumed_from_epoch == 3
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
