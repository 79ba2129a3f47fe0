"""One training iteration: the networks' state, their optimizers, and the D and G steps in the order the
config names (G first, D first or simultaneous; n_critic and critic bursts; penalties, augmentation, EMA)."""

from __future__ import annotations

import collections
import contextlib
import copy
import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.optim.optimizer as torch_optimizer
from torch import nn

from . import checkpoint as ckpt_io
from . import distributed, report
from .augment import diff_augment, parse_policy
from .config import Config
from .device import AMP_DTYPES, cpu_name, has_conv, matmul_precision, use_channels_last
from .errors import UserError
from .losses import (
    GANLoss,
    consistency_penalty,
    gradient_penalty,
    instance_noise_std,
    lecam_ema_decay,
    lecam_penalty,
    r1_penalty,
    top_k,
    topk_share,
)
from .models import Discriminator, Generator, balanced_labels, build_discriminator, build_generator
from .models.layers import MinibatchDiscrimination, MinibatchStd
from .plugins import loaded_plugins

# ADA adjusts its augment probability every this many D steps (StyleGAN2-ADA's interval).
ADA_INTERVAL = 4
# train.cuda_graph: an iteration's kind is captured at its second sighting (the first, run eagerly, is its
# warm-up: cuDNN autotuning, optimizer state), and at most this many kinds are kept; others run eagerly.
CAPTURE_AFTER = 2
MAX_GRAPHS = 32


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


def grid_count(cfg: Config) -> int:
    """Images in a run's fixed-noise grid: train.grid_size, or as many as grid_labels lays out for a class grid."""
    m, t = cfg.model, cfg.train
    return grid_labels(m.n_classes, t.grid_size)[0].numel() if m.n_classes else t.grid_size


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
            "platform": compute_platform(next(self.G.parameters()).device),
            "plugins": loaded_plugins(),  # code a resume, sample or eval must load again (named when missing)
        }


def software_versions() -> dict[str, str]:
    """What wrote a checkpoint: a resume under another torch can differ in the last bits."""
    from . import __version__

    return {"ganforge": str(__version__), "torch": str(torch.__version__)}


def compute_platform(device: torch.device) -> dict[str, Any]:
    """What a checkpoint was trained on, past the software: another kind of device, process count, CPU thread
    count or CPU kernel set (AVX2, AVX512, ...) rounds sums differently, so a resume there parts from the run."""
    where: dict[str, Any] = {"device": device.type, "processes": distributed.info().world_size}
    if device.type == "cpu":
        where.update(cpu_threads=torch.get_num_threads(), cpu_kernels=torch.backends.cpu.get_cpu_capability())
        if name := cpu_name():
            where["cpu"] = name
    elif device.type == "cuda":
        where["gpu"] = torch.cuda.get_device_name(device)
    return where


