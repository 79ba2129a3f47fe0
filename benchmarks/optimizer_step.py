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

import torch
from throughput import GanforgeLoop, add_turn_arguments, median_turns, parse_turns

from ganforge.config import load_config


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
    add_turn_arguments(parser, presets="mnist-mlp-bn")
    parser.add_argument("--check", type=int, default=20, help="steps of each copy before comparing weights")
    args, device = parse_turns(parser)
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
        theirs_rate, ours_rate = median_turns(theirs, ours, batch, args, device)
        print(f"| {preset} | {batch} | {theirs_rate:,.0f} | {ours_rate:,.0f} | {ours_rate / theirs_rate:.3f}x | "
              f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
