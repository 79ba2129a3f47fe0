"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees, real and fake,
so a D trained on little data cannot memorise it. Follows the reference implementation: colour (brightness,
saturation, contrast), translation by up to 1/8 of the size and cutout of a half-size square, filling with 0;
and `shift`, translation that repeats the edge pixels instead."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import UserError


def _rand(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=gen)


def color(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    x = x + (_rand(x, gen) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, gen) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, gen) + 0.5) + mean  # contrast


def _shifted_grid(x: torch.Tensor, gen: torch.Generator | None,
                  ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index grids [B, H, W] of each image moved by its own offset, up to `ratio` of the size each way (row
    and column indices not yet clamped to the image)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device, generator=gen)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device, generator=gen)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(h, device=x.device),
                                torch.arange(w, device=x.device), indexing="ij")
    return gb, gx + tx, gy + ty


def translation(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    h, w = x.shape[2:]
    gb, gx, gy = _shifted_grid(x, gen, ratio)
    padded = F.pad(x, [1, 1, 1, 1])  # [B, C, H+2, W+2]
    return padded.permute(0, 2, 3, 1)[gb, (gx + 1).clamp(0, h + 1), (gy + 1).clamp(0, w + 1)].permute(0, 3, 1, 2) \
        .contiguous()


def shift(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """translation's shifts (the same draws), with the edge pixels repeated into the gap instead of 0, which
    is mid-grey in [-1, 1]: a digit's black background stays black, and D is not shown a border no real
    image has."""
    h, w = x.shape[2:]
    gb, gx, gy = _shifted_grid(x, gen, ratio)
    return x.permute(0, 2, 3, 1)[gb, gx.clamp(0, h - 1), gy.clamp(0, w - 1)].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, gen: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device, generator=gen)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device, generator=gen)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
                                torch.arange(cw, device=x.device), indexing="ij")
    gx = (gx + ox - ch // 2).clamp(0, h - 1)
    gy = (gy + oy - cw // 2).clamp(0, w - 1)
    mask = torch.ones(b, h, w, device=x.device, dtype=x.dtype)
    # a zero on the device: `mask[...] = 0` copies it from the host, which a CUDA graph's capture refuses
    mask.index_put_((gb, gx, gy), torch.zeros((), device=x.device, dtype=x.dtype))
    return x * mask.unsqueeze(1)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "shift": shift,
    "cutout": cutout,
}


def parse_policy(policy: str, setting: str = "train.diffaugment") -> list[str]:
    """The augmentations a policy string names, in order; an unknown one is refused, naming `setting`."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    for name in names:
        if name not in AUGMENTATIONS:
            raise UserError(f"unknown augmentation {name!r} in {setting}; valid: {', '.join(AUGMENTATIONS)}")
    return names


def diff_augment(x: torch.Tensor, policy: list[str], gen: torch.Generator | None = None) -> torch.Tensor:
    for name in policy:
        x = AUGMENTATIONS[name](x, gen)
    return x
