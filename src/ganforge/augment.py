"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to every image D sees, real and fake,
so a D trained on little data cannot memorise it. Follows the reference implementation: colour (brightness,
saturation, contrast), translation by up to 1/8 of the size and cutout of a half-size square, filling with 0;
and `shift`, translation that repeats the edge pixels instead. `scale` and `rotate` are two of ADA's geometric
augmentations (Karras et al. 2020), meant for the adaptive probability (train.ada_target): applied to every
image, as plain DiffAugment applies its policy, they would leak (G could draw turned digits unpunished)."""

from __future__ import annotations

import math
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


def _reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Coordinates outside [0, size - 1] mirrored back into it (ADA pads by reflection)."""
    period = 2 * (size - 1)
    return (size - 1) - ((coord.remainder(period)) - (size - 1)).abs()


def _warp(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Each image resampled bilinearly at `matrix` [B, 2, 2] (rows, columns) times its pixel's offset from the
    centre, the edges reflected as ADA pads them."""
    if x.is_cuda and torch.are_deterministic_algorithms_enabled():
        return _warp_by_gathers(x, matrix)  # grid_sample's CUDA backward has no deterministic kernel
    b, _, h, w = x.shape
    m = matrix.float()
    sy, sx = (h - 1) / 2, (w - 1) / 2
    # affine_grid's theta maps output (x, y) in [-1, 1] to input (x, y): columns first, each axis scaled
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = m[:, 1, 1], m[:, 1, 0] * sy / sx
    theta[:, 1, 0], theta[:, 1, 1] = m[:, 0, 1] * sx / sy, m[:, 0, 0]
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=True).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _warp_by_gathers(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """_warp written as gathers and blends, whose backward (index_put) is deterministic on CUDA; about 3x
    grid_sample's time on a CPU."""
    b, _, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=torch.float32) - (h - 1) / 2  # float32 even under bf16
    cols = torch.arange(w, device=x.device, dtype=torch.float32) - (w - 1) / 2
    v, u = torch.meshgrid(rows, cols, indexing="ij")  # [H, W]
    m = matrix.float().view(b, 2, 2, 1, 1)
    src_row = _reflect(m[:, 0, 0] * v + m[:, 0, 1] * u + (h - 1) / 2, h)  # [B, H, W]
    src_col = _reflect(m[:, 1, 0] * v + m[:, 1, 1] * u + (w - 1) / 2, w)
    r0, c0 = src_row.floor(), src_col.floor()
    fr, fc = (src_row - r0).unsqueeze(-1).to(x.dtype), (src_col - c0).unsqueeze(-1).to(x.dtype)
    r0, c0 = r0.long().clamp(0, h - 1), c0.long().clamp(0, w - 1)
    r1, c1 = (r0 + 1).clamp(max=h - 1), (c0 + 1).clamp(max=w - 1)
    gb = torch.arange(b, device=x.device).view(b, 1, 1)
    pixels = x.permute(0, 2, 3, 1)  # [B, H, W, C]
    top = pixels[gb, r0, c0] * (1 - fc) + pixels[gb, r0, c1] * fc
    bottom = pixels[gb, r1, c0] * (1 - fc) + pixels[gb, r1, c1] * fc
    return (top * (1 - fr) + bottom * fr).permute(0, 3, 1, 2).contiguous()


def scale(x: torch.Tensor, gen: torch.Generator | None, log2_std: float = 0.2) -> torch.Tensor:
    """Isotropic scaling about the centre by 2^N(0, 0.2^2), ADA's `scale`."""
    factor = torch.exp2(torch.randn(x.shape[0], device=x.device, generator=gen) * log2_std)
    eye = torch.eye(2, device=x.device).expand(x.shape[0], 2, 2)
    return _warp(x, eye / factor.view(-1, 1, 1))


def rotate(x: torch.Tensor, gen: torch.Generator | None, max_turn: float = 1.0) -> torch.Tensor:
    """Rotation about the centre by an angle uniform in [-max_turn * pi, max_turn * pi], ADA's `rotate`
    (whose rotate_max is 1, any angle)."""
    angle = (torch.rand(x.shape[0], device=x.device, generator=gen) * 2 - 1) * (max_turn * math.pi)
    cos, sin = angle.cos(), angle.sin()
    return _warp(x, torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2))


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "shift": shift,
    "cutout": cutout,
    "scale": scale,
    "rotate": rotate,
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
