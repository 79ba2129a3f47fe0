"""Registered generators and discriminators; build them from a Config."""

from __future__ import annotations

from ..config import Config
from . import dcgan, mlp  # noqa: F401  (registers the networks)
from .layers import Discriminator, Generator, Packed, init_weights
from .registry import DISCRIMINATORS, GENERATORS

__all__ = ["GENERATORS", "DISCRIMINATORS", "Generator", "Discriminator", "build_generator", "build_discriminator"]


def build_generator(cfg: Config) -> Generator:
    G = GENERATORS.get(cfg.model.g)(cfg.model, img_size=cfg.data.img_size, channels=cfg.data.channels)
    init_weights(G, cfg.model.init)
    return G


def build_discriminator(cfg: Config) -> Discriminator:
    channels = cfg.data.channels * cfg.model.pac
    D = DISCRIMINATORS.get(cfg.model.d)(cfg.model, img_size=cfg.data.img_size, channels=channels)
    init_weights(D, cfg.model.init)
    if cfg.model.d_spectral_norm:
        from torch import nn
        from torch.nn.utils.parametrizations import spectral_norm

        for module in list(D.modules()):
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                spectral_norm(module)
    return Packed(D, cfg.model.pac) if cfg.model.pac > 1 else D
