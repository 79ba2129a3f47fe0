"""SNGAN-style ResNet G and D (Miyato et al. 2018, appendix B.4, the CIFAR-10 nets), at any img_size the
DCGAN family takes: G starts at start x start and doubles n times; D halves n - 1 times, then two blocks at
that size, ReLU and a global sum pool before the dense logit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .dcgan import dcgan_levels
from .layers import Discriminator, Generator, MinibatchStd, batch_norm
from .registry import DISCRIMINATORS, GENERATORS


def _act(name: str, slope: float) -> nn.Module:
    # not in place: the block input also feeds the shortcut
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(slope)


class GBlock(nn.Module):
    """BN-act-up-conv3-BN-act-conv3, plus up-conv1 shortcut; doubles the resolution."""

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig) -> None:
        super().__init__()
        bn = cfg.g_norm == "bn"
        self.bn1 = batch_norm(2, c_in, cfg) if bn else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.bn2 = batch_norm(2, c_out, cfg) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0)
        self.act = _act(cfg.g_act, cfg.lrelu_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(self.act(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(self.act(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    """act-conv3-act-conv3 (-avgpool), plus conv1 (-avgpool) shortcut. The first block skips the leading
    activation and pools before its shortcut conv (SNGAN's "optimized block"). With d_norm=bn, batch norm
    precedes each activation."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool, cfg: ModelConfig) -> None:
        super().__init__()
        self.down, self.first = down, first
        bn = cfg.d_norm == "bn"
        self.bn1 = batch_norm(2, c_in, cfg) if bn and not first else nn.Identity()
        self.bn2 = batch_norm(2, c_out, cfg) if bn else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0) if (down or c_in != c_out) else None
        self.act = _act(cfg.d_act, cfg.lrelu_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else self.act(self.bn1(x)))
        h = self.conv2(self.act(self.bn2(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        if self.first:
            return h + self.shortcut(F.avg_pool2d(x, 2))
        sc = self.shortcut(x)
        return h + (F.avg_pool2d(sc, 2) if self.down else sc)


@GENERATORS.register("resnet")
class ResNetGenerator(Generator):
    """z -> Linear to g_width x start x start -> n up-blocks of g_width channels -> BN, act, conv3, Tanh."""

    ignores = ("g_hidden", "g_norm_first", "g_upsample")

    def __init__(self, cfg: ModelConfig, img_size: int, channels: int) -> None:
        super().__init__(cfg.z_dim, img_size, channels)
        self.start, n = dcgan_levels(img_size, "resnet")
        width = cfg.g_width
        self.width = width
        self.fc = nn.Linear(cfg.z_dim, width * self.start * self.start)
        self.blocks = nn.Sequential(*[GBlock(width, width, cfg) for _ in range(n)])
        self.out = nn.Sequential(
            batch_norm(2, width, cfg) if cfg.g_norm == "bn" else nn.Identity(),
            _act(cfg.g_act, cfg.lrelu_slope),
            nn.Conv2d(width, channels, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # [B, z_dim] -> [B, width, start, start] -> [B, width, H, W] -> [B, C, H, W]
        h = self.fc(z.flatten(1)).view(-1, self.width, self.start, self.start)
        return self.out(self.blocks(h))


class _SumPool(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.act = act

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # [B, C, H, W] -> [B, C]: SNGAN sums rather than averages
        return self.act(h).sum(dim=(2, 3))


@DISCRIMINATORS.register("resnet")
class ResNetDiscriminator(Discriminator):
    """Optimized down-block, n - 2 more down-blocks, two blocks at that size, act, sum pool, dense logit;
    d_width channels throughout. SNGAN pairs it with model.d_spectral_norm = true and model.d_norm = none."""

    ignores = ("d_hidden", "d_norm_first")

    def __init__(self, cfg: ModelConfig, img_size: int, channels: int) -> None:
        super().__init__(img_size, channels)
        _, n = dcgan_levels(img_size, "resnet")
        width = cfg.d_width
        blocks: list[nn.Module] = [DBlock(channels, width, down=True, first=True, cfg=cfg)]
        blocks += [DBlock(width, width, down=True, first=False, cfg=cfg) for _ in range(n - 2)]
        blocks += [DBlock(width, width, down=False, first=False, cfg=cfg) for _ in range(2)]
        if cfg.d_dropout > 0:  # after each block, whose output is a sum of the residual and the shortcut
            blocks = [layer for block in blocks for layer in (block, nn.Dropout(cfg.d_dropout))]
        if cfg.d_mbstd:
            blocks.append(MinibatchStd())
            width += 1
        blocks.append(_SumPool(_act(cfg.d_act, cfg.lrelu_slope)))
        self.body = nn.Sequential(*blocks)
        self.make_head(width, cfg)
