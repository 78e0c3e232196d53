"""The VAE's objectives checked by hand, and each architecture and likelihood trained on tiny data."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from vae_model.config import DataConfig, ModelConfig, TrainConfig
from vae_model.data.sources import load_source
from vae_model.likelihood import evaluate_elbo, held_out, to_device
from vae_model.loss import (
    bernoulli_nll,
    elbo,
    iw_log_likelihood,
    iw_objective,
    kl_to_standard_normal,
    log_likelihood,
)
from vae_model.model import VAE, VAEConfig
from vae_model.train import train, vae_config


@pytest.fixture(scope="module")
def digits():
    train_data, val_data = load_source(DataConfig(kind="digits"))
    return train_data.subset(range(384)), val_data.subset(range(128))


def _binary_batch(n: int = 64, d: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, d, generator=g), generator=g)


def test_bernoulli_nll_is_the_bce_formula_with_its_gradient():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(8, 30, generator=g, dtype=torch.float64) * 5).requires_grad_()
    x = torch.rand(8, 30, generator=g, dtype=torch.float64)  # grey levels, not only 0/1
    p = torch.sigmoid(logits)
    by_hand = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), by_hand)
    assert torch.autograd.gradcheck(lambda lg: bernoulli_nll(lg, x), (logits,))
    # Extreme logits stay finite where the naive formula would overflow.
    big = torch.tensor([[80.0, -80.0]])
    assert torch.isfinite(bernoulli_nll(big, torch.tensor([[0.0, 1.0]]))).all()
    torch.testing.assert_close(bernoulli_nll(big, torch.tensor([[0.0, 1.0]])), torch.tensor([160.0]))


def test_gaussian_log_likelihood_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    logits, x = torch.randn(5, 12, generator=g), torch.rand(5, 12, generator=g)
    log_scale = torch.tensor(math.log(0.3))
    expected = torch.distributions.Normal(torch.sigmoid(logits), 0.3).log_prob(x).sum(1)
    torch.testing.assert_close(log_likelihood(x, logits, "gaussian", log_scale), expected)


def test_analytic_kl_agrees_with_monte_carlo():
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn(200_000, 4, 3, generator=g)
    q = torch.distributions.Normal(mu, std).log_prob(z).sum(-1)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    monte_carlo = (q - p).mean(0)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), monte_carlo, atol=0.03, rtol=0.01)


def test_elbo_terms_are_recon_plus_kl_from_the_same_noise():
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=1, height=8, width=8, latent_dim=3, hidden_dim=16))
    x = _binary_batch().view(-1, 1, 8, 8)
    terms = elbo(model, x, None, torch.Generator().manual_seed(5))
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
    probs = torch.sigmoid(model.decode(mu + eps * torch.exp(0.5 * logvar)))
    flat = x.flatten(1)
    recon = -(flat * probs.log() + (1 - flat) * (1 - probs).log()).sum(1)
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
    torch.testing.assert_close(terms.recon, recon, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.elbo, -(recon + kl), rtol=1e-5, atol=1e-4)
    # Noise given (the graphed CUDA step draws it outside the graph) is the same as noise drawn.
    given = elbo(model, x, None, noise=eps)
    for a, b in zip(given, terms, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _iw_means(model, x, k, repeats, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([iw_log_likelihood(model, x, None, k, g, chunk=64) for _ in range(repeats)])


def test_iw_bound_is_above_the_elbo_and_tightens_with_k(digits):
    train_data, val_data = digits
    # A small KL weight keeps the latents in use (no posterior collapse on so little data).
    cfg = TrainConfig(epochs=5, batch_size=64, lr=5e-3, beta=0.01, progress=False, device="cpu")
    result = train(vae_config(ModelConfig(latent_dim=4, hidden_dim=32), train_data), cfg, train_data, val_data,
                   binarize="static")
    # q(z|x) then differs from the true posterior, so the IW bound has room to tighten.
    assert result.history[-1]["val_kl"] > 3
    model = result.model.eval()
    x = held_out(val_data, torch.device("cpu"), "static", seed=1).x
    with torch.no_grad():
        g = torch.Generator().manual_seed(9)
        elbos = torch.stack([elbo(model, x, None, g).elbo for _ in range(40)])
    k1 = _iw_means(model, x, 1, 40, seed=3)
    # k = 1 is the ELBO in expectation: the two estimates agree within their standard errors.
    se = math.sqrt(elbos.mean(1).var().item() / 40 + k1.mean(1).var().item() / 40)
    assert abs(k1.mean() - elbos.mean()) < 4 * se + 1e-3
    bounds = {k: _iw_means(model, x, k, 2, seed=4).mean().item() for k in (5, 50, 200)}
    assert elbos.mean() < bounds[5] < bounds[50] < bounds[200]
    # Batched in chunks or not, it is the same estimator: with the same noise, the same numbers.
    # 5 examples x 4 latents is 20 normals per importance sample, which a chunked draw of the
    # whole chunk's noise would split differently (torch fills normals in blocks of 16).
    def bound(seed, chunk):
        return iw_log_likelihood(model, x[:5], None, 100, torch.Generator().manual_seed(seed), chunk=chunk)

    with torch.no_grad():
        one = bound(0, chunk=100)
        torch.testing.assert_close(bound(0, chunk=7), one)
        torch.testing.assert_close(bound(0, chunk=1), one)
        assert not torch.allclose(bound(1, chunk=100), one), "another seed, other noise, other numbers"
    assert torch.isfinite(one).all() and (one <= 0).all()


def test_iw_objective_gives_iwae_decoder_and_dreg_encoder_gradients():
    torch.manual_seed(0)
    model = VAE(VAEConfig(1, 4, 4, latent_dim=3, hidden_dim=16, prior_components=0)).double()
    x = _binary_batch(6, 16).double()
    k = 7

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    terms = iw_objective(model, x, None, k, torch.Generator().manual_seed(1))
    got = grads(-terms.surrogate.sum())
    # By hand from the same noise: log w with q's parameters detached, then IWAE's weights for the
    # decoder (the gradient of the bound itself) and their squares for the encoder (DReG).
    normal = torch.distributions.Normal

    def log_w():
        mu, logvar = model.encode(x)
        eps = torch.randn((k, *mu.shape), generator=torch.Generator().manual_seed(1), dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)
        log_px = -bernoulli_nll(model.decode(z.reshape(-1, 3)), x.repeat(k, 1)).view(k, -1)
        log_q = normal(mu.detach(), torch.exp(0.5 * logvar.detach())).log_prob(z).sum(-1)
        return log_px + normal(0, 1).log_prob(z).sum(-1) - log_q

    torch.testing.assert_close(terms.bound, torch.logsumexp(log_w(), 0).detach() - math.log(k))
    torch.testing.assert_close(terms.elbo, log_w().detach().mean(0))
    w = torch.softmax(log_w().detach(), 0)
    iwae = grads(-torch.logsumexp(log_w(), 0).sum())
    dreg = grads(-(w.pow(2) * log_w()).sum())
    for name, g in got.items():
        torch.testing.assert_close(g, (dreg if name.startswith("encoder") else iwae)[name], msg=name)
    assert any(name.startswith("encoder") for name in got) and any(name.startswith("decoder") for name in got)


def test_iwae_training_tightens_the_bound_over_elbo_training(digits):
    train_data, val_data = digits
    x = held_out(val_data, torch.device("cpu"), "static", seed=1).x
    bounds = {}
    for k in (1, 8):
        cfg = TrainConfig(epochs=15, batch_size=64, lr=3e-3, iw_samples=k, progress=False, device="cpu")
        model = train(vae_config(ModelConfig(latent_dim=8, hidden_dim=64, prior_components=0), train_data), cfg,
                      train_data, val_data, binarize="static").model.eval()
        bounds[k] = _iw_means(model, x, 64, 1, seed=2).mean().item()
    # The same budget of epochs on the 8-sample bound gives a better held-out bound on log p(x).
    assert bounds[8] > bounds[1] + 0.5, bounds


@pytest.mark.parametrize(
    "model_kw",
    [
        {"arch": "mlp"},
        {"arch": "conv"},
        {"arch": "mlp", "likelihood": "gaussian", "learn_scale": True},
        {"arch": "mlp", "likelihood": "gaussian", "learn_scale": False},
        {"arch": "mlp", "conditional": True},
        {"arch": "mlp", "hidden_layers": 2, "activation": "elu"},
    ],
    ids=["mlp", "conv", "gauss-learned", "gauss-fixed", "cvae-mlp", "mlp2-elu"],
)
def test_each_model_learns_on_tiny_digits(digits, model_kw):
    train_data, val_data = digits
    model_cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=32, **model_kw), train_data)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=3e-3, progress=False, device="cpu")
    result = train(model_cfg, cfg, train_data, val_data)
    first, last = result.history[0]["val_elbo"], result.history[-1]["val_elbo"]
    assert math.isfinite(last) and last > first
    model = result.model
    if model_kw.get("likelihood") == "gaussian":
        moved = abs(model.log_scale.item() - math.log(0.1)) > 1e-4
        assert moved == model_kw["learn_scale"]
    if model_kw.get("conditional"):
        z = torch.zeros(2, 4)
        with torch.no_grad():
            a, b = model.decode(z, torch.tensor([0, 1])), model.decode(z, torch.tensor([7, 7]))
        assert not torch.allclose(a[0], b[0]) and torch.allclose(b[0], b[1])


def test_binarize_static_is_fixed_and_dynamic_resamples(digits):
    train_data, _ = digits
    cpu = torch.device("cpu")
    static = to_device(train_data, cpu, "static", seed=3)
    assert set(static.x.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(static.x, to_device(train_data, cpu, "static", seed=3).x)
    dynamic = to_device(train_data, cpu, "dynamic", seed=3)
    g = torch.Generator().manual_seed(0)
    index = torch.arange(64)
    a, _ = dynamic.batch(index, g)
    b, _ = dynamic.batch(index, g)
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)
    # Each draw keeps the grey level as the probability of a 1.
    draws = torch.stack([dynamic.batch(index, g)[0] for _ in range(200)]).mean(0)
    assert (draws - dynamic.x[index]).abs().max() < 0.15
    # Grey levels stay as they are without binarisation.
    none = to_device(train_data, cpu, "none")
    assert ((none.x > 0) & (none.x < 1)).any()


def test_dynamic_and_static_training_run_and_evaluate_on_binary_held_out(digits):
    train_data, val_data = digits
    model_cfg = vae_config(ModelConfig(latent_dim=4, hidden_dim=32), train_data)
    for binarize in ("static", "dynamic"):
        cfg = TrainConfig(epochs=2, batch_size=64, progress=False, device="cpu")
        result = train(model_cfg, cfg, train_data, val_data, binarize=binarize)
        val = held_out(val_data, torch.device("cpu"), binarize, seed=cfg.seed + 1)
        assert set(val.x.unique().tolist()) == {0.0, 1.0}
        again = evaluate_elbo(result.model, val, cfg.batch_size * 8, seed=cfg.seed)["elbo"]
        assert again == pytest.approx(result.history[-1]["val_elbo"], rel=1e-6)


def test_bce_fast_path_matches_aten_on_a_model_step():
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=1, height=8, width=8, latent_dim=3, hidden_dim=16))
    x = torch.rand(32, 64)
    logits = model.decode(torch.randn(32, 3))
    ours = torch.autograd.grad(bernoulli_nll(logits, x).sum(), model.decoder.net[-1].weight, retain_graph=True)[0]
    aten = torch.autograd.grad(
        F.binary_cross_entropy_with_logits(logits, x, reduction="sum"), model.decoder.net[-1].weight
    )[0]
    torch.testing.assert_close(ours, aten, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_decoder_starts_at_the_mean_image(arch):
    torch.manual_seed(0)
    model = VAE(VAEConfig(channels=1, height=8, width=8, latent_dim=3, hidden_dim=16, arch=arch))
    mean = torch.rand(1, 8, 8) * 0.8 + 0.1
    model.init_output_bias(mean)
    last = model.decoder.net[-1] if arch == "mlp" else model.decoder.deconv[-2]
    expected = mean.flatten() if arch == "mlp" else mean.mean().reshape(1)
    torch.testing.assert_close(torch.sigmoid(last.bias), expected)
