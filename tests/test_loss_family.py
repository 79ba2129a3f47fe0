"""The loss family and stabilisers: values on fixed logits, penalties against autograd, training contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganforge import checkpoint as ckpt_io
from ganforge.config import load_config
from ganforge.losses import LOSSES, get_loss, gradient_penalty, r1_penalty
from ganforge.models import build_discriminator
from ganforge.trainer import Trainer, resume, train

from .test_train import assert_same_state, final_weights, quiet

LOGITS_REAL = torch.tensor([2.0, -1.0])
LOGITS_FAKE = torch.tensor([0.5, -3.0])


@pytest.mark.parametrize(
    "name, d_expected, g_expected",
    [
        ("ns", (math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2
         + (math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3))) / 2,
         (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(3))) / 2),
        ("minimax", None, -(math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3))) / 2),
        ("lsgan", 0.5 * ((2 - 1) ** 2 + (-1 - 1) ** 2) / 2 + 0.5 * (0.5**2 + 3.0**2) / 2,
         0.5 * ((0.5 - 1) ** 2 + (-3 - 1) ** 2) / 2),
        ("wgan", -(2 - 1) / 2 + (0.5 - 3) / 2, -(0.5 - 3) / 2),
        ("wgan-gp", -(2 - 1) / 2 + (0.5 - 3) / 2, -(0.5 - 3) / 2),
        ("hinge", (max(0, 1 - 2) + max(0, 1 + 1)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3)) / 2, -(0.5 - 3) / 2),
    ],
)
def test_losses_match_hand_computed_values(name, d_expected, g_expected):
    loss = get_loss(name)
    d_value = (loss.d_real(LOGITS_REAL) + loss.d_fake(LOGITS_FAKE)).item()
    if d_expected is not None:
        assert abs(d_value - d_expected) < 1e-6
    assert abs(loss.g(LOGITS_FAKE).item() - g_expected) < 1e-6


def test_rpgan_judges_each_real_against_the_fake_at_its_index():
    """RpGAN: D softplus(D(G(z)) - D(x)) = -log sigmoid(D(x) - D(G(z))), G softplus(D(x) - D(G(z))), per pair."""
    loss = get_loss("rpgan")
    assert loss.relativistic
    d_expected = (math.log1p(math.exp(0.5 - 2)) + math.log1p(math.exp(-3 + 1))) / 2
    g_expected = (math.log1p(math.exp(2 - 0.5)) + math.log1p(math.exp(-1 + 3))) / 2
    assert abs(loss.d_loss(LOGITS_REAL, LOGITS_FAKE).item() - d_expected) < 1e-6
    assert abs(loss.g_loss(LOGITS_FAKE, LOGITS_REAL).item() - g_expected) < 1e-6
    rsgan = -torch.log(torch.sigmoid(LOGITS_REAL - LOGITS_FAKE)).mean()
    assert abs(loss.d_loss(LOGITS_REAL, LOGITS_FAKE).item() - rsgan.item()) < 1e-6
    # swapping the pairs changes it: the loss sees pairs, not the two sets' means
    swapped = loss.d_loss(LOGITS_REAL.flip(0), LOGITS_FAKE).item()
    assert abs(swapped - d_expected) > 0.1
    with pytest.raises(ValueError, match="needs D's logits on reals"):
        loss.g_loss(LOGITS_FAKE)
    # the two-term losses keep their sum, halved under d_reduction = mean
    ns = get_loss("ns")
    both = (ns.d_real(LOGITS_REAL) + ns.d_fake(LOGITS_FAKE)).item()
    assert abs(ns.d_loss(LOGITS_REAL, LOGITS_FAKE).item() - both) < 1e-6
    assert abs(ns.d_loss(LOGITS_REAL, LOGITS_FAKE, "mean").item() - both / 2) < 1e-6


def test_gradient_penalty_equals_direct_autograd_on_a_known_function():
    w = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(1, 4, 1, 1)

    def D(x):  # linear: grad_x D = w everywhere, ||w|| = 5
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(6, 4, 1, 1), torch.randn(6, 4, 1, 1)
    assert abs(gradient_penalty(D, real, fake).item() - (5 - 1) ** 2) < 1e-5

    def D2(x):  # quadratic: grad = 2x, checked against autograd per interpolate
        return x.pow(2).flatten(1).sum(1)

    gen = torch.Generator().manual_seed(3)
    value = gradient_penalty(D2, real, fake, generator=gen)
    eps = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(D2(x_hat).sum(), x_hat)
    direct = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert abs(value.item() - direct.item()) < 1e-5


def test_r1_penalty_of_a_linear_d_is_its_squared_weight_norm():
    w = torch.tensor([1.0, 2.0, 2.0]).view(1, 3, 1, 1)
    real = torch.randn(5, 3, 1, 1, requires_grad=True)
    logits = (real * w).flatten(1).sum(1)
    assert abs(r1_penalty(logits, real).item() - 9.0) < 1e-5


def _stepper_without_batch_norm(tmp_path, tiny_cfg, **extra):
    from ganforge.trainer import Trainer

    cfg = tiny_cfg(**{"model.d_norm": '"none"', "train.channels_last": "false", **extra})
    trainer = Trainer(cfg, tmp_path / "run", log=quiet)
    trainer.stepper.set_progress(0)
    return trainer


def _images(seed: int) -> torch.Tensor:
    return torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(seed)).tanh()


@pytest.mark.parametrize("order", ["d_first", "g_first", "simultaneous"])
def test_a_relativistic_loss_reports_how_sure_d_is_that_each_real_beats_its_fake(tmp_path, tiny_cfg, order):
    """sigmoid of a relativistic D's logit alone means nothing; D(real) is the mean of sigmoid(D(x) - D(G(z)))
    over the pairs and D(fake) that of the reverse, so the two add up to 1 (ns at D's start is 0.5 each)."""
    trainer = _stepper_without_batch_norm(tmp_path, tiny_cfg, **{"loss.name": '"rpgan"',
                                                                 "train.step_order": f'"{order}"'})
    for step in range(3):
        d_loss, _, d_real, d_fake = trainer.stepper(trainer.real_batch(step) for _ in range(1)).tolist()
        assert abs(d_real + d_fake - 1) < 1e-6 and abs(d_real - 0.5) > 1e-4
        # rpgan's D loss is softplus(D(G(z)) - D(x)) = -log sigmoid(D(x) - D(G(z))): D(real) is D's odds, not 1/2
        assert d_loss > 0


@pytest.mark.parametrize("every", [1, 2])
def test_r2_adds_the_penalty_on_fakes_to_d_loss_at_its_lazy_schedule(tmp_path, tiny_cfg, every):
    """D's loss with loss.r2_gamma = g is the plain loss plus g/2 * every * E||grad D(G(z))||^2 in the D steps
    whose count is a multiple of loss.r1_every, and the plain loss in the others."""
    trainer = _stepper_without_batch_norm(tmp_path, tiny_cfg, **{"loss.r2_gamma": 1e4, "loss.r1_every": every})
    stepper, D = trainer.stepper, trainer.state.D
    for step in range(2):
        real, fake = _images(2 * step), _images(2 * step + 1)
        probe = fake.clone().requires_grad_(True)
        fake_logits = D(probe)
        (grad,) = torch.autograd.grad(fake_logits.sum(), probe)
        plain = stepper.loss.d_loss(D(real), fake_logits).item()
        penalty = 0.5 * 1e4 * every * grad.flatten(1).pow(2).sum(1).mean().item()
        d_loss = stepper._d_step(real, None, fake, None)[0].item()
        expected = plain + penalty if step % every == 0 else plain
        assert penalty > 1e-2 and abs(d_loss - expected) < 1e-5 * max(1.0, abs(expected)), step


def test_rpgan_g_step_judges_its_fakes_against_d_on_the_reals_given(tmp_path, tiny_cfg):
    trainer = _stepper_without_batch_norm(tmp_path, tiny_cfg, **{"loss.name": '"rpgan"'})
    stepper, D = trainer.stepper, trainer.state.D
    fake, real, other_real = _images(1), _images(2), _images(3)
    with torch.no_grad():
        fake_logits = D(fake)
        expected = [torch.nn.functional.softplus(D(r) - fake_logits).mean().item() for r in (real, other_real)]
    assert abs(expected[0] - expected[1]) > 1e-4  # the reals it is given decide G's loss
    for r, value in zip((real, other_real), expected, strict=True):
        assert abs(stepper._g_step(fake.clone().requires_grad_(True), None, (r, None)).item() - value) < 1e-5


@pytest.mark.parametrize("order", ["d_first", "simultaneous", "g_first"])
def test_rpgan_gives_g_the_pairs_difference_in_every_step_order(tmp_path, tiny_cfg, order):
    from dataclasses import replace

    cfg = {"loss.name": '"rpgan"', "train.step_order": f'"{order}"', "train.reuse_fake": "false"}
    trainer = _stepper_without_batch_norm(tmp_path, tiny_cfg, **cfg)
    stepper = trainer.stepper
    seen: list[torch.Tensor] = []
    g = stepper.loss.g
    stepper.loss = replace(stepper.loss, g=lambda diff: (seen.append(diff.detach()), g(diff))[1])
    given: list = []
    g_step = stepper._g_step
    stepper._g_step = lambda fake, y, real_batch=None, z=None: (given.append(real_batch),
                                                                g_step(fake, y, real_batch, z))[1]
    real, _ = trainer.real_batch(0)
    stats = stepper([(real, None)])
    assert torch.isfinite(stats).all()
    if order == "simultaneous":  # one pass: G's loss from the same logits as D's
        assert given == [] and len(seen) == 1 and seen[0].shape == (8,)
    else:  # G's step was handed the iteration's real batch
        assert len(given) == 1 and given[0][0] is real and len(seen) == 1 and seen[0].shape == (8,)


def test_spectral_norm_keeps_largest_singular_value_near_one():
    cfg = load_config(preset="mnist-mlp-bn", overrides=["model.d_spectral_norm=true"])
    D = build_discriminator(cfg).train()
    x = torch.randn(8, 1, 28, 28)
    for _ in range(30):  # power iterations run in training-mode forwards
        D(x)
    layers = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 3
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item()
        assert abs(sigma - 1.0) < 0.05, sigma


MODEL_PAIRS = [("dcgan", "dcgan"), ("mlp", "mlp"), ("mlp", "convd"), ("resnet", "resnet")]


def _initial_weights(cfg) -> dict[str, dict[str, torch.Tensor]]:
    """The learnable tensors of G and D as the run starts them (the trainer's own seeded build), keyed as in
    a checkpoint; D's clamped as WGAN's first step clamps them, so clipping alone is no movement."""
    from ganforge.step import build_state

    state = build_state(cfg, torch.device("cpu"))
    start = {}
    for name, net in (("G", state.G), ("D", state.D)):
        start[name] = {k: p.detach().clone() for k, p in net.named_parameters()}
    if get_loss(cfg.loss.name).clip_weights:
        start["D"] = {k: p.clamp(-cfg.loss.clip, cfg.loss.clip) for k, p in start["D"].items()}
    return start


def _trains_with_finite_losses_and_moving_weights(tmp_path, cfg):
    start = _initial_weights(cfg)
    run_dir = train(cfg, out=tmp_path, log=quiet)
    ckpt = final_weights(run_dir)
    stats = (run_dir / "stats.jsonl").read_text()
    assert "NaN" not in stats and "Infinity" not in stats
    for net in ("G", "D"):  # both optimisers stepped: some learnable tensor of each moved from its start
        assert start[net].keys() <= ckpt[net].keys(), net
        assert any(not torch.equal(before, ckpt[net][k]) for k, before in start[net].items()), net
    return ckpt


@pytest.mark.parametrize("loss", LOSSES.names())
@pytest.mark.parametrize("g, d", MODEL_PAIRS)
def test_every_loss_and_model_pair_trains_with_finite_losses(tmp_path, tiny_cfg, loss, g, d):
    extra = {"loss.name": f'"{loss}"', "model.g": f'"{g}"', "model.d": f'"{d}"', "train.kimg": 0.024,
             "train.tick_kimg": 0.024, "model.g_hidden": "[16]", "model.d_hidden": "[16]"}
    if loss in ("wgan", "wgan-gp"):
        extra["model.d_norm"] = '"none"'
    ckpt = _trains_with_finite_losses_and_moving_weights(tmp_path, tiny_cfg(**extra))
    if loss == "wgan":
        weights = [v for k, v in ckpt["D"].items() if k.endswith("weight")]
        assert max(w.abs().max().item() for w in weights) <= 0.01 + 1e-7


@pytest.mark.parametrize("stabiliser", [
    {"model.d_spectral_norm": "true"},
    {"loss.r1_gamma": 1.0, "loss.r1_every": 2},
    {"loss.name": '"rpgan"', "loss.r1_gamma": 1.0, "loss.r2_gamma": 1.0, "loss.r1_every": 2,
     "train.step_order": '"g_first"', "train.reuse_fake": "true", "train.diffaugment": '"translation"'},
    {"loss.n_critic": 2, "loss.name": '"wgan-gp"', "model.d_norm": '"none"'},
    {"train.diffaugment": '"translation,cutout"', "train.ada_target": 0.1, "train.ada_kimg": 0.05},
    {"loss.topk": 0.5, "loss.topk_kimg": 0.05},
    {"loss.lecam": 0.3},
    {"loss.bcr": 10.0, "loss.bcr_policy": '"translation,cutout"'},
], ids=["spectral-norm", "lazy-r1", "rpgan-lazy-r1-r2-g-first", "n-critic-gp", "ada", "topk", "lecam", "bcr"])
def test_stabilisers_resume_bit_for_bit(tmp_path, tiny_cfg, stabiliser):
    full = train(tiny_cfg(**stabiliser, **{"train.kimg": 0.096}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**stabiliser, **{"train.kimg": 0.048}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.096"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))
    if "train.ada_target" in stabiliser:  # the augment probability moved, and resumed where it was
        ada = [ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(r))["ada"] for r in (full, half)]
        assert torch.equal(ada[0], ada[1]) and 0 < ada[0][0].item() <= 1
    if "loss.lecam" in stabiliser:  # so did the EMAs of D's logits
        emas = [ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(r))["lecam"] for r in (full, half)]
        assert torch.equal(emas[0], emas[1]) and emas[0].abs().sum().item() > 0


def _ada_stepper(tmp_path, tiny_cfg, target=0.6, **extra):
    from ganforge.trainer import Trainer

    cfg = tiny_cfg(**{"train.diffaugment": '"translation,cutout"', "train.ada_target": target, "train.ada_kimg": 1.0,
                      **extra})
    return Trainer(cfg, tmp_path / "run", log=quiet).stepper


def test_ada_raises_p_while_d_is_sure_of_the_reals_and_lowers_it_after(tmp_path, tiny_cfg):
    from ganforge.step import ADA_INTERVAL

    stepper = _ada_stepper(tmp_path, tiny_cfg)
    step = 8 * ADA_INTERVAL / 1000  # batch 8, ada_kimg 1: p moves this much per interval
    assert stepper.s.ada[0].item() == 0.0  # no augmentation until D overfits

    def d_steps(logit: float, n: int) -> None:
        for _ in range(n):
            stepper._adapt_augment(torch.full((8,), logit), torch.zeros(8))
            stepper.d_steps += 1

    d_steps(3.0, 3 * ADA_INTERVAL)  # every real scored positive: mean sign 1 > 0.6
    assert abs(stepper.s.ada[0].item() - 3 * step) < 1e-6
    d_steps(3.0, ADA_INTERVAL - 1)  # inside an interval nothing moves yet
    assert abs(stepper.s.ada[0].item() - 3 * step) < 1e-6
    d_steps(-1.0, 1)  # the interval's mean sign is (3 - 1) / 4 = 0.5 < 0.6: down
    assert abs(stepper.s.ada[0].item() - 2 * step) < 1e-6
    d_steps(-1.0, 10 * ADA_INTERVAL)
    assert stepper.s.ada[0].item() == 0.0  # and never below 0


def test_ada_reads_a_relativistic_d_by_its_pairs(tmp_path, tiny_cfg):
    """Shifting all of an rpgan D's logits changes none of its losses, so sign(D(real)) alone says nothing;
    ADA reads sign(D(x) - D(G(z))): reals scored below their fakes lower p, even at positive logits."""
    from ganforge.step import ADA_INTERVAL

    stepper = _ada_stepper(tmp_path, tiny_cfg, **{"loss.name": '"rpgan"'})
    stepper.s.ada[0] = 0.5
    for _ in range(ADA_INTERVAL):
        stepper._adapt_augment(torch.full((8,), 3.0), torch.full((8,), 5.0))
        stepper.d_steps += 1
    assert stepper.s.ada[0].item() < 0.5
    for _ in range(2 * ADA_INTERVAL):
        stepper._adapt_augment(torch.full((8,), -5.0), torch.full((8,), -7.0))
        stepper.d_steps += 1
    assert stepper.s.ada[0].item() > 0.5


def test_ada_augments_each_image_with_probability_p(tmp_path, tiny_cfg):
    stepper = _ada_stepper(tmp_path, tiny_cfg)
    x = torch.randn(256, 1, 16, 16)
    assert torch.equal(stepper._noisy(x), x)  # p = 0
    stepper.s.ada[0] = 0.25
    changed = (stepper._noisy(x) != x).flatten(1).any(1).float().mean().item()
    assert abs(changed - 0.25) < 0.1
    stepper.s.ada[0] = 1.0
    assert (stepper._noisy(x) != x).flatten(1).any(1).all()


def test_n_critic_counts_every_real_batch(tmp_path, tiny_cfg):
    run_dir = train(tiny_cfg(**{"loss.n_critic": 3, "train.kimg": 0.048}), out=tmp_path, log=quiet)
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["nimg"] == 48  # 2 G steps x 3 x 8


def test_one_sided_label_smoothing_is_bce_against_the_smoothed_target():
    logits = torch.tensor([2.0, -0.5, 0.3])
    smoothed = get_loss("ns", label_smoothing=0.1)
    expected = nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.9))
    assert abs(smoothed.d_real(logits).item() - expected.item()) < 1e-6
    assert abs(smoothed.d_fake(logits).item() - get_loss("ns").d_fake(logits).item()) < 1e-7  # fakes untouched
    from ganforge.errors import UserError

    with pytest.raises(UserError, match="label_smoothing"):
        get_loss("hinge", label_smoothing=0.1)


