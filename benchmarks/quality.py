"""Train every recipe preset and the default for the same budget on mnist5k, evaluate each, print one table.

    python benchmarks/quality.py [--seconds 60 | --kimg 20] [--n 10000] [--presets default,...] [--set k=v ...]
                                 [--row "default loss.name=lsgan model.d_norm=none" ...]

With --seconds (the default), every preset gets the same wall-clock training time on this machine: a 2-kimg
probe measures its sec/kimg, then it trains for the kimg that fits. With --kimg, all see the same images.
The metrics are the offline ones (digit-classifier features; see README "Metrics"), on --n samples of
G_ema when a preset keeps one, else G, against all 5,000 bundled digits; conditional presets add class_acc
(the share of samples the digit classifier puts in the class G was asked for).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from throughput import machine_line

from ganforge.config import load_config
from ganforge.metrics import evaluate_run
from ganforge.report import read_stats
from ganforge.trainer import train

PRESETS = ["default", "mnist-dcgan", "mnist-mlp-convd", "mnist-mlp-small", "mnist-mlp", "mnist-mlp-bn"]
COLUMNS = ["fd_digits", "kid_digits", "is_digits", "precision", "recall", "density", "coverage", "classes_covered",
           "classes_kl", "class_acc"]
METRICS = ["fd_digits", "kid_digits", "is_digits", "pr", "dc", "classes"]


def run_row(preset: str, overrides: list[str], seconds: float, kimg: float | None, n: int, seed: int,
            out: Path, device: str = "cpu") -> dict:
    """Train one preset (plus overrides) for the budget and evaluate it; returns kimg, sec/kimg and metrics."""
    common = [f"train.seed={seed}", f"train.device={device}", *overrides]
    if kimg is None:
        probe = train(load_config(preset=preset, overrides=[*common, "train.kimg=2", "train.tick_kimg=1"]),
                      out=out, log=lambda msg: None)
        kimg = round(seconds / read_stats(probe / "stats.jsonl")[-1]["sec_per_kimg"], 1)
    cfg = load_config(preset=preset, overrides=[*common, f"train.kimg={kimg}", f"train.tick_kimg={kimg / 4}"])
    run_dir = train(cfg, out=out, log=lambda msg: None)
    stats = read_stats(run_dir / "stats.jsonl")
    sec_per_kimg = sum(s["sec_per_kimg"] for s in stats[1:]) / max(len(stats) - 1, 1)
    metrics = METRICS + (["class_acc", "fd_digits_per_class"] if cfg.model.n_classes else [])
    records = evaluate_run(run_dir, metrics, n=n, seed=seed, device=device)
    return {"kimg": kimg, "sec_per_kimg": sec_per_kimg, **{r["metric"]: r["value"] for r in records}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="training time per preset")
    parser.add_argument("--kimg", type=float, help="train every preset for this many kimg instead")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="applied to every preset")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--row", action="append", default=[],
                        help='an extra row: a preset and its own overrides, e.g. "default loss.name=lsgan"')
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (the default: equal time means this CPU's time), "
                        "cuda, or auto")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    budget = f"{args.kimg:g} kimg" if args.kimg else f"{args.seconds:g} s of training"
    print(f"{machine_line()}, device {args.device}; {budget} per preset on mnist5k, n = {args.n:,}, "
          f"seed {args.seed}"
          + (f", {' '.join(args.overrides)}" if args.overrides else ""))
    print("| preset | kimg | " + " | ".join(COLUMNS) + " | sec/kimg |")
    print("|---|" + "---:|" * (len(COLUMNS) + 2))
    rows = [[p] for p in args.presets.split(",") if p] + [r.split() for r in args.row]
    for preset, *row_overrides in rows:
        values = run_row(preset, [*args.overrides, *row_overrides], args.seconds, args.kimg, args.n, args.seed, out,
                         args.device)
        cells = [f"{values[c]:.4g}" if isinstance(values.get(c), float) else str(values.get(c, "")) for c in COLUMNS]
        label = " ".join([preset, *row_overrides])
        print(f"| {label} | {values['kimg']:g} | " + " | ".join(cells) + f" | {values['sec_per_kimg']:.2f} |",
              flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
