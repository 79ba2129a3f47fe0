"""Mean and spread over seeds of benchmarks/quality.py tables: one quality.py output per seed in, one table out.

    for s in 0 1 2; do python benchmarks/quality.py --kimg 12 --n 5000 --seed $s ... > seed$s.txt; done
    python benchmarks/seed_table.py seed0.txt seed1.txt seed2.txt

Rows are matched by their label (preset and overrides). fd_digits is listed per seed with its mean and
sample standard deviation; the other columns, sec/kimg included, are means (with kimg first when the seeds
trained different kimg, as `quality.py --seconds` runs do). A row where one seed is more than
ten times the median fd_digits of its seeds (a collapsed run) is marked, and its quality means are left out
(its kimg and sec/kimg, which a collapse does not change, are kept).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

COLUMNS = ["kid_digits", "precision", "recall", "coverage", "classes_kl", "class_acc", "sec/kimg"]


def read_table(path: Path) -> dict[str, dict[str, float]]:
    """label -> column -> value, from the markdown table quality.py prints."""
    rows: dict[str, dict[str, float]] = {}
    header: list[str] | None = None
    for line in path.read_text().splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "preset":
            header = cells
            continue
        if header is None or len(cells) != len(header):
            continue
        rows[cells[0]] = {name: float(value) for name, value in zip(header[1:], cells[1:], strict=True) if value}
    if not rows:
        sys.exit(f"{path}: no quality.py table found")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+", type=Path, help="quality.py outputs, one per seed")
    args = parser.parse_args()
    tables = [read_table(p) for p in args.tables]
    labels = [label for label in tables[0] if all(label in t for t in tables)]
    # an equal-time table: each seed's probe fitted its own kimg into the same seconds
    varies = any(len({t[label].get("kimg") for t in tables}) > 1 for label in labels)
    columns = ["kimg", *COLUMNS] if varies else COLUMNS
    print(f"| preset / setting | fd_digits per seed | mean (sd) | {' | '.join(columns)} |")
    print("|---|---|---:|" + "---:|" * len(columns))
    for label in labels:
        fds = [t[label]["fd_digits"] for t in tables]
        limit = 10 * statistics.median(fds)  # above it a seed counts as collapsed
        collapsed = max(fds) > limit
        per_seed = ", ".join(f"**{fd:.4g}**" if fd > limit else f"{fd:.4g}" for fd in fds)
        sd = f" ({statistics.stdev(fds):.2g})" if len(fds) > 1 else ""
        spread = "collapsed on a seed" if collapsed else f"{statistics.mean(fds):.3g}{sd}"
        means = []
        for column in columns:
            values = [t[label][column] for t in tables if column in t[label]]
            shown = values and (column in ("kimg", "sec/kimg") or not collapsed)
            means.append(f"{statistics.mean(values):.3g}" if shown else "-")
        print(f"| `{label}` | {per_seed} | {spread} | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