def test_instance_noise_schedule_reaches_its_values():
    from ganforge.losses import instance_noise_std

    assert abs(instance_noise_std(0, 0.2, 10.0) - 0.2) < 1e-12
    assert abs(instance_noise_std(5_000, 0.2, 10.0) - 0.1) < 1e-12
    assert instance_noise_std(10_000, 0.2, 10.0) == 0.0 and instance_noise_std(50_000, 0.2, 10.0) == 0.0
    assert instance_noise_std(100, 0.0, 10.0) == 0.0


def test_topk_share_falls_from_all_to_its_floor_and_stays():
    from ganforge.losses import topk_share

    assert topk_share(0, 0.5, 10.0) == 1.0
    assert abs(topk_share(5_000, 0.5, 10.0) - 0.75) < 1e-12
    assert topk_share(10_000, 0.5, 10.0) == 0.5 and topk_share(80_000, 0.5, 10.0) == 0.5
    assert topk_share(0, 0.6, 0.0) == 0.6  # no ramp: the floor from the first step
    assert topk_share(3_000, 1.0, 10.0) == 1.0


def test_top_k_keeps_the_logits_d_rates_most_real():
    from ganforge.losses import top_k

    logits = torch.tensor([0.3, -2.0, 1.5, 0.9, -0.1])
    assert sorted(top_k(logits, 0.4).tolist()) == pytest.approx([0.9, 1.5])
    assert sorted(top_k(logits, 0.5).tolist()) == pytest.approx([0.3, 0.9, 1.5])  # 2.5 rounds up
    assert sorted(top_k(torch.arange(10.0), 0.3).tolist()) == [7.0, 8.0, 9.0]  # not 4 from 0.3 * 10's rounding
    assert top_k(logits, 1.0) is logits and top_k(logits, 0.01).tolist() == pytest.approx([1.5])
    # G's loss on the kept half, by hand: softplus(-l) averaged over the two best logits
    g = get_loss("ns").g(top_k(logits, 0.4))
    assert abs(g.item() - (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(-0.9))) / 2) < 1e-6


