"""Write the left-right symmetric classes of Fashion-MNIST's training set as an .npz for `folder:PATH.npz`.

    python benchmarks/fashion_subset.py DATA_ROOT [--out sym.npz]

DATA_ROOT holds FashionMNIST/raw/train-images-idx3-ubyte and train-labels-idx1-ubyte (torchvision's layout;
on Debian and Ubuntu `apt install dataset-fashion-mnist` ships them gzipped under
/usr/share/datasets/fashion-mnist/). The classes kept (T-shirt, trouser, pullover, dress, coat, shirt, bag;
42,000 images) are those a mirror image leaves in the class; the shoes, all facing left, are left out.
Used for the data.mirror measurement in the README.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SYMMETRIC = [0, 1, 2, 3, 4, 6, 8]  # T-shirt, trouser, pullover, dress, coat, shirt, bag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the data.root that holds FashionMNIST/raw/")
    parser.add_argument("--out", type=Path, default=Path("sym.npz"))
    args = parser.parse_args()
    raw = args.root / "FashionMNIST" / "raw"
    images = np.fromfile(raw / "train-images-idx3-ubyte", dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.fromfile(raw / "train-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    keep = np.isin(labels, SYMMETRIC)
    new_label = np.searchsorted(SYMMETRIC, labels[keep]).astype(np.int64)  # 0..6 in the order above
    np.savez(args.out, images[keep], labels=new_label)
    print(f"wrote {int(keep.sum()):,} images of {len(SYMMETRIC)} classes to {args.out}")


if __name__ == "__main__":
    main()
