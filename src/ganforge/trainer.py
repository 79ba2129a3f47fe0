"""The training loop: it owns the order of D and G steps, counts progress in images seen, and does its
logging, grids and checkpoints at ticks, never inside the inner math."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import checkpoint as ckpt_io
from . import distributed, report, tensorboard_log
from .augment import diff_augment, parse_policy
from .config import Config, Overrides, apply_overrides, flatten, from_dict, preset_names, toml_value
from .data import TORCHVISION_SETS, EpochSampler, ImageData, load_dataset, missing_folder, split_subfolders_note
from .errors import UserError
from .html_report import write_html_report
from .losses import (
    GANLoss,
    get_loss,
    gradient_penalty,
    instance_noise_std,
    lecam_ema_decay,
    lecam_penalty,
    r1_penalty,
    top_k,
    topk_share,
)
from .models import Discriminator, Generator, balanced_labels, build_discriminator, build_generator, inert_settings
from .models.layers import MinibatchDiscrimination, MinibatchStd

_RUN_DIR = re.compile(r"^(\d{4,})-")


# ----------------------------------------------------------------------------------------------- setup


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str) -> torch.device:
    """auto (cuda, then mps, then cpu) or a named device, refused in one line when this machine lacks it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    hint = "use auto or cpu (--device cpu, or --set train.device=cpu for training)"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; choose auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name} asked for, but no CUDA device is available here; {hint}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not _mps_available():
        raise UserError(f"device mps asked for, but MPS is not available here; {hint}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device {name!r} is not supported; choose auto, cpu, cuda, cuda:N or mps")
    return device


def new_run_dir(out: Path | str, preset: str) -> Path:
    """out/NNNN-<preset>, numbered after the highest existing run; never an existing directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for run directories")
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", preset).strip("-") or "run"
    numbers = [int(m.group(1)) for p in out.iterdir() if (m := _RUN_DIR.match(p.name))]
    n = max(numbers, default=-1) + 1
    while True:
        run_dir = out / f"{n:04d}-{slug}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1


# ADA adjusts its augment probability every this many D steps (StyleGAN2-ADA's interval).
ADA_INTERVAL = 4
UPSCALE_NOTE = 2  # a note when the data set's images are upscaled by this factor or more
# At or below this many training images, collapse and D-wins warnings point to DiffAugment (README, Small data).
SMALL_DATA_IMAGES = 1000
# G starts from near-constant output (and G_ema lags it): the collapse check waits until G has had time to spread
COLLAPSE_CHECK_FROM_KIMG = 5.0


def d_wins(cfg: Config, d_real: float, d_fake: float) -> bool:
    """Whether a tick's mean D(real) and D(fake) (sigmoid of D's logit) say D separates them almost perfectly:
    above train.d_win_warn and below 1 - it. Only for the BCE losses, whose sigmoid(logit) is D's probability."""
    limit = cfg.train.d_win_warn
    return cfg.loss.name in ("ns", "minimax") and limit > 0 and d_real > limit and d_fake < 1 - limit


def sample_spread(images: torch.Tensor) -> float:
    """Mean L2 distance between two different images of the batch (flattened pixels)."""
    x = images.detach().flatten(1).float()
    n = x.shape[0]
    if n < 2:
        return float("nan")
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


# Fewer grid images than this make the near-copy share too coarse to judge.
DUPLICATE_CHECK_MIN_GRID = 16
# Healthy runs pass through a few-blobs phase (LSGAN on the default nets: 75% near-copies at 6 kimg, 0 from 10)
DUPLICATE_CHECK_FROM_KIMG = 10.0


def nearest_distances(images: torch.Tensor) -> torch.Tensor:
    """Each image's L2 distance (flattened pixels) to the nearest other image of the batch."""
    x = images.detach().flatten(1).float()
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values


def near_copy_share(images: torch.Tensor, real_nearest: torch.Tensor) -> float:
    """Share of the images whose nearest other image is closer than half the median nearest-neighbour
    distance of as many real images: near 0 for a G with variety, near 1 when its samples come in near-copies
    (a G that draws a few modes, each with some variety, which the mean spread does not show)."""
    if images.shape[0] < 2 or real_nearest.numel() < 2:
        return float("nan")
    return float((nearest_distances(images) < 0.5 * real_nearest.median()).float().mean())


def has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in module.modules())


def ema_beta(batch_size: int, ema_kimg: float) -> float:
    """Per-step decay whose half-life is ema_kimg thousand images: 0.5 ** (batch / ema_nimg)."""
    return 0.5 ** (batch_size / (ema_kimg * 1000.0))


def lr_scale(nimg: int, decay: str, start_kimg: float, end_kimg: float) -> float:
    """Multiplier of both learning rates at nimg images: 1 until start_kimg, then down to 0 at end_kimg,
    linearly (pix2pix) or along a half cosine. A function of the image counter alone, so resume is exact."""
    if decay == "none" or nimg <= start_kimg * 1000:
        return 1.0
    progress = min(1.0, (nimg - start_kimg * 1000) / ((end_kimg - start_kimg) * 1000))
    if decay == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float) -> None:
    ema_params = [p for p in G_ema.parameters()]
    params = [p.detach() for p in G.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - beta)
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


def grid_labels(n_classes: int, grid_size: int) -> tuple[torch.Tensor, int]:
    """Labels of a class grid and its row length: grid_size // K images of each class, one row per class or
    a few when there are few classes (the first grid_size classes, one each, when there are more classes
    than grid cells)."""
    if n_classes > grid_size:
        return balanced_labels(grid_size, n_classes), report.grid_nrow(grid_size)
    per_class = max(1, grid_size // n_classes)
    return torch.arange(n_classes).repeat_interleave(per_class), report.class_grid_nrow(per_class, n_classes)


@dataclass
class TrainState:
    """Everything a resumed run needs, in memory."""

    cfg: Config
    G: Generator
    D: Discriminator
    G_ema: Generator | None
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    z_gen: torch.Generator
    fixed_z: torch.Tensor
    fixed_y: torch.Tensor | None  # labels of the fixed grid for conditional G: class by class
    nimg: int = 0
    g_steps: int = 0  # G steps taken: where loss.critic_burst's schedule stands
    tick: int = 0
    time_s: float = 0.0
    best: dict[str, Any] | None = None  # {"metric", "value", "kimg"} of checkpoints/best.pt
    scaler_G: torch.amp.GradScaler | None = None  # fp16 loss scaling
    scaler_D: torch.amp.GradScaler | None = None
    classes: list[str] | None = None  # a conditional model's class names, label by label
    ada: torch.Tensor | None = None  # train.ada_target: [augment probability p, sum of sign(D(real)) this interval]
    lecam: torch.Tensor | None = None  # loss.lecam: [EMA of D's mean logit on reals, on fakes]

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict() if self.G_ema is not None else None,
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "nimg": self.nimg,
            "g_steps": self.g_steps,
            "tick": self.tick,
            "time_s": self.time_s,
            "rng": ckpt_io.rng_state(self.z_gen),
            "fixed_z": self.fixed_z,
            "best": self.best,
            "scaler_G": self.scaler_G.state_dict() if self.scaler_G is not None else None,
            "scaler_D": self.scaler_D.state_dict() if self.scaler_D is not None else None,
            "classes": self.classes,
            "ada": self.ada,
            "lecam": self.lecam,
            "versions": software_versions(),
        }


def software_versions() -> dict[str, str]:
    """What wrote a checkpoint: a resume under another torch can differ in the last bits."""
    from . import __version__

    return {"ganforge": str(__version__), "torch": str(torch.__version__)}


def make_optimizer(name: str, params: Any, lr: float, betas: list[float], eps: float) -> torch.optim.Optimizer:
    """optim.name's optimizer for one network. RMSprop keeps torch's defaults (alpha 0.99, no momentum), as
    the WGAN paper's code does, and reads no betas."""
    if name == "rmsprop":
        # torch has no fused RMSprop; foreach (one kernel per op over all tensors) is its fastest on CPU too
        return torch.optim.RMSprop(params, lr=lr, eps=eps, foreach=True)
    # fused: one pass over each tensor for the whole update, instead of a Python loop per parameter or the
    # several elementwise passes of foreach (measured +26% on the whole MLP-BN step at batch 64).
    return torch.optim.Adam(params, lr=lr, betas=(betas[0], betas[1]), eps=eps, fused=True)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # train.amp -> autocast dtype