def test_mode_seeking_pairs_fakes_of_one_class_and_charges_g_for_alike_ones(tmp_path, tiny_cfg):
    from ganforge.errors import UserError

    cfg = tiny_cfg(**{"model.n_classes": 2, "model.label_dropout": 0.5, "loss.mode_seeking": 2.0})
    stepper = Trainer(cfg, tmp_path / "run", log=quiet).stepper
    labels = torch.cat([stepper._z()[1] for _ in range(20)])
    assert torch.equal(labels[0::2], labels[1::2])  # each label, dropped ("no label", 2) or not, serves a pair
    assert set(labels.unique().tolist()) == {0, 1, 2}
    fake, y, z = stepper._fake(grad=False)
    assert torch.equal(y[0::2], y[1::2]) and fake.shape[0] == z.shape[0] == 8
    z = torch.tensor([[0.0, 1.0], [2.0, 1.0], [1.0, 1.0], [1.0, -3.0]])
    fake = torch.tensor([[0.5, 0.5], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    # pairs (0, 1) and (2, 3): image gaps 0.5, 0.5, 0, 0 -> mean 0.25; noise gaps 2, 0, 0, 4 -> mean 1.5
    expected = 0.3 + 2.0 / (0.25 / 1.5 + 1e-5)
    assert abs(stepper._with_mode_seeking(torch.tensor(0.3), fake, z).item() - expected) < 1e-4
    spread = torch.tensor([[0.0, 3.0], [2.0, 1.0], [4.0, 1.0], [1.0, -3.0]])
    assert stepper._with_mode_seeking(torch.tensor(0.0), spread, z) < stepper._with_mode_seeking(torch.tensor(0.0),
                                                                                                 fake, z)
    with pytest.raises(UserError, match="even batch"):
        Trainer(tiny_cfg(**{"loss.mode_seeking": 1.0, "train.batch_size": 7}), tmp_path / "odd", log=quiet)
    assert not (tmp_path / "odd").exists()


def test_mode_seeking_leaves_g_loss_alone_at_zero_and_trains_and_resumes(tmp_path, tiny_cfg):
    stepper = Trainer(tiny_cfg(), tmp_path / "run", log=quiet).stepper
    fake, z = torch.randn(8, 1, 16, 16), torch.randn(8, 4)
    g_loss = torch.tensor(0.7)
    assert stepper._with_mode_seeking(g_loss, fake, z) is g_loss
    extra = {"loss.mode_seeking": 1.0, "model.n_classes": 2}
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.064}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.032}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.064"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))


