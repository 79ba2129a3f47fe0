"""Train every recipe preset and the default for the same budget on mnist5k, evaluate each, print one table.

    python benchmarks/quality.py [--kimg 20] [--n 10000] [--presets default,mnist-dcgan,...] [--out DIR]

All presets see the same number of real images (--kimg); sec/kimg gives what that costs on this machine.
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
    parser.add_argument("--kimg", type=float, default=20.0)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; {args.kimg:g} kimg per preset on mnist5k, n = {args.n:,}, seed {args.seed}")
    print("| preset | " + " | ".join(COLUMNS) + " | sec/kimg |")
    print("|---|" + "---:|" * (len(COLUMNS) + 1))
    for preset in args.presets.split(","):
        cfg = load_config(preset=preset, overrides=[f"train.kimg={args.kimg}", f"train.tick_kimg={args.kimg / 4}",
                                                    f"train.seed={args.seed}", "train.device=cpu"])
        run_dir = train(cfg, out=out, log=lambda msg: None)
        stats = read_stats(run_dir / "stats.jsonl")
        sec_per_kimg = sum(s["sec_per_kimg"] for s in stats[1:]) / max(len(stats) - 1, 1)
        records = evaluate_run(run_dir, ["fd_digits", "kid_digits", "is_digits", "pr", "dc", "classes"], n=args.n,
                               seed=args.seed)
        values = {r["metric"]: r["value"] for r in records}
        cells = [f"{values[c]:.4g}" if isinstance(values[c], float) else str(values[c]) for c in COLUMNS]
        print(f"| {preset} | " + " | ".join(cells) + f" | {sec_per_kimg:.2f} |", flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
