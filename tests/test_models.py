from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator
from ganforge.models.dcgan import dcgan_levels
from ganforge.models.layers import LatentConvTranspose2d, NoiseStream, check_truncation, truncate


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("g_name", GENERATORS.names())
@pytest.mark.parametrize("d_name", DISCRIMINATORS.names())
@pytest.mark.parametrize("img_size, channels", [(28, 1), (32, 3), (16, 1)])
def test_every_registered_pair_has_the_right_shapes(g_name, d_name, img_size, channels):
    cfg = load_config(
        preset="default",
        overrides=[f"model.g={g_name}", f"model.d={d_name}", f"data.img_size={img_size}",
                   f"data.channels={channels}", "model.g_width=8", "model.d_width=8",
                   "model.g_hidden=[16, 16]", "model.d_hidden=[16]", "model.z_dim=12"],
    )
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(5, 12)
    fake = G(z)
    assert fake.shape == (5, channels, img_size, img_size)
    assert fake.min() >= -1 and fake.max() <= 1
    logits = D(fake)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


def test_r5_mlp_bn_parameter_counts_match_the_recipe():
    cfg = load_config(preset="mnist-mlp-bn")
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert n_params(G) == 1_510_032
    assert n_params(D) == 533_505
    bns = [m for m in G.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [bn.num_features for bn in bns] == [256, 512, 1024]
    assert all(abs(bn.momentum - 0.8) < 1e-12 and abs(bn.eps - 1e-5) < 1e-12 for bn in bns)


def _layer_signature(module: nn.Module) -> list[tuple]:
    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            out.append((type(m).__name__, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]))
        elif isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(("BN", m.num_features))
        elif isinstance(m, nn.ReLU | nn.LeakyReLU | nn.Tanh):
            out.append((type(m).__name__,))
    return out


