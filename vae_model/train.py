"""The trainer: the whole dataset lives as one tensor on the device and is batched by index.

Every random draw (shuffling, dynamic binarisation, the reparameterisation noise) comes from one
`torch.Generator` seeded by `train.seed`, and its state is in each checkpoint, so a resumed run
ends with the same weights as an uninterrupted one on the same machine.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vae_model.checkpoint import load_checkpoint, save_checkpoint
from vae_model.config import ModelConfig, TrainConfig
from vae_model.data.dataset import ImageData
from vae_model.errors import Stopped, TrainingDiverged, UserError
from vae_model.likelihood import DeviceData, evaluate_elbo, held_out, to_device
from vae_model.loss import elbo, iw_objective
from vae_model.model import VAE, VAEConfig
from vae_model.prior import fit_prior
from vae_model.torch_state import seeded, torch_state

EpochCallback = Callable[[int, dict[str, float]], None]
CheckpointCallback = Callable[[int], None]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for but torch sees no CUDA device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def vae_config(model: ModelConfig, data: ImageData) -> VAEConfig:
    if model.conditional and data.labels is None:
        raise UserError(f"{data.source}: model.conditional=true needs labels, and this dataset has none")
    c, h, w = data.shape
    # The config's fields as they are, plus what the data decides: the image shape and the classes.
    return VAEConfig(channels=c, height=h, width=w, num_classes=data.num_classes if model.conditional else 0,
                     class_names=data.class_names if model.conditional else (), **model.model_dump(exclude={"conditional"}))


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        # The fused kernel does the whole update in one pass: ~2x faster steps on CPU.
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


@dataclass
class TrainResult:
    model: VAE
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of an epoch: a pure function of the config, so resuming needs no state."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (epoch - 1) / max(1, cfg.epochs - 1)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * progress))


def _kl_weight(cfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    if cfg.warmup_epochs == 0:
        return cfg.beta
    return cfg.beta * min(1.0, (epoch - 1 + step / steps) / cfg.warmup_epochs)


def train(
    model_cfg: VAEConfig,
    cfg: TrainConfig,
    train_data: ImageData,
    val_data: ImageData,
    binarize: str = "none",
    checkpoint_path: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a VAE; call `on_epoch(epoch, metrics)` after each epoch (also for resumed ones), and
    `on_checkpoint(epoch)` after each checkpoint (at most every `train.checkpoint_every_s`, and
    after the last epoch; at the same points without a checkpoint path) and once for the
    checkpoint a run resumes from. Where `should_stop()` turns true, raise `Stopped` before the
    next step: the last checkpoint is where a resumed run starts."""
    device = resolve_device(cfg.device)
    # Adam's running averages fill with subnormal floats on sparse images; flushing them keeps
    # each CPU step's time flat.
    with torch_state(flush_denormal=True if device.type == "cpu" else None):
        return _train(model_cfg, cfg, train_data, val_data, binarize, checkpoint_path, on_epoch, on_checkpoint, device,
                      should_stop or (lambda: False))


def _train(model_cfg: VAEConfig, cfg: TrainConfig, train_data: ImageData, val_data: ImageData, binarize: str,
           checkpoint_path: str | Path | None, on_epoch: EpochCallback | None,
           on_checkpoint: CheckpointCallback | None, device: torch.device, should_stop: Callable[[], bool]) -> TrainResult:
    with seeded(cfg.seed):  # parameter initialisation, built on the CPU
        model = VAE(model_cfg)
    model = model.to(device)
    optimizer = make_optimizer(model, cfg.lr)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    result = TrainResult(model)

    start_epoch = 1
    if cfg.resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        state = load_checkpoint(checkpoint_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        result.history = list(state["history"])
        result.resumed_from_epoch = start_epoch = state["epoch"] + 1
        for metrics in result.history:
            if on_epoch:
                on_epoch(int(metrics["epoch"]), metrics)
        if on_checkpoint:
            on_checkpoint(state["epoch"])

    train_t = to_device(train_data, device, binarize, seed=cfg.seed)
    val_t = held_out(val_data, device, binarize, seed=cfg.seed + 1)
    if start_epoch == 1:
        model.init_output_bias(train_t.x.mean(0))
    step_fn = _compile_step(model, cfg, device)

    def checkpoint(epoch: int) -> None:
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, generator, epoch, result.history, cfg)
        if on_checkpoint:
            on_checkpoint(epoch)

    progress = _progress(cfg, len(train_data))
    saved_at = time.monotonic()
    with progress if progress is not None else contextlib.nullcontext():
        for epoch in range(start_epoch, cfg.epochs + 1):
            model.train()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            started = time.perf_counter()
            train_elbo = _train_epoch(model, optimizer, step_fn, train_t, cfg, epoch, generator, progress, should_stop)
            epoch_seconds = time.perf_counter() - started
            val = evaluate_elbo(model, val_t, cfg.batch_size * 8, seed=cfg.seed)
            metrics = {
                "epoch": float(epoch), "train_elbo": train_elbo, "val_elbo": val["elbo"],
                "val_recon": val["recon"], "val_kl": val["kl"], "epoch_seconds": epoch_seconds,
            }
            result.history.append(metrics)
            if on_epoch:
                on_epoch(epoch, metrics)
            # A checkpoint costs ~15 ms for a small model, as much as a short epoch: they are
            # written at most every train.checkpoint_every_s, and after the last epoch.
            if epoch == cfg.epochs or time.monotonic() - saved_at >= cfg.checkpoint_every_s:
                checkpoint(epoch)
                saved_at = time.monotonic()
    if model_cfg.prior_components:
        # Refitted on a resume too: the fit is seeded, so it gives the same prior again.
        fit_prior(model.prior, posterior_means(model, train_t, cfg.seed), _cpu(train_t.y), cfg.seed)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, generator, cfg.epochs, result.history, cfg)
    return result


