"""Convolutional G and D in the DCGAN family (recipe R1 and the default preset), plus R2's conv D."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import UserError
from .layers import Discriminator, Generator, LatentConvTranspose2d, MinibatchStd, activation, batch_norm, d_activation
from .registry import DISCRIMINATORS, GENERATORS


def _levels(img_size: int) -> tuple[int, int] | None:
    start, n = img_size, 0
    while start > 7 and start % 2 == 0:
        start, n = start // 2, n + 1
    return (start, n) if n >= 1 and 3 <= start <= 7 else None


def dcgan_levels(img_size: int, nets: str = "dcgan") -> tuple[int, int]:
    """img_size = start * 2**n with 3 <= start <= 7: 28 -> (7, 2), 32 -> (4, 3), 64 -> (4, 4)."""
    levels = _levels(img_size)
    if levels is None:
        below = next((s for s in range(img_size - 1, 5, -1) if _levels(s)), None)
        above = next(s for s in range(img_size + 1, 2 * img_size + 8) if _levels(s))
        nearest = f"{below} or {above}" if below else str(above)
        raise UserError(f"the {nets} nets need data.img_size = s * 2^n with s in 3..7 (e.g. 28, 32, 64), got "
                        f"{img_size}; the nearest that build: {nearest}")
    return levels


def _double(in_channels: int, out_channels: int, upsample: str, bias: bool) -> list[nn.Module]:
    """One of G's size-doubling layers: [B, in, H, W] -> [B, out, 2H, 2W]."""
    if upsample == "nearest":  # every output pixel sees the same number of inputs: no checkerboard
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=bias)]
    return [nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=bias)]


@GENERATORS.register("dcgan")
class DCGANGenerator(Generator):
    """z -> ConvT(k=start) to start x start, then size-doubling layers halving channels (stride-2 ConvT, or
    nearest upsampling and a 3x3 conv with model.g_upsample=nearest), Tanh."""

    ignores = ("g_hidden", "g_norm_first")

    def __init__(self, cfg: ModelConfig, img_size: int, channels: int) -> None:
        super().__init__(cfg.z_dim, img_size, channels)
        start, n = dcgan_levels(img_size)
        bn = cfg.g_norm == "bn"
        width = cfg.g_width * 2 ** (n - 1)
        layers: list[nn.Module] = [LatentConvTranspose2d(cfg.z_dim, width, start, 1, 0, bias=not bn)]
        if bn:
            layers.append(batch_norm(2, width, cfg))
        layers.append(activation(cfg.g_act, cfg.lrelu_slope))
        for _ in range(n - 1):
            layers += _double(width, width // 2, cfg.g_upsample, bias=not bn)
            if bn:
                layers.append(batch_norm(2, width // 2, cfg))
            layers.append(activation(cfg.g_act, cfg.lrelu_slope))
            width //= 2
        layers += [*_double(width, channels, cfg.g_upsample, bias=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # [B, z_dim] -> [B, z_dim, 1, 1] -> [B, C, H, W]
        return self.net(z.view(z.shape[0], -1, 1, 1))


@DISCRIMINATORS.register("dcgan")
class DCGANDiscriminator(Discriminator):
    """Stride-2 convs doubling channels down to start x start, then one dense logit over that map (the
    DCGAN paper's Conv(k=start), written as Linear so conditional heads can share the features)."""

    ignores = ("d_hidden",)

    def __init__(self, cfg: ModelConfig, img_size: int, channels: int) -> None:
        super().__init__(img_size, channels)
        start, n = dcgan_levels(img_size)
        bn = cfg.d_norm == "bn"
        width = cfg.d_width
        first_bn = bn and cfg.d_norm_first
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=not first_bn)]
        if first_bn:
            layers.append(batch_norm(2, width, cfg))
        layers += d_activation(cfg)
        for _ in range(n - 1):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=not bn))
            if bn:
                layers.append(batch_norm(2, width * 2, cfg))
            layers += d_activation(cfg)
            width *= 2
        if cfg.d_mbstd:
            layers.append(MinibatchStd())
            width += 1
        layers.append(nn.Flatten())  # [B, width, start, start] -> [B, width * start^2]
        self.body = nn.Sequential(*layers)
        self.make_head(width * start * start, cfg)


@DISCRIMINATORS.register("convd")
class ConvDiscriminator(Discriminator):
    """Two stride-2 convs of d_width filters, flatten, one dense logit (the TensorFlow tutorial's D, which has
    model.d_norm = "none"; with "bn", batch norm follows the second conv, and the first with d_norm_first)."""

    ignores = ("d_hidden",)

    def __init__(self, cfg: ModelConfig, img_size: int, channels: int) -> None:
        super().__init__(img_size, channels)
        if img_size % 4:
            lower, upper = img_size // 4 * 4, img_size // 4 * 4 + 4
            raise UserError(f"the convd discriminator needs data.img_size divisible by 4, got {img_size}; the nearest "
                            f"that build: {f'{lower} or ' if lower >= 8 else ''}{upper}")
        w = cfg.d_width
        bn = cfg.d_norm == "bn"
        layers: list[nn.Module] = [nn.Conv2d(channels, w, 4, 2, 1, bias=not (bn and cfg.d_norm_first))]
        if bn and cfg.d_norm_first:
            layers.append(batch_norm(2, w, cfg))
        layers += [*d_activation(cfg), nn.Conv2d(w, w, 4, 2, 1, bias=not bn)]
        if bn:
            layers.append(batch_norm(2, w, cfg))
        layers += d_activation(cfg)
        if cfg.d_mbstd:
            layers.append(MinibatchStd())
        w_out = w + int(cfg.d_mbstd)
        layers.append(nn.Flatten())  # [B, w_out, H/4, W/4] -> [B, w_out * H * W / 16]
        self.body = nn.Sequential(*layers)
        self.make_head(w_out * (img_size // 4) ** 2, cfg)
