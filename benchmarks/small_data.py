"""Small data: train on a class-balanced subset of the bundled digits and score G against that subset and
against all 5,000 digits, with no augmentation, DiffAugment always on, and adaptive DiffAugment (the default's).

    python benchmarks/small_data.py [--images 500] [--kimg 40] [--seeds 0,1] [--n 5000]
                                    [--row "default train.diffaugment= train.ada_target=0" --row "default" ...]

A G that copies its few training images scores well against them and worse against the digits it never saw;
recall and coverage against all 5,000 say how much of the digit distribution it still draws. Conditional rows
add class_acc (the share of samples the digit classifier puts in the requested class). Each row trains
with `data.max_images=--images` (the same images for every seed) for --kimg thousand images. A row may name
another data set (`default data.name=folder:PATH data.mirror=true`): "all" is then all of that one, and with
`--reference NAME` it is that data set instead (images held out from the training set, say). `--kid` adds
kid_digits, unbiased where a reference holds few images and fd_digits is biased upward by their number.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from throughput import machine_line

from ganforge.config import load_config
from ganforge.metrics import evaluate_run
from ganforge.report import read_stats
from ganforge.trainer import train

ROWS = ["default train.diffaugment= train.ada_target=0",  # none
        "default train.ada_target=0",  # the default's policy on every image
        "default"]  # adaptive (ADA)
COLUMNS = [("fd_digits", "own"), ("fd_digits", "all"), ("precision", "all"), ("recall", "all"),
           ("coverage", "all")]


def run_row(preset: str, overrides: list[str], images: int, kimg: float, n: int, seed: int, out: Path,
            device: str, reference: str | None = None, kid: bool = False) -> dict:
    cfg = load_config(preset=preset, overrides=[f"data.max_images={images}", f"train.kimg={kimg}",
                                                f"train.tick_kimg={kimg / 4}", f"train.seed={seed}",
                                                f"train.device={device}", *overrides])
    run_dir = train(cfg, out=out, log=lambda msg: None)
    stats = read_stats(run_dir / "stats.jsonl")
    values = {"sec_per_kimg": sum(s["sec_per_kimg"] for s in stats[1:]) / max(len(stats) - 1, 1)}
    for against, name in ((None, "own"), (reference or cfg.data.name, "all")):
        # class_acc needs no reference: it rides along with one of the two evaluations, on the same samples
        by_class = ["class_acc"] if cfg.model.n_classes and name == "all" else []
        metrics = ["fd_digits", *(["kid_digits"] if kid else []), "pr", "dc", *by_class]
        for record in evaluate_run(run_dir, metrics, n=n, seed=seed, device=device, reference=against):
            values[(record["metric"], name)] = record["value"]
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="training images (data.max_images)")
    parser.add_argument("--kimg", type=float, default=40.0)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--n", type=int, default=5000, help="samples per evaluation")
    parser.add_argument("--row", action="append", help='a preset and its overrides, e.g. "default loss.r1_gamma=1"')
    parser.add_argument("--reference", help="score 'all' against this data set (default: each row's own)")
    parser.add_argument("--kid", action="store_true", help="add kid_digits against both references")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    tmp = None if args.out else tempfile.TemporaryDirectory()
    out = args.out or Path(tmp.name)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{machine_line()}, device {args.device}; {args.images} images of each row's data set "
          f"(the bundled digits unless it names another), {args.kimg:g} kimg, n = {args.n:,}; 'own' = against the "
          "training images, 'all' = against " + (args.reference or "all of the data set"))
    rows = args.row or ROWS
    conditional = any(load_config(preset=row.split()[0], overrides=row.split()[1:]).model.n_classes for row in rows)
    columns = (COLUMNS[:2] + ([("kid_digits", "own"), ("kid_digits", "all")] if args.kid else []) + COLUMNS[2:]
               + ([("class_acc", "all")] if conditional else []))
    header = " | ".join(f"{metric} {reference}" for metric, reference in columns)
    print(f"| row | seed | {header} | sec/kimg |")
    print("|---|---:|" + "---:|" * (len(columns) + 1))
    for row in rows:
        preset, *overrides = row.split()
        results = []
        for seed in seeds:
            values = run_row(preset, overrides, args.images, args.kimg, args.n, seed, out, args.device,
                             args.reference, args.kid)
            results.append(values)
            cells = " | ".join(f"{values[c]:.4g}" if c in values else "" for c in columns)
            print(f"| {row} | {seed} | {cells} | {values['sec_per_kimg']:.2f} |", flush=True)
        if len(results) > 1:
            cells = " | ".join(f"{statistics.mean(v[c] for v in results):.4g} "
                               f"({statistics.stdev(v[c] for v in results):.2g})" if c in results[0] else ""
                               for c in columns)
            print(f"| {row} | mean (sd) | {cells} | |", flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
