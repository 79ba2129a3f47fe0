"""Training throughput of ganforge against a reference loop written the way GAN tutorials write it.

    python benchmarks/throughput.py [--models dcgan,mlp-bn] [--batches 64,256] [--reps 3] [--seconds 4]
                                    [--window 0.5] [--device cpu|cuda] [--set train.compile=true ...]

For the R1 DCGAN (32x32) and the R5 batch-norm MLP, at each batch size, both loops train the same
architecture with the same optimiser and step order, alternating in this process after a warm-up; each
repetition times each loop for about --seconds, in turns of --window seconds (a shared machine's speed can
change every few seconds, and short turns give both loops the same share of its fast and slow spells).
The reference loop: a torchvision-style Dataset that turns every uint8 digit into a PIL image and applies
Resize/ToTensor/Normalize, a DataLoader, NCHW models with a Sigmoid D and nn.BCELoss, fresh label tensors
every step, and `.item()` every step for logging.

It prints images/s of each (median and spread of --reps), their ratio, and the GFLOP/s the ganforge step
achieves (FLOPs counted from the layer shapes) against a measured matmul rate on the same device: float32, or
under --set train.amp=bf16|fp16 that dtype, under --set train.matmul_precision=medium float32 at that precision.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ganforge.config import Config, load_config
from ganforge.data import load_dataset
from ganforge.device import AMP_DTYPES, cpu_name, matmul_precision, pick_device, training_kernels
from ganforge.models import build_discriminator, build_generator
from ganforge.trainer import Trainer

MODELS = {"dcgan": "mnist-dcgan", "mlp-bn": "mnist-mlp-bn"}


# ------------------------------------------------------------------------------------- FLOP counting


WEIGHT_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def weight_layers(net: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, torch.Size, int]]:
    """Each weight layer of `net` in call order on `example`: its name, itself, its input's shape and its
    multiply-accumulates per image."""
    found: list[tuple[str, nn.Module, torch.Size, int]] = []
    names = {module: name for name, module in net.named_modules()}

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            macs = out[0].numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.ConvTranspose2d):
            macs = inp[0][0].numel() * mod.out_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            macs = mod.in_features * mod.out_features
        found.append((names[mod], mod, inp[0].shape, macs))

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, WEIGHT_LAYERS)]
    with torch.no_grad():
        net.eval()(example)
    for h in hooks:
        h.remove()
    return found


def forward_macs(net: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass per image, and those of the first weight layer."""
    macs = [layer[3] for layer in weight_layers(net, example[:1])]
    return sum(macs), macs[0]


def step_flops(cfg: Config, batch: int) -> float:
    """FLOPs of one ganforge iteration. Per net: a forward pass F, weight gradients ~F, input gradients ~F
    less the first layer's when nothing upstream needs them. D is frozen during G's step (input grads only).
    d_first, fresh z: G 2F + W + (I - first);  D 3F + 2W + 2(I - first) + I.
    d_first, reused fake: G F + W + (I - first);  D as with a fresh z.
    g_first, reused fake (one D pass over [real; fake]; G's loss is differentiated through all of it):
                               G F + W + (I - first);  D 2F + 2W + 2(I - first) + 2I."""
    G, D = build_generator(cfg), build_discriminator(cfg)
    g, g1 = forward_macs(G, torch.zeros(1, cfg.model.z_dim))
    d, d1 = forward_macs(D, torch.zeros(1, cfg.data.channels, cfg.data.img_size, cfg.data.img_size))
    g_total = (g if cfg.train.reuse_fake else 2 * g) + g + (g - g1)
    if cfg.train.step_order == "g_first" and cfg.train.reuse_fake:
        d_total = 2 * d + 2 * d + 2 * (d - d1) + 2 * d
    else:
        d_total = 3 * d + 2 * d + 2 * (d - d1) + d
    return 2.0 * batch * (g_total + d_total)


def matmul_gflops(device: torch.device, n: int = 2048, seconds: float = 2.0,
                  dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------- the reference loop


class TutorialDigits(torch.utils.data.Dataset):
    """What the tutorials do: every item goes uint8 -> PIL -> Resize -> ToTensor -> Normalize."""

    def __init__(self, images_uint8: torch.Tensor, img_size: int) -> None:
        import torchvision.transforms as T

        self.images = images_uint8
        self.transform = T.Compose([T.Resize(img_size), T.ToTensor(), T.Normalize((0.5,), (0.5,))])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), 0


