"""The trainer's failure paths: divergence, and resuming a run killed between epochs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vae_model.checkpoint import load_checkpoint
from vae_model.config import DataConfig, ModelConfig, TrainConfig
from vae_model.data.sources import load_source
from vae_model.errors import Stopped, TrainingDiverged
from vae_model.train import cpu_has_native_bf16, lr_at, train, vae_config

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, KILL_AFTER = 4, 2

# The child trains like the test does, then hangs after epoch KILL_AFTER's checkpoint is written,
# so the parent can SIGKILL it at a known point.
CHILD = """
import json, sys, time
from vae_model.config import DataConfig, ModelConfig, TrainConfig
from vae_model.data.sources import load_source
from vae_model.train import train, vae_config
spec = json.loads(sys.argv[1])
tr, va = load_source(DataConfig(kind="digits"))
tr, va = tr.subset(range(256)), va.subset(range(64))
def on_checkpoint(epoch):
    if epoch == spec["kill_after"]:
        print("checkpointed", flush=True)
        time.sleep(600)
train(vae_config(ModelConfig(**spec["model"]), tr), TrainConfig(**spec["train"]), tr, va,
      spec["binarize"], spec["checkpoint"], on_checkpoint=on_checkpoint)
"""


@pytest.fixture(scope="module")
def tiny():
    train_data, val_data = load_source(DataConfig(kind="digits"))
    return train_data.subset(range(256)), val_data.subset(range(64))


def _without_time(history):
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]


def test_huge_learning_rate_raises_naming_epoch_and_step(tiny, tmp_path):
    train_data, val_data = tiny
    ckpt = tmp_path / "run.pt"
    cfg = TrainConfig(epochs=3, lr=1e10, progress=False, device="cpu")
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1, step \d+: loss is nan"):
        train(vae_config(ModelConfig(latent_dim=4, hidden_dim=32), train_data), cfg, train_data, val_data,
              checkpoint_path=ckpt)
    # Nothing was finished, so no checkpoint says otherwise.
    assert not ckpt.exists() and not list(tmp_path.iterdir())


def test_cosine_schedule_runs_from_lr_to_lr_min():
    cfg = TrainConfig(epochs=5, lr=1e-3, lr_min=1e-5, lr_schedule="cosine")
    rates = [lr_at(cfg, e) for e in range(1, 6)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert lr_at(TrainConfig(lr=2e-3), 7) == 2e-3


@pytest.mark.parametrize("iw_samples", [1, 3])
def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny, tmp_path, iw_samples):
    train_data, val_data = tiny
    model = {"latent_dim": 4, "hidden_dim": 32}
    # Dynamic binarisation and a decaying rate: every random stream and schedule must resume right.
    train_kw = {"epochs": EPOCHS, "batch_size": 64, "lr": 3e-3, "seed": 7, "device": "cpu", "progress": False,
                "lr_schedule": "cosine", "lr_min": 1e-4, "warmup_epochs": 2, "checkpoint_every_s": 0,
                "iw_samples": iw_samples}
    ckpt = tmp_path / "killed.pt"
    spec = {"model": model, "train": train_kw, "binarize": "dynamic", "checkpoint": str(ckpt), "kill_after": KILL_AFTER}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "checkpointed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert load_checkpoint(ckpt)["epoch"] == KILL_AFTER

    model_cfg = vae_config(ModelConfig(**model), train_data)
    resumed = train(model_cfg, TrainConfig(**train_kw, resume=True), train_data, val_data, "dynamic", ckpt)
    straight = train(model_cfg, TrainConfig(**train_kw), train_data, val_data, "dynamic", tmp_path / "straight.pt")

    assert resumed.resumed_from_epoch == KILL_AFTER + 1
    assert len(resumed.history) == EPOCHS
    assert _without_time(resumed.history) == _without_time(straight.history)
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert load_checkpoint(ckpt)["epoch"] == EPOCHS


def test_a_stop_asked_for_mid_epoch_raises_and_the_run_resumes_from_its_last_checkpoint(tiny, tmp_path):
    train_data, val_data = tiny
    model_cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=32), train_data)
    cfg = TrainConfig(epochs=EPOCHS, batch_size=64, seed=5, device="cpu", progress=False, checkpoint_every_s=0)
    steps = []  # 4 steps an epoch: stop before the third step of epoch 3
    with pytest.raises(Stopped, match=r"^training stopped at epoch 3, step 3$"):
        train(model_cfg, cfg, train_data, val_data, checkpoint_path=tmp_path / "stopped.pt",
              should_stop=lambda: steps.append(1) or len(steps) > 10)
    assert load_checkpoint(tmp_path / "stopped.pt")["epoch"] == 2

    resumed = train(model_cfg, cfg.model_copy(update={"resume": True}), train_data, val_data,
                    checkpoint_path=tmp_path / "stopped.pt")
    straight = train(model_cfg, cfg, train_data, val_data)
    assert resumed.resumed_from_epoch == 3
    assert _without_time(resumed.history) == _without_time(straight.history)


def test_checkpoints_are_throttled_in_time_and_the_last_epoch_always_has_one(tiny, tmp_path):
    train_data, val_data = tiny
    model_cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=32), train_data)

    def calls(every_s: float) -> list[tuple[str, int]]:
        seen = []
        cfg = TrainConfig(epochs=3, batch_size=64, device="cpu", progress=False, checkpoint_every_s=every_s)
        train(model_cfg, cfg, train_data, val_data, checkpoint_path=tmp_path / f"{every_s}.pt",
              on_epoch=lambda epoch, _: seen.append(("epoch", epoch)),
              on_checkpoint=lambda epoch: seen.append(("checkpoint", epoch)))
        assert load_checkpoint(tmp_path / f"{every_s}.pt")["epoch"] == 3
        return seen

    assert calls(0) == [("epoch", 1), ("checkpoint", 1), ("epoch", 2), ("checkpoint", 2), ("epoch", 3), ("checkpoint", 3)]
    assert calls(3600) == [("epoch", 1), ("epoch", 2), ("epoch", 3), ("checkpoint", 3)]


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="this CPU has no native bf16")
@pytest.mark.parametrize("iw_samples", [1, 4])
def test_bf16_autocast_on_cpu_reaches_the_fp32_elbo(tiny, iw_samples):
    train_data, val_data = tiny
    model_cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=32), train_data)
    val = {}
    for bf16 in (False, True):
        cfg = TrainConfig(epochs=6, batch_size=64, lr=3e-3, device="cpu", progress=False, bf16=bf16,
                          iw_samples=iw_samples)
        val[bf16] = train(model_cfg, cfg, train_data, val_data).history[-1]["val_elbo"]
    assert val[True] != val[False]  # the products did run in bf16
    assert val[True] == pytest.approx(val[False], abs=0.5)
