"""Fully connected G and D: the MLP GANs of the tutorials (recipes R2-R5)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .layers import Discriminator, Generator, MinibatchStd, activation, batch_norm, d_activation
from .registry import DISCRIMINATORS, GENERATORS


@GENERATORS.register("mlp")
class MLPGenerator(Generator):
    ignores = ("g_width", "g_upsample")

    def __init__(self, cfg: ModelConfig, img_size: int, channels: int) -> None:
        super().__init__(cfg.z_dim, img_size, channels)
        layers: list[nn.Module] = []
        width = cfg.z_dim
        for i, hidden in enumerate(cfg.g_hidden):
            layers.append(nn.Linear(width, hidden))
            if cfg.g_norm == "bn" and (i > 0 or cfg.g_norm_first):
                layers.append(batch_norm(1, hidden, cfg))
            layers.append(activation(cfg.g_act, cfg.lrelu_slope))
            width = hidden
        layers += [nn.Linear(width, channels * img_size * img_size), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # [B, z_dim] -> [B, C*H*W] -> [B, C, H, W]
        return self.net(z.flatten(1)).view(-1, self.channels, self.img_size, self.img_size)


@DISCRIMINATORS.register("mlp")
class MLPDiscriminator(Discriminator):
    ignores = ("d_width",)

    def __init__(self, cfg: ModelConfig, img_size: int, channels: int) -> None:
        super().__init__(img_size, channels)
        layers: list[nn.Module] = []
        width = channels * img_size * img_size
        for i, hidden in enumerate(cfg.d_hidden):
            layers.append(nn.Linear(width, hidden))
            if cfg.d_norm == "bn" and (i > 0 or cfg.d_norm_first):
                layers.append(batch_norm(1, hidden, cfg))
            layers += d_activation(cfg)
            width = hidden
        if cfg.d_mbstd:  # [B, width] -> [B, width + 1]
            layers.append(MinibatchStd())
            width += 1
        self.body = nn.Sequential(nn.Flatten(), *layers)  # [B, C, H, W] -> [B, C*H*W] -> [B, width]
        self.make_head(width, cfg)