def test_topk_gives_g_gradient_only_through_the_fakes_d_rates_best(tmp_path, tiny_cfg):
    """Without batch norm in D each fake's logit depends on that fake alone, so under top-k exactly the k
    best-rated fakes get a gradient, and the rest none."""
    from ganforge.trainer import Trainer

    trainer = Trainer(tiny_cfg(**{"model.d_norm": '"none"', "loss.topk": 0.25}), tmp_path / "run", log=quiet)
    stepper = trainer.stepper
    stepper.set_progress(0)
    fake = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1)).tanh().requires_grad_(True)
    with torch.no_grad():
        logits = trainer.state.D(fake)
    stepper._g_step(fake, None)
    has_grad = fake.grad.flatten(1).abs().amax(dim=1) > 0
    assert has_grad.sum().item() == 2
    assert set(has_grad.nonzero().flatten().tolist()) == set(logits.topk(2).indices.tolist())


@pytest.mark.parametrize("order", ["d_first", "simultaneous", "g_first"])
def test_topk_reaches_g_loss_in_every_step_order(tmp_path, tiny_cfg, order):
    from dataclasses import replace

    from ganforge.trainer import Trainer

    cfg = tiny_cfg(**{"loss.topk": 0.5, "loss.topk_kimg": 0.016, "train.step_order": f'"{order}"',
                      "train.reuse_fake": str(order == "g_first").lower()})
    trainer = Trainer(cfg, tmp_path / "run", log=quiet)
    stepper = trainer.stepper
    seen: list[int] = []
    g = stepper.loss.g
    stepper.loss = replace(stepper.loss, g=lambda logits: (seen.append(logits.shape[0]), g(logits))[1])
    for nimg in (0, 8, 16, 24):  # batch 8: shares 1, 0.75, 0.5, 0.5
        stepper.set_progress(nimg)
        stepper([trainer.real_batch(nimg // 8)])
    assert seen == [8, 6, 4, 4]


def test_lecam_penalty_matches_its_definition_by_hand():
    from ganforge.losses import lecam_penalty

    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-0.5, 1.0])
    # ema_fake 0.0: reals above it are penalised (2.0 and 0.5); ema_real 0.8: fakes below it (-0.5)
    value = lecam_penalty(real, fake, torch.tensor(0.8), torch.tensor(0.0))
    assert abs(value.item() - ((2.0**2 + 0.5**2) / 3 + 1.3**2 / 2)) < 1e-6
    assert lecam_penalty(real, fake, torch.tensor(-9.0), torch.tensor(9.0)).item() == 0.0


def test_lecam_emas_take_the_first_steps_means_then_average_them(tmp_path, tiny_cfg):
    from ganforge.losses import LECAM_DECAY, LECAM_START
    from ganforge.trainer import Trainer

    trainer = Trainer(tiny_cfg(**{"model.d_norm": '"none"', "loss.lecam": 0.3}), tmp_path / "run", log=quiet)
    stepper, state = trainer.stepper, trainer.state
    logged = []
    with_lecam = stepper._with_lecam
    stepper._with_lecam = lambda d_loss, r, f: (logged.append((r.mean().item(), f.mean().item())),
                                                with_lecam(d_loss, r, f))[1]
    stepper.set_progress(0)
    stepper([trainer.real_batch(0)])
    assert state.lecam.tolist() == pytest.approx(list(logged[0]), abs=1e-6)  # decay 0: the step's own means
    stepper.d_steps = LECAM_START  # past the start the means are averaged in
    before = state.lecam.clone()
    stepper([trainer.real_batch(1)])
    expected = LECAM_DECAY * before + (1 - LECAM_DECAY) * torch.tensor(logged[1])
    assert (state.lecam - expected).abs().max().item() < 1e-6


def test_instance_noise_and_smoothing_resume_bit_for_bit(tmp_path, tiny_cfg):
    extra = {"loss.instance_noise": 0.3, "loss.instance_noise_kimg": 0.08, "loss.label_smoothing": 0.1}
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.096}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.048}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.096"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))
    plain = train(tiny_cfg(**{"train.kimg": 0.096}), out=tmp_path / "c", log=quiet)
    assert not torch.equal(final_weights(plain)["D"]["body.0.weight"], final_weights(full)["D"]["body.0.weight"])


