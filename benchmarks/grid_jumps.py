"""How far each image of a run's fixed-noise grid moves from tick to tick, and how many jump: the numbers the
training loop's jump warning (train.jump_warn) was calibrated on, read back from the grids a run saved.

    python benchmarks/grid_jumps.py RUN [RUN ...] [--ratios 2,2.5,3]

For each tick with JUMP_HISTORY ticks of moves before it, the share of the grid's images whose move is more
than RATIO times their median move over those ticks; the table gives the largest share over the run's ticks
(from COLLAPSE_CHECK_FROM_KIMG on) at each ratio, and the ticks where the loop's rule (the run's
train.jump_warn, jump_minimum of the grid) holds. The grids are the run's PNGs, 8 bits a pixel, where the loop
measures G's output itself: the moves agree to about 1% (a pixel rounds by at most 1/255 of the range). The
moves are the health check's own functions; a run of any ganforge version with its samples/ folder will do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganforge.config import load_config
from ganforge.health import COLLAPSE_CHECK_FROM_KIMG, JUMP_HISTORY, image_moves, jump_minimum
from ganforge.report import fixed_noise_grids, grid_nimg, grid_nrow
from ganforge.step import grid_count, grid_labels


def grid_tiles(path: Path, n: int, nrow: int, size: int, channels: int) -> torch.Tensor:
    """The n images of a saved grid (torchvision's layout: 2 px of padding) as [n, C, size, size] in [-1, 1]."""
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
    tiles = []
    for i in range(n):
        y, x = 2 + (i // nrow) * (size + 2), 2 + (i % nrow) * (size + 2)
        tiles.append(pixels[y:y + size, x:x + size, :channels].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(tiles))


def run_moves(run: Path) -> tuple[list[float], torch.Tensor, float]:
    """The kimg of each grid after the first, each image's move at it ([ticks - 1, n]), and the run's
    train.jump_warn."""
    cfg = load_config(path=run / "config.toml")
    n = grid_count(cfg)
    nrow = grid_labels(cfg.model.n_classes, cfg.train.grid_size)[1] if cfg.model.n_classes else grid_nrow(n)
    grids = fixed_noise_grids(run / "samples")
    if len(grids) < 2:
        raise SystemExit(f"{run} has {len(grids)} fixed-noise grid(s) in samples/; moves need two or more")
    tiles = [grid_tiles(p, n, nrow, cfg.data.img_size, cfg.data.channels) for p in grids]
    moves = torch.stack([image_moves(b, a) for a, b in zip(tiles, tiles[1:], strict=False)])
    return [grid_nimg(p) / 1000 for p in grids[1:]], moves, cfg.train.jump_warn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--ratios", default="2,2.5,3", help="comma-separated move ratios to count past")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    print(f"grid moves against the median of the {JUMP_HISTORY} ticks before, from {COLLAPSE_CHECK_FROM_KIMG:g} kimg")
    print()
    print("| run | ticks judged | " + " | ".join(f"largest share past {r:g}x" for r in ratios)
          + " | ticks the loop warns at (kimg) |")
    print("|---|---:|" + "---:|" * len(ratios) + "---|")
    for run in args.runs:
        kimg, moves, limit = run_moves(run)
        largest = dict.fromkeys(ratios, 0.0)
        warned, judged = [], 0
        for t in range(JUMP_HISTORY, len(kimg)):
            if kimg[t] < COLLAPSE_CHECK_FROM_KIMG:
                continue
            judged += 1
            ratio = moves[t] / moves[t - JUMP_HISTORY:t].median(dim=0).values
            for r in ratios:
                largest[r] = max(largest[r], float((ratio > r).float().mean()))
            if limit > 0 and int((ratio > limit).sum()) >= jump_minimum(moves.shape[1]):
                warned.append(f"{kimg[t]:g}")
        cells = " | ".join(f"{largest[r]:.2f}" for r in ratios)
        print(f"| {run.name} | {judged} | {cells} | {', '.join(warned) or 'none'} |")


if __name__ == "__main__":
    main()
