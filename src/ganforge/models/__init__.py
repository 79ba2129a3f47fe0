"""Registered generators and discriminators; build them from a Config."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..config import Config, toml_value
from ..errors import UserError
from . import dcgan, mlp, resnet  # noqa: F401  (registers the networks)
from .conditional import ConditionalBatchNorm, ConditionalDiscriminator, ConditionalGenerator
from .layers import Discriminator, Generator, Packed, balanced_labels, init_weights
from .registry import DISCRIMINATORS, GENERATORS

__all__ = ["GENERATORS", "DISCRIMINATORS", "Generator", "Discriminator", "build_generator", "build_discriminator",
           "balanced_labels", "inert_settings", "unread_settings"]

# Architecture settings that some networks do not read (each network lists its own in `ignores`).
ARCH_SETTINGS = ("g_width", "g_hidden", "g_norm_first", "g_upsample", "d_width", "d_hidden", "d_norm", "d_norm_first")


def unread_settings(cfg: Config) -> dict[str, str]:
    """Settings this model (and optimizer) does not read, whatever their value: `section.KEY` -> why."""
    m = cfg.model
    unread: dict[str, str] = {}
    for kind, name, net in (("generator", m.g, GENERATORS.get(m.g)), ("discriminator", m.d, DISCRIMINATORS.get(m.d))):
        unread.update({f"model.{key}": f"has no effect on the {name} {kind}" for key in net.ignores})
    if not m.n_classes:
        unread.update({f"model.{key}": "has no effect on an unconditional model (model.n_classes = 0)"
                       for key in ("g_cond", "d_cond", "embed_dim")})
    if not m.d_mbdisc:
        unread["model.d_mbdisc_dim"] = "has no effect without minibatch discrimination (model.d_mbdisc = 0)"
    if not cfg.loss.bcr:
        unread["loss.bcr_policy"] = "has no effect without consistency regularisation (loss.bcr = 0)"
    if not cfg.loss.critic_burst:
        unread.update({f"loss.{key}": "has no effect without critic bursts (loss.critic_burst = 0)"
                       for key in ("critic_burst_first", "critic_burst_every")})
    if cfg.optim.name != "adam":
        unread.update({f"optim.{key}": f"has no effect on {cfg.optim.name} (only adam has betas)"
                       for key in ("g_betas", "d_betas")})
    return unread


def inert_settings(cfg: Config) -> list[str]:
    """One line per setting changed from its default that this model does not read (model.g_hidden with
    the dcgan generator, model.d_cond on an unconditional model): the run trains as if it were not set."""
    defaults = type(cfg)()
    lines = []
    for dotted, why in unread_settings(cfg).items():
        section, key = dotted.split(".", 1)
        value = getattr(getattr(cfg, section), key)
        if value != getattr(getattr(defaults, section), key):
            lines.append(f"{dotted} = {toml_value(value)} {why}")
    return lines


def build_generator(cfg: Config) -> Generator:
    m = cfg.model
    concat = m.n_classes > 0 and m.g_cond == "concat"
    embed_dim = (m.embed_dim or m.n_classes) if concat else 0
    net_cfg = dataclasses.replace(m, z_dim=m.z_dim + embed_dim)
    G = GENERATORS.get(m.g)(net_cfg, img_size=cfg.data.img_size, channels=cfg.data.channels)
    init_weights(G, m.init)
    if m.n_classes > 0:
        G = ConditionalGenerator(G, m.z_dim, m.n_classes, m.g_cond, embed_dim, no_label=m.label_dropout > 0)
        if m.g_cond == "cbn" and not any(isinstance(layer, ConditionalBatchNorm) for layer in G.modules()):
            # the labels would reach no layer: a G that ignores them
            raise UserError(f"model.g_cond=cbn makes G's batch norms take the label, and the {m.g} generator has "
                            "none; use model.g_cond=concat")
    return G


def build_discriminator(cfg: Config) -> Discriminator:
    m = cfg.model
    channels = cfg.data.channels * m.pac + int(m.n_classes > 0 and m.d_cond == "concat")
    D = DISCRIMINATORS.get(m.d)(m, img_size=cfg.data.img_size, channels=channels)
    if m.d_dropout > 0 and not any(isinstance(layer, nn.Dropout) for layer in D.modules()):
        # a network of one's own that does not read the setting would train as if it were 0, silently
        raise UserError(f"model.d_dropout={m.d_dropout:g} adds dropout to D, and the {m.d} discriminator has no "
                        "dropout layer; build its activations with ganforge.models.layers.d_activation(cfg), or "
                        "leave model.d_dropout at 0")
    if m.n_classes > 0:
        D = ConditionalDiscriminator(D, m.n_classes, m.d_cond, cfg.data.channels, no_label=m.label_dropout > 0)
    init_weights(D, m.init)
    if m.d_spectral_norm:
        from torch.nn.utils.parametrizations import spectral_norm

        for module in list(D.modules()):
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                spectral_norm(module)
    return Packed(D, cfg.model.pac) if cfg.model.pac > 1 else D