def platform_change(saved: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    """How `now` differs from a checkpoint's platform, as "was trained with 2 CPU threads and is resumed with
    1 CPU thread"; None when it does not, or the checkpoint predates the record."""
    if not saved:
        return None
    keys = [k for k in ("device", "cpu", "gpu", "processes", "cpu_threads", "cpu_kernels")
            if k in saved and k in now and saved[k] != now[k]]
    if saved.get("device") != now.get("device"):
        keys = ["device"]  # a GPU's name against a CPU's threads says nothing more

    def phrase(where: dict[str, Any]) -> str:
        words = {"device": f"on {where['device']}", "cpu": f"on {where.get('cpu')}",
                 "gpu": f"on a {where.get('gpu')}",
                 "processes": f"in {where.get('processes')} process" + "es" * (where.get("processes") != 1),
                 "cpu_threads": f"with {where.get('cpu_threads')} CPU thread" + "s" * (where.get("cpu_threads") != 1),
                 "cpu_kernels": f"with {where.get('cpu_kernels')} CPU kernels"}
        return ", ".join(words[k] for k in keys)

    return f"was trained {phrase(saved)} and is resumed {phrase(now)}" if keys else None


def make_optimizer(name: str, params: Any, lr: float, betas: list[float], eps: float,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """optim.name's optimizer for one network. RMSprop keeps torch's defaults (alpha 0.99, no momentum), as
    the WGAN paper's code does, and reads no betas. `capturable` keeps its step counts on the device, as a
    CUDA graph's capture of the step needs."""
    if name == "rmsprop":
        # torch has no fused RMSprop; foreach (one kernel per op over all tensors) is its fastest on CPU too
        return torch.optim.RMSprop(params, lr=lr, eps=eps, foreach=True, capturable=capturable)
    # fused: one pass over each tensor for the whole update, instead of a Python loop per parameter or the
    # several elementwise passes of foreach (measured +26% on the whole MLP-BN step at batch 64).
    return FusedAdam(params, lr=lr, betas=(betas[0], betas[1]), eps=eps, fused=True, capturable=capturable)


class FusedAdam(torch.optim.Adam):
    """torch's Adam with fused=True, whose step calls torch's fused kernel itself once every parameter has its
    state: the same kernel on the same tensors, so the same update to the bit (tests check), without the
    Python that torch.optim spends around it each step (gathering the tensors, a profiler range: 2.6-4.4% of
    the MLP-BN step at batch 64 on a CPU, benchmarks/optimizer_step.py). Anything outside the plain case (step
    hooks, a running profiler, a closure, a grad scaler, the first step, capturable, amsgrad, decoupled weight
    decay, a tensor learning rate or betas, mixed devices or dtypes) takes torch's own step, hooks and all."""

    def step(self, closure: Any = None) -> Any:
        work = None if closure is not None or _step_observed(self) else self._gather()
        if work is None:
            return _TORCH_ADAM_STEP(self, closure)
        global _FUSED_ADAM_KERNEL
        with torch.no_grad():
            for i, (group, tensors, steps) in enumerate(work):
                torch._foreach_add_(steps, 1)
                try:
                    _FUSED_ADAM_KERNEL(*tensors, [], steps, lr=group["lr"], beta1=group["betas"][0],
                                       beta2=group["betas"][1], weight_decay=group["weight_decay"],
                                       eps=group["eps"], amsgrad=False, maximize=group["maximize"])
                except TypeError:  # a torch whose private kernel takes other arguments: torch's step from now on
                    if i:
                        raise
                    torch._foreach_sub_(steps, 1)
                    _FUSED_ADAM_KERNEL = None
                    return _TORCH_ADAM_STEP(self, closure)
        return None

    step.hooked = True  # keeps torch.optim from wrapping it in hooks and a profiler range: its own path has them

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's zero_grad, without its profiler range and dynamo guard where no profiler runs: 2-3% of the
        MLP-BN step at batch 64 on a CPU."""
        if not set_to_none or _profiling():
            return super().zero_grad(set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None
        return None

    def _gather(self) -> list[tuple[dict, tuple[list, list, list, list], list]] | None:
        """Per group, its parameters with gradients, those gradients, both moments and the step counts, as
        torch's step would pass them to the kernel; None where that step would do anything else."""
        if (_FUSED_ADAM_KERNEL is None or getattr(self, "grad_scale", None) is not None
                or getattr(self, "found_inf", None) is not None):
            return None
        work = []
        for group in self.param_groups:
            if (not group["fused"] or group["capturable"] or group["amsgrad"] or group["differentiable"]
                    or group.get("decoupled_weight_decay", False)
                    or not all(type(v) is float for v in (group["lr"], *group["betas"]))):
                return None
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    grads.append(p.grad)
                    states.append(self.state.get(p))
            if not params or not all(states):
                return None
            device, dtype = params[0].device, params[0].dtype
            if dtype.is_complex or any(p.dtype != dtype or g.dtype != dtype or p.device != device or g.is_sparse
                                       for p, g in zip(params, grads, strict=True)):
                return None
            tensors = (params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states])
            if device.type == "cpu":  # channels_last weights as views the kernel need not copy
                fours = [_in_storage_order(*four) for four in zip(*tensors, strict=True)]
                tensors = tuple([four[i] for four in fours] for i in range(4))
            work.append((group, tensors, [st["step"] for st in states]))
        return work


def _in_storage_order(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Tensors of one layout (a channels_last conv weight, its gradient and moments) as contiguous views in
    the order of their memory, where the first has a permutation that makes it contiguous and the others share
    its strides; else as they are. torch's CPU kernel copies a tensor that is not contiguous to one that is, and
    back (0.44 ms a copy of the default's 256x128x4x4 weights); Adam is elementwise, so a view updates alike."""
    first = tensors[0]
    if first.is_contiguous() or any(t.stride() != first.stride() or t.shape != first.shape for t in tensors):
        return tensors
    order = sorted(range(first.dim()), key=lambda d: -first.stride(d))
    views = tuple(t.permute(order) for t in tensors)
    return views if views[0].is_contiguous() else tensors


def _step_observed(opt: torch.optim.Optimizer) -> bool:
    """Whether step hooks (the optimizer's or global) or torch's profiler would see this step."""
    return bool(opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or getattr(torch_optimizer, "_global_optimizer_pre_hooks", None)
                or getattr(torch_optimizer, "_global_optimizer_post_hooks", None) or _profiling())


def _profiling() -> bool:
    """Whether torch's profiler is recording (taken as yes where this torch does not say)."""
    return bool(getattr(torch.autograd.profiler, "_is_profiler_enabled", True))


_FUSED_ADAM_KERNEL = getattr(torch, "_fused_adam_", None)
# torch's Adam step with the hooks and profiler range that torch.optim puts around every optimizer's step
_TORCH_ADAM_STEP = (torch.optim.Adam.step if getattr(torch.optim.Adam.step, "hooked", False)
                    else torch.optim.Optimizer.profile_hook_step(torch.optim.Adam.step))


def check_amp_device(amp: str, device: torch.device) -> None:
    if amp == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 or none")


def check_cuda_graph(enabled: bool, device: torch.device) -> None:
    if not enabled:
        return
    if device.type != "cuda":
        raise UserError(f"train.cuda_graph needs a CUDA device and this run would train on {device.type}; "
                        "set train.cuda_graph=false, or train on a GPU with --device cuda")
    if distributed.info().enabled:
        raise UserError("train.cuda_graph is for one process; drop it under torchrun")


def cuda_graph_note(cfg: Config, device: torch.device) -> str | None:
    """The note for a run on a GPU that could replay its step as CUDA graphs and does not."""
    t = cfg.train
    if device.type != "cuda" or t.cuda_graph or t.compile or t.amp == "fp16" or distributed.info().enabled:
        return None
    return ("on a GPU, --set train.cuda_graph=true replays each training step as one CUDA graph: 3.7-17x the "
            "eager step's images/s on an H200, to the same weights (see the README's Speed)")


def build_state(cfg: Config, device: torch.device) -> TrainState:
    torch.manual_seed(cfg.train.seed)
    # ganforge draws from torch alone; a plugin's network or loss may use Python's or NumPy's global generators,
    # and train.seed repeats those draws too
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
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
    check_cuda_graph(cfg.train.cuda_graph, device)
    opt_G = make_optimizer(o.name, G.parameters(), o.g_lr, o.g_betas, o.eps, capturable=cfg.train.cuda_graph)
    opt_D = make_optimizer(o.name, D.parameters(), o.d_lr, o.d_betas, o.eps, capturable=cfg.train.cuda_graph)
    z_gen = torch.Generator(device=device).manual_seed(cfg.train.seed + 1)
    fixed_y = grid_labels(cfg.model.n_classes, cfg.train.grid_size)[0] if cfg.model.n_classes else None
    fixed_z = G.make_z(grid_count(cfg), torch.Generator().manual_seed(cfg.train.seed))
    state = TrainState(cfg, G, D, G_ema, opt_G, opt_D, z_gen, fixed_z, fixed_y)
    if cfg.train.ada_target > 0:
        state.ada = torch.zeros(2, device=device)  # p starts at 0: no augmentation until D starts to overfit
    if cfg.loss.lecam > 0:
        state.lecam = torch.zeros(2, device=device)  # the first D step replaces it (decay 0 at the start)
    if cfg.train.amp == "fp16":
        check_amp_device(cfg.train.amp, device)
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
    if cfg.loss.mode_seeking > 0 and share % 2:
        per = f" in each of {world} processes" if world > 1 else ""
        raise UserError(f"loss.mode_seeking compares fakes in pairs, and train.batch_size={cfg.train.batch_size} gives "
                        f"G an odd batch of {share}{per}; use an even batch, e.g. --set "
                        f"train.batch_size={(share + 1) * world}")
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
        self.r1_gamma, self.r2_gamma, self.r1_every = lc.r1_gamma, lc.r2_gamma, lc.r1_every
        self.lecam_weight = lc.lecam
        self.mode_seeking = lc.mode_seeking
        self.bcr_weight, self.bcr_policy = lc.bcr, parse_policy(lc.bcr_policy, "loss.bcr_policy")
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
        self.d_reduction = lc.d_reduction
        self.ema_beta = ema_beta(t.batch_size, t.ema_kimg) if state.G_ema is not None else None
        # Without batch statistics in D, one pass over [real; fake] equals two passes and runs faster.
        batch_coupled = (nn.modules.batchnorm._BatchNorm, MinibatchStd, MinibatchDiscrimination)
        self.joint_d = not any(isinstance(m, batch_coupled) for m in state.D.modules())
        self.joint_d = self.joint_d and not (loss.gradient_penalty or lc.r1_gamma > 0 or lc.r2_gamma > 0)
        self.n_classes = state.cfg.model.n_classes
        self.label_dropout = state.cfg.model.label_dropout
        self.ac_weight = lc.ac_weight if self.n_classes and state.cfg.model.d_cond == "acgan" else 0.0
        # G first on a reused fake batch runs as one pass (see _one_pass) unless D must see fresh
        # augmentation or instance noise in each step, or DDP must reduce each step's gradients on its own.
        self.share_fake_pass = (t.step_order == "g_first" and t.reuse_fake and not self.augment_policy
                                and not distributed.info().enabled)
        self.graphs = StepGraphs(self) if t.cuda_graph else None

    def graph_key(self, n_d: int) -> tuple:
        """What Python decides in the iteration about to run (it has n_d D steps), besides the tensors' values:
        two iterations of equal key launch the same kernels on the same buffers, so one CUDA graph serves both."""
        steps = range(self.d_steps, self.d_steps + n_d)
        return (n_d, self.noise_std, self.topk_share, self.lr_scale,
                tuple(self._penalised(k) for k in steps),
                tuple(self.s.ada is not None and (k + 1) % ADA_INTERVAL == 0 for k in steps),
                tuple(lecam_ema_decay(k) for k in steps) if self.s.lecam is not None else ())

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
        its own slice. Under loss.mode_seeking each label serves a pair of neighbours (2i, 2i + 1), whose
        images the term keeps apart; an even batch a rank keeps the pairs whole."""
        s = self.s
        z = torch.randn(self.global_batch, s.G.z_dim, device=s.z_gen.device, generator=s.z_gen)
        if not self.n_classes:
            return distributed.rank_slice(z), None
        paired = self.mode_seeking > 0
        n = self.global_batch // 2 if paired else self.global_batch
        y = self._drop_labels(torch.randint(0, self.n_classes, (n,), device=s.z_gen.device, generator=s.z_gen))
        return distributed.rank_slice(z), distributed.rank_slice(y.repeat_interleave(2) if paired else y)

    def _drop_labels(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """model.label_dropout: y with that share of its labels (drawn at random) made n_classes, "no label"."""
        if y is None or self.label_dropout <= 0:
            return y
        dropped = torch.rand(y.shape, device=y.device, generator=self.s.z_gen) < self.label_dropout
        return torch.where(dropped, torch.full_like(y, self.n_classes), y)

    def _fake(self, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Fakes, their labels (None for an unconditional G) and the noise they came from."""
        z, y = self._z()
        args = (z,) if y is None else (z, y)
        with self.autocast():
            if not grad:
                with torch.no_grad():
                    return self.G_bare(*args), y, z
            return self.G_ddp(*args), y, z

    def _with_mode_seeking(self, g_loss: torch.Tensor, fake: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """loss.mode_seeking (MSGAN, Mao et al. 2019, as their code writes it): G's loss plus the weight over
        (mean|G(z1) - G(z2)| / mean|z1 - z2| + 1e-5), the pairs the neighbours (2i, 2i + 1), which share a
        class. Fakes alike for unlike noise, a collapse, cost G most."""
        if self.mode_seeking <= 0 or z is None:
            return g_loss
        image_gap = (fake[0::2] - fake[1::2]).float().abs().mean()
        z_gap = (z[0::2] - z[1::2]).abs().mean()
        return g_loss + self.mode_seeking / (image_gap / z_gap + 1e-5)

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

    def _penalised(self, d_step: int) -> bool:
        """Whether D step number `d_step` (from 0) takes the R1 / R2 penalties: every r1_every-th (lazy)."""
        return (self.r1_gamma > 0 or self.r2_gamma > 0) and d_step % self.r1_every == 0

    def _d_inputs(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """What D sees of each batch, and whether this D step takes the (lazy) R1 / R2 penalties; the images
        they penalise are made to require grad (a fake still joined to G's graph already does)."""
        real, fake = self._noisy(real), self._noisy(fake)
        penalised = self._penalised(self.d_steps)
        if penalised and self.r1_gamma > 0:
            real = real.detach().requires_grad_(True)
        if penalised and self.r2_gamma > 0 and not fake.requires_grad:
            fake = fake.detach().requires_grad_(True)
        return real, fake, penalised

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
                        real_logits: torch.Tensor, fake: torch.Tensor, fake_logits: torch.Tensor,
                        penalised: bool) -> torch.Tensor:
        """D's loss plus its gradient penalty (WGAN-GP) and R1 / R2 terms where they are on."""
        if self.loss.gradient_penalty and self.gp_weight > 0:
            # conditional critics are penalised at the real labels (the interpolates' anchor)
            def critic(x: torch.Tensor) -> torch.Tensor:
                return self._D(self.D_bare, x, y_real)[0]

            d_loss = d_loss + self.gp_weight * gradient_penalty(critic, real, fake, generator=self.s.z_gen)
        if penalised and self.r1_gamma > 0:
            d_loss = d_loss + 0.5 * self.r1_gamma * self.r1_every * r1_penalty(real_logits, real)
        if penalised and self.r2_gamma > 0:
            d_loss = d_loss + 0.5 * self.r2_gamma * self.r1_every * r1_penalty(fake_logits, fake)
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

    def _with_consistency(self, d_loss: torch.Tensor, net: nn.Module, real: torch.Tensor,
                          y_real: torch.Tensor | None, real_logits: torch.Tensor, fake: torch.Tensor,
                          y_fake: torch.Tensor | None, fake_logits: torch.Tensor) -> torch.Tensor:
        """D's loss plus loss.bcr times the consistency of its logits on what it saw and on a second view of
        the same images (loss.bcr_policy, drawn from the checkpointed generator), reals and fakes alike."""
        if self.bcr_weight <= 0:
            return d_loss
        views = [diff_augment(x.detach(), self.bcr_policy, self.s.z_gen) for x in (real, fake)]
        real_view, _, fake_view, _ = self._d_logits(net, views[0], y_real, views[1], y_fake)
        return d_loss + self.bcr_weight * (consistency_penalty(real_logits, real_view)
                                           + consistency_penalty(fake_logits, fake_view))

    def _adapt_augment(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """StyleGAN2-ADA's heuristic after each D step: sum sign(D(real)); every ADA_INTERVAL steps move p up
        when its mean is above ada_target (D too sure of the reals: overfitting), down when below. On the
        device, with no sync; under DDP the ranks' means are averaged so all hold the same p. A relativistic
        D's logit has no sign of its own: there it is sign(D(x) - D(G(z))) over the pairs, as R3GAN takes it."""
        ada = self.s.ada
        if ada is None:
            return
        if self.loss.relativistic:
            real_logits = real_logits - fake_logits
        ada[1] += torch.sign(real_logits.detach().float()).mean()
        if (self.d_steps + 1) % ADA_INTERVAL == 0:
            overfit = distributed.all_reduce_mean(ada[1:2] / ADA_INTERVAL)[0]
            ada[0] = (ada[0] + torch.sign(overfit - self.ada_target) * self.ada_step).clamp(0.0, 1.0)
            ada[1].zero_()

    def _clip_d(self) -> None:
        if self.loss.clip_weights:
            with torch.no_grad():
                for p in self.s.D.parameters():
                    p.clamp_(-self.clip, self.clip)

    def _d_step(self, real: torch.Tensor, y_real: torch.Tensor | None, fake: torch.Tensor,
                y_fake: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        s = self.s
        real, fake, penalised = self._d_inputs(real, fake)
        real_logits, real_classes, fake_logits, fake_classes = self._d_logits(self.D_ddp, real, y_real, fake, y_fake)
        d_loss = self.loss.d_loss(real_logits, fake_logits, self.d_reduction)
        if real_classes is not None and self.ac_weight > 0:
            d_loss = d_loss + self.ac_weight * (F.cross_entropy(real_classes, y_real)
                                                + F.cross_entropy(fake_classes, y_fake))
        d_loss = self._with_penalties(d_loss, real, y_real, real_logits, fake, fake_logits, penalised)
        d_loss = self._with_lecam(d_loss, real_logits, fake_logits)
        d_loss = self._with_consistency(d_loss, self.D_ddp, real, y_real, real_logits, fake, y_fake, fake_logits)
        self._apply(d_loss, s.opt_D, s.scaler_D)
        self._clip_d()
        self._adapt_augment(real_logits, fake_logits)
        self.d_steps += 1
        return d_loss.detach(), real_logits.detach(), fake_logits.detach()

    def _g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None) -> torch.Tensor:
        """G's loss: on the pairs' differences for a relativistic loss, else on the top-k share of the fakes."""
        if self.loss.relativistic:
            return self.loss.g_loss(fake_logits, real_logits)
        return self.loss.g_loss(top_k(fake_logits, self.topk_share))

    def _g_step(self, fake: torch.Tensor, y: torch.Tensor | None,
                real_batch: tuple[torch.Tensor, torch.Tensor | None] | None = None,
                z: torch.Tensor | None = None) -> torch.Tensor:
        """G's step; a relativistic loss judges the fakes against D's logits on `real_batch`; `z`, the fakes'
        noise, is for loss.mode_seeking."""
        s = self.s
        s.D.requires_grad_(False)  # G's step needs D's input gradients only, not its weight gradients
        try:
            with self.autocast():
                fake_logits, fake_classes = self._D(self.D_bare, self._noisy(fake), y)
                real_logits = None
                if self.loss.relativistic:
                    with torch.no_grad():  # constants to G
                        real_logits = self._D(self.D_bare, self._noisy(real_batch[0]), real_batch[1])[0]
            g_loss = self._with_mode_seeking(self._g_loss(fake_logits, real_logits), fake, z)
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
        fake, y, z = self._fake(grad=True)
        real, fake_seen, penalised = self._d_inputs(real, fake)
        real_logits, real_classes, fake_logits, fake_classes = self._d_logits(self.D_bare, real, y_real,
                                                                              fake_seen, y)
        d_loss = self.loss.d_loss(real_logits, fake_logits, self.d_reduction)
        g_loss = self._with_mode_seeking(self._g_loss(fake_logits, real_logits.detach()), fake, z)
        if real_classes is not None and self.ac_weight > 0:
            ce_fake = F.cross_entropy(fake_classes, y)
            d_loss = d_loss + self.ac_weight * (F.cross_entropy(real_classes, y_real) + ce_fake)
            g_loss = g_loss + self.ac_weight * ce_fake
        d_loss = self._with_penalties(d_loss, real, y_real, real_logits, fake_seen, fake_logits, penalised)
        d_loss = self._with_lecam(d_loss, real_logits, fake_logits)
        d_loss = self._with_consistency(d_loss, self.D_bare, real, y_real, real_logits, fake_seen, y, fake_logits)
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
        self._adapt_augment(real_logits, fake_logits)
        self.d_steps += 1
        if s.G_ema is not None:
            update_ema(s.G_ema, s.G, self.ema_beta)
        return d_loss.detach(), g_loss.detach(), real_logits.detach(), fake_logits.detach()

    def __call__(self, reals: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        """One G step and a D step for each real batch that `reals` yields (d_steps_for says how many), each
        batch (images, labels; labels None for an unconditional model) drawn as its D step comes."""
        with matmul_precision(self.precision):  # the training step's own; grids and metrics keep the default
            if self.graphs is not None:
                return self.graphs(reals)
            return self._iteration(reals)

    def _iteration(self, reals: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        if self.label_dropout > 0:  # each batch's labels dropped as the batch comes
            reals = ((real, self._drop_labels(y_real)) for real, y_real in reals)
        if self.order == "simultaneous" or (self.share_fake_pass and self.noise_std <= 0):
            d_loss, g_loss, real_logits, fake_logits = self._one_pass(*next(iter(reals)))
        elif self.order == "d_first":
            for real, y_real in reals:
                fake, y, z = self._fake(grad=self.reuse_fake)
                d_loss, real_logits, fake_logits = self._d_step(real, y_real, fake.detach(), y)
            if not self.reuse_fake:
                fake, y, z = self._fake(grad=True)
            g_loss = self._g_step(fake, y, (real, y_real), z)  # a relativistic G step: the last D step's reals
        else:  # g_first
            first = None
            if self.loss.relativistic:  # G's step judges its fakes against the first D step's reals
                reals = iter(reals)
                first = next(reals)
                reals = itertools.chain([first], reals)
            fake, y, z = self._fake(grad=True)
            g_loss = self._g_step(fake, y, first, z)
            for real, y_real in reals:
                fake_for_d, y_for_d = (fake.detach(), y) if self.reuse_fake else self._fake(grad=False)[:2]
                d_loss, real_logits, fake_logits = self._d_step(real, y_real, fake_for_d, y_for_d)
        # [d_loss, g_loss, mean D(real), mean D(fake)], still on the device. A relativistic D's logit means
        # nothing alone, only against its pair's: there D(real) is how sure D is that each real beats its fake.
        if self.loss.relativistic:
            real_logits, fake_logits = real_logits - fake_logits, fake_logits - real_logits
        return torch.stack([d_loss, g_loss, torch.sigmoid(real_logits).mean(), torch.sigmoid(fake_logits).mean()])


class StepGraphs:
    """train.cuda_graph: whole training iterations captured as CUDA graphs and replayed, one launch for the
    hundreds of small kernels of a GAN step that otherwise leave a GPU waiting on Python. Iterations are
    grouped by Stepper.graph_key; a kind is run eagerly at its first sighting, captured at its next and
    replayed from then on. A kind whose values change every iteration (a schedule in progress: instance
    noise, top-k, learning-rate decay) never recurs and so runs eagerly, as do kinds past MAX_GRAPHS."""

    def __init__(self, stepper: Stepper) -> None:
        self.stepper = stepper
        # key -> (graph, its input batches, its stats output)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list, torch.Tensor]] = {}
        self.seen: collections.Counter = collections.Counter()
        self.replays = 0

    def __call__(self, reals: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> torch.Tensor:
        st = self.stepper
        batches = list(reals)
        key = st.graph_key(len(batches))
        entry = self.graphs.get(key)
        if entry is None:
            self.seen[key] += 1
            if self.seen[key] < CAPTURE_AFTER or len(self.graphs) >= MAX_GRAPHS:
                if len(self.seen) > 10_000:  # a schedule's ever-new kinds: forget them, not the graphs
                    self.seen.clear()
                return st._iteration(iter(batches))
            graph, out = self._capture(key, batches)
        else:
            graph, inputs, out = entry
            for (real, y), (static_real, static_y) in zip(batches, inputs, strict=True):
                static_real.copy_(real)
                if y is not None:
                    static_y.copy_(y)
            st.d_steps += len(batches)  # what the iteration's Python did at capture
        graph.replay()
        self.replays += 1
        return out

    def _capture(self, key: tuple, batches: list) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Records the iteration (capture runs no kernel: the caller replays it once to take the step)."""
        st = self.stepper
        inputs = [(real.clone(), None if y is None else y.clone()) for real, y in batches]
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(st.s.z_gen)  # noise and augmentation draw from it, replay by replay
        d_steps = st.d_steps
        torch.cuda.synchronize()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = st._iteration(iter(inputs))
        except RuntimeError as e:
            st.d_steps = d_steps
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"train.cuda_graph: this run's training step cannot be captured as a CUDA graph "
                            f"({first}); train without train.cuda_graph") from e
        self.graphs[key] = (graph, inputs, out)
        return graph, out
