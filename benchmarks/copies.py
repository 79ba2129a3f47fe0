"""The copies metric's reference points and its values for trained runs, beside the same two numbers on
plain pixels (no shifts) and on the digit classifier's features (experiments: no registered metric reads
them).

    python benchmarks/copies.py [RUN ...] [--n 10000] [--sizes 28,32]

- held out: the digit classifier's 1,000 held-out digits against its 4,000 training digits (what new draws
  of the data score), at each of --sizes (28 and 32 px; `--sizes=` leaves these reference rows out).
- copies: 1,000 of those training digits with faint noise (sd 0.01), shifted right by 1, 2 and 3 pixels
  (and 1 right and 1 down), or mirrored, against the same 4,000: what a pixel distance catches, and what
  the digit features catch.
- with data.mirror: the held-out digits, and mirrored copies (also shifted 2 px), against the 4,000 taken
  with their mirror images, as `copies` measures a run that trained with data.mirror.
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
from ganforge.metrics.classifier import classify, load_classifier
from ganforge.metrics.core import COPIES_MAX_SHIFT
from ganforge.metrics.formulas import authenticity
from ganforge.metrics.train_digits import heldout_split


def row(name: str, fake: torch.Tensor, train: torch.Tensor, mirrored: bool = False) -> str:
    """Authenticity and nn_ratio on plain pixels, as copies (pixels, smallest over shifts) and on the digit
    features. mirrored: the training set as a run with data.mirror has it, mirror images included (the
    features have no mirror to take, so that row leaves them out)."""
    start = time.perf_counter()
    records = evaluate(EvalContext(ImageSet(fake, "fake", name), ImageSet(train, "train", name, mirrored=mirrored)),
                       ["copies"])
    values = {r["metric"]: r["value"] for r in records}
    seconds = time.perf_counter() - start
    plain = authenticity(train, fake, mirror=mirrored)
    if mirrored:
        features = "- | -"
    else:
        net = load_classifier("cpu")
        features = "{:.3f} | {:.3f}".format(*authenticity(classify(net, train)[0], classify(net, fake)[0]))
    return (f"| {name} | {len(fake):,} | {len(train):,} | {plain[0]:.3f} | {plain[1]:.3f} | "
            f"{values['authenticity']:.3f} | {values['nn_ratio']:.3f} | {features} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run directories or checkpoints")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sizes", default="28,32", help="image sizes of the reference rows; empty for none")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    print(f"# {time.strftime('%Y-%m-%d')}: authenticity and nearest-neighbour ratio on plain pixels, as copies "
          f"measures them (pixels, the smallest distance over shifts of up to {COPIES_MAX_SHIFT} px), and on the "
          "digit classifier's features; seconds: copies")
    print("| images | n samples | n training | plain pixels: authenticity | nn_ratio | copies: authenticity | "
          "nn_ratio | features: authenticity | nn_ratio | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        data = load_dataset(DataConfig(name="mnist5k", img_size=size))
        images = data.batch(torch.arange(len(data))).cpu()
        train_idx, held_idx = heldout_split(data.labels.cpu())
        train = images[train_idx]
        noise = 0.01 * torch.randn(1000, *images.shape[1:], generator=torch.Generator().manual_seed(0))
        copied = images[train_idx[:1000]]
        for name, fake in ((f"held-out digits, {size} px", images[held_idx]),
                           (f"training digits + noise, {size} px", (copied + noise).clamp(-1, 1)),
                           (f"training digits shifted 1 px, {size} px", torch.roll(copied, 1, dims=3)),
                           (f"training digits shifted 2 px, {size} px", torch.roll(copied, 2, dims=3)),
                           (f"training digits shifted 3 px, {size} px", torch.roll(copied, 3, dims=3)),
                           (f"training digits shifted 1 px right and 1 down, {size} px",
                            torch.roll(copied, (1, 1), dims=(2, 3))),
                           (f"training digits mirrored, {size} px", copied.flip(3))):
            print(row(name, fake, train), flush=True)
        for name, fake in ((f"held-out digits, {size} px, training digits with data.mirror", images[held_idx]),
                           (f"training digits mirrored, {size} px, with data.mirror", copied.flip(3)),
                           (f"training digits mirrored and shifted 2 px, {size} px, with data.mirror",
                            torch.roll(copied.flip(3), 2, dims=3))):
            print(row(name, fake, train, mirrored=True), flush=True)
    for run in args.runs:
        fake, train, outside = run_sets(run, args.n)
        print(row(run, fake, train), flush=True)
        if outside is not None:
            print(row(f"the other bundled digits against {run}'s", outside, train), flush=True)


def run_sets(run: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A run's samples as `ganforge eval` draws them (seed 0, G_ema where kept, 8-bit), its training images,
    and for a run on a data.max_images subset of the bundled digits, the digits outside the subset (new draws
    of the data at that size; None otherwise)."""
    from ganforge import checkpoint as ckpt_io
    from ganforge.config import from_dict
    from ganforge.generators import load_generator
    from ganforge.metrics.core import quantize, real_image_set

    cfg = from_dict(ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run, "latest"))["config"], stored=True)
    fake = quantize(load_generator(run).sample(n, seed=0)).cpu()
    train = real_image_set(cfg.data).images
    if cfg.data.name != "mnist5k" or not cfg.data.max_images:
        return fake, train, None
    full = load_dataset(DataConfig(name="mnist5k", img_size=cfg.data.img_size, channels=cfg.data.channels))
    images = full.batch(torch.arange(len(full))).cpu()
    # the subset's digits are among them, within resize rounding (under 0.05 here; other digits lie 2.9 or more away)
    nearest = torch.cdist(images.flatten(1), train.flatten(1)).min(dim=1).values
    return fake, train, images[nearest > 0.5]


if __name__ == "__main__":
    main()
