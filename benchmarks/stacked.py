"""Stacked MNIST mode coverage, PacGAN / VEEGAN protocol: modes seen of 1,000 and KL(triples || uniform)
from 26,000 samples, mean and spread over seeds.

    python benchmarks/stacked.py [--presets stacked-dcgan,stacked-pacgan2] [--seeds 0,1,2] [--kimg 50]
                                 [--set k=v ...] [--row "stacked-dcgan model.d_mbstd=true" ...] [--every 10]

--every K also counts modes every K kimg during training and prints each run's path (kimg: modes / KL).
--truncation T also scores each run with z truncated to [-T, T] (repeatable): a row "PRESET, truncation T".

Published (protocols differ in data and length): DCGAN 99 modes / KL 3.4 (VEEGAN's table); PacDCGAN2
1,000 / 0.06 (PacGAN, mean of 10 runs).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ganforge.config import load_config
from ganforge.metrics import evaluate_run
from ganforge.metrics.core import MODES_N
from ganforge.report import read_stats
from ganforge.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="stacked-dcgan,stacked-pacgan2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--kimg", type=float, default=50.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every run")
    parser.add_argument("--row", action="append", default=[],
                        help='an extra preset with its own overrides, e.g. "stacked-dcgan model.d_mbstd=true"')
    parser.add_argument("--every", type=float, default=0.0, help="also count modes every this many kimg")
    parser.add_argument("--truncation", type=float, action="append", default=[],
                        help="also score each run with z truncated to [-T, T] (repeatable)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    print(f"# {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {args.kimg:g} kimg per run, {MODES_N:,} samples")
    print("| preset | seed | modes | KL | KL of the channels' digit histograms | classifier confidence | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary, paths = {}, []
    every = ([f"eval.every_kimg={args.every}", f"train.tick_kimg={args.every}", 'eval.metrics=["modes"]']
             if args.every else [])
    rows = [[p] for p in args.presets.split(",") if p] + [r.split() for r in args.row]
    for preset, *row_overrides in rows:
        label = " ".join([preset, *row_overrides])
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = load_config(preset=preset, overrides=[f"train.kimg={args.kimg}", f"train.tick_kimg={args.kimg / 2}",
                                                        f"train.seed={seed}", f"train.device={args.device}",
                                                        *every, *args.overrides, *row_overrides])
            run_dir = train(cfg, out=out, log=lambda msg: None)
            stats = read_stats(run_dir / "stats.jsonl")
            seconds = stats[-1]["time_s"]
            path = [f"{r['kimg']:g}: {r['metrics']['modes']} / {r['metrics']['modes_kl']:.3f}" for r in stats
                    if "modes" in r.get("metrics", {})]
            if path:
                paths.append(f"{label} seed {seed}: " + ", ".join(path))
            for truncation in (None, *args.truncation):
                records = evaluate_run(run_dir, ["modes"], seed=seed, device=args.device, truncation=truncation)
                values = {r["metric"]: r["value"] for r in records}
                channel_kl, confidence = sum(records[0]["channel_kl"]), records[0]["mean_confidence"]
                name = label if truncation is None else f"{label}, truncation {truncation:g}"
                summary.setdefault(name, []).append((values["modes"], values["modes_kl"]))
                print(f"| {name} | {seed} | {values['modes']} | {values['modes_kl']:.3f} | {channel_kl:.3f} | "
                      f"{confidence:.3f} | {seconds:.0f} |", flush=True)
    for preset, rows in summary.items():
        modes, kls = [r[0] for r in rows], [r[1] for r in rows]
        spread = (f" (sd {statistics.stdev(modes):.1f} / {statistics.stdev(kls):.3f})" if len(rows) > 1 else "")
        print(f"{preset}: modes {statistics.mean(modes):.1f}, KL {statistics.mean(kls):.3f}{spread}")
    for path in paths:
        print(path)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