def test_pacgan_packs_consecutive_samples_along_channels():
    cfg = load_config(preset="default", overrides=["model.pac=2", "data.channels=3", "data.img_size=28"])
    D = build_discriminator(cfg)
    first = next(m for m in D.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 6
    x = torch.randn(8, 3, 28, 28)
    assert D(x).shape == (4,)
    # a pair is judged together: changing one sample changes only its pair's logit
    y = x.clone()
    y[5] += 1
    D.eval()
    changed = (D(x) - D(y)).abs() > 1e-6
    assert changed.tolist() == [False, False, True, False]


def test_minibatch_std_adds_a_channel_that_sees_batch_variety():
    from ganforge.models.layers import MinibatchStd

    layer = MinibatchStd(group=4)
    same = torch.ones(8, 3, 2, 2)
    varied = torch.randn(8, 3, 2, 2)
    assert layer(same).shape == (8, 4, 2, 2)
    assert layer(same)[:, 3].abs().max().item() < 1e-3
    assert layer(varied)[:, 3].min().item() > 0.1
    cfg = load_config(preset="default", overrides=["model.d_mbstd=true", "data.img_size=28"])
    assert build_discriminator(cfg)(torch.randn(8, 1, 28, 28)).shape == (8,)


@pytest.mark.parametrize("stabiliser", [{"model.pac": 2}, {"model.d_mbstd": "true"}, {"model.d_dropout": 0.3}],
                         ids=["pac2", "mbstd", "d-dropout"])
def test_packing_mbstd_and_dropout_train_and_resume(tmp_path, tiny_cfg, stabiliser):
    full = train(tiny_cfg(**stabiliser, **{"train.kimg": 0.064}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**stabiliser, **{"train.kimg": 0.032}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.064"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))


def test_diffaugment_is_differentiable_and_does_what_it_says():
    from ganforge.augment import cutout, diff_augment, translation

    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, ["color", "translation", "cutout"], torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    ones = torch.ones(64, 1, 16, 16)
    zeros_per_image = (cutout(ones, torch.Generator().manual_seed(1)) == 0).flatten(1).sum(1).float()
    assert zeros_per_image.max().item() == 64  # an 8x8 square when it lies inside the image
    assert zeros_per_image.min().item() > 0
    shifted = translation(ones, torch.Generator().manual_seed(2))
    assert (shifted == 0).any() and shifted.max().item() == 1  # shifted in from a zero border
    from ganforge.errors import UserError

    with pytest.raises(UserError, match="unknown augmentation"):
        load_config(overrides=["train.diffaugment=color,zoom"])


def test_shift_moves_as_translation_does_but_fills_with_the_edge_not_grey():
    from ganforge.augment import diff_augment, shift, translation

    digits = torch.full((32, 1, 12, 12), -1.0)  # black background, a white square off the centre
    digits[:, :, 2:6, 3:7] = 1.0
    moved = shift(digits, torch.Generator().manual_seed(0))
    padded = translation(digits, torch.Generator().manual_seed(0))
    assert set(moved.unique().tolist()) == {-1.0, 1.0}  # no mid-grey border
    assert (padded == 0).any()  # translation's border is 0, grey in [-1, 1]
    inside = padded != 0
    assert torch.equal(moved[inside], padded[inside])  # the same draws move every image by the same offset
    assert not torch.equal(moved, digits)
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    diff_augment(x, ["shift"], torch.Generator().manual_seed(1)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_scale_and_rotate_warp_as_their_matrices_say():
    from ganforge.augment import _warp, _warp_by_gathers, diff_augment, rotate, scale

    x = torch.randn(3, 2, 9, 11)
    eye = torch.eye(2).expand(3, 2, 2)
    assert (_warp(x, eye) - x).abs().max().item() < 1e-5  # the identity moves nothing
    assert (_warp(x, -eye) - x.flip(2, 3)).abs().max().item() < 1e-5  # a half turn
    square = torch.randn(2, 1, 8, 8)
    quarter = torch.tensor([[0.0, -1.0], [1.0, 0.0]]).expand(2, 2, 2)
    assert (_warp(square, quarter) - torch.rot90(square, 3, (2, 3))).abs().max().item() < 1e-5
    doubled = _warp(square, eye[:2] * 0.5)  # twice the size: output pixel 0 reads the source at 1.75
    assert (doubled - _warp_by_gathers(square, eye[:2] * 0.5)).abs().max().item() < 1e-5
    corner = square[:, :, 1:3, 1:3]
    weights = torch.tensor([[0.25 * 0.25, 0.25 * 0.75], [0.75 * 0.25, 0.75 * 0.75]])
    assert (doubled[:, :, 0, 0] - (corner * weights).sum((2, 3))).abs().max().item() < 1e-5
    turns = torch.rand(3) * 6.3
    sizes = torch.exp2(torch.randn(3) * 0.3).view(3, 1, 1)
    warps = torch.stack([torch.stack([turns.cos(), -turns.sin()], -1),
                         torch.stack([turns.sin(), turns.cos()], -1)], -2) / sizes
    # the path a deterministic CUDA run takes (gathers) draws what grid_sample draws
    assert (_warp(x, warps) - _warp_by_gathers(x, warps)).abs().max().item() < 1e-4
    assert (_warp(x, -eye) - _warp_by_gathers(x, -eye)).abs().max().item() < 1e-5
    digits = torch.full((64, 1, 28, 28), -1.0)  # black background, a white bar
    digits[:, :, 8:20, 12:16] = 1.0
    gen = torch.Generator().manual_seed(0)
    for warped in (scale(digits, gen), rotate(digits, gen)):
        assert warped.min().item() > -1.00001 and warped.max().item() < 1.00001  # bilinear: a blend of the pixels
        assert (warped[:, :, 0, :] + 1.0).abs().max().item() < 1e-5  # the border reflects black, no grey fill
        assert not torch.equal(warped, digits)
        white = (warped > 0).flatten(1).sum(1).float()
        assert white.std().item() > 0  # each image its own draw
    turned = rotate(digits, torch.Generator().manual_seed(1))
    upright = (turned[:, 0, 8:20, 12:16] > 0).flatten(1).float().mean(1)
    assert (upright < 0.5).float().mean().item() > 0.5  # most turns take the bar off its column
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    diff_augment(x, ["scale", "rotate"], torch.Generator().manual_seed(2)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    policy = load_config(overrides=["train.diffaugment=translation,scale,rotate"]).train.diffaugment
    assert policy == "translation,scale,rotate"


def test_dropout_with_evaluations_resumes_bit_for_bit_as_a_new_process_would(tmp_path, tiny_cfg):
    # a process builds the digit classifier at its first evaluation; each cache_clear stands for a new process,
    # so the resumed run builds it at 0.064 kimg where the uninterrupted one did at 0.032
    from ganforge.metrics.classifier import load_classifier

    extra = {"model.d_dropout": 0.3, "eval.every_kimg": 0.032, "eval.n": 16, "eval.metrics": '["fd_digits"]'}
    load_classifier.cache_clear()
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.096}), out=tmp_path / "a", log=quiet)
    load_classifier.cache_clear()
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.048}), out=tmp_path / "b", log=quiet)
    load_classifier.cache_clear()
    resume(half, ["train.kimg=0.096"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))


