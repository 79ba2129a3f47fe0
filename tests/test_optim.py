"""ganforge's Adam calls torch's fused kernel itself: it must update to the bit as torch.optim's fused Adam does,
take that kernel path where it says it does, and leave hooks, profiles and resumes as torch.optim has them."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.optim.optimizer as torch_optimizer
from torch import nn

import ganforge.step as step_module
from ganforge.step import FusedAdam, make_optimizer


def _nets_and_optimizers(device: str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer, nn.Module,
                                                       torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.LeakyReLU(0.2), nn.Linear(7, 1)).to(device)
    twin = copy.deepcopy(net)
    ours = make_optimizer("adam", net.parameters(), lr=1e-3, betas=[0.5, 0.999], eps=1e-8)
    theirs = torch.optim.Adam(twin.parameters(), lr=1e-3, betas=(0.5, 0.999), eps=1e-8, fused=True)
    return net, ours, twin, theirs


def _train(net: nn.Module, opt: torch.optim.Optimizer, steps: range, frozen_at: tuple[int, ...] = ()) -> None:
    for i in steps:
        x = torch.randn(16, 5, generator=torch.Generator().manual_seed(i)).to(net[0].weight.device)
        opt.zero_grad(set_to_none=True)
        net[3].weight.requires_grad_(i not in frozen_at)  # a parameter without a gradient this step is left alone
        net(x).square().mean().backward()
        if i == 10:  # as ganforge's learning-rate decay and a resume's overrides do
            for group in opt.param_groups:
                group["lr"], group["betas"] = 3e-4, (0.0, 0.99)
        opt.step()


def _same(a: nn.Module, opt_a: torch.optim.Optimizer, b: nn.Module, opt_b: torch.optim.Optimizer) -> bool:
    states_a, states_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    return (all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
            and states_a.keys() == states_b.keys()
            and all(torch.equal(states_a[k][name], states_b[k][name]) for k in states_a for name in states_a[k]))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("frozen_at", [(), (0,), (4, 5, 13)])
def test_updates_equal_torchs_fused_adam_to_the_bit(frozen_at, device):
    net, ours, twin, theirs = _nets_and_optimizers(device)
    assert isinstance(ours, FusedAdam)
    _train(net, ours, range(20), frozen_at)
    _train(twin, theirs, range(20), frozen_at)
    assert _same(net, ours, twin, theirs)
    assert not torch.equal(net[0].weight, _nets_and_optimizers(device)[0][0].weight)  # it trained


def test_channels_last_weights_update_to_the_bit_in_place_through_views_of_their_memory(monkeypatch):
    """Conv weights kept channels_last reach torch's kernel as contiguous views in memory order (the kernel
    would copy them to NCHW and back), and train as torch.optim's fused Adam trains them, staying channels_last."""
    cl = torch.channels_last
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1), nn.LeakyReLU(0.2), nn.ConvTranspose2d(16, 8, 4, 2, 1),
                        nn.Conv2d(8, 1, 3)).to(memory_format=cl)
    twin = copy.deepcopy(net)
    ours = make_optimizer("adam", net.parameters(), lr=1e-2, betas=[0.5, 0.999], eps=1e-8)
    theirs = torch.optim.Adam(twin.parameters(), lr=1e-2, betas=(0.5, 0.999), eps=1e-8, fused=True)
    seen: list[torch.Tensor] = []
    kernel = step_module._FUSED_ADAM_KERNEL

    def spy(params, *args, **kwargs):
        seen.extend(params)
        return kernel(params, *args, **kwargs)

    monkeypatch.setattr(step_module, "_FUSED_ADAM_KERNEL", spy)
    for i in range(6):
        x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)).contiguous(memory_format=cl)
        for module, opt in ((net, ours), (twin, theirs)):
            opt.zero_grad(set_to_none=True)
            module(x).square().mean().backward()
            opt.step()
    assert _same(net, ours, twin, theirs)
    assert all(p.is_contiguous(memory_format=cl) for p in net.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert seen and all(t.is_contiguous() for t in seen)  # every tensor the kernel got needs no copy
    assert any(t.dim() == 4 and t.shape != p.shape for t in seen for p in net.parameters() if t.data_ptr() ==
               p.data_ptr())  # some of them as permuted views of the weights


def test_tensors_of_unlike_layouts_reach_the_kernel_as_they_are():
    from ganforge.step import _in_storage_order

    weight = torch.randn(8, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    grad, moment = torch.randn(8, 4, 3, 3), torch.zeros_like(weight)  # the gradient NCHW, unlike the weight
    assert all(a is b for a, b in zip(_in_storage_order(weight, grad, moment, moment),
                                      (weight, grad, moment, moment), strict=True))
    views = _in_storage_order(weight, weight.clone(), moment, moment)
    assert all(v.is_contiguous() and v.shape == (8, 3, 3, 4) for v in views)
    assert views[0].data_ptr() == weight.data_ptr()  # a view: an update through it is an update of the weight
    plain = torch.randn(8, 4, 3, 3)
    assert _in_storage_order(plain, plain)[0] is plain


def test_the_kernel_is_called_directly_after_the_first_step(monkeypatch):
    calls = []
    torch_step = step_module._TORCH_ADAM_STEP
    monkeypatch.setattr(step_module, "_TORCH_ADAM_STEP", lambda opt, fn: calls.append(1) or torch_step(opt, fn))
    net, ours, twin, theirs = _nets_and_optimizers()
    _train(net, ours, range(12))
    assert len(calls) == 1  # torch's step makes the state; the kernel is called directly from then on
    _train(twin, theirs, range(12))

    def closure() -> torch.Tensor:  # outside the plain case: torch's step again, as torch.optim's would be
        ours.zero_grad()
        loss = net(torch.ones(4, 5)).sum()
        loss.backward()
        return loss

    assert ours.step(closure) is not None and len(calls) == 2
    assert not _same(net, ours, twin, theirs)


def test_a_kernel_that_takes_other_arguments_falls_back_to_torchs_step(monkeypatch):
    def other_kernel(*args, **kwargs):
        raise TypeError("_fused_adam_() got an unexpected keyword argument 'beta1'")

    monkeypatch.setattr(step_module, "_FUSED_ADAM_KERNEL", other_kernel)
    net, ours, twin, theirs = _nets_and_optimizers()
    _train(net, ours, range(6))
    assert step_module._FUSED_ADAM_KERNEL is None  # given up after the first refusal
    _train(twin, theirs, range(6))
    assert _same(net, ours, twin, theirs)  # step counts undone: the same update as torch's


def test_a_resumed_optimizer_continues_to_the_bit():
    net, ours, _, _ = _nets_and_optimizers()
    _train(net, ours, range(8))
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(ours.state_dict())
    _train(net, ours, range(8, 16))
    resumed_net, resumed, _, _ = _nets_and_optimizers()
    resumed_net.load_state_dict(saved_net)
    resumed.load_state_dict(saved_opt)
    _train(resumed_net, resumed, range(8, 16))
    assert _same(net, ours, resumed_net, resumed)


def test_step_hooks_and_the_profiler_see_every_step():
    net, ours, twin, theirs = _nets_and_optimizers()
    seen = []
    own = ours.register_step_post_hook(lambda opt, args, kwargs: seen.append("own"))
    every = torch_optimizer.register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append("global"))
    try:
        _train(net, ours, range(3))
    finally:
        own.remove()
        every.remove()
    assert seen == ["global", "own"] * 3
    _train(twin, theirs, range(3))
    assert _same(net, ours, twin, theirs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _train(net, ours, range(3, 5))
    names = {e.key for e in prof.key_averages()}
    assert {"Optimizer.step#FusedAdam.step", "Optimizer.zero_grad#FusedAdam.zero_grad"} <= names


def test_zero_grad_sets_every_gradient_to_none_or_zero():
    net, ours, _, _ = _nets_and_optimizers()
    _train(net, ours, range(2))
    ours.zero_grad(set_to_none=False)  # torch's own: zeros in place
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    _train(net, ours, range(2, 3))
    ours.zero_grad()
    assert all(p.grad is None for p in net.parameters())
