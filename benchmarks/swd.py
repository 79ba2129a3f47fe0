"""What swd (ProGAN's sliced Wasserstein distance on Laplacian pyramid patches) reads on a data set (the bundled
digits unless --data names another), and how it ranks a run's checkpoints against fd_digits.

    python benchmarks/swd.py [--data mnist5k] [--data-root DIR] [--img-size 32] [--n 250,500,1000,2500]
                             [--repeats 3] [--runs RUN ...]

- floor: two disjoint random draws of n images each: what new draws of the data score against each other.
- damage: one draw against the other after noise, blur, a shift, a mirror, or with one image repeated.
- runs: every checkpoint a run keeps (`train.keep_ckpts`), swd and fd_digits of n generated images against
  the run's training set, with the seconds each took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.metrics import EvalContext, ImageSet, evaluate
from ganforge.metrics.core import evaluate_run


def _swd(fake: torch.Tensor, real: torch.Tensor, seed: int) -> dict:
    return evaluate(EvalContext(ImageSet(fake, "digits", "fake"), ImageSet(real, "digits", "real"), seed=seed),
                    ["swd"])[0]


def _levels(record: dict) -> str:
    return ", ".join(f"{size}: {value:.2f}" for size, value in record["per_level"].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k", help="the data set whose images are drawn (a name or folder:PATH)")
    parser.add_argument("--data-root", default="data", help="where a torchvision set's files are")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--n", default="250,500,1000,2500", help="images in each draw (at most half the set)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", nargs="*", default=[], type=Path, help="run directories whose checkpoints to score")
    parser.add_argument("--run-n", type=int, default=5000, help="generated images a checkpoint is scored on")
    args = parser.parse_args()
    data = load_dataset(DataConfig(name=args.data, root=args.data_root, img_size=args.img_size))
    print(f"# {time.strftime('%Y-%m-%d')}: swd (x1e3, mean over levels) on {args.data} at {args.img_size} px, "
          f"{torch.get_num_threads()} threads")
    print("| draws | n each | swd mean (min-max) | per level (first repeat) | seconds |")
    print("|---|---:|---:|---|---:|")
    sizes = [int(v) for v in args.n.split(",")]
    for n in sizes:
        values, first, took = [], None, 0.0
        for seed in range(args.repeats):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
            a, b = data.batch(order[:n]), data.batch(order[n:2 * n])
            start = time.perf_counter()
            record = _swd(b, a, seed)
            took += time.perf_counter() - start
            values.append(record["value"])
            first = first or record
        print(f"| two random draws | {n:,} | {np.mean(values):.2f} ({min(values):.2f}-{max(values):.2f}) | "
              f"{_levels(first)} | {took / args.repeats:.1f} |")
    n = sizes[-1]
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    a, b = data.batch(order[:n]), data.batch(order[n:2 * n])
    noise = torch.randn(b.shape, generator=torch.Generator().manual_seed(1))
    damaged = {
        "Gaussian noise, sd 0.1": (b + 0.1 * noise).clamp(-1, 1),
        "Gaussian noise, sd 0.3": (b + 0.3 * noise).clamp(-1, 1),
        "3x3 box blur": torch.nn.functional.avg_pool2d(b, 3, 1, 1),
        "shifted 2 px right": torch.roll(b, 2, dims=3),
        "mirrored left-right": b.flip(3),
        "one image repeated": b[:1].expand_as(b).contiguous(),
    }
    for name, fake in damaged.items():
        start = time.perf_counter()
        record = _swd(fake, a, 0)
        print(f"| {name} | {n:,} | {record['value']:.2f} | {_levels(record)} | {time.perf_counter() - start:.1f} |")
    for run in args.runs:
        print(f"\n{run}: n = {args.run_n:,} generated against the training set")
        print("| checkpoint kimg | swd | per level | fd_digits | swd s | fd_digits s |")
        print("|---:|---:|---|---:|---:|---:|")
        for ckpt in sorted((run / "checkpoints").glob("ckpt-*.pt")):
            row = {}
            for metric in ("swd", "fd_digits"):
                start = time.perf_counter()
                records = evaluate_run(run, metrics=[metric], n=args.run_n, ckpt=str(ckpt), write=False)
                row[metric] = (records[0], time.perf_counter() - start)
            (swd, swd_s), (fd, fd_s) = row["swd"], row["fd_digits"]
            print(f"| {swd['kimg']:.1f} | {swd['value']:.2f} | {_levels(swd)} | {fd['value']:.3f} | {swd_s:.1f} | "
                  f"{fd_s:.1f} |")


if __name__ == "__main__":
    main()