def test_diffaugment_training_resumes_bit_for_bit(tmp_path, tiny_cfg):
    extra = {"train.diffaugment": '"color,translation,cutout,scale,rotate"'}
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.064}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.032}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.064"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))


STABILISERS = {
    "spectral-norm": {"model.d_spectral_norm": "true"},
    "ttur": {"optim.g_lr": 1e-4, "optim.d_lr": 4e-4, "optim.d_betas": "[0.0, 0.9]"},
    "label-smoothing": {"loss.label_smoothing": 0.1},
    "instance-noise": {"loss.instance_noise": 0.1, "loss.instance_noise_kimg": 0.05},
    "mbstd": {"model.d_mbstd": "true"},
    "mbdisc": {"model.d_mbdisc": 4},
    "d-dropout": {"model.d_dropout": 0.3},
    "pac2": {"model.pac": 2},
    "ema": {"train.ema_kimg": 0.01},
    "lr-decay": {"optim.lr_decay": '"cosine"'},
    "diffaugment": {"train.diffaugment": '"color,translation,cutout"'},
    "ada": {"train.diffaugment": '"translation,cutout"', "train.ada_target": 0.6, "train.ada_kimg": 0.01},
    "geometric": {"train.diffaugment": '"scale,rotate"'},
    "r1": {"loss.r1_gamma": 1.0},
    "r2": {"loss.r2_gamma": 1.0},
    "r3gan-loss": {"loss.name": '"rpgan"', "loss.r1_gamma": 1.0, "loss.r2_gamma": 1.0},
    "topk": {"loss.topk": 0.5, "loss.topk_kimg": 0.01},
    "lecam": {"loss.lecam": 0.3},
    "mode-seeking": {"loss.mode_seeking": 1.0},
    "mode-seeking-cgan": {"loss.mode_seeking": 1.0, "model.n_classes": 2},
    "bcr": {"loss.bcr": 10.0},
    "bcr-acgan": {"loss.bcr": 10.0, "model.n_classes": 2, "model.d_cond": '"acgan"'},
    "n-critic": {"loss.n_critic": 2},
    "cgan": {"model.n_classes": 2},
    "acgan": {"model.n_classes": 2, "model.d_cond": '"acgan"'},
    "projection-cbn": {"model.n_classes": 2, "model.d_cond": '"projection"', "model.g_cond": '"cbn"'},
    "nearest-upsampling-cbn": {"model.g_upsample": '"nearest"', "model.n_classes": 2, "model.g_cond": '"cbn"'},
}