class ReferenceLoop:
    """The same nets in NCHW with a Sigmoid on D, nn.BCELoss, fresh labels and .item() every step."""

    def __init__(self, cfg: Config, batch: int, device: torch.device) -> None:
        raw = load_dataset(cfg.data.__class__(name="mnist5k", img_size=28, channels=1))
        uint8 = raw.images.add(1).mul(127.5).round().to(torch.uint8)[:, 0]
        self.loader = torch.utils.data.DataLoader(TutorialDigits(uint8, cfg.data.img_size), batch_size=batch,
                                                  shuffle=True, drop_last=True)
        self.iterator = iter(self.loader)
        torch.manual_seed(0)
        self.G = build_generator(cfg).to(device)
        self.D = nn.Sequential(build_discriminator(cfg), nn.Sigmoid()).to(device)
        o = cfg.optim
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=o.g_lr, betas=tuple(o.g_betas))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=o.d_lr, betas=tuple(o.d_betas))
        self.criterion = nn.BCELoss()
        self.cfg, self.batch, self.device = cfg, batch, device
        self.log: list[float] = []

    def next_real(self) -> torch.Tensor:
        try:
            real, _ = next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            real, _ = next(self.iterator)
        return real.to(self.device)

    def step(self) -> None:
        real = self.next_real()
        z = torch.randn(self.batch, self.cfg.model.z_dim, device=self.device)
        ones = torch.ones(self.batch, device=self.device)
        zeros = torch.zeros(self.batch, device=self.device)
        if self.cfg.train.step_order == "g_first":  # R5: G first, D reuses the same fake batch
            fake = self.G(z)
            self.opt_G.zero_grad()
            g_loss = self.criterion(self.D(fake), ones)
            g_loss.backward()
            self.opt_G.step()
            self.opt_D.zero_grad()
            d_loss = (self.criterion(self.D(real), ones) + self.criterion(self.D(fake.detach()), zeros)) / 2
            d_loss.backward()
            self.opt_D.step()
        else:  # R1: D on real, D on detached fake, D step; then G on a fresh z (pytorch/examples: the same fake)
            self.opt_D.zero_grad()
            d_real = self.criterion(self.D(real), ones)
            d_real.backward()
            fake = self.G(z)
            d_fake = self.criterion(self.D(fake.detach()), zeros)
            d_fake.backward()
            self.opt_D.step()
            self.opt_G.zero_grad()
            if not self.cfg.train.reuse_fake:
                z = torch.randn(self.batch, self.cfg.model.z_dim, device=self.device)
                fake = self.G(z)
            g_loss = self.criterion(self.D(fake), torch.ones(self.batch, device=self.device))
            g_loss.backward()
            self.opt_G.step()
            d_loss = d_real + d_fake
        self.log.append(d_loss.item() + g_loss.item())


# ------------------------------------------------------------------------------------ the ganforge step


class GanforgeLoop:
    """The trainer's own data, state and stepper (building a Trainer writes nothing), stepped directly."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        trainer = Trainer(cfg, Path(tempfile.gettempdir()) / "ganforge-throughput", log=lambda msg: None)
        self.trainer, self.state, self.stepper = trainer, trainer.state, trainer.stepper
        self.iteration = 0
        self.sums = torch.zeros(4, device=trainer.device)

    def step(self) -> None:
        self.sums += self.stepper([self.trainer.real_batch(self.iteration)])
        self.iteration += 1


def timed_steps(loop, batch: int, seconds: float, device: torch.device) -> tuple[int, float]:
    """Images trained and seconds taken by as many steps as fit in about `seconds`."""
    sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        loop.step()
        count += 1
    sync(device)
    return count * batch, time.perf_counter() - start


def paired_rates(loops: tuple, batch: int, seconds: float, window: float, device: torch.device) -> list[float]:
    """Images/s of each loop over about `seconds` each, taken in alternating turns of `window` seconds."""
    images, elapsed = [0] * len(loops), [0.0] * len(loops)
    for _ in range(max(1, round(seconds / window))):
        for i, loop in enumerate(loops):
            n, t = timed_steps(loop, batch, window, device)
            images[i] += n
            elapsed[i] += t
    return [n / t for n, t in zip(images, elapsed, strict=True)]


def add_timing_arguments(parser: argparse.ArgumentParser, seconds: float, device: str) -> None:
    """The options of a script that times loops in alternating turns (this one, cuda_graph.py)."""
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=seconds, help="timing per loop per repetition")
    parser.add_argument("--window", type=float, default=0.5, help="length of each loop's turn within a repetition")
    parser.add_argument("--device", default=device)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="ganforge settings to try")


def machine_line(clock: str = "%Y-%m-%d") -> str:
    """The start of a benchmark's first line: "# 2026-12-06, Intel Xeon Processor (AMX), 2 threads, torch 2.14.1"."""
    return (f"# {time.strftime(clock)}, {cpu_name() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def add_turn_arguments(parser: argparse.ArgumentParser, presets: str) -> None:
    """The options of a script that times two copies of a preset's step in alternating turns
    (optimizer_step.py, latent_layer.py)."""
    parser.add_argument("--presets", default=presets)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each turn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="ganforge settings to try")


