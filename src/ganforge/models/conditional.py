"""Class-conditional wrappers around any registered G and D.

G takes the label as an embedding joined to z (Mirza & Osindero 2014) or through conditional batch norm
(de Vries et al. 2017; Miyato & Koyama 2018). D takes it as an extra input channel (the tutorial cGAN), as a
projection term <embed(y), features(x)> added to its logit (Miyato & Koyama 2018), or not at all but with an
auxiliary classifier head that predicts it (AC-GAN, Odena et al. 2017).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import Discriminator, Generator


class ConditionalBatchNorm(nn.Module):
    """Batch norm without its own affine; the scale and shift are looked up per class: gamma_y * x_hat + beta_y."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, n_classes: int) -> None:
        super().__init__()
        features = bn.num_features
        cls = type(bn)
        self.bn = cls(features, eps=bn.eps, momentum=bn.momentum, affine=False)
        self.gamma = nn.Embedding(n_classes, features)
        self.beta = nn.Embedding(n_classes, features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)
        self.labels: torch.Tensor | None = None  # set by ConditionalGenerator around each forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            raise RuntimeError("ConditionalBatchNorm called outside ConditionalGenerator.forward")
        shape = (-1, x.shape[1]) + (1,) * (x.dim() - 2)
        return self.bn(x) * self.gamma(self.labels).view(shape) + self.beta(self.labels).view(shape)


def _replace_batch_norm(module: nn.Module, n_classes: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
            setattr(module, name, ConditionalBatchNorm(child, n_classes))
        else:
            _replace_batch_norm(child, n_classes)


class ConditionalGenerator(Generator):
    """(z [B, z_dim], y [B]) -> images. `net` is a registered G built for z_dim + embed_dim inputs (concat)
    or for z_dim with its batch norms made class-conditional (cbn)."""

    def __init__(self, net: Generator, z_dim: int, n_classes: int, mode: str, embed_dim: int,
                 no_label: bool = False) -> None:
        super().__init__(z_dim, net.img_size, net.channels)
        self.n_classes = n_classes
        self.mode = mode
        self.net = net
        rows = n_classes + int(no_label)  # model.label_dropout: label n_classes is "no label"
        if mode == "concat":
            self.embed = nn.Embedding(rows, embed_dim)
        else:
            self.embed = None
            _replace_batch_norm(net, rows)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            return self.net(torch.cat([z, self.embed(y)], dim=1))
        cbn = [m for m in self.net.modules() if isinstance(m, ConditionalBatchNorm)]
        for m in cbn:
            m.labels = y
        try:
            return self.net(z)
        finally:
            for m in cbn:
                m.labels = None


class ConditionalDiscriminator(Discriminator):
    """(x, y) -> logit [B], or (logit [B], class logits [B, K]) for AC-GAN. `net` is a registered D built for
    channels + 1 inputs (concat) or for the images alone (projection, acgan)."""

    def __init__(self, net: Discriminator, n_classes: int, mode: str, channels: int, no_label: bool = False) -> None:
        super().__init__(net.img_size, channels)
        self.n_classes = n_classes
        self.mode = mode
        self.net = net
        self.feature_dim = net.feature_dim
        rows = n_classes + int(no_label)  # as in ConditionalGenerator
        if mode == "concat":
            self.embed = nn.Embedding(rows, net.img_size * net.img_size)
        elif mode == "projection":
            self.embed = nn.Embedding(rows, net.feature_dim)
            nn.init.xavier_uniform_(self.embed.weight)
        else:  # acgan
            self.classifier = nn.Linear(net.feature_dim, n_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "concat":
            label_map = self.embed(y).view(-1, 1, self.img_size, self.img_size).to(x.dtype)
            return self.net(torch.cat([x, label_map], dim=1))
        h = self.net.features(x)  # [B, F]
        logit = self.net.head(h).view(-1)
        if self.mode == "projection":
            return logit + (self.embed(y) * h).sum(dim=1)
        return logit, self.classifier(h)
