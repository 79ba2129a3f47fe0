"""Turn the classic `mnist.pkl.gz` (MNIST's 60,000 training digits split 50,000 / 10,000, and its 10,000 test
digits, as float32 rows of pixel / 256) into the IDX files that `data.name=mnist` and `stacked-mnist` read,
for a machine that has that file but cannot download MNIST.

    python benchmarks/mnist_pickle.py mnist.pkl.gz ROOT      # writes ROOT/MNIST/raw/{train,t10k}-*-ubyte
    ganforge train --preset stacked-dcgan-fast --set data.name=stacked-mnist --set data.root=ROOT

The pickle is read with an unpickler that builds numpy arrays and nothing else, so a foreign pickle cannot
run code. Pixels come back exactly (each value is a whole number of 256ths); existing files are left alone.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype")}
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class ConversionError(Exception):
    """What is wrong with the input, in one line."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in ALLOWED:
            raise ConversionError(f"the pickle asks for {module}.{name}, which is not part of the MNIST arrays; "
                                  "refusing to read it")
        return getattr(importlib.import_module(module), name)


def read_pickle(src: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The (images, labels) pairs of train, validation and test, checked for shape and range."""
    try:
        with gzip.open(src, "rb") as f:
            parts = _ArraysOnly(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise ConversionError(f"{src} is not a readable mnist.pkl.gz: {e}") from e
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(p) == 2 for p in parts)):
        raise ConversionError(f"{src} does not hold (train, validation, test) pairs of images and labels")
    for images, labels in parts:
        if not (isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)) or images.ndim != 2 \
                or images.shape[1] != 784 or labels.shape != (images.shape[0],):
            raise ConversionError(f"{src} holds arrays of shape {getattr(images, 'shape', '?')} and "
                                  f"{getattr(labels, 'shape', '?')}; MNIST's are (N, 784) and (N,)")
    return parts


def to_uint8(images: np.ndarray) -> np.ndarray:
    pixels = np.round(images.astype(np.float64) * 256)
    if pixels.min() < 0 or pixels.max() > 255:
        raise ConversionError("pixel values outside [0, 255/256]: not the classic mnist.pkl.gz scaling")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    for name, header, body in (
        (f"{prefix}-images-idx3-ubyte", struct.pack(">IIII", 0x803, len(images), 28, 28), to_uint8(images)),
        (f"{prefix}-labels-idx1-ubyte", struct.pack(">II", 0x801, len(labels)), labels.astype(np.uint8)),
    ):
        tmp = raw / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(header + body.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, raw / name)


def convert(src: Path, root: Path) -> tuple[Path, int, int]:
    """Write ROOT/MNIST/raw's four IDX files from `src`; returns that folder and the training and test counts."""
    raw = root / "MNIST" / "raw"
    there = [n for n in NAMES if (raw / n).exists()]
    if there:
        raise ConversionError(f"{raw} already has {', '.join(there)}; leaving them alone (remove them to convert "
                              "again)")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = read_pickle(src)
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw, "train", np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y]))
    write_idx(raw, "t10k", test_x, test_y)
    return raw, len(train_x) + len(valid_x), len(test_x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="mnist.pkl.gz")
    parser.add_argument("root", type=Path, help="the folder data.root will name")
    args = parser.parse_args(argv)
    try:
        raw, n_train, n_test = convert(args.src, args.root)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {raw}: {n_train:,} training and {n_test:,} test digits; use --set data.root={args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
