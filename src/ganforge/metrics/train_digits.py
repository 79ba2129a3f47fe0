"""Train the digit classifier that the offline metrics use, on the bundled digits.

    python -m ganforge.metrics.train_digits [--epochs 30] [--out DIR] [--force]

A fixed, seeded, stratified split holds out 1,000 of the 5,000 digits; the net trains on the other
4,000 with light augmentation (random rotation, scale and shift) and its held-out accuracy is printed
and written beside the weights with their SHA-256. Without --out it rebuilds the shipped classifier in
the package, which it replaces only with --force.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import atomic_write_text, replace_atomically
from ..config import DataConfig
from ..data import load_dataset
from .classifier import WEIGHTS_FILE, DigitNet, file_sha256

SPLIT_SEED = 0
N_HELDOUT = 1000


def heldout_split(labels: torch.Tensor, n_heldout: int = N_HELDOUT, seed: int = SPLIT_SEED):
    """Stratified split: each class gives its share of n_heldout (largest remainders), chosen by seed."""
    labels_np = labels.numpy()
    classes, counts = np.unique(labels_np, return_counts=True)
    quota = counts * n_heldout / counts.sum()
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take))[: n_heldout - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    held = np.concatenate(
        [rng.permutation(np.flatnonzero(labels_np == c))[:t] for c, t in zip(classes, take, strict=True)]
    )
    mask = np.zeros(len(labels_np), dtype=bool)
    mask[held] = True
    return torch.from_numpy(np.flatnonzero(~mask)), torch.from_numpy(np.sort(held))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-image random rotation (+-10 deg), scale (0.9-1.1) and shift (+-2 px), one affine resample."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    scale = 0.9 + torch.rand(n, generator=gen) * 0.2
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)  # 2 px in [-1, 1] coordinates of 28 px
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # pad with background -1


@torch.no_grad()
def accuracy(net: DigitNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return (pred == y).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    from ..cli import OneLineParser

    parser = OneLineParser(prog="python -m ganforge.metrics.train_digits", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--force", action="store_true", help="replace an existing classifier in --out")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be at least 1")
    if (args.out / WEIGHTS_FILE).exists() and not args.force:
        # the default --out is the package's own classifier, whose SHA-256 the metrics check at every load
        parser.error(f"{args.out / WEIGHTS_FILE} exists; give --out DIR for a new classifier, or --force to "
                     "replace this one")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a folder for the classifier's weights and digits.json")
    try:  # before minutes of training, not after
        args.out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out).close()
    except OSError as e:
        parser.error(f"--out {args.out} cannot be written ({e.strerror}); give a writable folder")
    from safetensors.torch import save

    torch.manual_seed(args.seed)
    data = load_dataset(DataConfig(name="mnist5k"))
    train_idx, held_idx = heldout_split(data.labels)
    x_train, y_train = data.images[train_idx], data.labels[train_idx]
    x_held, y_held = data.images[held_idx], data.labels[held_idx]
    net = DigitNet()
    steps_per_epoch = len(x_train) // args.batch_size
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(x_train), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            loss = F.cross_entropy(net(augment(x_train[idx], gen)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  held-out accuracy {accuracy(net, x_held, y_held):.4f}"
                  f"  {time.time() - start:.0f}s", flush=True)
    acc = accuracy(net, x_held, y_held)
    path = args.out / WEIGHTS_FILE
    with replace_atomically(path) as f:  # a --force over a classifier keeps the old one if the write fails
        f.write(save({k: v.contiguous() for k, v in net.state_dict().items()}))
    sha = file_sha256(str(path))
    info = {"sha256": sha, "heldout_accuracy": acc, "n_train": len(train_idx), "n_heldout": len(held_idx),
            "split_seed": SPLIT_SEED, "epochs": args.epochs, "seed": args.seed}
    atomic_write_text(json.dumps(info, indent=2) + "\n", args.out / "digits.json")
    print(f"held-out accuracy {acc:.4f} on {len(held_idx)} digits; wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"sha256 {sha}")


if __name__ == "__main__":
    main()
