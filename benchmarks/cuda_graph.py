"""What train.cuda_graph buys on a GPU, and whether it trains the same weights.

For each preset and batch size: images/s of the trainer's own step run eagerly and replayed from CUDA graphs,
in alternating turns in one process (medians of --reps, with the range), as throughput.py times its loops.
Then --check iterations of each from the same seed with train.deterministic=true, stepped as the training
loop steps them: are G, D, G_ema, the optimizers and the noise generator equal bit for bit (and if not, by
how much do the weights differ)?

    python benchmarks/cuda_graph.py --presets default,mnist-dcgan,mnist-mlp-bn --batches 64,256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import add_timing_arguments, paired_rates, sync, timed_steps  # noqa: E402

from ganforge.config import load_config  # noqa: E402
from ganforge.device import pick_device, training_kernels  # noqa: E402
from ganforge.trainer import Trainer  # noqa: E402


class Loop:
    """A Trainer's stepper, stepped as the training loop steps it (progress, D steps per G step, batches)."""

    def __init__(self, preset: str, overrides: list[str]) -> None:
        cfg = load_config(preset=preset, overrides=overrides)
        self.trainer = Trainer(cfg, Path(tempfile.gettempdir()) / "ganforge-cuda-graph", log=lambda msg: None)
        self.state, self.stepper = self.trainer.state, self.trainer.stepper
        self.batch = cfg.train.batch_size
        self.sums = torch.zeros(4, device=self.trainer.device)

    def step(self) -> None:
        s = self.state
        iteration = s.nimg // self.batch
        self.stepper.set_progress(s.nimg)
        n_d = self.stepper.d_steps_for(s.g_steps)
        self.sums += self.stepper(self.trainer.real_batch(iteration + k) for k in range(n_d))
        s.nimg += self.batch * n_d
        s.g_steps += 1


def compare(eager: Loop, graphed: Loop) -> tuple[bool, float]:
    """(everything equal bit for bit, the largest weight difference)."""
    equal, largest = True, 0.0
    for net in ("G", "D", "G_ema"):
        a, b = getattr(eager.state, net), getattr(graphed.state, net)
        if a is None:
            continue
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            if not torch.equal(x, y):
                equal = False
                if x.is_floating_point():
                    largest = max(largest, (x - y).abs().max().item())
    for opt in ("opt_G", "opt_D"):
        for x, y in zip(getattr(eager.state, opt).state.values(), getattr(graphed.state, opt).state.values(),
                        strict=True):
            equal = equal and all(torch.equal(x[k], y[k]) for k in x)
    equal = equal and torch.equal(eager.state.z_gen.get_state(), graphed.state.z_gen.get_state())
    return equal, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="default,mnist-dcgan,mnist-mlp-bn")
    parser.add_argument("--batches", default="64,256")
    add_timing_arguments(parser, seconds=2.0, device="cuda")
    parser.add_argument("--check", type=int, default=100, help="iterations of the bit-for-bit comparison")
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cuda":
        sys.exit(f"cuda_graph.py measures CUDA graphs and needs a CUDA device; this machine offers {device.type}")
    print(f"# {time.strftime('%Y-%m-%d')}, {torch.cuda.get_device_name(device)}, torch {torch.__version__}; "
          f"median of {args.reps} x {args.seconds:g} s in turns of {args.window:g} s; {args.check} iterations "
          "compared with train.deterministic=true" + (f"; {' '.join(args.overrides)}" if args.overrides else ""))
    print("| preset | batch | eager img/s | graphs img/s | speed-up | graphs kept | same bits | largest weight diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for preset in args.presets.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            common = [f"train.batch_size={batch}", f"train.device={device}", *args.overrides]
            eager, graphed = Loop(preset, common), Loop(preset, [*common, "train.cuda_graph=true"])
            with training_kernels(False, device):  # the kernels of a run without train.deterministic
                for loop in (eager, graphed):  # warm-up: autotuning, and each kind of iteration's capture
                    timed_steps(loop, batch, 1.0, device)
                rates = [paired_rates((eager, graphed), batch, args.seconds, args.window, device)
                         for _ in range(args.reps)]
            eager_rates, graph_rates = [r[0] for r in rates], [r[1] for r in rates]
            ratios = [g / e for e, g in rates]
            kept = len(graphed.stepper.graphs.graphs)
            del eager, graphed
            exact = [*common, "train.deterministic=true"]
            with training_kernels(True, device):  # as the training loop runs under train.deterministic
                eager, graphed = Loop(preset, exact), Loop(preset, [*exact, "train.cuda_graph=true"])
                for _ in range(args.check):
                    eager.step()
                    graphed.step()
                sync(device)
            same, largest = compare(eager, graphed)
            print(f"| {preset} | {batch} | {statistics.median(eager_rates):,.0f} ({min(eager_rates):,.0f}-"
                  f"{max(eager_rates):,.0f}) | {statistics.median(graph_rates):,.0f} ({min(graph_rates):,.0f}-"
                  f"{max(graph_rates):,.0f}) | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-"
                  f"{max(ratios):.2f}) | {kept} | {'yes' if same else 'no'} | {largest:.3g} |", flush=True)
            del eager, graphed
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