def parse_turns(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, torch.device]:
    """The parsed options of a script given add_turn_arguments, and its device; prints its first line."""
    args = parser.parse_args()
    device = pick_device(args.device)
    print(f"{machine_line('%Y-%m-%d %H:%M')}, device {device}; median of {args.reps} turns of {args.seconds:g} s"
          + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
    return args, device


def median_turns(before: GanforgeLoop, after: GanforgeLoop, batch: int, args: argparse.Namespace,
                 device: torch.device) -> tuple[float, float]:
    """The median images/s of each loop over --reps pairs of turns of --seconds."""
    turns = [paired_rates((before, after), batch, args.seconds, args.seconds, device) for _ in range(args.reps)]
    before_rate, after_rate = (statistics.median(rates) for rates in zip(*turns, strict=True))
    return before_rate, after_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="dcgan,mlp-bn")
    parser.add_argument("--batches", default="64,256")
    add_timing_arguments(parser, seconds=4.0, device="cpu")
    args = parser.parse_args()
    device = pick_device(args.device)
    peak = matmul_gflops(device)
    ceiling = f"float32 matmul {peak:.1f} GFLOP/s"
    train_cfg = load_config(preset=MODELS["dcgan"], overrides=args.overrides).train
    amp, precision = train_cfg.amp, train_cfg.matmul_precision
    if amp != "none":  # the step's matmuls run in the autocast dtype: that is its ceiling
        peak = matmul_gflops(device, dtype=AMP_DTYPES[amp])
        ceiling += f", {amp} matmul {peak:.1f} GFLOP/s"
    elif precision != "high":  # likewise float32 matmuls at the step's internal precision
        with matmul_precision(precision):
            peak = matmul_gflops(device)
        ceiling += f", float32 matmul at precision {precision} {peak:.1f} GFLOP/s"
    print(f"{machine_line()}, device {device}; {ceiling}; median of {args.reps} x "
          f"{args.seconds:g} s in turns of {args.window:g} s"
          + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
    dtype_name = amp if amp != "none" else "float32" if precision == "high" else f"{precision}-precision"
    print(f"| model | batch | reference img/s | ganforge img/s | ratio | ganforge GFLOP/s | % of {dtype_name} matmul |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with training_kernels(False, device):  # a training run's kernels (cuDNN autotuned on CUDA), both loops
        for model in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                cfg = load_config(preset=MODELS[model], overrides=[f"train.batch_size={batch}",
                                                                   f"train.device={device}", *args.overrides])
                reference, ours = ReferenceLoop(copy.deepcopy(cfg), batch, device), GanforgeLoop(cfg, device)
                for loop in (reference, ours):  # warm-up
                    timed_steps(loop, batch, min(1.0, args.seconds), device)
                ref_rates, our_rates = [], []
                for _ in range(args.reps):
                    ref_rate, our_rate = paired_rates((reference, ours), batch, args.seconds, args.window, device)
                    ref_rates.append(ref_rate)
                    our_rates.append(our_rate)
                ref, our = statistics.median(ref_rates), statistics.median(our_rates)
                ratios = [o / r for o, r in zip(our_rates, ref_rates, strict=True)]
                gflops = step_flops(cfg, batch) / batch * our / 1e9
                print(f"| {model} | {batch} | {ref:,.0f} ({min(ref_rates):,.0f}-{max(ref_rates):,.0f}) | "
                      f"{our:,.0f} ({min(our_rates):,.0f}-{max(our_rates):,.0f}) | {our / ref:.2f}x "
                      f"({min(ratios):.2f}-{max(ratios):.2f}) | {gflops:.1f} | {100 * gflops / peak:.0f}% |",
                      flush=True)


if __name__ == "__main__":
    main()
