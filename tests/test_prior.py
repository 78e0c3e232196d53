"""The fitted latent prior: what it fits, how it samples, and that it travels with the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_model.checkpoint import save_checkpoint
from vae_model.weights import load_model, load_sampler, save_model
from vae_model.config import DataConfig, ModelConfig, TrainConfig
from vae_model.data import load_source
from vae_model.model import VAE, Sampler, VAEConfig
from vae_model.prior import MixturePrior, fit_prior
from vae_model.train import posterior_means, train, vae_config


def _draw(prior: MixturePrior, n: int, group: torch.Tensor, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise, uniform = torch.randn(n, prior.means.shape[2], generator=generator), torch.rand(n, 1, generator=generator)
    return prior(noise, uniform, group)


def test_unfitted_prior_is_the_standard_normal():
    prior = MixturePrior(groups=1, components=5, latent_dim=3)
    noise = torch.randn(10, 3)
    assert not prior.fitted
    assert torch.equal(prior(noise, torch.rand(10, 1), torch.ones(10, 1)), noise)


def test_mixture_samples_where_the_codes_are_with_their_weights():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(5, 0.1, (300, 2)), rng.normal(-5, 0.1, (100, 2))])
    prior = MixturePrior(groups=1, components=4, latent_dim=2)
    fit_prior(prior, codes, None, seed=0)
    assert prior.fitted
    z = _draw(prior, 4000, torch.ones(4000, 1))
    near_plus = (z - 5).norm(dim=1) < 1
    near_minus = (z + 5).norm(dim=1) < 1
    assert bool((near_plus | near_minus).all())  # never between the clusters, as N(0, I) would be
    assert abs(near_plus.float().mean().item() - 0.75) < 0.03


def test_conditional_mixture_keeps_each_class_to_its_codes():
    rng = np.random.default_rng(1)
    codes = np.concatenate([rng.normal(3, 0.1, (200, 2)), rng.normal(-3, 0.1, (200, 2))])
    labels = np.repeat([0, 1], 200)
    prior = MixturePrior(groups=2, components=3, latent_dim=2)
    fit_prior(prior, codes, labels, seed=0)
    for label, centre in ((0, 3.0), (1, -3.0)):
        group = torch.nn.functional.one_hot(torch.full((500,), label), 2).float()
        assert bool(((_draw(prior, 500, group) - centre).norm(dim=1) < 1).all())


@pytest.mark.parametrize("conditional", [False, True])
def test_training_fits_the_prior_to_the_posterior_means(conditional):
    train_data, val_data = load_source(DataConfig())
    cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=32, conditional=conditional), train_data)
    result = train(cfg, TrainConfig(epochs=2, progress=False), train_data, val_data)
    model = result.model.eval()
    assert model.prior.fitted
    from vae_model.likelihood import to_device

    codes = posterior_means(model, to_device(train_data, torch.device("cpu")), seed=0)
    groups = model.prior.means.shape[0]
    labels = torch.arange(20000) % groups
    z = _draw(model.prior, 20000, torch.nn.functional.one_hot(labels, groups).float())
    # The mixture's samples have the codes' mean and spread, which N(0, I) does not.
    assert np.allclose(z.mean(0).numpy(), codes.mean(0), atol=0.1)
    assert np.allclose(z.std(0).numpy(), codes.std(0), rtol=0.1)
    assert not np.allclose(codes.std(0), 1.0, rtol=0.1)


def test_the_prior_travels_in_checkpoint_and_weights_file(tmp_path):
    model = VAE(VAEConfig(latent_dim=3, hidden_dim=8, height=8, width=8, num_classes=2, prior_components=4))
    codes = np.random.default_rng(2).normal(2, 0.5, (200, 3))
    fit_prior(model.prior, codes, np.arange(200) % 2, seed=0)
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "c.pt", model, optimizer, torch.Generator(), 1, [], TrainConfig())
    loaded = load_model(tmp_path / "c.pt")
    for name, tensor in model.prior.state_dict().items():
        assert torch.equal(loaded.prior.state_dict()[name], tensor)
    # The registered model's weights file, and the decoder-and-prior `sampler.pt` of older versions.
    torch.save({"model_config": model.cfg.to_dict(), "decoder": model.decoder.state_dict(),
                "prior": model.prior.state_dict()}, tmp_path / "sampler.pt")
    inputs = torch.cat([torch.randn(16, 3), torch.rand(16, 1), torch.nn.functional.one_hot(torch.arange(16) % 2, 2).float()], 1)
    with torch.no_grad():
        for sampler in (load_sampler(save_model(tmp_path / "weights.pt", model)), load_sampler(tmp_path / "sampler.pt")):
            assert torch.equal(sampler(inputs), Sampler.of(model)(inputs))


def test_weights_saved_before_the_prior_sample_the_standard_normal(tmp_path):
    model = VAE(VAEConfig(latent_dim=3, hidden_dim=8, height=8, width=8))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("prior.")}
    torch.save({"model": state, "model_config": {k: v for k, v in model.cfg.to_dict().items() if k != "prior_components"}},
               tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert not old.prior.fitted
    z = torch.randn(5, 3)
    with torch.no_grad():
        assert torch.equal(Sampler.of(old)(torch.cat([z, torch.rand(5, 1)], 1)), torch.sigmoid(old.decoder(z)))


def test_the_fit_is_seeded():
    codes = np.random.default_rng(3).normal(0, 1, (300, 3))
    first, again = MixturePrior(1, 5, 3), MixturePrior(1, 5, 3)
    fit_prior(first, codes, None, seed=4)
    fit_prior(again, codes, None, seed=4)
    for name, tensor in first.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor)
