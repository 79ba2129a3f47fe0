"""Train every recipe preset and the default for the same budget on mnist5k, evaluate each, print one table.

    python benchmarks/quality.py [--seconds 60 | --kimg 20] [--n 10000] [--presets default,...] [--set k=v ...]

With --seconds (the default), every preset gets the same wall-clock training time on this machine: a 2-kimg
probe measures its sec/kimg, then it trains for the kimg that fits. With --kimg, all see the same images.
The metrics are the offline ones (digit-classifier features; see README "Metrics"), on --n samples of
G_ema when a preset keeps one, else G, against all 5,000 bundled digits.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from ganforge.config import load_config
from ganforge.metrics import evaluate_run
from ganforge.report import read_stats
from ganforge.trainer import train

PRESETS = ["default", "mnist-dcgan", "mnist-mlp-convd", "mnist-mlp-small", "mnist-mlp", "mnist-mlp-bn"]
COLUMNS = ["fd_digits", "kid_digits", "is_digits", "precision", "recall", "density", "coverage", "classes_covered",
           "classes_kl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per preset")
    parser.add_argument("--kimg", type=float, help="train every preset for this many kimg instead")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every preset")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    budget = f"{args.kimg:g} kimg" if args.kimg else f"{args.seconds:g} s of training"
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {budget} per preset on mnist5k, n = {args.n:,}, seed {args.seed}"
          + (f", {' '.join(args.overrides)}" if args.overrides else ""))
    print("| preset | kimg | " + " | ".join(COLUMNS) + " | sec/kimg |")
    print("|---|" + "---:|" * (len(COLUMNS) + 2))
    for preset in args.presets.split(","):
        common = [f"train.seed={args.seed}", "train.device=cpu", *args.overrides]
        kimg = args.kimg
        if kimg is None:
            probe = train(load_config(preset=preset, overrides=[*common, "train.kimg=2", "train.tick_kimg=1"]),
                          out=out, log=lambda msg: None)
            kimg = round(args.seconds / read_stats(probe / "stats.jsonl")[-1]["sec_per_kimg"], 1)
        cfg = load_config(preset=preset, overrides=[*common, f"train.kimg={kimg}", f"train.tick_kimg={kimg / 4}"])
        run_dir = train(cfg, out=out, log=lambda msg: None)
        stats = read_stats(run_dir / "stats.jsonl")
        sec_per_kimg = sum(s["sec_per_kimg"] for s in stats[1:]) / max(len(stats) - 1, 1)
        records = evaluate_run(run_dir, ["fd_digits", "kid_digits", "is_digits", "pr", "dc", "classes"], n=args.n,
                               seed=args.seed)
        values = {r["metric"]: r["value"] for r in records}
        cells = [f"{values[c]:.4g}" if isinstance(values[c], float) else str(values[c]) for c in COLUMNS]
        print(f"| {preset} | {kimg:g} | " + " | ".join(cells) + f" | {sec_per_kimg:.2f} |", flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
