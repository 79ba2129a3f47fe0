"""Where a Stacked MNIST run's KL comes from: each channel's digit histogram, read three ways.

    python benchmarks/stacked_digits.py RUN [--ckpt latest] [--no-ema] [--real] [--second-classifier PATH]

For 26,000 samples (the modes protocol's n, seed 0) each channel is classified by the digit classifier, and
each channel's histogram over the ten digits is compared with uniform (KL in nats) as
  hard:  argmax counts (what the modes metric counts),
  soft:  summed class probabilities (no argmax: a G that draws ambiguous digits evenly reads even here),
  sure:  argmax counts of the channels read with probability > 0.99 only.
It prints the triple KL, the classifier's mean confidence, the share of channels read with > 0.99, the three
channel KLs, channel 0's histograms in percent and the mean confidence per digit. --real does the same for
26,000 real stacked digits. --second-classifier reads the same images again with other weights of the digit
classifier (python -m ganforge.metrics.train_digits --seed 1 --out DIR writes DIR/digits.safetensors) and
prints the share of channels on which the two agree: how much of the KL the choice of classifier decides.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ganforge import load_generator
from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.metrics.classifier import DigitNet, classify, load_classifier
from ganforge.metrics.formulas import mode_statistics

N = 26_000
SURE = 0.99


def kl_to_uniform(counts: np.ndarray) -> float:
    p = counts / counts.sum()
    nz = p > 0
    return float((p[nz] * np.log(p[nz] * len(counts))).sum())


def describe(images: torch.Tensor, tag: str, net: DigitNet | None = None) -> np.ndarray:
    """Prints the reads of one classifier (the shipped one by default); returns its digits [n, 3]."""
    n, _, h, w = images.shape
    _, probs = classify(net if net is not None else load_classifier(), images.reshape(n * 3, 1, h, w))
    conf, digits = probs.max(1)
    digits, conf, probs = digits.view(n, 3).numpy(), conf.view(n, 3).numpy(), probs.view(n, 3, 10).numpy()
    hard = [np.bincount(digits[:, c], minlength=10) for c in range(3)]
    soft = [probs[:, c].sum(0) for c in range(3)]
    sure = [np.bincount(digits[conf[:, c] > SURE, c], minlength=10) for c in range(3)]
    _, triple_kl = mode_statistics(digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2], 1000)
    print(f"{tag}: triple KL {triple_kl:.3f}, mean confidence {conf.mean():.3f}, "
          f"channels read with > {SURE}: {(conf > SURE).mean():.3f}")
    for name, hists in (("hard", hard), ("soft", soft), ("sure", sure)):
        print(f"  channel KL {name}: " + ", ".join(f"{kl_to_uniform(h):.4f}" for h in hists)
              + "   channel 0 (%, digits 0-9): " + " ".join(f"{100 * v / h.sum():4.1f}" for h in hists[:1] for v in h))
    read = [conf[digits[:, 0] == d, 0] for d in range(10)]  # "-" for a digit no sample was read as
    print("  mean confidence per digit, channel 0: " + " ".join(f"{c.mean():.3f}" if len(c) else "-" for c in read))
    return digits


def load_other_classifier(path: str) -> DigitNet:
    from safetensors.torch import load_file

    net = DigitNet()
    net.load_state_dict(load_file(path))
    return net.eval().requires_grad_(False)


def describe_both(images: torch.Tensor, tag: str, other: DigitNet | None) -> None:
    digits = describe(images, tag)
    if other is not None:
        second = describe(images, f"{tag}, second classifier", other)
        print(f"  the two classifiers read the same digit on {(digits == second).mean():.3f} of the channels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--ckpt", default="latest")
    parser.add_argument("--no-ema", action="store_true", help="G rather than G_ema")
    parser.add_argument("--real", action="store_true", help="also real stacked digits")
    parser.add_argument("--second-classifier", help="digits.safetensors of another digit classifier")
    args = parser.parse_args()
    other = load_other_classifier(args.second_classifier) if args.second_classifier else None
    G = load_generator(args.run, ckpt=args.ckpt, ema=not args.no_ema)
    describe_both(G.sample(N, seed=0), "G" if args.no_ema else "G_ema where kept", other)
    if args.real:
        real = load_dataset(DataConfig(name="stacked-mnist5k", img_size=G.img_size, channels=3)).images[:N]
        describe_both(real, "real stacked digits", other)


if __name__ == "__main__":
    main()
