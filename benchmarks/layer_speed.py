"""Where a preset's conv step spends its time, layer by layer: each weight layer of G and D timed alone
(forward and backward, in the layout and precision the trainer uses), with its share of the FLOPs.

    python benchmarks/layer_speed.py [--preset mnist-dcgan] [--batch 64] [--seconds 1] [--set train.amp=bf16 ...]

A layer whose share of the time is far above its share of the FLOPs runs at a poor rate: on the R1 DCGAN
these are the layers with one channel or a 1x1 map (G's first and last, D's first). The input gradient is
timed for every layer but G's first (z needs none).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import machine_line, weight_layers  # noqa: E402

from ganforge.config import load_config  # noqa: E402
from ganforge.device import AMP_DTYPES  # noqa: E402
from ganforge.models import build_discriminator, build_generator  # noqa: E402


def time_layer(layer: nn.Module, in_shape: torch.Size, input_grad: bool, autocast, seconds: float) -> float:
    """Seconds per forward + backward of `layer` alone on a random input of `in_shape`."""
    x = torch.randn(in_shape)
    if x.dim() == 4:
        layer = layer.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(input_grad)
    layer.train()

    def run() -> None:
        with autocast():
            y = layer(x)
        y.float().sum().backward()

    for _ in range(3):
        run()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-dcgan")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per layer")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="ganforge settings")
    args = parser.parse_args()
    cfg = load_config(preset=args.preset, overrides=args.overrides)
    if cfg.model.n_classes:
        raise SystemExit("layer_speed.py times unconditional nets; give a preset without model.n_classes")
    amp_dtype = AMP_DTYPES.get(cfg.train.amp)
    autocast = (lambda: torch.autocast("cpu", dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    torch.manual_seed(0)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(args.batch, cfg.model.z_dim)
    image = torch.randn(args.batch, cfg.data.channels, cfg.data.img_size, cfg.data.img_size)
    rows = []
    for net_name, net, example in (("G", G, z), ("D", D, image)):
        for i, (name, layer, in_shape, macs_per_image) in enumerate(weight_layers(net, example)):
            input_grad = not (net_name == "G" and i == 0)
            seconds = time_layer(layer, in_shape, input_grad, autocast, args.seconds)
            macs = macs_per_image * args.batch
            flops = 2 * macs * (3 if input_grad else 2)  # forward, weight gradient, input gradient
            rows.append((f"{net_name}.{name}", type(layer).__name__, list(in_shape), macs, seconds, flops / seconds))
    total_time, total_macs = sum(r[4] for r in rows), sum(r[3] for r in rows)
    print(f"{machine_line()}; {args.preset} {' '.join(args.overrides)}, batch {args.batch}, forward + backward "
          "of each layer alone")
    print("| layer | type | input | MACs % | ms | time % | GFLOP/s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, kind, shape, macs, seconds, rate in rows:
        print(f"| {name} | {kind} | {shape} | {100 * macs / total_macs:.1f} | {seconds * 1e3:.2f} | "
              f"{100 * seconds / total_time:.1f} | {rate / 1e9:.1f} |")


if __name__ == "__main__":
    main()
