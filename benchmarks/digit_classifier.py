"""Accuracy of ganforge's shipped digit classifier on MNIST's own splits, which it was not trained on (it saw
4,000 of the 5,000 bundled digits): overall, per digit, and how sure it is.

    python benchmarks/digit_classifier.py --data-root DATA_ROOT     # DATA_ROOT/MNIST/raw, as data.name=mnist reads it

Without a download: `python benchmarks/mnist_pickle.py mnist.pkl.gz DATA_ROOT` writes those files from the
classic pickle.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from ganforge.errors import UserError
from ganforge.metrics.classifier import classify, load_classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data", help="the folder holding MNIST/raw (default data)")
    args = parser.parse_args()
    import torchvision

    splits = {}
    for split, train in (("test", False), ("train", True)):
        try:
            splits[split] = torchvision.datasets.MNIST(args.data_root, train=train)
        except RuntimeError as e:
            raise UserError(f"MNIST not found under {args.data_root}/MNIST/raw; point --data-root at its parent, or "
                            "write its files with benchmarks/mnist_pickle.py") from e
    net = load_classifier()
    print(f"# {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, MNIST under {args.data_root}")
    print("| split | digits | accuracy | per digit (0-9) | mean confidence | read with > 0.99 |")
    print("|---|---:|---:|---|---:|---:|")
    for split, ds in splits.items():
        images = ds.data.unsqueeze(1).float().div(127.5).sub(1)
        _, probs = classify(net, images)
        pred, sure = probs.argmax(1), probs.max(1).values
        right = pred == ds.targets
        per_digit = " ".join(f"{right[ds.targets == d].float().mean():.3f}" for d in range(10))
        print(f"| {split} | {len(ds):,} | {right.float().mean():.4f} | {per_digit} | {sure.mean():.4f} | "
              f"{(sure > 0.99).float().mean():.3f} |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
