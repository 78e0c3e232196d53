"""Library calls leave the caller's torch settings and random stream as they found them."""

import torch

from vae_model.config import DataConfig, ModelConfig, TrainConfig
from vae_model.data.sources import load_source
from vae_model.metrics.features import ClassifierSpec, train_classifier
from vae_model.torch_state import flushing_denormals, torch_state
from vae_model.train import train, vae_config


def _settings() -> tuple[int, bool, bytes]:
    return torch.get_num_threads(), flushing_denormals(), bytes(torch.random.get_rng_state().tolist())


def test_scope_restores_threads_and_denormal_mode():
    before = _settings()
    with torch_state(threads=1, flush_denormal=not before[1]):
        assert _settings()[:2] == (1, not before[1])
    assert _settings() == before


def test_training_and_classifier_leave_global_state_alone():
    before = _settings()
    train_data, val_data = load_source(DataConfig(kind="digits"))
    train_data, val_data = train_data.subset(range(64)), val_data.subset(range(32))
    cfg = ModelConfig(latent_dim=2, hidden_dim=16, prior_components=0)
    train(vae_config(cfg, train_data), TrainConfig(epochs=1, progress=False, device="cpu"), train_data, val_data)
    assert _settings() == before
    train_classifier(ClassifierSpec(input_dim=64, num_classes=10, steps=2, seed=0), train_data.images, train_data.labels)
    assert _settings() == before
