"""The floor of fd_digits: what real digits score against the reference statistics of all 5,000.

    python benchmarks/fd_floor.py [--n 2000,10000] [--repeats 3]

- resample: n digits drawn with replacement from the 5,000 (there are no 10,000 distinct bundled digits),
  against all 5,000: the sampling-noise floor a generator that reproduced the data exactly would reach.
- held-out: the classifier's 1,000 held-out digits against its 4,000 training digits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.metrics import EvalContext, ImageSet, evaluate
from ganforge.metrics.core import real_image_set
from ganforge.metrics.train_digits import heldout_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="2000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = DataConfig(name="mnist5k")
    data = load_dataset(cfg)
    real = real_image_set(cfg, data)
    print(f"# {time.strftime('%Y-%m-%d')}: fd_digits floors on mnist5k (reference: all 5,000 digits)")
    for n in (int(v) for v in args.n.split(",")):
        values = []
        for seed in range(args.repeats):
            idx = torch.randint(0, len(data), (n,), generator=torch.Generator().manual_seed(seed))
            ctx = EvalContext(ImageSet(real.images[idx], "mnist5k", f"resample{n}"), real, seed=seed)
            values.append(evaluate(ctx, ["fd_digits"])[0]["value"])
        print(f"resample n={n:>6,}: fd_digits {np.mean(values):.4f} (min {min(values):.4f}, max {max(values):.4f})")
    train_idx, held_idx = heldout_split(data.labels)
    held = ImageSet(real.images[held_idx], "mnist5k", "heldout")
    ref = ImageSet(real.images[train_idx], "mnist5k", "classifier-train")
    value = evaluate(EvalContext(held, ref), ["fd_digits"])[0]["value"]
    print(f"held-out 1,000 vs training 4,000: fd_digits {value:.4f}")


if __name__ == "__main__":
    main()
