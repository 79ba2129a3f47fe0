"""The copies metric's reference points, and its value for trained runs.

    python benchmarks/copies.py [RUN ...] [--n 10000]

- held out: the digit classifier's 1,000 held-out digits against its 4,000 training digits (what new draws
  of the data score), at 28 and 32 px.
- copies: 1,000 of those training digits with faint noise (sd 0.01), shifted right by 1 and 2 pixels, or
  mirrored, against the same 4,000: what a pixel distance catches.
- each RUN: `ganforge eval RUN --metrics copies --n N` (G_ema where kept), against the run's own training
  images (a data.max_images subset included), not written into the run; for a run on a subset of the
  bundled digits, also the digits outside the subset against it (new draws of the data at that size).
"""

from __future__ import annotations

import argparse
import time

import torch

from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.metrics import EvalContext, ImageSet, evaluate
from ganforge.metrics.core import evaluate_run
from ganforge.metrics.train_digits import heldout_split


def row(name: str, records: list[dict], seconds: float) -> str:
    values = {r["metric"]: r["value"] for r in records}
    return (f"| {name} | {records[0]['n_fake']:,} | {records[0]['n_real']:,} | {values['authenticity']:.3f} | "
            f"{values['nn_ratio']:.3f} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories or checkpoints")
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')}: copies (pixel-space authenticity and nearest-neighbour ratio)")
    print("| images | n samples | n training | authenticity | nn_ratio | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for size in (28, 32):
        data = load_dataset(DataConfig(name="mnist5k", img_size=size))
        images = data.batch(torch.arange(len(data))).cpu()
        train_idx, held_idx = heldout_split(data.labels.cpu())
        train = ImageSet(images[train_idx], "mnist5k", "classifier-train")
        noise = 0.01 * torch.randn(1000, *images.shape[1:], generator=torch.Generator().manual_seed(0))
        copied = images[train_idx[:1000]]
        for name, fake in ((f"held-out digits, {size} px", images[held_idx]),
                           (f"training digits + noise, {size} px", (copied + noise).clamp(-1, 1)),
                           (f"training digits shifted 1 px, {size} px", torch.roll(copied, 1, dims=3)),
                           (f"training digits shifted 2 px, {size} px", torch.roll(copied, 2, dims=3)),
                           (f"training digits mirrored, {size} px", copied.flip(3))):
            start = time.perf_counter()
            records = evaluate(EvalContext(ImageSet(fake, "mnist5k", name), train), ["copies"])
            print(row(name, records, time.perf_counter() - start), flush=True)
    for run in args.runs:
        start = time.perf_counter()
        records = evaluate_run(run, ["copies"], n=args.n, write=False)
        print(row(run, records, time.perf_counter() - start), flush=True)
        outside = digits_outside(run)
        if outside is not None:
            start = time.perf_counter()
            records = evaluate(EvalContext(*outside), ["copies"])
            print(row(f"the other bundled digits against {run}'s", records, time.perf_counter() - start), flush=True)


def digits_outside(run: str) -> tuple[ImageSet, ImageSet] | None:
    """For a run on a data.max_images subset of the bundled digits: the digits outside the subset, and the
    subset, so that new digits show what the run's samples would score without copying. None otherwise."""
    from ganforge import checkpoint as ckpt_io
    from ganforge.config import from_dict
    from ganforge.metrics.core import real_image_set

    cfg = from_dict(ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run, "latest"))["config"], stored=True)
    if cfg.data.name != "mnist5k" or not cfg.data.max_images:
        return None
    train = real_image_set(cfg.data)
    full = load_dataset(DataConfig(name="mnist5k", img_size=cfg.data.img_size, channels=cfg.data.channels))
    images = full.batch(torch.arange(len(full))).cpu()
    # the subset's digits are among them, within resize rounding (under 0.05 here; other digits lie 2.9 or more away)
    nearest = torch.cdist(images.flatten(1), train.images.flatten(1)).min(dim=1).values
    return ImageSet(images[nearest > 0.5], "mnist5k", "outside the subset"), train


if __name__ == "__main__":
    main()
