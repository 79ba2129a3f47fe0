"""sec/kimg of every preset on this machine, on the bundled digits.

Each preset trains for 2 x --kimg in a temporary run directory; the first half is warm-up, the second
half's tick gives sec/kimg (training only: grids and checkpoints happen after the timer stops).

    python benchmarks/preset_speed.py [--kimg 4] [--presets default,mnist-dcgan]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from throughput import machine_line

from ganforge.config import load_config, preset_names
from ganforge.report import read_stats
from ganforge.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kimg", type=float, default=4.0, help="measured length per preset (after warm-up)")
    parser.add_argument("--presets", default=",".join(preset_names()))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{machine_line()}, device {args.device}")
    print("| preset | batch | G params | D params | sec/kimg | img/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for preset in args.presets.split(","):
        cfg = load_config(preset=preset, overrides=[f"train.kimg={2 * args.kimg}", f"train.tick_kimg={args.kimg}",
                                                    f"train.device={args.device}", "train.grid_size=16"])
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = train(cfg, out=tmp, log=lambda msg: None)
            stats = read_stats(run_dir / "stats.jsonl")
            from ganforge.generators import load_generator

            g_params = sum(p.numel() for p in load_generator(run_dir).parameters())
            ckpt = torch.load(next((run_dir / "checkpoints").glob("ckpt-*.pt")), weights_only=True)
            d_params = sum(v.numel() for k, v in ckpt["D"].items() if not k.endswith(("running_mean", "running_var",
                                                                                          "num_batches_tracked")))
        sec = stats[-1]["sec_per_kimg"]
        print(f"| {preset} | {cfg.train.batch_size} | {g_params:,} | {d_params:,} | {sec:.2f} | {1000 / sec:,.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