@torch.no_grad()
def posterior_means(model: VAE, data: DeviceData, seed: int, batch_size: int = 4096):
    """The training images' posterior means as a float64 numpy array (N, latent_dim). Dynamically
    binarised data is encoded as one seeded binary draw, as the encoder saw it in training."""
    model.eval()
    generator = torch.Generator(device=data.x.device).manual_seed(seed)
    means = []
    for start in range(0, len(data.x), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data.x)), device=data.x.device)
        x, y = data.batch(index, generator)
        means.append(model.encode(x, y if model.cfg.conditional else None)[0].double().cpu())
    model.train()
    return torch.cat(means).numpy()


def _cpu(y: torch.Tensor | None):
    return None if y is None else y.cpu().numpy()


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 products natively here (AVX512-BF16 or AMX)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _autocast(cfg: TrainConfig, device: torch.device):
    # A CPU without native bf16 would emulate it, slower than fp32: train.bf16 is ignored there.
    if cfg.bf16 and (device.type == "cuda" or cpu_has_native_bf16()):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _compile_step(model: VAE, cfg: TrainConfig, device: torch.device):
    autocast = _autocast(cfg, device)
    if cfg.iw_samples > 1:
        return _iw_step(model, autocast, cfg.iw_samples)
    if cfg.compile and device.type == "cuda":
        return _graphed_step(model, autocast)

    def step(x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator, kl_weight: float):
        with autocast():
            terms = elbo(model, x, y, generator)
            loss = (terms.recon + kl_weight * terms.kl).mean()
        return loss, terms.elbo.detach().sum()

    return step


def _iw_step(model: VAE, autocast, k: int):
    """The k-sample IWAE objective; the reported train ELBO is the mean of the k log weights."""

    def step(x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator, kl_weight: float):
        with autocast():
            terms = iw_objective(model, x, y, k, generator, kl_weight)
        return -terms.surrogate.mean(), terms.elbo.sum()

    return step


def _graphed_step(model: VAE, autocast):
    """CUDA: forward and backward replayed as CUDA graphs (compile mode "reduce-overhead"): at batch
    128 an eager step is bound by kernel launches. The noise is drawn outside the graph, from the
    run's generator, and the KL weight (a new float each warm-up step) is applied outside too,
    so neither makes the graph recompile."""

    def terms_of(x: torch.Tensor, y: torch.Tensor | None, noise: torch.Tensor):
        with autocast():
            return elbo(model, x, y, noise=noise)

    graphed = torch.compile(terms_of, mode="reduce-overhead", dynamic=False)

    def step(x: torch.Tensor, y: torch.Tensor | None, generator: torch.Generator, kl_weight: float):
        noise = torch.randn(len(x), model.cfg.latent_dim, generator=generator, device=x.device)
        torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are spent
        terms = graphed(x, y, noise)
        return (terms.recon + kl_weight * terms.kl).mean(), terms.elbo.detach().sum()

    return step


def _train_epoch(model, optimizer, step_fn, data: DeviceData, cfg: TrainConfig, epoch: int, generator, progress,
                 should_stop: Callable[[], bool]) -> float:
    n = len(data.x)
    device = data.x.device
    order = torch.randperm(n, generator=generator, device=device)
    steps = math.ceil(n / cfg.batch_size)
    # Losses stay on the device and are checked in blocks: a GPU is not made to wait for the
    # host after every step. On CPU there is no queue to drain, so every step is checked
    # before its update.
    check_every = 1 if device.type == "cpu" else 32
    losses = torch.empty(steps, device=device)
    total = torch.zeros((), device=device)
    task = progress.add_task(f"epoch {epoch}/{cfg.epochs}", total=n) if progress is not None else None
    checked = 0
    for step in range(steps):
        if should_stop():
            raise Stopped(f"training stopped at epoch {epoch}, step {step + 1}")
        index = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x, y = data.batch(index, generator)
        loss, batch_elbo = step_fn(x, y, generator, _kl_weight(cfg, epoch, step, steps))
        losses[step] = loss.detach()
        if step + 1 - checked >= check_every or step + 1 == steps:
            _check_finite(losses, checked, step + 1, epoch)
            checked = step + 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += batch_elbo
        if task is not None:
            progress.update(task, advance=len(index))
    if task is not None:
        progress.remove_task(task)
    return total.item() / n


def _check_finite(losses: torch.Tensor, start: int, stop: int, epoch: int) -> None:
    block = losses[start:stop]
    bad = ~torch.isfinite(block)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise TrainingDiverged(
            f"training diverged at epoch {epoch}, step {start + first + 1}: loss is {block[first].item()}"
        )


def _progress(cfg: TrainConfig, n: int):
    if not cfg.progress:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
