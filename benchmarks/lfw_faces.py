"""Write scikit-image's 100 bundled LFW faces as two .npz files for `folder:PATH.npz`: a training half and a
held-out half, so that a run on a few faces can be scored on faces it never saw.

    python benchmarks/lfw_faces.py SOURCE [--train 50] [--out-dir .] [--centre]

SOURCE is scikit-image's `lfw_subset.npy` (200 greyscale 25x25 crops in [0, 1] from Labeled Faces in the
Wild: 100 faces, then 100 non-faces) or a scikit-image wheel holding it, which needs no install:
`pip download scikit-image --no-deps -d wheels` fetches one from the package index. The faces are split by a
fixed seed into faces-train.npz (--train of them) and faces-heldout.npz (the rest), uint8 [N, 25, 25].
The crops sit off centre, so that their mirror images are unlike them; --centre crops every face to the square
of side MIN_SIDE or more whose left-right lean over the 100 faces (ganforge.data.mirror_asymmetry) is least.
Used for the data.mirror measurement in the README (Data).
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

from ganforge.data import mirror_asymmetry

MEMBER = "skimage/data/lfw_subset.npy"
FACES = 100  # the first 100 of the 200 crops are faces
SPLIT_SEED = 0
MIN_SIDE = 22  # of 25: --centre keeps the faces whole


def centred(faces: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The faces cropped to the square (top, left, side) whose left-right lean is least, and that square."""
    size = faces.shape[-1]
    squares = [(top, left, side) for side in range(MIN_SIDE, size + 1) for top in range(size - side + 1)
               for left in range(size - side + 1)]

    def lean(square: tuple[int, int, int]) -> float:
        top, left, side = square
        return mirror_asymmetry(torch.from_numpy(faces[:, None, top:top + side, left:left + side]))

    top, left, side = min(squares, key=lean)
    return np.ascontiguousarray(faces[:, top:top + side, left:left + side]), (top, left, side)


def read_faces(source: Path) -> np.ndarray:
    """The 100 faces as uint8 [100, 25, 25], from lfw_subset.npy or a wheel that holds it."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            if MEMBER not in wheel.namelist():
                raise SystemExit(f"{source} holds no {MEMBER}; give a scikit-image wheel or the .npy itself")
            crops = np.load(io.BytesIO(wheel.read(MEMBER)), allow_pickle=False)
    else:
        crops = np.load(source, allow_pickle=False)
    if crops.shape != (2 * FACES, 25, 25):
        raise SystemExit(f"{source}: expected scikit-image's lfw_subset, 200 x 25 x 25, found {crops.shape}")
    return np.round(np.clip(crops[:FACES], 0, 1) * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="lfw_subset.npy, or a scikit-image .whl")
    parser.add_argument("--train", type=int, default=50, help="faces to train on; the rest are held out")
    parser.add_argument("--out-dir", type=Path, default=Path("."))
    parser.add_argument("--centre", action="store_true", help="crop the faces to their least lopsided square")
    args = parser.parse_args()
    if not args.source.is_file():
        sys.exit(f"{args.source} does not exist; give lfw_subset.npy or a scikit-image wheel")
    if not 0 < args.train < FACES:
        sys.exit(f"--train must be between 1 and {FACES - 1}")
    faces = read_faces(args.source)
    lean = mirror_asymmetry(torch.from_numpy(faces[:, None]))
    if args.centre:
        faces, (top, left, side) = centred(faces)
        print(f"cropped to {side}x{side} from row {top}, column {left}: left-right lean "
              f"{mirror_asymmetry(torch.from_numpy(faces[:, None])):.3f}, against {lean:.3f} uncropped")
    else:
        print(f"left-right lean of the faces: {lean:.3f}")
    order = np.random.default_rng(SPLIT_SEED).permutation(FACES)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(args.out_dir / "faces-train.npz", faces[np.sort(order[:args.train])])
    np.savez(args.out_dir / "faces-heldout.npz", faces[np.sort(order[args.train:])])
    print(f"wrote {args.train} faces to {args.out_dir / 'faces-train.npz'} and {FACES - args.train} to "
          f"{args.out_dir / 'faces-heldout.npz'}")


if __name__ == "__main__":
    main()
