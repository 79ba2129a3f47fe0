"""Shared building blocks and the base classes every registered network derives from."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..config import ModelConfig


def activation(name: str, slope: float) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.LeakyReLU(slope, inplace=True)


def d_activation(cfg: ModelConfig) -> list[nn.Module]:
    """D's hidden activation, followed by dropout when model.d_dropout > 0 (no layer otherwise, so the
    parameter names of nets without it stay as they were)."""
    return [activation(cfg.d_act, cfg.lrelu_slope), *([nn.Dropout(cfg.d_dropout)] if cfg.d_dropout > 0 else [])]


def batch_norm(dim: int, features: int, cfg: ModelConfig) -> nn.Module:
    cls = nn.BatchNorm1d if dim == 1 else nn.BatchNorm2d
    return cls(features, eps=cfg.bn_eps, momentum=cfg.bn_momentum)


class LatentConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d whose kernel covers its whole output (stride 1, no padding), as G's first layer is on
    z seen as a 1x1 map: the same function, computed in training on a 1x1 input as one matmul of z by the
    weight seen as [z_dim, kh * kw * C_out]. The convolution kernels run this layer at a tenth of the matmul rate
    on a CPU: 2-6% of the DCGAN step. In eval mode (sampling, metrics) it keeps the kernels, whose result for an
    image does not depend on the batch it shares, as the sampling API promises; a matmul's can, with the
    batch's size. Parameters, their names and layout are the ConvTranspose2d's."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (not self.training or x.dim() != 4 or x.shape[-2:] != (1, 1) or output_size is not None or self.groups != 1
                or self.stride != (1, 1) or self.padding != (0, 0) or self.output_padding != (0, 0)
                or self.dilation != (1, 1)):
            return super().forward(x, output_size)
        z_dim, channels, kh, kw = self.weight.shape
        z = x.reshape(x.shape[0], z_dim)
        channels_last = self.weight.is_contiguous(memory_format=torch.channels_last)  # [z_dim, kh, kw, C] in memory
        weight = (self.weight.permute(0, 2, 3, 1) if channels_last else self.weight).reshape(z_dim, -1)  # a view
        if self.bias is None:
            out = z @ weight
        else:  # each channel's bias at each of its kh * kw places in a row of the output
            bias = self.bias.repeat(kh * kw) if channels_last else self.bias.repeat_interleave(kh * kw)
            out = torch.addmm(bias, z, weight)
        if channels_last:  # the layout the kernels give a channels_last net
            return out.view(-1, kh, kw, channels).permute(0, 3, 1, 2)
        return out.view(-1, channels, kh, kw)


def init_weights(module: nn.Module, scheme: str) -> None:
    """dcgan: conv/linear weights ~ N(0, 0.02), BN weights ~ N(1, 0.02), biases 0 (Radford et al.).
    xavier: Glorot-uniform weights and zero biases (the Keras default). torch: leave PyTorch's defaults."""
    if scheme == "torch":
        return
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            if scheme == "dcgan":
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d) and scheme == "dcgan" and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def balanced_labels(n: int, n_classes: int) -> torch.Tensor:
    """0, 1, ..., K-1, 0, 1, ...: the labels conditional samples use unless a class is asked for."""
    return torch.arange(n) % n_classes


def whole_number(value: Any, name: str) -> int:
    """value as an int: a Python or numpy integer or a 0-d integer tensor; anything else is a ValueError that
    names it (a float count is a slip: 1e4 is written 10_000)."""
    try:
        if isinstance(value, bool):  # an int to Python, but a slip for a count or a seed
            raise TypeError
        return operator.index(value)  # a numpy integer too, which torch's manual_seed refuses
    except TypeError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


SEED_LIMIT = 2**64  # torch's generators take seeds below this (a negative one aliases one above 2**63)


def checked_seed(seed: Any) -> int | None:
    """A noise seed as an int from 0 to 2**64 - 1, or None (fresh noise); anything else is a ValueError."""
    if seed is None:
        return None
    seed = whole_number(seed, "seed")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be from 0 to 2**64 - 1, got {seed}")
    return seed


Z_BLOCK = 1024  # z is drawn this many images at a time, whatever the batch size