@pytest.mark.parametrize("g, d", [("dcgan", "dcgan"), ("mlp", "mlp"), ("resnet", "resnet")])
@pytest.mark.parametrize("name", list(STABILISERS))
def test_every_stabiliser_trains_three_steps_on_every_model_family(tmp_path, tiny_cfg, name, g, d):
    extra = {"model.g": f'"{g}"', "model.d": f'"{d}"', "model.g_hidden": "[16]", "model.d_hidden": "[16]",
             "train.kimg": 0.024, "train.tick_kimg": 0.024, **STABILISERS[name]}
    if name == "n-critic":
        extra["train.kimg"] = 0.048  # three G steps of two D steps each
    _trains_with_finite_losses_and_moving_weights(tmp_path, tiny_cfg(**extra))


def test_batch_coupled_layers_keep_real_and_fake_in_separate_d_passes(tiny_cfg):
    from ganforge.losses import get_loss
    from ganforge.step import Stepper, build_state

    def joint(**extra):
        cfg = tiny_cfg(**{"model.d_norm": '"none"', **extra})
        return Stepper(build_state(cfg, torch.device("cpu")), get_loss("ns")).joint_d

    assert joint()  # plain D: one pass over [real; fake]
    assert not joint(**{"model.d_mbstd": "true"})
    assert not joint(**{"model.d_mbdisc": 4})


@pytest.mark.parametrize("d", ["dcgan", "mlp"])
def test_a_packed_d_without_batch_norm_takes_real_and_fake_in_one_pass_as_in_two(tmp_path, tiny_cfg, d):
    """PacGAN's D gives one logit per pair: the joint pass over [real; fake] must split its logits at the
    pairs, not at the images (it failed to unpack them)."""
    from ganforge.trainer import Trainer

    cfg = tiny_cfg(**{"model.pac": 2, "model.d_norm": '"none"', "model.d": f'"{d}"', "model.d_hidden": "[16]",
                      "train.channels_last": "false"})
    joint = Trainer(cfg, tmp_path / "a", log=lambda msg: None)
    apart = Trainer(cfg, tmp_path / "b", log=lambda msg: None)
    assert joint.stepper.joint_d
    apart.stepper.joint_d = False
    for i in range(3):
        stats_joint = joint.stepper([joint.real_batch(i)])
        stats_apart = apart.stepper([apart.real_batch(i)])
        assert torch.isfinite(stats_joint).all() and (stats_joint - stats_apart).abs().max().item() < 1e-5
    for name, p in joint.state.D.named_parameters():
        assert (p - dict(apart.state.D.named_parameters())[name]).abs().max().item() < 1e-5, name


def test_minibatch_discrimination_sees_a_collapsed_batch():
    from ganforge.models.layers import MinibatchDiscrimination

    torch.manual_seed(0)
    layer = MinibatchDiscrimination(in_features=6, kernels=5, kernel_dim=3)
    same = torch.ones(8, 6)
    varied = torch.randn(8, 6) * 5
    out_same, out_varied = layer(same), layer(varied)
    assert out_same.shape == (8, 11)
    assert torch.equal(out_same[:, :6], same)  # the features pass through
    # identical samples: each is at L1 distance 0 from the 7 others, exp(0) = 1
    assert (out_same[:, 6:] - 7).abs().max().item() < 1e-5
    assert out_varied[:, 6:].max().item() < 6.0
    # against a direct double loop
    m = (varied @ layer.T).view(8, 5, 3)
    direct = torch.stack([sum(torch.exp(-(m[i] - m[j]).abs().sum(1)) for j in range(8) if j != i)
                          for i in range(8)])
    assert (out_varied[:, 6:] - direct).abs().max().item() < 1e-4


