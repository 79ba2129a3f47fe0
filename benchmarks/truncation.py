"""The truncation trick on trained runs: sample quality and variety as z is truncated to [-T, T].

    python benchmarks/truncation.py RUN [RUN ...] [--truncations none,2,1.5,1,0.7,0.5,0.25] [--n 10000]

For each run (its latest checkpoint, G_ema where kept) and each threshold, the offline digit metrics of
`ganforge eval RUN --truncation T` (fd_digits, kid_digits, precision, recall, density, coverage, classes;
class_acc for a conditional run),
against the run's own training data. Results are not written into the runs' metrics.json. A Stacked MNIST
run is scored by its modes and KL instead.
"""

from __future__ import annotations

import argparse
import time

from ganforge.metrics.core import evaluate_run

DIGIT_METRICS = ["fd_digits", "kid_digits", "pr", "dc", "classes"]
DIGIT_COLUMNS = ("fd_digits", "kid_digits", "precision", "recall", "density", "coverage", "classes_covered",
                 "classes_kl", "class_acc")
MODES_COLUMNS = ("modes", "modes_kl", "channel_kl", "confidence")


def load_config_of(run: str):
    from ganforge import checkpoint as ckpt_io
    from ganforge.config import from_dict

    return from_dict(ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run, "latest"))["config"], stored=True)


def thresholds(text: str) -> list[float | None]:
    return [None if t.strip().lower() == "none" else float(t) for t in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories or checkpoints")
    parser.add_argument("--truncations", type=thresholds, default=thresholds("none,2,1.5,1,0.7,0.5,0.25"))
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", action="store_true", help="Stacked MNIST runs: modes and KL")
    args = parser.parse_args()
    metrics, columns = (["modes"], MODES_COLUMNS) if args.modes else (DIGIT_METRICS, DIGIT_COLUMNS)
    print(f"# {time.strftime('%Y-%m-%d')}: truncation, n = {args.n:,}, seed {args.seed}")
    print("| run | truncation | " + " | ".join(columns) + " | seconds |")
    print("|---|---:|" + "---:|" * (len(columns) + 1))
    for run in args.runs:
        for threshold in args.truncations:
            start = time.perf_counter()
            conditional = load_config_of(run).model.n_classes > 0  # and class_acc, the share drawn as asked
            asked = metrics + ["class_acc"] * (conditional and not args.modes)
            records = evaluate_run(run, asked, n=args.n, seed=args.seed, write=False, truncation=threshold)
            values = {record["metric"]: record["value"] for record in records}
            if args.modes:  # where the KL comes from, from the modes protocol
                values["channel_kl"] = float(sum(records[0]["channel_kl"]))
                values["confidence"] = records[0]["mean_confidence"]
            cells = [f"{values[c]:.4g}" if isinstance(values.get(c), float) else str(values.get(c, "-"))
                     for c in columns]
            label = "none" if threshold is None else f"{threshold:g}"
            print(f"| {run} | {label} | " + " | ".join(cells) + f" | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