def check_truncation(threshold: float | None) -> float | None:
    """A truncation threshold as given, or ValueError: None (none) or a finite number above 0."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold) \
            or threshold <= 0:
        raise ValueError(f"truncation must be a finite number above 0 (BigGAN used 0.04 to 2), got {threshold!r}")
    return float(threshold)


def truncate(z: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """BigGAN's truncation trick: z ~ N(0, I) mapped, value by value, to the normal truncated to [-threshold,
    threshold]. Rather than redrawing the values outside (which would change every later draw of the stream),
    each value is sent through the normal CDF to its quantile within the kept interval: the same distribution,
    and the map is monotone, so image i of a seed keeps its z, moved towards 0. None: z as it is."""
    threshold = check_truncation(threshold)
    if threshold is None:
        return z
    # in float64 and on the lower tail, where the CDF keeps its precision, then mirrored: exact symmetry
    lower = torch.special.ndtr(torch.tensor(-threshold, dtype=torch.float64))
    quantile = torch.special.ndtr(-z.double().abs())
    inside = torch.special.ndtri(lower + quantile * (1 - 2 * lower))
    return (z.sign() * inside.abs()).to(z.dtype)


class NoiseStream:
    """z for images 0, 1, 2, ... of one seed, drawn on the CPU in fixed blocks of Z_BLOCK images, so that image
    i gets the same z however the images are batched and however many are asked for (torch's randn gives
    other numbers when one draw is split in several)."""

    def __init__(self, z_dim: int, seed: int | None = None, first: int = 0) -> None:
        """Starts at image `first`: the stream of a seed from there, as when `first` images were taken."""
        self.z_dim = z_dim
        seed = checked_seed(seed)
        self.gen = torch.Generator().manual_seed(seed) if seed is not None else None
        for _ in range(first // Z_BLOCK):  # torch's CPU generator cannot skip ahead: draw and drop whole blocks
            torch.randn(Z_BLOCK, z_dim, generator=self.gen)
        self.buffer = torch.randn(Z_BLOCK, z_dim, generator=self.gen)[first % Z_BLOCK :] if first else \
            torch.empty(0, z_dim)

    def take(self, count: int) -> torch.Tensor:
        """The next `count` latents, [count, z_dim]."""
        blocks = [self.buffer]
        have = len(self.buffer)
        while have < count:
            blocks.append(torch.randn(Z_BLOCK, self.z_dim, generator=self.gen))
            have += Z_BLOCK
        drawn = torch.cat(blocks) if len(blocks) > 1 else self.buffer
        self.buffer = drawn[count:]
        return drawn[:count]


class Generator(nn.Module):
    """Maps z [B, z_dim] to images [B, channels, img_size, img_size] in [-1, 1]."""

    # Architecture settings (model.*) this network does not read; see models.inert_settings.
    ignores: tuple[str, ...] = ()

    def __init__(self, z_dim: int, img_size: int, channels: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.img_size = img_size
        self.channels = channels

    def make_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I) drawn on the CPU, so a seed gives the same images on every device."""
        return torch.randn(n, self.z_dim, generator=generator)

    n_classes = 0  # > 0 for conditional generators, whose forward takes (z, y)
    classes: list[str] = []  # their class names, label by label, where the checkpoint recorded them

    def sample(self, n: int, seed: int | None = None, batch_size: int = 256,
               labels: torch.Tensor | Sequence[int | str] | int | str | None = None,
               truncation: float | None = None) -> torch.Tensor:
        """n images in [-1, 1] on G's device, with G in eval mode and no gradients; G's mode is restored.
        A conditional G takes one class per image [n], by number or by class name (G.classes), or one class
        for all n (labels=7, labels="dogs"); default: balanced_labels. `truncation`: z from the normal truncated
        to [-t, t] (see truncate), fewer odd samples for less variety; None: the full normal G trained on."""
        n, batch_size = whole_number(n, "n"), whole_number(batch_size, "batch_size")
        if n < 0 or batch_size < 1:
            raise ValueError(f"sample needs n >= 0 and batch_size >= 1, got {n} and {batch_size}")
        return self._sample(n, checked_seed(seed), batch_size, self.checked_labels(labels, n),
                            truncation=check_truncation(truncation))

    def _class_number(self, label: int | str) -> int:
        if not isinstance(label, str):
            return label
        if label not in self.classes:
            known = f"its classes are {', '.join(self.classes)}" if self.classes else "its checkpoint records no names"
            raise ValueError(f"{label!r} is not a class name of this generator; {known}")
        return self.classes.index(label)

    def checked_labels(self, labels: torch.Tensor | Sequence[int | str] | int | str | None,
                       n: int) -> torch.Tensor | None:
        """labels as a long tensor [n] of valid classes; balanced classes when None for a conditional G."""
        if not self.n_classes:
            if labels is not None:
                raise ValueError("this generator is unconditional (n_classes = 0); it takes no labels")
            return None
        if labels is None:
            return balanced_labels(n, self.n_classes)
        if isinstance(labels, str | int):  # one class for every sample
            labels = [labels] * n
        if isinstance(labels, Sequence) and any(isinstance(label, str) for label in labels):
            labels = [self._class_number(label) for label in labels]
        labels = torch.as_tensor(labels)
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise ValueError("labels must be whole class numbers")
        if labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"labels must be class numbers, got a {labels.dtype} tensor")
        labels = labels.long()
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if n and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise ValueError(f"labels must lie in 0..{self.n_classes - 1}, got {labels.min()}..{labels.max()}")
        return labels

    def interpolate(self, rows: int, steps: int, seed: int | None = None,
                    labels: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
        """rows walks through latent space, each `steps` images from one random z to another along the great
        circle (slerp, which keeps a Gaussian z at its typical norm); [rows * steps, C, H, W], row by row.
        A conditional G takes one label per row [rows] (default: balanced_labels); `truncation` truncates
        the ends (see truncate)."""
        rows, steps = whole_number(rows, "rows"), whole_number(steps, "steps")
        if rows < 1 or steps < 2:
            raise ValueError(f"interpolate needs rows >= 1 and steps >= 2, got {rows} and {steps}")
        ends = truncate(NoiseStream(self.z_dim, seed).take(2 * rows), truncation)
        ends = ends.view(rows, 2, self.z_dim)  # row i: z 2i to z 2i+1
        t = torch.linspace(0, 1, steps)
        z = slerp(ends[:, :1], ends[:, 1:], t[None, :, None]).reshape(rows * steps, self.z_dim)
        per_row = self.checked_labels(labels, rows)
        per_image = None if per_row is None else per_row.repeat_interleave(steps)
        return self._sample(rows * steps, None, 256, per_image, z=z)

    def sample_batches(self, n: int, seed: int | None = None, batch_size: int = 256,
                       labels: torch.Tensor | Sequence[int | str] | int | str | None = None,
                       first: int = 0, truncation: float | None = None) -> Iterator[torch.Tensor]:
        """The images of G.sample(n, seed, batch_size, labels, truncation), one batch at a time, for writing out more
        images than memory holds. Eval mode and no gradients hold while each batch is drawn, not between.
        `first` skips that many images' z, so that a second call continues the first: with first=n, the
        images G.sample(2 * n, seed)[n:] would be."""
        n, batch_size, first = (whole_number(v, name) for v, name in ((n, "n"), (batch_size, "batch_size"),
                                                                       (first, "first")))
        if n < 0 or batch_size < 1 or first < 0:
            raise ValueError(f"sample needs n >= 0, batch_size >= 1 and first >= 0, got {n}, {batch_size} and "
                             f"{first}")
        return self._batches(n, checked_seed(seed), batch_size, self.checked_labels(labels, n), first=first,
                             truncation=check_truncation(truncation))

    def _batches(self, n: int, seed: int | None, batch_size: int, labels: torch.Tensor | None,
                 z: torch.Tensor | None = None, first: int = 0,
                 truncation: float | None = None) -> Iterator[torch.Tensor]:
        noise = NoiseStream(self.z_dim, seed, first) if z is None else None
        device = next(self.parameters()).device
        for i in range(0, n, batch_size):
            count = min(batch_size, n - i)
            zb = (truncate(noise.take(count), truncation) if noise is not None else z[i : i + count]).to(device)
            args = (zb,) if labels is None else (zb, labels[i : i + count].to(device))
            was_training = self.training
            self.eval()
            try:
                with torch.no_grad():
                    images = self(*args).contiguous()  # a channels_last G's images in the usual layout
            finally:
                self.train(was_training)
            yield images

    def _sample(self, n: int, seed: int | None, batch_size: int, labels: torch.Tensor | None,
                z: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
        out = list(self._batches(n, seed, batch_size, labels, z, truncation=truncation))
        return torch.cat(out) if out else torch.empty(0, self.channels, self.img_size, self.img_size)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from a (t = 0) to b (t = 1) over the last dimension, with the norm
    interpolated linearly; straight-line interpolation where a and b are (anti)parallel."""
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a * b).sum(-1, keepdim=True) / (norm_a * norm_b).clamp_min(1e-12)).clamp(-1, 1)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    safe = sin.abs() > 1e-6
    sin_safe = torch.where(safe, sin, torch.ones_like(sin))
    ua, ub = a / norm_a.clamp_min(1e-12), b / norm_b.clamp_min(1e-12)
    direction = (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / sin_safe
    lerp = (1 - t) * a + t * b
    return torch.where(safe, direction * ((1 - t) * norm_a + t * norm_b), lerp)


class Discriminator(nn.Module):
    """Maps images [B, channels, img_size, img_size] to one raw logit per image [B].

    Subclasses build `body` (images -> flat features [B, F]) and call `make_head(F, cfg)`; the split lets
    conditional wrappers (projection, AC-GAN) reuse the features."""

    ignores: tuple[str, ...] = ()  # as Generator.ignores

    def __init__(self, img_size: int, channels: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.channels = channels
        self.mbdisc: nn.Module | None = None
        self.feature_dim = 0

    def make_head(self, features: int, cfg: ModelConfig) -> None:
        if cfg.d_mbdisc > 0:
            self.mbdisc = MinibatchDiscrimination(features, cfg.d_mbdisc, cfg.d_mbdisc_dim)
            features += cfg.d_mbdisc
        self.feature_dim = features
        self.head = nn.Linear(features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C, H, W] -> [B, feature_dim]
        h = self.body(x)
        return self.mbdisc(h) if self.mbdisc is not None else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, C, H, W] -> [B]
        return self.head(self.features(x)).view(-1)


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016, section 3.2: features f [B, F] are projected by T to M [B, K, D]; for each of
    the K kernels, o_i = sum_j exp(-||M_i - M_j||_1) measures how close sample i is to the rest of the batch,
    and [f, o] goes on to the head, so a collapsed batch is easy to spot."""

    def __init__(self, in_features: int, kernels: int, kernel_dim: int) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        m = (h @ self.T).view(-1, self.kernels, self.kernel_dim)  # [B, K, D]
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)  # [B, B, K]
        o = torch.exp(-l1).sum(0) - 1.0  # [B, K]; minus exp(0) for the sample itself
        return torch.cat([h, o], dim=1)


class MinibatchStd(nn.Module):
    """Appends one channel: the standard deviation of each feature over groups of `group` samples, averaged
    (Karras et al. 2018), so D can see a batch's lack of variety. Feature maps [B, C, H, W] gain a constant
    map, flat features [B, F] (MLP discriminators) one feature."""

    def __init__(self, group: int = 4) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        g = min(self.group, b)
        if b % g:
            g = 1
        y = x.view(g, -1, *x.shape[1:])  # [G, B/G, ...]
        std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().flatten(1).mean(dim=1)  # [B/G]
        std = std.view(-1, 1, *([1] * (x.dim() - 2))).repeat(g, 1, *x.shape[2:])  # [B, 1, ...]
        return torch.cat([x, std], dim=1)


class Packed(nn.Module):
    """PacGAN: groups of `pac` consecutive samples are stacked along channels and judged together, one logit
    per group: [B, C, H, W] -> [B / pac, C * pac, H, W] -> [B / pac]."""

    def __init__(self, D: nn.Module, pac: int) -> None:
        super().__init__()
        self.D = D
        self.pac = pac
        self.img_size, self.channels = D.img_size, D.channels // pac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.D(x.reshape(b // self.pac, c * self.pac, h, w))
