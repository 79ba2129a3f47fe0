"""What ganforge's Adam (torch's fused kernel called directly) buys over torch.optim's fused Adam, in the
whole training step.

    python benchmarks/optimizer_step.py [--presets mnist-mlp-bn,default] [--reps 20] [--seconds 0.5]
                                        [--set train.matmul_precision=medium ...]

Per preset, two copies of ganforge's training step from the same seed, one with ganforge's optimizers and one
with torch.optim.Adam(fused=True) holding the same state, alternate in turns of --seconds; it prints the
median images/s of each over --reps turns, their ratio, and whether both copies hold the same weights after
the same number of steps (they should: the same kernel on the same tensors).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from throughput import GanforgeLoop, paired_rates

from ganforge.config import load_config
from ganforge.device import pick_device


def with_torch_adam(loop: GanforgeLoop) -> GanforgeLoop:
    """The same loop with torch.optim's fused Adam in place of ganforge's, same settings and state."""
    for name in ("opt_G", "opt_D"):
        ours = getattr(loop.state, name)
        group = ours.param_groups[0]
        theirs = torch.optim.Adam(group["params"], lr=group["lr"], betas=group["betas"], eps=group["eps"],
                                  fused=True)
        theirs.load_state_dict(ours.state_dict())
        setattr(loop.state, name, theirs)
    return loop


def same_weights(a: GanforgeLoop, b: GanforgeLoop, steps: int) -> bool:
    for loop in (a, b):
        for _ in range(steps):
            loop.step()
    return all(torch.equal(p, q) for net in ("G", "D")
               for p, q in zip(getattr(a.state, net).parameters(), getattr(b.state, net).parameters(), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="mnist-mlp-bn")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each turn")
    parser.add_argument("--check", type=int, default=20, help="steps of each copy before comparing weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="ganforge settings to try")
    args = parser.parse_args()
    device = pick_device(args.device)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, device {device}; median of {args.reps} turns of {args.seconds:g} s"
          + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
    print("| preset | batch | torch.optim Adam img/s | ganforge Adam img/s | ratio | same weights |")
    print("|---|---:|---:|---:|---:|:---:|")
    for preset in args.presets.split(","):
        cfg = load_config(preset=preset, overrides=[f"train.device={device}", *args.overrides])
        if cfg.optim.name != "adam":
            print(f"| {preset} | {cfg.train.batch_size} | | | | optim.name={cfg.optim.name}: not Adam |", flush=True)
            continue
        ours, theirs = GanforgeLoop(cfg, device), with_torch_adam(GanforgeLoop(cfg, device))
        same = same_weights(ours, theirs, args.check)
        batch = cfg.train.batch_size
        turns = [paired_rates((theirs, ours), batch, args.seconds, args.seconds, device) for _ in range(args.reps)]
        theirs_rate, ours_rate = (statistics.median(rates) for rates in zip(*turns, strict=True))
        print(f"| {preset} | {batch} | {theirs_rate:,.0f} | {ours_rate:,.0f} | {ours_rate / theirs_rate:.3f}x | "
              f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
