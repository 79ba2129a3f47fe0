"""GAN losses as pure functions on D's raw logits.

A D that ends in Sigmoid and is trained with nn.BCELoss is reproduced exactly by a D that returns logits
and these losses: BCE(sigmoid(l), 1) = softplus(-l) and BCE(sigmoid(l), 0) = softplus(l), computed
without the overflow of log(sigmoid(l)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .registry import Registry

LOSSES = Registry("loss")


@dataclass(frozen=True)
class GANLoss:
    name: str
    description: str
    d_real: Callable[[torch.Tensor], torch.Tensor]  # D's loss on real logits
    d_fake: Callable[[torch.Tensor], torch.Tensor]  # D's loss on fake logits
    g: Callable[[torch.Tensor], torch.Tensor]  # G's loss on fake logits


def bce_real(real_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) = softplus(-l): BCE against label 1."""
    return F.softplus(-real_logits).mean()


def bce_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - D(G(z))) = softplus(l): BCE against label 0."""
    return F.softplus(fake_logits).mean()


def g_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """log(1 - D(G(z))) = -softplus(l), minimised by G (Goodfellow et al. 2014, the minimax game)."""
    return -F.softplus(fake_logits).mean()


def g_non_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)) = softplus(-l): BCE of D(G(z)) against label 1, strong gradients early on."""
    return F.softplus(-fake_logits).mean()


@LOSSES.register("ns")
def non_saturating() -> GANLoss:
    return GANLoss("ns", "BCE for D; non-saturating -log D(G(z)) for G", bce_real, bce_fake, g_non_saturating)


@LOSSES.register("minimax")
def minimax() -> GANLoss:
    return GANLoss("minimax", "BCE for D; saturating log(1 - D(G(z))) for G", bce_real, bce_fake, g_saturating)


def get_loss(name: str) -> GANLoss:
    return LOSSES.get(name)()
