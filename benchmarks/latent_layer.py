"""What computing G's first layer (z -> the first k x k map) as one matmul buys over torch's transposed
convolution kernels, in the whole training step.

    python benchmarks/latent_layer.py [--presets default,mnist-dcgan] [--reps 20] [--seconds 0.5]
                                      [--set train.amp=bf16 --set train.batch_size=64 ...]

Per preset, two copies of ganforge's training step from the same seed alternate in turns of --seconds: one as
it ships (LatentConvTranspose2d: a matmul on the 1x1 input) and one whose first layer runs
nn.ConvTranspose2d's own forward on the same weights. It prints the median images/s of each over --reps
turns, their ratio, and the largest difference between the layer's two outputs on the same weights and z
(the same sums: on the AMX Xeon the forward outputs were equal, but the weight gradients differ in the last
bits, and Adam turns such differences in a gradient near zero into steps of up to the learning rate, so two
runs part within a few steps, as runs on two kinds of CPU do).
"""

from __future__ import annotations

import argparse
import types

import torch
from throughput import GanforgeLoop, add_turn_arguments, median_turns, parse_turns
from torch import nn

from ganforge.config import load_config
from ganforge.models.layers import LatentConvTranspose2d


def with_convolution_kernels(loop: GanforgeLoop) -> GanforgeLoop:
    """The same loop with every LatentConvTranspose2d of G running ConvTranspose2d's forward (G_ema runs in eval
    mode, where the layer keeps the kernels anyway)."""
    for module in loop.state.G.modules():
        if isinstance(module, LatentConvTranspose2d):
            module.forward = types.MethodType(nn.ConvTranspose2d.forward, module)
    return loop


def output_gap(layer: LatentConvTranspose2d, batch: int) -> float:
    """The largest difference between the layer's matmul and its convolution kernels on one z."""
    z = torch.randn(batch, layer.in_channels, 1, 1, device=layer.weight.device)
    with torch.no_grad():
        return (layer(z) - nn.ConvTranspose2d.forward(layer, z)).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_turn_arguments(parser, presets="default,mnist-dcgan")
    args, device = parse_turns(parser)
    print("| preset | batch | ConvTranspose2d img/s | matmul img/s | ratio | largest output difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset in args.presets.split(","):
        cfg = load_config(preset=preset, overrides=[f"train.device={device}", *args.overrides])
        ours = GanforgeLoop(cfg, device)
        layers = [m for m in ours.state.G.modules() if isinstance(m, LatentConvTranspose2d)]
        if not layers:
            print(f"| {preset} | {cfg.train.batch_size} | | | | model.g={cfg.model.g}: no such layer |", flush=True)
            continue
        kernels = with_convolution_kernels(GanforgeLoop(cfg, device))
        batch = cfg.train.batch_size
        gap = output_gap(layers[0], batch)
        kernels_rate, ours_rate = median_turns(kernels, ours, batch, args, device)
        print(f"| {preset} | {batch} | {kernels_rate:,.0f} | {ours_rate:,.0f} | {ours_rate / kernels_rate:.3f}x | "
              f"{gap:.1e} |", flush=True)


if __name__ == "__main__":
    main()