def test_r1_dcgan_layers_match_the_recipe():
    cfg = load_config(preset="mnist-dcgan")
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert _layer_signature(G) == [
        ("LatentConvTranspose2d", 100, 256, 4, 1, 0), ("BN", 256), ("ReLU",),  # ConvTranspose2d, as one matmul
        ("ConvTranspose2d", 256, 128, 4, 2, 1), ("BN", 128), ("ReLU",),
        ("ConvTranspose2d", 128, 64, 4, 2, 1), ("BN", 64), ("ReLU",),
        ("ConvTranspose2d", 64, 1, 4, 2, 1), ("Tanh",),
    ]
    assert _layer_signature(D) == [
        ("Conv2d", 1, 64, 4, 2, 1), ("BN", 64), ("LeakyReLU",),
        ("Conv2d", 64, 128, 4, 2, 1), ("BN", 128), ("LeakyReLU",),
        ("Conv2d", 128, 256, 4, 2, 1), ("BN", 256), ("LeakyReLU",),
        ("Linear", 256 * 4 * 4, 1),  # the recipe's Conv2d(256, 1, 4, 1, 0) over the 4x4 map, the same map
    ]
    assert G(torch.randn(2, 100)).shape == (2, 1, 32, 32)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_latent_conv_transpose_is_the_transposed_convolution(bias: bool, channels_last: bool):
    """G's first layer computed as a matmul: the same outputs, gradients and memory layout as the kernels'."""
    torch.manual_seed(0)
    latent = LatentConvTranspose2d(20, 12, 4, 1, 0, bias=bias)
    if bias:
        nn.init.normal_(latent.bias)
    conv = nn.ConvTranspose2d(20, 12, 4, 1, 0, bias=bias)
    conv.load_state_dict(latent.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    latent, conv = latent.to(memory_format=fmt), conv.to(memory_format=fmt)
    z = torch.randn(6, 20, 1, 1, requires_grad=True)
    z_conv = z.detach().clone().requires_grad_()
    out, out_conv = latent(z), conv(z_conv)
    assert out.shape == out_conv.shape == (6, 12, 4, 4) and out.stride() == out_conv.stride()
    assert (out - out_conv).abs().max().item() < 1e-5
    grad = torch.randn_like(out)
    out.backward(grad)
    out_conv.backward(grad)
    assert (z.grad - z_conv.grad).abs().max().item() < 1e-5
    assert (latent.weight.grad - conv.weight.grad).abs().max().item() < 1e-4
    assert latent.weight.grad.stride() == latent.weight.stride()
    if bias:
        assert (latent.bias.grad - conv.bias.grad).abs().max().item() < 1e-4
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert latent(z).dtype == conv(z).dtype == torch.bfloat16
    oblong = LatentConvTranspose2d(20, 12, (3, 5), bias=bias).to(memory_format=fmt)
    oblong_conv = nn.ConvTranspose2d(20, 12, (3, 5), bias=bias).to(memory_format=fmt)
    oblong_conv.load_state_dict(oblong.state_dict())
    assert (oblong(z) - oblong_conv(z)).abs().max().item() < 1e-5 and oblong(z).shape == (6, 12, 3, 5)
    wider = torch.randn(2, 20, 2, 2)  # not a 1x1 map: the convolution kernels, as before
    with torch.no_grad():
        assert torch.equal(latent(wider), conv(wider)) and latent(wider).shape == (2, 12, 5, 5)
        latent.eval()  # sampling: the kernels, whose images do not depend on the size of their batch
        conv.eval()
        assert torch.equal(latent(z), conv(z))


def test_dcgan_init_follows_radford():
    cfg = load_config(preset="mnist-dcgan")
    torch.manual_seed(0)
    G = build_generator(cfg)
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert abs(weights.std().item() - 0.02) < 0.002
    assert abs(weights.mean().item()) < 0.001
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01


@pytest.mark.parametrize("preset", ["mnist-mlp-convd", "mnist-mlp-small", "mnist-mlp"])
def test_recipe_layer_widths(preset):
    cfg = load_config(preset=preset)
    G, D = build_generator(cfg), build_discriminator(cfg)
    g_widths = [m.out_features for m in G.modules() if isinstance(m, nn.Linear)]
    expected_g = {"mnist-mlp-convd": [128, 784], "mnist-mlp-small": [256, 256, 784],
                  "mnist-mlp": [256, 512, 1024, 784]}[preset]
    assert g_widths == expected_g
    if preset == "mnist-mlp-convd":
        convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
        assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [(128, 4, 2), (128, 4, 2)]
        slopes = {m.negative_slope for m in G.modules() if isinstance(m, nn.LeakyReLU)}
        assert slopes == {0.3}


@pytest.mark.parametrize("preset", ["mnist-mlp-small", "default"])
def test_a_seed_draws_the_same_images_whatever_the_batch_size_or_count(preset):
    G = build_generator(load_config(preset=preset, overrides=["model.g_width=8"] * (preset == "default")))
    images = G.sample(1100, seed=5, batch_size=1100)
    scale = images.abs().max()  # an untrained DCGAN's images are faint
    for batch_size in (3, 7, 256, 1024):  # the same z; a matmul of another batch size rounds differently
        assert (G.sample(1100, seed=5, batch_size=batch_size) - images).abs().max() < 1e-4 * scale, batch_size
    assert (G.sample(10, seed=5) - images[:10]).abs().max() < 1e-4 * scale
    assert (G.sample(10, seed=6) - images[:10]).abs().max() > 0.1 * scale


def test_noise_stream_gives_image_i_one_z_however_it_is_taken():
    whole = NoiseStream(16, seed=2).take(2100)
    stream = NoiseStream(16, seed=2)
    parts = [stream.take(count) for count in (3, 1, 1020, 1024, 52)]
    assert torch.equal(torch.cat(parts), whole)
    assert torch.equal(NoiseStream(16, seed=2).take(5), whole[:5])
    assert not torch.equal(NoiseStream(16, seed=3).take(5), whole[:5])
    for first in (5, 1024, 1030, 2090):  # a stream that starts later is the same stream, later
        assert torch.equal(NoiseStream(16, seed=2, first=first).take(10), whole[first : first + 10]), first


@pytest.mark.parametrize("threshold", [0.25, 1.0, 2.0])
def test_truncation_draws_the_truncated_normal_moving_each_value_towards_zero(threshold):
    import math

    z = NoiseStream(50, seed=4).take(4000)
    cut = truncate(z, threshold)
    assert cut.shape == z.shape and cut.dtype == z.dtype
    assert cut.abs().max() <= threshold + 1e-6
    # the variance of N(0, 1) truncated to [-t, t]: 1 - 2 t phi(t) / (2 Phi(t) - 1)
    mass = math.erf(threshold / math.sqrt(2))
    variance = 1 - 2 * threshold * math.exp(-threshold**2 / 2) / math.sqrt(2 * math.pi) / mass
    assert abs(cut.var().item() - variance) < 0.02 * variance
    assert abs(cut.mean().item()) < 0.01
    assert torch.equal(cut.sign(), z.sign()) and (cut.abs() <= z.abs() + 1e-6).all()  # towards 0, never across
    order = z[:, 0].argsort()
    assert (cut[order, 0].diff() >= 0).all()  # monotone: a larger value stays larger
    assert torch.equal(truncate(-z, threshold), -cut)  # symmetric to the bit


def test_a_loose_truncation_leaves_z_and_a_wrong_one_is_refused():
    z = NoiseStream(8, seed=1).take(2000)
    assert truncate(z, None) is z
    assert (truncate(z, 30.0) - z).abs().max() < 1e-5  # no value of 16,000 lies near 30
    for bad in (0, -1.0, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(ValueError, match="truncation must be a finite number above 0"):
            check_truncation(bad)


def test_truncated_samples_keep_the_seeds_stream_however_they_are_drawn():
    G = build_generator(load_config(preset="default", overrides=["model.g_width=8"])).eval()
    z = truncate(NoiseStream(G.z_dim, seed=5).take(12), 0.5)
    with torch.no_grad():
        expected = G(z)
    images = G.sample(12, seed=5, truncation=0.5)
    scale = expected.abs().max()
    assert (images - expected).abs().max() < 1e-5 * scale
    batches = torch.cat(list(G.sample_batches(7, seed=5, batch_size=3, first=5, truncation=0.5)))
    assert (batches - images[5:]).abs().max() < 1e-5 * scale  # going on from image 5, three at a time
    assert (G.sample(12, seed=5) - images).abs().max() > 1e-3 * scale  # untruncated: other images
    walk = G.interpolate(2, 3, seed=5, truncation=0.5)  # the walks' ends are truncated z 0 to 3
    assert (walk[[0, 2, 3, 5]] - expected[:4]).abs().max() < 1e-5 * scale
    with pytest.raises(ValueError, match="truncation must be a finite number above 0"):
        G.sample(2, truncation=-1)


def test_sample_uses_eval_mode_and_leaves_bn_stats_alone():
    cfg = load_config(preset="mnist-mlp-bn")
    G = build_generator(cfg).train()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    a = G.sample(6, seed=3)
    b = G.sample(6, seed=3)
    assert G.training
    assert torch.equal(a, b)
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("size, expected", [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (16, (4, 2))])
def test_dcgan_levels(size, expected):
    assert dcgan_levels(size) == expected


@pytest.mark.parametrize("size, nearest", [(30, "28 or 32"), (100, "96 or 112"), (9, "8 or 10"), (7, "8")])
def test_dcgan_rejects_sizes_it_cannot_build_and_names_the_nearest(size, nearest):
    with pytest.raises(UserError, match=rf"img_size .*, got {size}; the nearest that build: {nearest}$"):
        dcgan_levels(size)
    for near in map(int, nearest.split(" or ")):
        dcgan_levels(near)  # builds


def test_sngan_resnet_follows_the_paper_layout():
    from torch.nn.utils import parametrize

    from ganforge.models.resnet import DBlock, GBlock

    cfg = load_config(preset="mnist-sngan-resnet")
    G, D = build_generator(cfg), build_discriminator(cfg)
    blocks = [m for m in G.modules() if isinstance(m, GBlock)]
    assert len(blocks) == 3  # 4 -> 8 -> 16 -> 32
    assert [(b.down, b.first) for b in D.modules() if isinstance(b, DBlock)] == [
        (True, True), (True, False), (False, False), (False, False)]  # 32 -> 16 -> 8, two blocks at 8x8
    weighted = [m for m in D.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert weighted and all(parametrize.is_parametrized(m, "weight") for m in weighted)
    fake = G(torch.randn(3, cfg.model.z_dim))
    assert fake.shape == (3, 1, 32, 32)
    assert D(fake).shape == (3,)


@pytest.mark.parametrize("d_name", DISCRIMINATORS.names())
@pytest.mark.parametrize("setting", ["model.d_mbstd=true", "model.d_mbdisc=4"])
def test_every_discriminator_honours_the_batch_statistics_settings(d_name, setting):
    """A D that ignored model.d_mbstd would train as if the setting were off, silently."""
    from ganforge.models.layers import MinibatchDiscrimination, MinibatchStd

    layer = MinibatchStd if "mbstd" in setting else MinibatchDiscrimination
    cfg = load_config(preset="default", overrides=[f'model.d="{d_name}"', "data.img_size=32", setting])
    D = build_discriminator(cfg)
    assert any(isinstance(m, layer) for m in D.modules())
    x = torch.randn(8, 1, 32, 32)
    same = x[:1].expand(8, -1, -1, -1)
    D.eval()
    with torch.no_grad():
        assert D(x).shape == (8,)
        # the batch's variety reaches the logit: the first image scores differently beside copies of itself
        assert abs(D(x)[0].item() - D(same)[0].item()) > 1e-6


@pytest.mark.parametrize("d_name", DISCRIMINATORS.names())
def test_every_discriminator_drops_activations_while_it_trains_and_only_then(d_name):
    """model.d_dropout: random masks in training mode (two passes over one batch differ), none in eval mode;
    at 0 no layer is added, so the parameter names of checkpoints trained before the setting still load."""
    base = ['model.d="' + d_name + '"', "data.img_size=32"]
    torch.manual_seed(0)
    D = build_discriminator(load_config(preset="default", overrides=[*base, "model.d_dropout=0.5"]))
    dropouts = [m for m in D.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(abs(m.p - 0.5) < 1e-12 for m in dropouts)
    plain = build_discriminator(load_config(preset="default", overrides=base))
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    x = torch.randn(8, 1, 32, 32)
    with torch.no_grad():
        assert (D(x) - D(x)).abs().max().item() > 1e-4  # new masks each pass
        D.eval()
        assert (D(x) - D(x)).abs().max().item() == 0.0


def test_minibatch_std_on_flat_features_appends_one_feature():
    from ganforge.models.layers import MinibatchStd

    x = torch.randn(8, 5)
    out = MinibatchStd(group=4)(x)
    assert out.shape == (8, 6) and torch.equal(out[:, :5], x)
    groups = x.view(4, 2, 5)  # sample i is in group i % 2
    expected = groups.var(dim=0, unbiased=False).add(1e-8).sqrt().mean(dim=1)
    assert (out[:, 5] - expected.repeat(4)).abs().max().item() < 1e-6
    assert MinibatchStd()(torch.ones(4, 3))[:, 3].abs().max().item() < 1e-3  # copies: no spread


ARCH_CHANGES = {"g_width": "16", "g_hidden": "[32, 48]", "g_upsample": '"nearest"', "d_width": "16",
                "d_hidden": "[32, 48]", "d_norm": '"none"'}


def _network_signature(cfg, kind: str):
    torch.manual_seed(0)
    net = build_generator(cfg) if kind == "g" else build_discriminator(cfg)
    torch.manual_seed(1)
    x = torch.randn(4, cfg.model.z_dim) if kind == "g" else torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        out = net(x)
    return str(net), [tuple(p.shape) for p in net.parameters()], out


NETWORKS = [("g", n) for n in GENERATORS.names()] + [("d", n) for n in DISCRIMINATORS.names()]


@pytest.mark.parametrize("kind, name", NETWORKS)
def test_each_network_declares_exactly_the_architecture_settings_it_ignores(kind, name):
    """`ignores` drives the "has no effect" note; a setting a network silently dropped would fail here."""
    from ganforge.models import ARCH_SETTINGS, inert_settings

    registry = GENERATORS if kind == "g" else DISCRIMINATORS
    assert set(registry.get(name).ignores) <= set(ARCH_SETTINGS)
    base = [f'model.{kind}="{name}"', "data.img_size=32"]
    base_cfg = load_config(preset="default", overrides=base)
    reference = _network_signature(base_cfg, kind)
    for key in (k for k in ARCH_SETTINGS if k.startswith(kind)):
        value = getattr(base_cfg.model, key)
        change = str(not value).lower() if isinstance(value, bool) else ARCH_CHANGES[key]
        cfg = load_config(preset="default", overrides=[*base, f"model.{key}={change}"])
        assert getattr(cfg.model, key) != value
        changed = _network_signature(cfg, kind)
        same = changed[:2] == reference[:2] and torch.equal(changed[2], reference[2])
        ignored = key in registry.get(name).ignores
        assert same == ignored, f"{name} {'ignores' if same else 'reads'} model.{key}"
        noted = any(f"model.{key} =" in line for line in inert_settings(cfg))
        assert noted == (ignored and getattr(cfg.model, key) != getattr(type(cfg.model)(), key))  # set by hand


def test_slerp_follows_the_great_circle_and_falls_back_to_a_line():
    from ganforge.models.layers import slerp

    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    t = torch.tensor([[0.0], [0.5], [1.0]])
    path = slerp(a, b, t)
    assert torch.allclose(path[0], a) and torch.allclose(path[2], b, atol=1e-6)
    assert torch.allclose(path[1], 1.5 * torch.tensor([1.0, 1.0]) / 2**0.5, atol=1e-6)  # 45 degrees, norm 1.5
    same = torch.tensor([3.0, 4.0])
    assert torch.allclose(slerp(same, 2 * same, t), torch.stack([same, 1.5 * same, 2 * same]), atol=1e-5)
    assert torch.isfinite(slerp(torch.zeros(2), b, t)).all()


@pytest.mark.parametrize("n_classes", [0, 3])
def test_interpolation_rows_run_between_two_random_latents(n_classes):
    cfg = load_config(preset="default", overrides=["model.g_width=8", f"model.n_classes={n_classes}"])
    G = build_generator(cfg)
    labels = torch.tensor([2, 0]) if n_classes else None
    walk = G.interpolate(2, 5, seed=3, labels=labels)
    assert walk.shape == (10, 1, G.img_size, G.img_size)
    ends = NoiseStream(G.z_dim, 3).take(4)  # row i runs from z 2i to z 2i+1
    G.eval()
    with torch.no_grad():
        args = (ends,) if labels is None else (ends, labels.repeat_interleave(2))
        expected = G(*args)
    for row in range(2):
        assert torch.allclose(walk[row * 5], expected[2 * row], atol=1e-5)
        assert torch.allclose(walk[row * 5 + 4], expected[2 * row + 1], atol=1e-5)
    assert torch.equal(G.interpolate(3, 5, seed=3, labels=None if labels is None else torch.tensor([2, 0, 1]))[:10],
                       walk)  # one more row leaves the first rows as they were
    assert not torch.allclose(walk[1], walk[0])  # it moves in between
    with pytest.raises(ValueError, match="steps >= 2"):
        G.interpolate(2, 1)


def test_a_numpy_seed_draws_what_the_same_int_draws():
    import numpy as np

    G = build_generator(load_config(preset="default", overrides=["model.g_width=8"]))
    assert torch.equal(G.sample(3, seed=np.int64(7)), G.sample(3, seed=7))
    assert torch.equal(G.interpolate(1, 3, seed=np.int32(7)), G.interpolate(1, 3, seed=7))
    with pytest.raises(ValueError, match="seed must be a whole number, got 2.5"):
        G.sample(3, seed=2.5)
    assert G.sample(1, seed=2**64 - 1).shape[0] == 1  # torch's whole seed range
    for seed in (-1, 2**64, 2**70):  # -1 would alias 2**64 - 1; above 2**64 torch overflows
        with pytest.raises(ValueError) as info:
            G.sample(3, seed=seed)
        assert str(info.value) == f"seed must be from 0 to 2**64 - 1, got {seed}"
    with pytest.raises(ValueError, match="seed must be from 0 to 2"):
        G.sample_batches(3, seed=-1)  # said when called, not when the first batch is drawn


def test_counts_given_to_the_sampling_api_are_whole_numbers_or_a_clear_error():
    import numpy as np

    G = build_generator(load_config(preset="default", overrides=["model.g_width=8"]))
    assert torch.equal(G.sample(np.int64(3), seed=1, batch_size=np.int32(2)), G.sample(3, seed=1))
    assert G.interpolate(np.int64(2), torch.tensor(3), seed=1).shape[0] == 6
    assert len(list(G.sample_batches(np.int64(5), batch_size=2, first=np.int64(1)))) == 3
    for call, said in ((lambda: G.sample("4"), "n must be a whole number, got '4'"),
                       (lambda: G.sample(1e4), "n must be a whole number, got 10000.0"),
                       (lambda: G.sample(True), "n must be a whole number, got True"),
                       (lambda: G.sample(4, batch_size=None), "batch_size must be a whole number, got None"),
                       (lambda: G.interpolate(2.0, 5), "rows must be a whole number, got 2.0"),
                       (lambda: G.interpolate(2, "5"), "steps must be a whole number, got '5'"),
                       (lambda: G.sample_batches(4, first=0.5), "first must be a whole number, got 0.5")):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == said


@pytest.mark.parametrize("n_classes", [0, 3])
def test_a_sample_folder_is_written_batch_by_batch(tmp_path, n_classes):
    """Writing many PNGs holds one batch in memory: each batch is on disk before the next is drawn, and the
    files are G.sample's images, class by class into subfolders for a conditional G."""
    import numpy as np
    from PIL import Image

    from ganforge import report

    G = build_generator(load_config(preset="default", overrides=["model.g_width=8", f"model.n_classes={n_classes}"]))
    on_disk_when_drawn = []
    forward = G.forward

    def counting_forward(*args):
        on_disk_when_drawn.append(len(list(tmp_path.rglob("*.png"))))
        return forward(*args)

    G.forward = counting_forward
    labels = torch.tensor([2, 0, 1, 2, 2, 0, 1]) if n_classes else None
    names = ["zero", "one", "two"] if n_classes else None
    paths = report.save_sample_folder(G, 7, tmp_path / "out", seed=4, batch_size=3, labels=labels, names=names)
    assert on_disk_when_drawn == [0, 3, 6]
    expected = report.to_uint8(G.sample(7, seed=4, labels=labels)).numpy()[:, 0]
    assert len(paths) == 7
    folders = {tmp_path / "out": range(7)} if not n_classes else {
        tmp_path / "out" / name: [i for i in range(7) if labels[i] == c] for c, name in enumerate(names)}
    for folder, indices in folders.items():
        files = sorted(folder.glob("*.png"))
        assert [p.name for p in files] == [f"{k:06d}.png" for k in range(len(indices))]
        for i, path in zip(indices, files, strict=True):
            assert np.abs(np.asarray(Image.open(path), dtype=int) - expected[i]).max() <= 1, path


@pytest.mark.parametrize("preset, message", [
    ("mnist-sngan-resnet", "the resnet nets need data.img_size = s * 2^n with s in 3..7 (e.g. 28, 32, 64), got 30; "
                           "the nearest that build: 28 or 32"),
    ("mnist-mlp-convd", "the convd discriminator needs data.img_size divisible by 4, got 30; the nearest that build: "
                        "28 or 32"),
])
def test_each_conv_net_names_the_sizes_it_builds(preset, message):
    from ganforge.config import load_config
    from ganforge.trainer import check_networks

    with pytest.raises(UserError) as info:
        check_networks(load_config(preset=preset, overrides=["data.img_size=30"]))
    assert str(info.value) == message


@pytest.mark.parametrize("img_size", [28, 32, 64])
def test_a_nearest_upsampling_g_doubles_by_resize_and_conv_at_every_size(img_size):
    overrides = [f"data.img_size={img_size}", "data.channels=3", 'model.g_upsample="nearest"']
    G = build_generator(load_config(preset="default", overrides=overrides))
    assert G.sample(2, seed=0).shape == (2, 3, img_size, img_size)
    strided = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d) and m.stride != (1, 1)]
    upsamples = [m for m in G.modules() if isinstance(m, nn.Upsample)]
    assert not strided and len(upsamples) == dcgan_levels(img_size)[1]
    transposed = build_generator(load_config(preset="default", overrides=overrides[:2]))
    assert sum(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in transposed.modules()) == len(upsamples)