def use_channels_last(cfg: Config, device: torch.device) -> bool:
    """channels_last unless compiling for CUDA, where inductor picks conv layouts itself and channels_last
    weights fail its stride check in the transposed conv's backward (torch 2.11, H100)."""
    return cfg.train.channels_last and not (cfg.train.compile and device.type == "cuda")


@contextlib.contextmanager
def matmul_precision(setting: str) -> Any:
    """float32 matmul precision inside the block (each training step), restored after. "high" allows TF32 on CUDA
    (float32 on a CPU); "medium" runs float32 matmuls in bfloat16 with float32 accumulation, on CUDA and
    on CPUs whose oneDNN has a fast bfloat16 path (AMX), keeping weights, activations and Adam in float32;
    "highest" is exact float32 everywhere."""
    before = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision(setting)
    torch.backends.cudnn.allow_tf32 = setting != "highest"  # convolutions on CUDA
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]


def cpu_has_bf16_matmul() -> bool:
    """Whether oneDNN can run bfloat16 matmuls on this CPU (what train.matmul_precision=medium uses)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def build_state(cfg: Config, device: torch.device) -> TrainState:
    torch.manual_seed(cfg.train.seed)
    G = build_generator(cfg).to(device)
    D = build_discriminator(cfg).to(device)
    if cfg.train.sync_bn and distributed.info().enabled:
        if device.type != "cuda":
            raise UserError("train.sync_bn needs CUDA devices; leave it false for gloo on CPU")
        G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(G)
        D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(D)
    if use_channels_last(cfg, device):
        for net in (G, D):
            if has_conv(net):
                net.to(memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.train.ema_kimg > 0 else None
    o = cfg.optim
    opt_G = make_optimizer(o.name, G.parameters(), o.g_lr, o.g_betas, o.eps)
    opt_D = make_optimizer(o.name, D.parameters(), o.d_lr, o.d_betas, o.eps)
    z_gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)
    fixed_y = grid_labels(cfg.model.n_classes, cfg.train.grid_size)[0] if cfg.model.n_classes else None
    grid_n = cfg.train.grid_size if fixed_y is None else fixed_y.shape[0]
    fixed_z = G.make_z(grid_n, torch.Generator().manual_seed(cfg.train.seed))
    state = TrainState(cfg, G, D, G_ema, opt_G, opt_D, z_gen, fixed_z, fixed_y)
    if cfg.train.ada_target > 0:
        state.ada = torch.zeros(2, device=device)  # p starts at 0: no augmentation until D starts to overfit
    if cfg.loss.lecam > 0:
        state.lecam = torch.zeros(2, device=device)  # the first D step replaces it (decay 0 at the start)
    if cfg.train.amp == "fp16":
        if device.type != "cuda":
            raise UserError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 or none")
        state.scaler_G, state.scaler_D = torch.amp.GradScaler("cuda"), torch.amp.GradScaler("cuda")
    return state


def restore_state(state: TrainState, ckpt: dict[str, Any], path: Path) -> None:
    ckpt_io.load_state_dict_checked(state.G, ckpt["G"], "generator", path)
    ckpt_io.load_state_dict_checked(state.D, ckpt["D"], "discriminator", path)
    if state.G_ema is not None:
        source = ckpt["G_ema"] if ckpt.get("G_ema") is not None else ckpt["G"]
        ckpt_io.load_state_dict_checked(state.G_ema, source, "generator EMA", path)
    try:
        state.opt_G.load_state_dict(ckpt["opt_G"])
        state.opt_D.load_state_dict(ckpt["opt_D"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"checkpoint {path} has optimizer state that does not fit the networks: {e}") from e
    # load_state_dict also restores the saved hyperparameters; the config (the checkpoint's own unless a
    # resume overrides it) is what config.toml records, so it is what trains
    o = state.cfg.optim
    for opt, lr, betas in ((state.opt_G, o.g_lr, o.g_betas), (state.opt_D, o.d_lr, o.d_betas)):
        for group in opt.param_groups:
            group.update(lr=lr, eps=o.eps)
            if "betas" in group:
                group["betas"] = (betas[0], betas[1])
    state.nimg = int(ckpt["nimg"])
    if "g_steps" in ckpt:
        state.g_steps = int(ckpt["g_steps"])
    else:  # written before bursts existed, when every G step took n_critic D steps of one batch each
        saved = ckpt["config"]
        state.g_steps = state.nimg // (int(saved["train"]["batch_size"]) * int(saved["loss"].get("n_critic", 1)))
    state.tick = int(ckpt["tick"])
    state.time_s = float(ckpt.get("time_s", 0.0))
    state.fixed_z = ckpt["fixed_z"]
    state.best = ckpt.get("best")
    for name in ("scaler_G", "scaler_D"):
        if getattr(state, name) is not None and ckpt.get(name):
            getattr(state, name).load_state_dict(ckpt[name])
    if state.ada is not None and isinstance(ckpt.get("ada"), torch.Tensor) and ckpt["ada"].shape == (2,):
        state.ada.copy_(ckpt["ada"])
    if state.lecam is not None and isinstance(ckpt.get("lecam"), torch.Tensor) and ckpt["lecam"].shape == (2,):
        state.lecam.copy_(ckpt["lecam"])
    ckpt_io.set_rng_state(ckpt["rng"], state.z_gen)


# ------------------------------------------------------------------------------------------------ steps


def check_batch_and_order(cfg: Config, G: nn.Module | None = None, D: nn.Module | None = None) -> None:
    """What every rank refuses alike before a file is written: a batch too small for batch norm over linear
    layers and, under torchrun, a global batch that does not split across the ranks (into whole PacGAN
    packs), and the simultaneous order (one backward through both nets, which DDP's per-net gradient averaging
    does not follow). G and D are built as shapes only unless given."""
    share = distributed.local_batch(cfg.train.batch_size, cfg.model.pac)
    world, pac = distributed.info().world_size, cfg.model.pac
    with torch.device("meta"):  # which layers, not their weights
        G = G if G is not None else build_generator(cfg)
        D = D if D is not None else build_discriminator(cfg)
    nets = {"G": (G, share, 1, "g_norm"), "D": (D, share // pac, pac, "d_norm")}
    for net, (module, batch, pack, norm) in nets.items():
        if batch < 2 and any(isinstance(m, nn.BatchNorm1d) for m in module.modules()):
            what = f"{batch} pack of model.pac={pack}" if pack > 1 else str(batch)
            per = f" in each of {world} processes" if world > 1 else ""
            raise UserError(f"{net}'s batch norm over linear layers needs at least 2 samples a batch, and "
                            f"train.batch_size={cfg.train.batch_size} gives {net} {what}{per}; use --set "
                            f"train.batch_size={2 * pack * world} or more, or --set model.{norm}=none")
    if distributed.info().enabled and cfg.train.step_order == "simultaneous":
        raise UserError("train.step_order=simultaneous does not run under torchrun (one backward pass through both "
                        "nets); use --set train.step_order=d_first, or train in one process")


class Stepper:
    """One training iteration in the order the config names; returns detached stats, never syncs."""

    def __init__(self, state: TrainState, loss: GANLoss) -> None:
        self.s = state
        self.loss = loss
        t = state.cfg.train
        self.order = t.step_order
        self.reuse_fake = t.reuse_fake
        self.global_batch = t.batch_size
        check_batch_and_order(state.cfg, state.G, state.D)
        device = next(state.G.parameters()).device
        # Under DDP the wrappers average gradients; the G step calls the bare D (frozen there), and
        # gradient-free forwards call the bare G, so DDP only sees the passes whose gradients it reduces.
        self.G_ddp = distributed.wrap(state.G, device)
        self.D_ddp = distributed.wrap(state.D, device)
        self.G_bare, self.D_bare = state.G, state.D
        if t.compile:
            self.G_ddp, self.D_ddp = torch.compile(self.G_ddp), torch.compile(self.D_ddp)
            self.G_bare, self.D_bare = torch.compile(state.G), torch.compile(state.D)
        amp_dtype = AMP_DTYPES.get(t.amp)
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
        lc = state.cfg.loss
        self.n_critic, self.gp_weight, self.clip = lc.n_critic, lc.gp_weight, lc.clip
        self.burst, self.burst_first, self.burst_every = lc.critic_burst, lc.critic_burst_first, lc.critic_burst_every
        self.r1_gamma, self.r1_every = lc.r1_gamma, lc.r1_every
        self.lecam_weight = lc.lecam
        self.noise_start, self.noise_kimg = lc.instance_noise, lc.instance_noise_kimg
        self.noise_std = 0.0  # set from the image counter by the loop
        self.topk_keep, self.topk_kimg = lc.topk, lc.topk_kimg
        self.topk_share = 1.0  # likewise
        self.lr_scale = 1.0  # likewise, under optim.lr_decay
        self.augment_policy = parse_policy(t.diffaugment)
        self.ada_target = t.ada_target
        # p moves by at most this much per ADA_INTERVAL D steps: 0 to 1 in ada_kimg
        self.ada_step = t.batch_size * ADA_INTERVAL / (t.ada_kimg * 1000)
        self.precision = t.matmul_precision
        self.d_steps = 0  # set from the image counter by the loop (set_progress), so lazy R1 resumes in phase
        self.d_scale = 0.5 if state.cfg.loss.d_reduction == "mean" else 1.0
        self.ema_beta = ema_beta(t.batch_size, t.ema_kimg) if state.G_ema is not None else None
        # Without batch statistics in D, one pass over [real; fake] equals two passes and runs faster.
        batch_coupled = (nn.modules.batchnorm._BatchNorm, MinibatchStd, MinibatchDiscrimination)
        self.joint_d = not any(isinstance(m, batch_coupled) for m in state.D.modules())
        self.joint_d = self.joint_d and not (loss.gradient_penalty or lc.r1_gamma > 0)
        self.n_classes = state.cfg.model.n_classes
        self.ac_weight = lc.ac_weight if self.n_classes and state.cfg.model.d_cond == "acgan" else 0.0
        # G first on a reused fake batch runs as one pass (see _one_pass) unless D must see fresh
        # augmentation or instance noise in each step, or DDP must reduce each step's gradients on its own.
        self.share_fake_pass = (t.step_order == "g_first" and t.reuse_fake and not self.augment_policy
                                and not distributed.info().enabled)

    def d_steps_for(self, g_step: int) -> int:
        """D steps before (or after) G step number `g_step` (from 0): n_critic, or loss.critic_burst in the
        first critic_burst_first G steps and every critic_burst_every-th, as the WGAN authors' code does to
        keep its critic near optimal."""
        if self.burst and (g_step < self.burst_first or (self.burst_every and g_step % self.burst_every == 0)):
            return self.burst
        return self.n_critic

    @staticmethod
    def _apply(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    def _z(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Noise and, for a conditional G, uniformly drawn labels. Every rank draws the global batch and keeps
        its own slice."""
        s = self.s
        z = torch.randn(self.global_batch, s.G.z_dim, device=s.z_gen.device, generator=s.z_gen)
        if not self.n_classes:
            return distributed.rank_slice(z), None
        y = torch.randint(0, self.n_classes, (self.global_batch,), device=s.z_gen.device, generator=s.z_gen)
        return distributed.rank_slice(z), distributed.rank_slice(y)

    def _fake(self, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        z, y = self._z()
        args = (z,) if y is None else (z, y)
        with self.autocast():
            if not grad:
                with torch.no_grad():
                    return self.G_bare(*args), y
            return self.G_ddp(*args), y

    def _D(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's adversarial logits [B] (float32) and, for AC-GAN, its class logits [B, K]."""
        out = net(x) if y is None else net(x, y)
        if isinstance(out, tuple):
            return out[0].float(), out[1].float()
        return out.float(), None

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees: DiffAugment (under ADA, each image with probability p), then instance noise; random
        draws from the checkpointed generator."""
        if self.augment_policy:
            augmented = diff_augment(x, self.augment_policy, self.s.z_gen)
            if self.s.ada is None:
                x = augmented
            else:
                chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=self.s.z_gen) < self.s.ada[0]
                x = torch.where(chosen, augmented, x)
        if self.noise_std <= 0:
            return x
        return x + self.noise_std * torch.randn(x.shape, device=x.device, generator=self.s.z_gen, dtype=x.dtype)

    def set_progress(self, nimg: int) -> None:
        self.d_steps = nimg // self.global_batch
        self.noise_std = instance_noise_std(nimg, self.noise_start, self.noise_kimg)
        self.topk_share = topk_share(nimg, self.topk_keep, self.topk_kimg)
        o = self.s.cfg.optim
        if o.lr_decay != "none":
            end_kimg = o.lr_decay_end_kimg or self.s.cfg.train.kimg
            self.lr_scale = lr_scale(nimg, o.lr_decay, o.lr_decay_start_kimg, end_kimg)
            for opt, base in ((self.s.opt_G, o.g_lr), (self.s.opt_D, o.d_lr)):
                for group in opt.param_groups:
                    group["lr"] = base * self.lr_scale

    def _d_inputs(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """What D sees of each batch, and whether this D step takes the (lazy) R1 penalty; for R1 the reals
        are made to require grad."""
        real, fake = self._noisy(real), self._noisy(fake)
        r1 = self.r1_gamma > 0 and self.d_steps % self.r1_every == 0
        if r1:
            real = real.detach().requires_grad_(True)
        return real, fake, r1

    def _d_logits(self, net: nn.Module, real: torch.Tensor, y_real: torch.Tensor | None, fake: torch.Tensor,
                  y_fake: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """(real logits, real class logits, fake logits, fake class logits), in one pass when D allows."""
        with self.autocast():
            if not self.joint_d:
                return (*self._D(net, real, y_real), *self._D(net, fake, y_fake))
            y = None if y_real is None else torch.cat([y_real, y_fake])
            logits, classes = self._D(net, torch.cat([real, fake]), y)
        n_real = len(logits) * real.shape[0] // (real.shape[0] + fake.shape[0])  # a PacGAN D: one logit per pac
        real_logits, fake_logits = logits.split([n_real, len(logits) - n_real])
        real_classes, fake_classes = classes.split([n_real, len(classes) - n_real]) if classes is not None else \
            (None, None)
        return real_logits, real_classes, fake_logits, fake_classes

    def _with_penalties(self, d_loss: torch.Tensor, real: torch.Tensor, y_real: torch.Tensor | None,
                        real_logits: torch.Tensor, fake: torch.Tensor, r1: bool) -> torch.Tensor:
        """D's loss plus its gradient penalty (WGAN-GP) and R1 terms where they are on."""
        if self.loss.gradient_penalty and self.gp_weight > 0:
            # conditional critics are penalised at the real labels (the interpolates' anchor)
            def critic(x: torch.Tensor) -> torch.Tensor:
                return self._D(self.D_bare, x, y_real)[0]

            d_loss = d_loss + self.gp_weight * gradient_penalty(critic, real, fake, generator=self.s.z_gen)
        if r1:
            d_loss = d_loss + 0.5 * self.r1_gamma * self.r1_every * r1_penalty(real_logits, real)
        return d_loss

    def _with_lecam(self, d_loss: torch.Tensor, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """D's loss plus loss.lecam times the LeCam term, after this step's mean logits join their EMAs
        (averaged over processes under DDP, so every rank holds the same EMAs); on the device, no sync."""
        ema = self.s.lecam
        if ema is None:
            return d_loss
        means = torch.stack([real_logits.detach().float().mean(), fake_logits.detach().float().mean()])
        decay = lecam_ema_decay(self.d_steps)
        ema.mul_(decay).add_(distributed.all_reduce_mean(means), alpha=1.0 - decay)
        return d_loss + self.lecam_weight * lecam_penalty(real_logits, fake_logits, ema[0], ema[1])

    def _adapt_augment(self, real_logits: torch.Tensor) -> None:
        """StyleGAN2-ADA's heuristic after each D step: sum sign(D(real)); every ADA_INTERVAL steps move p up
        when its mean is above ada_target (D too sure of the reals: overfitting), down when below. On the
        device, with no sync; under DDP the ranks' means are averaged so all hold the same p."""
        ada = self.s.ada
        if ada is None:
            return
        ada[1] += torch.sign(real_logits.detach().float()).mean()
        if (self.d_steps + 1) % ADA_INTERVAL == 0:
            overfit = distributed.all_reduce_mean(ada[1:2] / ADA_INTERVAL)[0]
            ada[0] = (ada[0] + torch.sign(overfit - self.ada_target) * self.ada_step).clamp(0.0, 1.0)
            ada[1] = 0.0

    def _clip_d(self) -> None:
        if self.loss.clip_weights:
            with torch.no_grad():
                for p in self.s.D.parameters():
                    p.clamp_(-self.clip, self.clip)

    def _d_step(self, real: torch.Tensor, y_real: torch.Tensor | None, fake: torch.Tensor,
                y_fake: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        s = self.s
        real, fake, r1 = self._d_inputs(real, fake)
        real_logits, real_classes, fake_logits, fake_classes = self._d_logits(self.D_ddp, real, y_real, fake, y_fake)
        d_loss = (self.loss.d_real(real_logits) + self.loss.d_fake(fake_logits)) * self.d_scale
        if real_classes is not None and self.ac_weight > 0:
            d_loss = d_loss + self.ac_weight * (F.cross_entropy(real_classes, y_real)
                                                + F.cross_entropy(fake_classes, y_fake))
        d_loss = self._with_penalties(d_loss, real, y_real, real_logits, fake, r1)
        d_loss = self._with_lecam(d_loss, real_logits, fake_logits)
        self._apply(d_loss, s.opt_D, s.scaler_D)
        self._clip_d()
        self._adapt_augment(real_logits)
        self.d_steps += 1
        return d_loss.detach(), real_logits.detach(), fake_logits.detach()

    def _g_step(self, fake: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        s = self.s
        s.D.requires_grad_(False)  # G's step needs D's input gradients only, not its weight gradients
        try:
            with self.autocast():
                fake_logits, fake_classes = self._D(self.D_bare, self._noisy(fake), y)
            g_loss = self.loss.g(top_k(fake_logits, self.topk_share))
            if fake_classes is not None and self.ac_weight > 0:
                g_loss = g_loss + self.ac_weight * F.cross_entropy(fake_classes, y)
            self._apply(g_loss, s.opt_G, s.scaler_G)
        finally:
            s.D.requires_grad_(True)
        if s.G_ema is not None:
            update_ema(s.G_ema, s.G, self.ema_beta)
        return g_loss.detach()

    def _one_pass(self, real: torch.Tensor, y_real: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Both losses from one D pass over [real; fake]: G's loss is differentiated to G's weights only,
        D's loss to D's weights only, then both optimizers step. This is the simultaneous order (TensorFlow's
        GradientTape recipe), and it equals G first on a reused fake batch, whose D step sees the same D
        weights and the same fake batch as its G step."""
        s = self.s
        fake, y = self._fake(grad=True)
        real, fake_seen, r1 = self._d_inputs(real, fake)
        real_logits, real_classes, fake_logits, fake_classes = self._d_logits(self.D_bare, real, y_real,
                                                                              fake_seen, y)
        d_loss = (self.loss.d_real(real_logits) + self.loss.d_fake(fake_logits)) * self.d_scale
        g_loss = self.loss.g(top_k(fake_logits, self.topk_share))
        if real_classes is not None and self.ac_weight > 0:
            ce_fake = F.cross_entropy(fake_classes, y)
            d_loss = d_loss + self.ac_weight * (F.cross_entropy(real_classes, y_real) + ce_fake)
            g_loss = g_loss + self.ac_weight * ce_fake
        d_loss = self._with_penalties(d_loss, real, y_real, real_logits, fake_seen, r1)
        d_loss = self._with_lecam(d_loss, real_logits, fake_logits)
        # Both backward passes before either step: calling _apply for G then D is equal but measured 5% slower
        # (MLP-BN, batch 64), as the kept graph's buffers stay alive through G's optimizer step.
        s.opt_G.zero_grad(set_to_none=True)
        s.opt_D.zero_grad(set_to_none=True)
        for loss, opt, scaler in ((g_loss, s.opt_G, s.scaler_G), (d_loss, s.opt_D, s.scaler_D)):
            params = [p for group in opt.param_groups for p in group["params"]]
            torch.autograd.backward(loss if scaler is None else scaler.scale(loss), inputs=params,
                                    retain_graph=opt is s.opt_G)
        for opt, scaler in ((s.opt_D, s.scaler_D), (s.opt_G, s.scaler_G)):
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
        self._clip_d()
        self._adapt_augment(real_logits)
        self.d_steps += 1
        if s.G_ema is not None:
            update_ema(s.G_ema, s.G, self.ema_beta)
        return d_loss.detach(), g_loss.detach(), real_logits.detach(), fake_logits.detach()

    def __call__(self, reals: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        """One G step and a D step for each real batch that `reals` yields (d_steps_for says how many), each
        batch (images, labels; labels None for an unconditional model) drawn as its D step comes."""
        with matmul_precision(self.precision):  # the training step's own; grids and metrics keep the default
            return self._iteration(reals)

    def _iteration(self, reals: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        if self.order == "simultaneous" or (self.share_fake_pass and self.noise_std <= 0):
            d_loss, g_loss, real_logits, fake_logits = self._one_pass(*next(iter(reals)))
        elif self.order == "d_first":
            for real, y_real in reals:
                fake, y = self._fake(grad=self.reuse_fake)
                d_loss, real_logits, fake_logits = self._d_step(real, y_real, fake.detach(), y)
            if not self.reuse_fake:
                fake, y = self._fake(grad=True)
            g_loss = self._g_step(fake, y)
        else:  # g_first
            fake, y = self._fake(grad=True)
            g_loss = self._g_step(fake, y)
            for real, y_real in reals:
                fake_for_d, y_for_d = (fake.detach(), y) if self.reuse_fake else self._fake(grad=False)
                d_loss, real_logits, fake_logits = self._d_step(real, y_real, fake_for_d, y_for_d)
        # [d_loss, g_loss, mean D(real), mean D(fake)], still on the device
        return torch.stack([d_loss, g_loss, torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()])


# ------------------------------------------------------------------------------------------------- loop


class _StopFlag:
    """Ctrl-C / SIGTERM ask the loop to stop after the current iteration; a second Ctrl-C aborts."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce  # rank 0 says so; the other ranks stay quiet
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:  # the step under way can take seconds (a WGAN critic burst, a tick's evaluation)
            sys.stderr.write("\nstopping: the current step finishes, then a checkpoint is saved"
                             + (" (Ctrl-C again aborts without one)\n" if signum == signal.SIGINT else "\n"))
            sys.stderr.flush()

    def __enter__(self) -> _StopFlag:
        if hasattr(signal, "SIGTERM") and _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after a stop request once the checkpoint is safely on disk."""

    def __init__(self, run_dir: Path, kimg: float) -> None:
        super().__init__(f"stopped at {kimg:.3f} kimg; checkpoint saved in {run_dir}")
        self.run_dir = run_dir
        self.kimg = kimg


def grid_name(nimg: int, tick_kimg: float) -> str:
    k, r = divmod(nimg, 1000)
    return f"fakes{k:06d}.png" if tick_kimg >= 1 else f"fakes{k:06d}.{r:03d}.png"


def available_cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the whole machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_note(threads: int, processes: int = 1) -> str | None:
    """A note when train.threads asks for more threads than there are CPUs: the extra ones only contend (on a
    2-CPU machine, 3 threads trained the default preset 1.7x slower than 2)."""
    cpus = available_cpus()
    if threads * processes <= cpus:
        return None
    each = f" in each of {processes} processes" if processes > 1 else ""
    fits = max(1, cpus // processes)
    return (f"train.threads={threads}{each} is more threads than the {cpus} CPUs this run may use; the extra "
            f"ones contend for them and slow training down: use train.threads={fits}, or 0 to let torch choose")


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, resume_from: Path | None = None,
                 log: Any = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log = log or (lambda msg: tqdm.write(msg, file=sys.stdout))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.dist = distributed.info()
        self.device = pick_device(cfg.train.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.data: ImageData = load_dataset(cfg.data)
        self.state = build_state(cfg, self.device)
        self.state.classes = list(self.data.classes) if cfg.model.n_classes else None
        fmt = torch.channels_last if use_channels_last(cfg, self.device) and has_conv(self.state.D) else None
        self.data.to(self.device, fmt)
        self._check_labels()
        tensorboard_log.check_available(cfg.train.tensorboard)
        self.tb: tensorboard_log.TensorBoardLog | None = None  # opened by run(), on rank 0
        if resume_from is not None:
            restore_state(self.state, ckpt_io.load_checkpoint(resume_from, self.device), resume_from)
        self.sampler = EpochSampler(len(self.data), cfg.train.batch_size, cfg.train.seed, self.device,
                                    copies=2 if cfg.data.mirror else 1)
        self.stepper = Stepper(self.state, get_loss(cfg.loss.name, cfg.loss.label_smoothing))
        for line in inert_settings(cfg):
            self.log(f"note: {line}")
        crowded = threads_note(cfg.train.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if crowded:
            self.log(f"note: {crowded}")
        if cfg.data.max_images >= len(self.data) and self.data.split == "train":
            self.log(f"note: data.max_images = {cfg.data.max_images} but {cfg.data.name} has {len(self.data)} "
                     "images: training on all of them")
        if 0 < self.data.source_side * UPSCALE_NOTE <= cfg.data.img_size:
            side, size = self.data.source_side, cfg.data.img_size
            kept = "long" if cfg.data.fit == "pad" else "short"  # the side that becomes the square's
            self.log(f"note: {cfg.data.name}'s images are about {side} px on their {kept} side, upscaled "
                     f"{size / side:.3g}x to data.img_size={size}: that adds no detail, only time; a smaller "
                     "data.img_size trains faster on the same information")
        if cfg.data.download and cfg.data.name not in TORCHVISION_SETS:
            self.log(f"note: data.download has no effect on {cfg.data.name}: it fetches only "
                     f"{', '.join(TORCHVISION_SETS)}")
        if self.data.colour_source and cfg.data.channels == 1:
            self.log(f"note: {cfg.data.name} is in colour and data.channels is 1, so G learns grey images; "
                     "--set data.channels=3 trains in colour")
        splits = split_subfolders_note(cfg.data.name, self.data.classes)
        if splits:
            self.log(f"note: {splits}")
        self._inception_weights: str | None = None
        if cfg.eval.every_kimg > 0:
            from .metrics.core import (
                INCEPTION_METRICS,
                class_digits,
                log_digit_metrics_note,
                not_digit_classes,
                read_metrics_history,
            )

            if "class_acc" in cfg.eval.metrics and class_digits(self.data.classes) is None:  # a folder's names
                raise UserError(f"eval.metrics: {not_digit_classes(self.data.classes)}; drop class_acc")
            read_metrics_history(self.run_dir / "metrics.json")  # a resumed run's: refused now, not at its first tick
            log_digit_metrics_note(cfg.data.name, cfg.eval.metrics, self.log)
            if set(INCEPTION_METRICS) & set(cfg.eval.metrics):  # found and checked now, not at the first evaluation
                from .metrics.inception import inception_weights

                weights = inception_weights(cfg.eval.inception_weights or None, "eval.inception_weights")
                self._inception_weights = str(weights)
        if cfg.train.sync_bn and not self.dist.enabled:
            self.log("note: train.sync_bn has no effect in a single process (it syncs batch norm across torchrun "
                     "processes)")
        if cfg.train.matmul_precision == "medium" and self.device.type == "cpu" and not cpu_has_bf16_matmul():
            self.log("note: train.matmul_precision=medium needs a CPU with a bfloat16 matmul path (AVX-512 or "
                     "AMX); this one has none, so matmuls stay float32")
        if cfg.train.amp == "bf16" and self.device.type == "cpu" and not cpu_has_bf16_matmul():
            # measured: bfloat16 matmuls at 0.3 GFLOP/s on such a CPU, against 150-190 in float32
            self.log("warning: train.amp=bf16 on a CPU without a bfloat16 path (AVX512_BF16 or AMX) runs far "
                     "slower than float32; set train.amp=none here")
        self.samples_dir = self.run_dir / "samples"
        self.stats_path = self.run_dir / "stats.jsonl"
        self._real_set = None
        self._real_reference: tuple[float, torch.Tensor, float] | None = None  # see _reference
        self._last_eval_nimg = self.state.nimg
        self._resumed_nimg = self.state.nimg if resume_from is not None else None

    def _check_labels(self) -> None:
        k = self.cfg.model.n_classes
        if not k:
            return
        if self.data.labels is None or self.data.labels.numel() == 0:
            raise UserError(f"model.n_classes={k} needs labelled data, but {self.cfg.data.name} has no labels")
        top = int(self.data.labels.max()) + 1
        if top > k:
            raise UserError(f"model.n_classes={k} but {self.cfg.data.name} has labels up to {top - 1}; "
                            f"set model.n_classes={top}")
        if top < k:  # G would be asked for classes of which D never sees a real image
            names = f" ({', '.join(self.data.classes)})" if 0 < len(self.data.classes) <= 12 else ""
            raise UserError(f"model.n_classes={k} but {self.cfg.data.name} has {top} classes{names}; "
                            f"set model.n_classes={top}")

    def real_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = distributed.rank_slice(self.sampler.indices(iteration))
        mirrored = None
        if self.sampler.copies > 1:  # data.mirror: indices N and up are the images flipped left-right
            mirrored = idx >= len(self.data)
            idx = idx.remainder(len(self.data))
        labels = self.data.labels.index_select(0, idx) if self.cfg.model.n_classes else None
        real = self.data.batch(idx)
        if mirrored is not None:
            real = torch.where(mirrored.view(-1, 1, 1, 1), real.flip(-1), real)
        return real, labels

    # ---- outputs at ticks

    def _sample_grid(self) -> torch.Tensor:
        G = self.state.G_ema if self.state.G_ema is not None else self.state.G
        was_training = G.training
        G.eval()
        z = self.state.fixed_z.to(self.device)
        with torch.no_grad():
            fake = G(z) if self.state.fixed_y is None else G(z, self.state.fixed_y.to(self.device))
        G.train(was_training)
        return fake

    def _grid_nrow(self) -> int | None:
        k = self.cfg.model.n_classes
        return grid_labels(k, self.cfg.train.grid_size)[1] if k else None

    def _real_grid(self) -> torch.Tensor:
        n = min(self.cfg.train.grid_size, len(self.data))
        idx = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.cfg.train.seed))[:n]
        return self.data.batch(idx.to(self.device))

    def _write_reals(self) -> None:
        path = self.samples_dir / "reals.png"
        if not path.exists():
            report.save_grid(self._real_grid(), path)

    def _open_tensorboard(self) -> None:
        events = self.run_dir / tensorboard_log.LOG_DIR
        first = not any(events.glob("events.out.tfevents.*"))  # a run that turns it on at a resume gets reals too
        self.tb = tensorboard_log.TensorBoardLog(self.run_dir, self._resumed_nimg)
        self.tb.start(self.cfg.to_toml(), self.state.nimg, report.grid_image(self._real_grid()) if first else None)

    def _small_data_advice(self) -> str:
        """On a few hundred images D can learn them by heart and G collapse; DiffAugment is the measured cure."""
        if len(self.data) > SMALL_DATA_IMAGES or self.cfg.train.diffaugment:
            return ""
        return (f"With {len(self.data)} training images D may be learning them by heart: --set "
                "train.diffaugment=translation,cutout --set train.ada_target=0.6 (adaptive augmentation) kept the "
                "default nets learning on 100 digits where they collapsed without it (README, Small data). ")

    def _collapse_advice(self) -> str:
        c = self.cfg
        tries = [f"loss.name={name}" for name in ("ns", "hinge") if name != c.loss.name]
        tries.append("lower optim.g_lr / optim.d_lr")
        if not c.model.d_mbdisc:  # cured R5's collapse where d_mbstd and label smoothing did not (README)
            tries.append("model.d_mbdisc=50")
        if not c.model.d_mbstd:
            tries.append("model.d_mbstd=true")
        return f"{self._small_data_advice()}Try {', '.join(tries)}, or resume from an earlier checkpoint"

    def _reference(self) -> tuple[float, torch.Tensor, float]:
        """The real grid's sample spread, nearest-neighbour distances and own near-copy share, once a run."""
        if self._real_reference is None:
            real = self._real_grid()
            nearest = nearest_distances(real)
            self._real_reference = (sample_spread(real), nearest, near_copy_share(real, nearest))
        return self._real_reference

    def _diversity(self, fake: torch.Tensor) -> float:
        """Mean pairwise distance of the grid's samples over that of as many real images: near 1 for a
        G that covers the data, near 0 when its samples are all alike."""
        real_spread = self._reference()[0]
        return sample_spread(fake) / real_spread if real_spread > 0 else float("nan")

    def _duplicates(self, fake: torch.Tensor) -> float:
        """Share of the grid's samples with a near-copy in the grid (see near_copy_share); nan for a grid too
        small to judge."""
        if fake.shape[0] < DUPLICATE_CHECK_MIN_GRID:
            return float("nan")
        return near_copy_share(fake, self._reference()[1])

    def _save_checkpoint(self) -> Path:
        # the training set's size and fingerprint too, so a resume can say when the data changed under the run
        state = {**self.state.to_checkpoint(), "n_images": len(self.data), "data_fingerprint": self.data.fingerprint}
        return ckpt_io.save_checkpoint(state, self.run_dir, self.cfg.train.keep_ckpts)

    def _tick(self, sums: torch.Tensor, iters: int, tick_start: float, nimg_start: int, final: bool,
              stopping: bool = False) -> None:
        """`final`: the last tick of this process, checkpointed; `stopping`: it ends on a stop request, so the
        checkpoint comes without a tick evaluation (a scheduler's SIGTERM leaves seconds, not minutes)."""
        s, t = self.state, self.cfg.train
        values = distributed.all_reduce_mean(sums / max(iters, 1)).tolist()  # the one sync per tick
        now = time.perf_counter()
        kimg = s.nimg / 1000
        sec_per_kimg = (now - tick_start) / max((s.nimg - nimg_start) / 1000, 1e-9)
        s.tick += 1
        stats = {
            "tick": s.tick,
            "kimg": round(kimg, 3),
            "epoch": round(self.sampler.epochs(s.nimg // t.batch_size), 3),
            "d_loss": values[0],
            "g_loss": values[1],
            "d_real": values[2],
            "d_fake": values[3],
            "sec_per_kimg": round(sec_per_kimg, 4),
            "lr_scale": self.stepper.lr_scale,
            "time_s": round(s.time_s, 2),
        }
        if s.ada is not None:
            stats["augment_p"] = round(float(s.ada[0]), 4)
        if not all(math.isfinite(v) for v in values[:2]):
            last = ckpt_io.list_checkpoints(self.run_dir)
            where = f"; the last good checkpoint is {last[-1]}" if last else ""
            raise UserError(
                f"training diverged at {kimg:.2f} kimg (d_loss {values[0]}, g_loss {values[1]}){where}; "
                "lower optim.g_lr / optim.d_lr or change the loss"
            )
        if not self.dist.is_main:
            return
        self.log(
            f"tick {s.tick:<4d} kimg {kimg:<8.2f} epoch {stats['epoch']:<7.2f} sec/kimg {sec_per_kimg:<7.2f} "
            f"d_loss {values[0]:<7.4f} g_loss {values[1]:<7.4f} D(real) {values[2]:.3f} D(fake) {values[3]:.3f} "
            f"time {report.format_duration(s.time_s)}"
            + (f" augment p {stats['augment_p']:.3f}" if s.ada is not None else "")
        )
        grid = self._sample_grid()
        diversity = self._diversity(grid)  # nan for a one-image grid
        stats["diversity"] = round(diversity, 4) if math.isfinite(diversity) else None
        duplicates = self._duplicates(grid)
        stats["duplicates"] = round(duplicates, 4) if math.isfinite(duplicates) else None
        if kimg >= COLLAPSE_CHECK_FROM_KIMG:
            if diversity < t.collapse_warn:
                self.log(f"  warning: the grid's samples at {kimg:.2f} kimg are nearly alike (spread "
                         f"{diversity:.2f} of the real images'): G looks collapsed. {self._collapse_advice()}")
            elif t.duplicate_warn > 0 and duplicates > t.duplicate_warn and kimg >= DUPLICATE_CHECK_FROM_KIMG:
                self.log(f"  warning: {duplicates:.0%} of the grid's samples at {kimg:.2f} kimg have a near-copy "
                         f"in the grid (real images: {self._reference()[2]:.0%}): G looks partly collapsed, drawing "
                         f"a few modes. {self._collapse_advice()}")
        if kimg >= COLLAPSE_CHECK_FROM_KIMG and d_wins(self.cfg, values[2], values[3]):
            self.log(f"  warning: D tells real from fake almost perfectly at {kimg:.2f} kimg (mean D(real) "
                     f"{values[2]:.3f}, D(fake) {values[3]:.3f}): G gets little to learn from. "
                     f"{self._small_data_advice()}Try a lower "
                     "optim.d_lr or a higher optim.g_lr, loss.label_smoothing=0.1, loss.instance_noise=0.1 "
                     f"loss.instance_noise_kimg={max(10, round(2 * kimg)):g} (it fades from the run's start), "
                     "loss.r1_gamma=0.1 or model.d_spectral_norm=true, or resume from an earlier checkpoint")
        try:
            records = self._evaluate() if not stopping and self._eval_due(final) else []
        except Exception as e:
            path = self._save_checkpoint()  # the training before this evaluation is kept
            if isinstance(e, UserError):
                raise UserError(f"{e} (at the evaluation of {kimg:.2f} kimg; the training up to it is saved in "
                                f"{path.name}, to resume once that is fixed)") from e
            raise
        if records:
            stats["metrics"] = {r["metric"]: r["value"] for r in records}
            self.log("  " + "  ".join(f"{r['metric']} {r['value']:.4g}" for r in records
                                      if isinstance(r["value"], int | float)))
        with open(self.stats_path, "a") as f:
            f.write(json.dumps(stats) + "\n")
        pixels = report.save_grid(grid, self.samples_dir / grid_name(s.nimg, t.tick_kimg), nrow=self._grid_nrow())
        if self.tb is not None:
            self.tb.tick(stats, pixels, s.nimg)
        improved = self._update_best(records)
        if final or improved or s.tick % t.ckpt_ticks == 0:
            path = self._save_checkpoint()
            if improved:
                ckpt_io.atomic_copy(path, path.parent / "best.pt")

    # ---- evaluation at ticks

    def _eval_due(self, final: bool) -> bool:
        every = self.cfg.eval.every_kimg
        if every <= 0:
            return False
        every_nimg = max(1, int(round(every * 1000)))
        due = final or self.state.nimg // every_nimg > self._last_eval_nimg // every_nimg
        if due:
            self._last_eval_nimg = self.state.nimg
        return due

    def _evaluate(self) -> list[dict[str, Any]]:
        from .metrics.core import (
            EvalContext,
            ImageSet,
            append_metrics_json,
            evaluate,
            generated_labels,
            quantize,
            real_image_set,
        )

        e, s = self.cfg.eval, self.state
        G = s.G_ema if s.G_ema is not None else s.G

        def draw(count: int) -> torch.Tensor:
            return quantize(G.sample(count, seed=self.cfg.train.seed)).cpu()

        def fake() -> ImageSet:
            return ImageSet(draw(e.n), "generated", f"kimg{s.nimg / 1000:.3f}", labels=generated_labels(G, e.n),
                            classes=s.classes)

        def real() -> ImageSet:  # made once, and only for a metric that reads it (modes does not)
            if self._real_set is None:
                self._real_set = real_image_set(self.cfg.data, self.data)
            return self._real_set

        ctx = EvalContext(fake, real, device=self.device, seed=self.cfg.train.seed, fake_fn=draw,
                          inception_weights=self._inception_weights)
        records = evaluate(ctx, e.metrics, kimg=s.nimg / 1000)
        append_metrics_json(records, self.run_dir / "metrics.json", {"checkpoint": None, "kimg": s.nimg / 1000})
        return records

    def _update_best(self, records: list[dict[str, Any]]) -> bool:
        from .metrics.core import BEST_DIRECTION

        if not records:
            return False
        name = self.cfg.eval.best_metric or records[0]["metric"]
        value = next((r["value"] for r in records if r["metric"] == name), None)
        if value is None or name not in BEST_DIRECTION:
            return False
        best = self.state.best
        better = best is None or (value < best["value"] if BEST_DIRECTION[name] == "min" else value > best["value"])
        if better:
            self.state.best = {"metric": name, "value": float(value), "kimg": self.state.nimg / 1000}
        return better

    def _finish(self) -> None:
        grids = report.fixed_noise_grids(self.samples_dir)
        report.make_gif(grids, self.run_dir / "progress.gif")
        report.save_grid(self._sample_grid(), self.run_dir / "final.png", nrow=self._grid_nrow())
        self._write_report()

    def _write_report(self) -> None:
        """report.html (with losses.png), for runs made by train() / resume(), which write config.toml."""
        if (self.run_dir / "config.toml").is_file():
            try:
                write_html_report(self.run_dir)
            except UserError as e:  # a hand-edited config.toml, say: the trained run stands without its page
                self.log(f"  note: report.html not written: {e}")
        else:
            stats = report.read_stats(self.stats_path)
            if stats:
                report.plot_losses(stats, self.run_dir / "losses.png")

    # ---- the loop

    def run(self) -> Path:
        s, t = self.state, self.cfg.train
        if self.dist.is_main:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
            self._write_reals()
            if t.tensorboard and s.nimg < int(round(t.kimg * 1000)):
                self._open_tensorboard()
        try:
            return self._train_loop()
        finally:
            if self.tb is not None:
                self.tb.close()
                self.tb = None

    def _train_loop(self) -> Path:
        s, t = self.state, self.cfg.train
        main = self.dist.is_main
        total_nimg = int(round(t.kimg * 1000))
        tick_nimg = max(1, int(round(t.tick_kimg * 1000)))
        next_tick = (s.nimg // tick_nimg + 1) * tick_nimg
        sums = torch.zeros(4, device=self.device)
        iters = 0
        tick_start, nimg_start = time.perf_counter(), s.nimg
        last_time = tick_start
        bar = tqdm(total=total_nimg, initial=min(s.nimg, total_nimg), unit="img", unit_scale=True,
                   dynamic_ncols=True, disable=None if main else True, leave=False, file=sys.stderr)
        with _StopFlag(announce=main) as stop:
            while s.nimg < total_nimg:
                iteration = s.nimg // t.batch_size  # counts D steps: each takes one real batch
                self.stepper.set_progress(s.nimg)
                n_d = self.stepper.d_steps_for(s.g_steps)
                # each real batch drawn when its D step comes: a burst of 100 does not hold 100 batches at once
                sums += self.stepper(self.real_batch(iteration + k) for k in range(n_d))
                iters += 1
                s.nimg += t.batch_size * n_d
                s.g_steps += 1
                now = time.perf_counter()
                s.time_s += now - last_time
                last_time = now
                bar.update(t.batch_size * n_d)
                if iters % 25 == 0 and not bar.disable:
                    d_loss, g_loss, d_real, d_fake = (sums / iters).tolist()
                    bar.set_postfix(d_loss=f"{d_loss:.3f}", g_loss=f"{g_loss:.3f}", D_real=f"{d_real:.2f}",
                                    D_fake=f"{d_fake:.2f}")
                done = s.nimg >= total_nimg
                stopping = distributed.any_rank(stop.requested, self.device)
                if s.nimg >= next_tick or done or stopping:
                    self._tick(sums, iters, tick_start, nimg_start, final=done or stopping,
                               stopping=stopping and not done)
                    sums.zero_()
                    iters = 0
                    next_tick = (s.nimg // tick_nimg + 1) * tick_nimg
                    tick_start, nimg_start = time.perf_counter(), s.nimg
                    last_time = tick_start
                if stopping:
                    bar.close()
                    if main:
                        self._write_report()
                    raise TrainingInterrupted(self.run_dir, s.nimg / 1000)
        bar.close()
        if not main:
            return self.run_dir
        self._finish()
        self.log(f"done: {s.nimg / 1000:.2f} kimg in {report.format_duration(s.time_s)}; run directory "
                 f"{self.run_dir} (open {self.run_dir / 'report.html'} in a browser)")
        return self.run_dir


# ------------------------------------------------------------------------------------------- public API


def _prepare_stats_for_resume(stats_path: Path, nimg: int) -> None:
    """Drop stats lines written after the checkpoint being resumed; they will be produced again."""
    if not stats_path.is_file():
        return
    keep = [record for record in report.read_stats(stats_path) if record["kimg"] <= nimg / 1000 + 1e-9]
    ckpt_io.atomic_write_text("".join(json.dumps(record) + "\n" for record in keep), stats_path)


def _remove_unstarted_run(run_dir: Path, made: list[Path]) -> None:
    """Remove a run directory that holds nothing but the config.toml written at its start, and the folders
    above it that were made for it (`made`, deepest first) where they are left empty."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {"config.toml"}:
        shutil.rmtree(run_dir)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            break


def _missing_folders(path: Path) -> list[Path]:
    """path and its ancestors that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def train(cfg: Config, out: Path | str = "runs", log: Any = None) -> Path:
    """Train a fresh run under out/NNNN-<preset>; returns the run directory. Under torchrun, rank 0 makes
    the directory and writes every file; the other ranks train their share of each batch."""
    if not isinstance(cfg, Config):
        raise TypeError(f"train() takes a Config, got {type(cfg).__name__}; build one with "
                        "ganforge.load_config(preset=..., overrides=[...])")
    cfg = anchored_paths(from_dict(cfg.to_dict()))  # a Config edited after load_config is checked as a loaded one
    check_batch_and_order(cfg)  # on every rank, before any file
    main = distributed.info().is_main
    made = _missing_folders(Path(out).absolute())
    run_dir = new_run_dir(out, cfg.preset) if main else None
    run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None))
    if main:
        ckpt_io.atomic_write_text(cfg.to_toml(), run_dir / "config.toml")
    try:
        trainer = Trainer(cfg, run_dir, log=log if main else (lambda msg: None))
    except BaseException:
        # a run that could not start (bad data path, device, net size) leaves no empty run directory behind
        if main:
            _remove_unstarted_run(run_dir, made)
        raise
    if cfg.preset not in preset_names():  # a config file that names no preset, or its own label
        trainer.log("note: this config builds on no preset, so the settings it leaves out take ganforge's built-in "
                    f"defaults rather than the default preset's (this run: {cfg.data.img_size}x{cfg.data.img_size} "
                    f"{cfg.model.g}/{cfg.model.d}, lr {cfg.optim.g_lr:g}, batch {cfg.train.batch_size}); add "
                    "preset = \"default\" at the top of the file to build on that preset")
    world = distributed.info().world_size
    trainer.log(f"run directory {run_dir} (device {trainer.device}, {len(trainer.data)} images"
                + (f", {world} processes)" if world > 1 else ")"))
    with ckpt_io.run_lock(run_dir) if main else contextlib.nullcontext():
        return trainer.run()


def anchored_paths(cfg: Config) -> Config:
    """cfg with its data folder (and data.root, Inception weights) made absolute, so the run it starts is
    evaluated and resumed from any working directory."""

    def absolute(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path))

    data = cfg.data
    if data.name.startswith("folder:"):
        data = dataclasses.replace(data, name="folder:" + absolute(data.name[len("folder:"):]))
    if data.name in TORCHVISION_SETS:
        data = dataclasses.replace(data, root=absolute(data.root))
    evaluation = cfg.eval
    if evaluation.inception_weights:
        evaluation = dataclasses.replace(evaluation, inception_weights=absolute(evaluation.inception_weights))
    return dataclasses.replace(cfg, data=data, eval=evaluation)


def resume_config(run_or_ckpt: Path | str, overrides: Overrides | None = None) -> tuple[Path, dict[str, Any], Config]:
    """The checkpoint a resume would continue (latest of a run, or the one given), its contents, and the
    config it would train with: the checkpoint's own plus `overrides`."""
    path = ckpt_io.resolve_checkpoint(run_or_ckpt, "latest")
    ckpt = ckpt_io.load_checkpoint(path)
    if ckpt.get("exported") is not None:
        source = f" ({ckpt['exported']['source']})" if ckpt["exported"]["source"] else ""
        raise UserError(f"{path} is a generator file (G's weights alone, for sample and eval): it holds no D or "
                        f"optimizer state to resume; resume the run it was exported from{source} instead")
    try:
        cfg = anchored_paths(from_dict(apply_overrides(ckpt["config"], overrides)))
    except UserError as e:
        try:
            from_dict(ckpt["config"])
        except UserError as own:
            if str(own) == str(e):  # the run's own setting, saved by a ganforge that did not yet refuse it
                raise UserError(f"{e} (a setting of the run's saved config, which this ganforge checks more "
                                "strictly than the one that wrote it; resume with --set to change it)") from e
        raise
    missing = missing_folder(cfg.data.name)
    if missing:
        raise UserError(f"{missing}; resume with --set data.name=folder:PATH where they are now")
    saved = from_dict(ckpt["config"], stored=True)
    if cfg.train.seed != saved.train.seed:
        # the random streams continue from the checkpoint's saved states, so a new seed would only mislabel them
        raise UserError(f"a resumed run continues the random streams of its checkpoint (train.seed = "
                        f"{saved.train.seed}); drop the seed override, or start a new run to use another seed")
    if cfg.optim.name != saved.optim.name:
        # the saved moments belong to the checkpoint's optimizer; another one would start from none
        raise UserError(f"a resumed run continues its optimizer's state (optim.name = {saved.optim.name}); drop "
                        f"the override, or start a new run (--config {path.parent.parent / 'config.toml'} with "
                        f"--set optim.name={cfg.optim.name}) to train with {cfg.optim.name}")
    changed = architecture_changes(saved, cfg)
    if changed:
        was = ", ".join(f"{key} = {toml_value(value)}" for key, value in changed)
        those = "that override" if len(changed) == 1 else "those overrides"
        raise UserError(f"a resumed run keeps the networks of its checkpoint, built with {was}; drop {those}, "
                        f"or start a new run (--config {path.parent.parent / 'config.toml'} with --set) "
                        "to train another architecture")
    return path, ckpt, cfg


def _weight_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        nets = {"G": build_generator(cfg), "D": build_discriminator(cfg)}
    return {f"{net}.{key}": tuple(t.shape) for net, module in nets.items() for key, t in module.state_dict().items()}


def check_networks(cfg: Config) -> None:
    """Build G and D for `cfg` as shapes only, so that settings the nets cannot take (an image size the
    DCGAN stack cannot reach, say) raise their UserError without data, device or training."""
    _weight_shapes(cfg)


def architecture_changes(saved: Config, cfg: Config) -> list[tuple[str, Any]]:
    """The settings of `cfg` that differ from `saved` and change G's or D's weights (names or shapes), each
    with its value in `saved`; empty when the saved weights still fit."""
    old, new = flatten(saved.to_dict()), flatten(cfg.to_dict())
    differ = [key for key in old if key.split(".")[0] in ("model", "data") and old[key] != new.get(key)]
    if not differ:
        return []
    shapes = _weight_shapes(saved)
    if _weight_shapes(cfg) == shapes:
        return []

    def alone_changes_shapes(key: str) -> bool:
        try:
            return _weight_shapes(from_dict(apply_overrides(saved.to_dict(), {key: new[key]}))) != shapes
        except UserError:  # a setting valid only with the others changed too
            return True

    return [(key, old[key]) for key in [k for k in differ if alone_changes_shapes(k)] or differ]


def resume(run_or_ckpt: Path | str, overrides: Overrides | None = None, log: Any = None) -> Path:
    """Continue a run from its latest checkpoint (or a given one) in the same run directory."""
    path, ckpt, cfg = resume_config(run_or_ckpt, overrides)
    check_batch_and_order(cfg)
    run_dir = path.parent.parent
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"{path} is not inside a run directory (no {run_dir / 'config.toml'})")
    main = distributed.info().is_main
    with ckpt_io.run_lock(run_dir) if main else contextlib.nullcontext():
        # build (and so validate) everything first: a resume that fails leaves config.toml and stats.jsonl as
        # they were
        trainer = Trainer(cfg, run_dir, resume_from=path, log=log if main else (lambda msg: None))
        trainer.log(f"resuming {run_dir} from {path.name} at {int(ckpt['nimg']) / 1000:.3f} kimg")
        if ckpt.get("G_ema") is not None and cfg.train.ema_kimg == 0:
            trainer.log("note: train.ema_kimg=0 leaves the checkpoint's average of G behind: grids, samples and "
                        f"metrics now use G itself (the average stays in {path.name} until it is rotated out)")
        elif ckpt.get("G_ema") is None and cfg.train.ema_kimg > 0:
            trainer.log(f"note: the average of G (train.ema_kimg={cfg.train.ema_kimg:g}) starts here from G's "
                        "current weights")
        if cfg.model.init != ckpt["config"].get("model", {}).get("init", cfg.model.init):
            trainer.log(f"note: model.init={cfg.model.init} has no effect here: it sets a new run's first weights, "
                        "and a resumed run continues from its checkpoint's")
        written_by = ckpt.get("versions") or {}
        if written_by.get("torch") not in (None, str(torch.__version__)):
            trainer.log(f"note: {path.name} was written under torch {written_by['torch']} and this is torch "
                        f"{torch.__version__}: the run goes on, but need not repeat an uninterrupted run bit for bit")
        before = int(ckpt.get("n_images", 0))  # 0 in checkpoints written before it was recorded
        if before and before != len(trainer.data):
            trainer.log(f"note: {cfg.data.name} has {len(trainer.data)} training images where the run had {before}; "
                        "training goes on over the images there now, in another order than the run would have "
                        "drawn")
        elif ckpt.get("data_fingerprint") not in (None, trainer.data.fingerprint):
            trainer.log(f"note: {cfg.data.name}'s images (or their labels) changed since {path.name} was written, "
                        f"though there are {len(trainer.data)} as before: training goes on over the images there "
                        "now, so the run no longer repeats an uninterrupted one")
        if int(ckpt["nimg"]) >= int(round(cfg.train.kimg * 1000)):
            # not an error: a job script may resume until done; but say why nothing trains, and leave
            # config.toml as the checkpoints have it (overrides that train nothing are not recorded)
            trainer.log(f"the run already reached train.kimg={cfg.train.kimg:g}, so there is nothing to train; "
                        f"to go on, resume with --set train.kimg=N (N > {int(ckpt['nimg']) / 1000:g})")
        elif main:
            ckpt_io.atomic_write_text(cfg.to_toml(), run_dir / "config.toml")
            _prepare_stats_for_resume(run_dir / "stats.jsonl", int(ckpt["nimg"]))
        return trainer.run()


def load_generator(run_or_ckpt: Path | str, ckpt: str = "latest", device: str | torch.device = "cpu",
                   ema: bool = True) -> Generator:
    """The generator of a run or checkpoint (G_ema when the run kept one), in eval mode on `device`."""
    path = ckpt_io.resolve_checkpoint(run_or_ckpt, ckpt)
    return generator_from_checkpoint(ckpt_io.load_checkpoint(path), path, device, ema)


def generator_from_checkpoint(state: dict[str, Any], path: Path, device: str | torch.device = "cpu",
                              ema: bool = True) -> Generator:
    """load_generator for a checkpoint already loaded from `path` (named in errors)."""
    exported = state.get("exported")
    if exported is not None and not ema and exported["weights"] == "G_ema":
        raise UserError(f"{path} holds the run's G_ema alone (what `ganforge export` writes by default); for G "
                        "itself export the run again with --no-ema")
    cfg = from_dict(state["config"], stored=True)
    G = build_generator(cfg)
    weights = state["G_ema"] if ema and state.get("G_ema") is not None else state["G"]
    ckpt_io.load_state_dict_checked(G, weights, "generator", path)
    classes = state.get("classes")
    if G.n_classes and isinstance(classes, list) and len(classes) == G.n_classes:
        G.classes = [str(c) for c in classes]
    G = G.to(pick_device(str(device))).eval()
    if cfg.train.channels_last and has_conv(G):  # as in training: a conv G samples ~35% faster on a CPU
        G = G.to(memory_format=torch.channels_last)
    return G


class Exported(NamedTuple):
    path: Path  # the generator file written
    source: Path  # the checkpoint it came from
    weights: str  # "G_ema" or "G"
    kimg: float


def export_generator(run_or_ckpt: Path | str, out: Path | str, ckpt: str = "latest", ema: bool = True,
                     force: bool = False) -> Exported:
    """Write a run's generator alone (G_ema when the run kept one, else G; G with `ema=False`) and the config
    that builds it to a .safetensors file: a fraction of a checkpoint's size, loaded without pickle, and taken
    by load_generator, `ganforge sample` and `ganforge eval` in place of a run. It cannot resume training."""
    out = Path(out)
    if not ckpt_io.is_generator_file(out):
        raise UserError(f"--out {out}: a generator file ends in {ckpt_io.GENERATOR_SUFFIX}")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name ending in {ckpt_io.GENERATOR_SUFFIX}")
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
    source = ckpt_io.resolve_checkpoint(run_or_ckpt, ckpt)
    if ckpt_io.is_generator_file(source):  # refused before it is read
        raise UserError(f"{source} is already a generator file; copy it to export it elsewhere")
    state = ckpt_io.load_checkpoint(source)
    generator_from_checkpoint(state, source, "cpu", ema)  # the weights build the config's G: the file will load
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = ckpt_io.save_generator_file(state, source, out, ema=ema)
    return Exported(out, source, weights, int(state["nimg"]) / 1000)