WGAN_BURSTS = {"loss.name": '"wgan"', "optim.name": '"rmsprop"', "model.d_norm": '"none"', "loss.n_critic": 2,
               "loss.critic_burst": 3, "loss.critic_burst_first": 2, "loss.critic_burst_every": 4}


def test_critic_bursts_follow_the_wgan_schedule(tmp_path, tiny_cfg):
    from ganforge.trainer import Trainer

    stepper = Trainer(tiny_cfg(**WGAN_BURSTS), tmp_path / "probe", log=quiet).stepper
    assert [stepper.d_steps_for(g) for g in range(10)] == [3, 3, 2, 2, 3, 2, 2, 2, 3, 2]
    only_first = Trainer(tiny_cfg(**{**WGAN_BURSTS, "loss.critic_burst_every": 0}), tmp_path / "probe2",
                         log=quiet).stepper
    assert [only_first.d_steps_for(g) for g in (0, 1, 2, 4, 8, 100)] == [3, 3, 2, 2, 2, 2]
    # a run takes them: 0.08 kimg = 10 batches of 8 = the D steps of G steps 0-3 (3 + 3 + 2 + 2)
    run_dir = train(tiny_cfg(**WGAN_BURSTS, **{"train.kimg": 0.08}), out=tmp_path, log=quiet)
    ckpt = final_weights(run_dir)
    assert (ckpt["nimg"], ckpt["g_steps"]) == (80, 4)


def test_critic_bursts_resume_bit_for_bit(tmp_path, tiny_cfg):
    # the half run stops after G step 1's burst (48 images); the rest crosses the burst at G step 4
    full = train(tiny_cfg(**WGAN_BURSTS, **{"train.kimg": 0.12}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**WGAN_BURSTS, **{"train.kimg": 0.048}), out=tmp_path / "b", log=quiet)
    assert final_weights(half)["g_steps"] == 2
    resume(half, ["train.kimg=0.12"], log=quiet)
    a, b = final_weights(full), final_weights(half)
    assert_same_state(a, b)
    assert a["g_steps"] == b["g_steps"] == 6  # 3 + 3 + 2 + 2 + 3 + 2 D steps: 120 images


def test_a_checkpoint_from_before_bursts_resumes_with_its_g_step_count(tmp_path, tiny_cfg):
    extra = {"loss.n_critic": 2, "loss.name": '"wgan-gp"', "model.d_norm": '"none"'}
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.096}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.048}), out=tmp_path / "b", log=quiet)
    path = ckpt_io.resolve_checkpoint(half)
    old = ckpt_io.load_checkpoint(path)
    del old["g_steps"]  # as written before the counter existed
    ckpt_io.atomic_save(old, path)
    resume(half, ["train.kimg=0.096"], log=quiet)
    assert final_weights(half)["g_steps"] == final_weights(full)["g_steps"] == 6  # 96 images, 2 batches a G step


def test_consistency_penalty_matches_its_definition_by_hand():
    from ganforge.losses import consistency_penalty

    logits, views = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, -2.0, 2.5])
    assert abs(consistency_penalty(logits, views).item() - (1.0 + 0.0 + 4.0) / 3) < 1e-6


def test_consistency_regularisation_teaches_d_to_score_a_shifted_image_alike(tmp_path, tiny_cfg):
    from ganforge.augment import diff_augment

    def gap(bcr: float) -> float:
        """Mean |D(x) - D(shifted x)| over the reals after 40 D steps."""
        trainer = Trainer(tiny_cfg(**{"loss.bcr": bcr, "model.d_norm": '"none"'}), tmp_path / f"run{bcr}", log=quiet)
        for i in range(40):
            trainer.stepper.set_progress(i * 8)
            trainer.stepper([trainer.real_batch(i)])
        D = trainer.state.D.eval()
        real = trainer.data.batch(torch.arange(len(trainer.data)))
        shifted = diff_augment(real, ["translation"], torch.Generator().manual_seed(0))
        with torch.no_grad():
            return (D(real) - D(shifted)).abs().mean().item()

    without, with_bcr = gap(0.0), gap(10.0)
    assert with_bcr < 0.5 * without, (with_bcr, without)


def test_losses_png_names_what_a_relativistic_d_real_measures(tmp_path, monkeypatch):
    from ganforge import report
    from ganforge.losses import registered_loss

    assert registered_loss("rpgan").relativistic and not registered_loss("ns").relativistic
    assert registered_loss("a-plugin-loss-not-loaded") is None  # a run's config.toml read without its plugin
    labels = []

    def keep_labels(fig, path, dpi=100):
        ax = fig.axes[1]
        labels.append((ax.get_ylabel(), [line.get_label() for line in ax.get_lines()][:2]))

    monkeypatch.setattr(report, "save_figure", keep_labels)
    stats = [{"kimg": 1.0, "d_loss": 0.5, "g_loss": 1.0, "d_real": 0.7, "d_fake": 0.3}]
    report.plot_losses(stats, tmp_path / "losses.png")
    report.plot_losses(stats, tmp_path / "losses.png", relativistic=True)
    assert labels[0] == ("mean sigmoid(D logit) | ratio | share", ["D(real)", "D(fake)"])
    assert labels[1] == ("mean sigmoid(D(x) - D(G(z))) | ratio | share", ["D(real) over its fake",
                                                                          "D(fake) over its real"])
