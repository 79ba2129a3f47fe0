"""The digit classifier behind the offline metrics: a small CNN whose weights ship with the package."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

WEIGHTS_FILE = "digits.safetensors"
# SHA-256 of the shipped weights; `python -m ganforge.metrics.train_digits` prints the value to put here.
WEIGHTS_SHA256 = "bc0919f0ac770b51e071c940dd0e77c49093be0045882eded20ec1e41e4a0e70"
FEATURE_DIM = 128
NUM_CLASSES = 10


class DigitNet(nn.Module):
    """28x28 grey digit -> 128-d penultimate features -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),  # 28 -> 14
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),  # 14 -> 7
            *block(64, FEATURE_DIM), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 1, 28, 28] in [-1, 1] -> [B, 128]
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def to_digit_input(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] (C = 1 or 3, H = W = 28 or 32) -> [B, 1, 28, 28]; RGB is averaged to grey."""
    if images.shape[1] == 3:
        images = images.mean(dim=1, keepdim=True)
    elif images.shape[1] != 1:
        raise UserError(f"the digit classifier takes 1 or 3 channels, got {images.shape[1]}")
    if images.shape[-1] != 28 or images.shape[-2] != 28:
        images = F.interpolate(images.float(), size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return images.float()


def weights_path() -> str:
    return str(resources.files("ganforge.metrics").joinpath(WEIGHTS_FILE))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=4)
def load_classifier(device: str = "cpu") -> DigitNet:
    """The shipped classifier in eval mode; refuses weights whose SHA-256 differs from the recorded one."""
    from safetensors.torch import load_file

    path = weights_path()
    try:
        sha = file_sha256(path)
    except OSError as e:
        raise UserError(f"the digit classifier weights are missing ({path}); reinstall ganforge") from e
    if sha != WEIGHTS_SHA256:
        raise UserError(f"the digit classifier weights {path} have SHA-256 {sha[:16]}..., expected "
                        f"{WEIGHTS_SHA256[:16]}...; reinstall ganforge")
    with torch.random.fork_rng(devices=[]):  # its first weights are overwritten: a caller's draws stay its own
        net = DigitNet()
    net.load_state_dict(load_file(path))
    net.eval().requires_grad_(False)
    _fold_batch_norm(net.body)
    return net.to(device, memory_format=torch.channels_last)


def _fold_batch_norm(body: nn.Sequential) -> None:
    """Folds each eval-mode BatchNorm into the convolution before it: the same function, 1.3x faster."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for i in range(len(body) - 1):
        if isinstance(body[i], nn.Conv2d) and isinstance(body[i + 1], nn.BatchNorm2d):
            body[i] = fuse_conv_bn_eval(body[i], body[i + 1])
            body[i + 1] = nn.Identity()


@torch.inference_mode()
def classify(net: DigitNet, images: torch.Tensor, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, C, H, W] in [-1, 1] -> (features [N, 128], class probabilities [N, 10]) on the CPU."""
    device = next(net.parameters()).device
    feats, probs = [], []
    for i in range(0, images.shape[0], batch_size):
        x = to_digit_input(images[i : i + batch_size].to(device)).contiguous(memory_format=torch.channels_last)
        f = net.features(x)
        feats.append(f.cpu())
        probs.append(torch.softmax(net.head(f), dim=1).cpu())
    return torch.cat(feats), torch.cat(probs)
