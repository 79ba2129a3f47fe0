"""GAN losses as pure functions on D's raw logits.

A D that ends in Sigmoid and is trained with nn.BCELoss is reproduced exactly by a D that returns logits
and these losses: BCE(sigmoid(l), 1) = softplus(-l) and BCE(sigmoid(l), 0) = softplus(l), computed
without the overflow of log(sigmoid(l)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from .errors import UserError
from .registry import Registry

LOSSES = Registry("loss")


@dataclass(frozen=True)
class GANLoss:
    name: str
    description: str
    d_real: Callable[[torch.Tensor], torch.Tensor]  # D's loss on real logits
    d_fake: Callable[[torch.Tensor], torch.Tensor]  # D's loss on fake logits
    g: Callable[[torch.Tensor], torch.Tensor]  # G's loss on fake logits
    gradient_penalty: bool = False  # WGAN-GP: add loss.gp_weight * (||grad D(x_hat)|| - 1)^2
    clip_weights: bool = False  # WGAN: clamp D's weights to [-loss.clip, loss.clip] after each D step
    # Relativistic pairing: each real is judged against the fake at its index. D's loss is d_real(D(x) - D(G(z)))
    # and G's g(D(G(z)) - D(x)); d_fake is not used.
    relativistic: bool = False

    @property
    def logistic(self) -> bool:
        """D's loss is BCE on its logit (on a real's less its paired fake's, when relativistic), so sigmoid of
        that is D's probability: what one-sided label smoothing and the D-wins check need."""
        return self.d_real is bce_real

    @property
    def takes_label_smoothing(self) -> bool:
        """One-sided label smoothing softens BCE's real target; a relativistic loss has no real target alone."""
        return self.logistic and not self.relativistic

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """D's loss: real + fake terms (halved for reduction "mean"), or the one term of a relativistic loss."""
        if self.relativistic:
            return self.d_real(real_logits - fake_logits)
        d_loss = self.d_real(real_logits) + self.d_fake(fake_logits)
        return 0.5 * d_loss if reduction == "mean" else d_loss

    def g_loss(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        """G's loss; a relativistic loss needs D's logits on a real batch of the same size."""
        if self.relativistic:
            if real_logits is None:
                raise ValueError(f"the relativistic loss {self.name} needs D's logits on reals for G's loss")
            return self.g(fake_logits - real_logits)
        return self.g(fake_logits)


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


def ls_real(real_logits: torch.Tensor) -> torch.Tensor:
    """1/2 (D(x) - 1)^2 (Mao et al. 2017, LSGAN with a = 0, b = c = 1)."""
    return 0.5 * (real_logits - 1).pow(2).mean()


def ls_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """1/2 D(G(z))^2."""
    return 0.5 * fake_logits.pow(2).mean()


def w_real(real_logits: torch.Tensor) -> torch.Tensor:
    """-D(x): the critic raises its score of reals (Arjovsky et al. 2017)."""
    return -real_logits.mean()


def w_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """D(G(z)): and lowers its score of fakes."""
    return fake_logits.mean()


def hinge_real(real_logits: torch.Tensor) -> torch.Tensor:
    """max(0, 1 - D(x)) (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1 - real_logits).mean()


def hinge_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """max(0, 1 + D(G(z)))."""
    return F.relu(1 + fake_logits).mean()


@LOSSES.register("lsgan")
def least_squares() -> GANLoss:
    return GANLoss("lsgan", "least squares: D 1/2(D(x)-1)^2 + 1/2 D(G(z))^2; G 1/2(D(G(z))-1)^2",
                   ls_real, ls_fake, ls_real)


@LOSSES.register("wgan")
def wasserstein() -> GANLoss:
    return GANLoss("wgan", "Wasserstein with weight clipping: D -D(x) + D(G(z)); G -D(G(z))",
                   w_real, w_fake, w_real, clip_weights=True)


@LOSSES.register("wgan-gp")
def wasserstein_gp() -> GANLoss:
    return GANLoss("wgan-gp", "Wasserstein with a gradient penalty on real/fake interpolates (Gulrajani et al.)",
                   w_real, w_fake, w_real, gradient_penalty=True)


@LOSSES.register("hinge")
def hinge() -> GANLoss:
    return GANLoss("hinge", "hinge: D max(0, 1-D(x)) + max(0, 1+D(G(z))); G -D(G(z))", hinge_real, hinge_fake, w_real)


@LOSSES.register("rpgan")
def relativistic_pairing() -> GANLoss:
    """RpGAN (Jolicoeur-Martineau 2019, relativistic pairing; Sun et al. 2020 show its landscape has no
    mode-dropping local minima): D minimises softplus(D(G(z)) - D(x)) = -log sigmoid(D(x) - D(G(z))), G
    softplus(D(x) - D(G(z))), over pairs of a real and a fake. With R1 and R2 (loss.r1_gamma, loss.r2_gamma)
    it is R3GAN's loss (Huang et al. 2024)."""
    return GANLoss("rpgan", "relativistic pairing: D softplus(D(G(z)) - D(x)); G softplus(D(x) - D(G(z)))",
                   bce_real, bce_fake, g_non_saturating, relativistic=True)


def gradient_penalty(D: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1] per sample
    (Gulrajani et al. 2017)."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||^2] on reals (Mescheder et al. 2018); `real` must require grad before D(real). On
    fakes it is R2 (Mescheder et al. define both)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()


def registered_loss(name: str) -> GANLoss | None:
    """The registered loss `name`, or None where it is not registered (a run's config.toml read where the
    plugin that named its loss is not loaded)."""
    return LOSSES.get(name)() if name in LOSSES else None


def get_loss(name: str, label_smoothing: float = 0.0) -> GANLoss:
    """The registered loss; one-sided label smoothing (Salimans et al. 2016) makes D's real target
    1 - label_smoothing for the BCE losses: BCE(sigmoid(l), t) = t softplus(-l) + (1 - t) softplus(l)."""
    loss = LOSSES.get(name)()
    if label_smoothing > 0:
        if not loss.takes_label_smoothing:
            raise UserError(f"loss.label_smoothing applies to the BCE losses (ns, minimax), not {name}")
        t = 1.0 - label_smoothing

        def smoothed_real(real_logits: torch.Tensor) -> torch.Tensor:
            return t * F.softplus(-real_logits).mean() + (1 - t) * F.softplus(real_logits).mean()

        loss = replace(loss, d_real=smoothed_real)
    return loss


def instance_noise_std(nimg: int, start_std: float, anneal_kimg: float) -> float:
    """Std of the Gaussian noise added to D's inputs: start_std at 0 images, linearly down to 0 at
    anneal_kimg (Sonderby et al. 2016; Arjovsky & Bottou 2017)."""
    if start_std <= 0 or anneal_kimg <= 0:
        return 0.0
    return start_std * max(0.0, 1.0 - nimg / (anneal_kimg * 1000.0))


def topk_share(nimg: int, keep: float, anneal_kimg: float) -> float:
    """Top-k training (Sinha et al. 2020, "Top-k Training of GANs"): the share of each fake batch whose D
    logits G's loss keeps. It falls linearly from 1 at 0 images to `keep` at anneal_kimg, then stays there
    (the paper decays k by a factor each epoch down to a floor nu * B; a ramp in kimg does the same on runs
    of any length); anneal_kimg 0 keeps `keep` from the start."""
    if keep >= 1:
        return 1.0
    if anneal_kimg <= 0:
        return keep
    return max(keep, 1.0 - (1.0 - keep) * nimg / (anneal_kimg * 1000.0))


def top_k(fake_logits: torch.Tensor, share: float) -> torch.Tensor:
    """The ceil(share * n) largest of n fake logits: the fakes D rates most real, so G's
    gradient comes only from samples near a mode, not from the worst ones, which the paper shows can push
    samples away from the nearest mode."""
    n = fake_logits.shape[0]
    k = max(1, min(n, math.ceil(share * n - 1e-9)))  # the tolerance: 0.3 * 10 is 3.0000000000000004
    return fake_logits if k == n else fake_logits.topk(k, sorted=False).values


LECAM_DECAY = 0.99  # the EMAs of D's mean logits, as in the LeCam authors' code ...
LECAM_START = 1000  # ... which copy the current means for their first 1,000 iterations (counted here in D steps)


def lecam_penalty(real_logits: torch.Tensor, fake_logits: torch.Tensor, ema_real: torch.Tensor,
                  ema_fake: torch.Tensor) -> torch.Tensor:
    """LeCam regularisation (Tseng et al. 2021, "Regularizing Generative Adversarial Networks under Limited
    Data"), added to D's loss with weight loss.lecam:
        mean(relu(D(x) - ema_fake)^2) + mean(relu(ema_real - D(G(z)))^2),
    ema_real / ema_fake the moving averages of D's mean logit on reals / fakes. It keeps D's real and fake
    predictions from drifting apart, which is how D overfits a small training set."""
    return F.relu(real_logits - ema_fake).pow(2).mean() + F.relu(ema_real - fake_logits).pow(2).mean()


def consistency_penalty(logits: torch.Tensor, augmented_logits: torch.Tensor) -> torch.Tensor:
    """Consistency regularisation (Zhang et al. 2020; balanced, on reals and fakes, Zhao et al. 2021,
    "Improved Consistency Regularization for GANs"): mean((D(x) - D(T(x)))^2) for one batch and its augmented
    view T(x), added to D's loss for reals and for fakes with weight loss.bcr. Both sides carry D's gradient,
    as in the paper, so D learns to give an image and its shifted copy the same score."""
    return (logits - augmented_logits).pow(2).mean()


def lecam_ema_decay(d_steps: int) -> float:
    """The decay of the LeCam EMAs at D step `d_steps` (from 0): 0 (take the current means) before
    LECAM_START, LECAM_DECAY after."""
    return LECAM_DECAY if d_steps >= LECAM_START else 0.0
