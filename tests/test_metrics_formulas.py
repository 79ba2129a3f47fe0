"""The metric formulas against direct computations and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ganforge.metrics import formulas


def scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def fd(a: np.ndarray, b: np.ndarray) -> float:
    return formulas.frechet_distance(*formulas.feature_stats(a), *formulas.feature_stats(b))


def test_fd_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert abs(fd(x, x)) < 1e-6


def test_fd_grows_with_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16))
    values = [fd(x, x + rng.normal(scale=s, size=x.shape)) for s in (0.1, 0.3, 1.0, 3.0)]
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] > 0


def test_fd_matches_scipy_sqrtm():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    b = rng.normal(loc=0.5, size=(300, 8)) @ rng.normal(size=(8, 8))
    assert abs(fd(a, b) - scipy_fd(a, b)) < 1e-6 * max(1.0, scipy_fd(a, b))


def test_fd_of_known_gaussians():
    # N(0, I) vs N(m, 4I) in d dims: |m|^2 + d (1 + 4 - 2 * 2) = |m|^2 + d
    d = 3
    mu = np.array([1.0, 2.0, 2.0])
    value = formulas.frechet_distance(np.zeros(d), np.eye(d), mu, 4 * np.eye(d))
    assert abs(value - (9.0 + d)) < 1e-9


def test_kid_is_near_zero_for_halves_of_one_set_and_positive_for_shifted():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 16))
    same, _ = formulas.kernel_inception_distance(x[:1000], x[1000:], subsets=20, subset_size=500)
    shifted, _ = formulas.kernel_inception_distance(x[:1000], x[1000:] + 0.5, subsets=20, subset_size=500)
    assert abs(same) < 0.01
    assert shifted > 10 * abs(same) and shifted > 0.01


def test_kid_matches_a_direct_unbiased_mmd():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 4)), rng.normal(loc=0.3, size=(50, 4))
    value, std = formulas.kernel_inception_distance(y, x, subsets=1, subset_size=50)

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    m = 50
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert abs(value - (xx + yy - 2 * xy)) < 1e-9
    assert std == 0.0


def test_inception_score_limits():
    onehot = np.eye(10)[np.arange(1000) % 10]
    assert abs(formulas.inception_score(onehot, splits=1)[0] - 10) < 1e-6
    assert formulas.inception_score(onehot, splits=10)[0] > 9.3
    constant = np.tile(np.eye(10)[3], (1000, 1))
    assert abs(formulas.inception_score(constant)[0] - 1) < 1e-6
    uniform = np.full((1000, 10), 0.1)
    assert abs(formulas.inception_score(uniform)[0] - 1) < 1e-6


def test_precision_recall_on_hand_built_points():
    # reals on a unit grid: 3rd-nearest-neighbour radius 1 for interior-ish points of a 1-D line
    real = np.array([[float(i), 0.0] for i in range(10)])
    # two fakes sit on the line (inside real balls), two far away
    fake = np.array([[2.0, 0.0], [5.5, 0.0], [50.0, 0.0], [60.0, 0.0]])
    p, r = formulas.precision_recall(real, fake, k=3)
    assert abs(p - 0.5) < 1e-12
    # fake radii (3rd neighbour among 4 fakes): [2,0]->58, [5.5,0]->54.5, [50,0]->48, [60,0]->58
    # every real point is within 58 of [2, 0], so recall is 1
    assert abs(r - 1.0) < 1e-12


def test_recall_drops_when_fakes_collapse():
    real = np.array([[float(i), 0.0] for i in range(10)])
    fake = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.3, 0.0]])  # 3rd-NN radius 0.3 (or 0.2)
    p, r = formulas.precision_recall(real, fake, k=3)
    assert abs(p - 1.0) < 1e-12
    assert abs(r - 0.1) < 1e-12  # only the real point at 0 is covered


def test_density_and_coverage_on_hand_built_points():
    real = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0], [5.0, 0.0], [6.0, 0.0]])
    # k=5 radii: point 0 -> 5, 1 -> 4, 2 -> 3, 3 -> 3 (|3-0|=3, |3-6|=3 are 5th/6th...) computed below
    radii = np.sort(np.abs(real[:, None, 0] - real[None, :, 0]), axis=1)[:, 5]
    fake = np.array([[0.0, 0.0], [100.0, 0.0]])
    d, c = formulas.density_coverage(real, fake, k=5)
    inside = (np.abs(fake[:, None, 0] - real[None, :, 0]) <= radii[None, :]).sum()
    assert abs(d - inside / (5 * 2)) < 1e-12
    covered = (np.abs(real[:, 0] - 0.0) <= radii).mean()
    assert abs(c - covered) < 1e-12
    assert 0 < c < 1


def test_class_histogram():
    probs = np.eye(10)[[0, 0, 1, 1]]
    hist = formulas.class_histogram(probs, 10)
    assert hist["covered"] == 2
    assert abs(hist["kl_uniform"] - math.log(5)) < 1e-12
    assert hist["counts"][:3] == [2, 2, 0]
    assert abs(hist["confidence"] - 1.0) < 1e-12


def test_mode_statistics_exact():
    seen, kl = formulas.mode_statistics(np.arange(26_000) % 1000)
    assert seen == 1000 and abs(kl) < 1e-12
    seen, kl = formulas.mode_statistics(np.arange(26_000) % 10 * 7)
    assert seen == 10 and abs(kl - math.log(100)) < 1e-12
    seen, kl = formulas.mode_statistics(np.zeros(100, dtype=int))
    assert seen == 1 and abs(kl - math.log(1000)) < 1e-12


def test_authenticity_on_hand_built_points():
    import torch

    train = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])  # nearest other: 1, 1, 2
    fake = torch.tensor([[0.2, 0.0],    # 0.2 from (0, 0), whose own neighbour is 1 away: not authentic
                         [3.0, 1.5],    # 1.5 from (3, 0), whose neighbour is 2 away: not authentic
                         [5.0, 0.0]])   # 2 from (3, 0): no closer than its neighbour, authentic
    authentic, ratio = formulas.authenticity(train, fake)
    assert abs(authentic - 1 / 3) < 1e-9
    assert abs(ratio - 1.5 / 1.0) < 1e-6  # median 1.5 of (0.2, 1.5, 2) over median 1 of (1, 1, 2)
    copied, copy_ratio = formulas.authenticity(train, train[[0, 2]])
    assert copied == 0.0 and copy_ratio == 0.0
    twins = torch.tensor([[0.0, 0.0], [0.0, 0.0], [4.0, 0.0]])  # a duplicate is the other's neighbour, at 0
    dist, index = formulas.nearest_neighbours(twins, twins, exclude_self=True)
    assert dist.tolist() == [0.0, 0.0, 4.0] and index.tolist()[:2] == [1, 0] and index[2] in (0, 1)
    dists, order = formulas.k_nearest(torch.tensor([[2.9, 0.0]]), train, 3)  # nearest first
    assert order.tolist() == [[2, 1, 0]] and torch.allclose(dists, torch.tensor([[0.1, 1.9, 2.9]], dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be from 1 to the 2 candidate"):
        formulas.k_nearest(train, train, 3, exclude_self=True)
    with pytest.raises(ValueError, match="at least 2 training points"):
        formulas.authenticity(train[:1], fake)


def test_shifts_move_images_with_their_edges_repeated_and_find_shifted_copies():
    import torch

    image = torch.arange(16.0).view(1, 1, 4, 4)
    down_right = formulas.shifted(image, 1, 2)
    assert down_right[0, 0].tolist() == [[0, 0, 0, 1], [0, 0, 0, 1], [4, 4, 4, 5], [8, 8, 8, 9]]
    assert torch.equal(formulas.shifted(image, 0, 0), image)
    assert formulas.shifted(image, -1, 0)[0, 0, :, 0].tolist() == [4, 8, 12, 12]
    dot = torch.full((1, 1, 11, 11), -1.0)
    dot[0, 0, 5, 5] = 1.0  # far enough from the edges that no shift here pushes it off
    train = torch.cat([dot, torch.full((1, 1, 11, 11), 1.0), torch.full((1, 1, 11, 11), -1.0)])
    fake = torch.cat([formulas.shifted(dot, 2, -1), formulas.shifted(dot, 3, 0)])  # moved by 2 and by 3 px
    dist, index = formulas.nearest_neighbours(fake, train, max_shift=2)
    assert dist[0].item() == 0.0 and index[0].item() == 0  # found within 2 px
    assert abs(dist[1].item() - 2.0) < 1e-6 and index[1].item() == 2  # 3 px: out of reach, nearest is blank
    assert formulas.authenticity(train, fake, max_shift=2)[0] == 0.5
    assert formulas.authenticity(train, fake)[0] == 1.0  # without shifts both look new
    spacing, _ = formulas.nearest_neighbours(train, train, exclude_self=True, max_shift=2)
    assert torch.allclose(spacing, torch.tensor([2.0, 2 * 120 ** 0.5, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="two sets of images of one size"):
        formulas.nearest_neighbours(fake.flatten(1), train, max_shift=1)


def test_mirror_finds_mirrored_copies_and_a_training_image_is_not_spaced_from_its_own_mirror():
    import torch

    blank = torch.full((1, 1, 11, 11), -1.0)
    left, right, top = blank.clone(), blank.clone(), blank.clone()
    left[0, 0, 5, 2] = right[0, 0, 5, 8] = top[0, 0, 2, 5] = 1.0  # left and right: each other's mirror image
    train = torch.cat([left, top])
    fake = torch.cat([right, formulas.shifted(right, 0, -1)])  # a mirrored copy, and that moved 1 px
    dist, index = formulas.nearest_neighbours(fake, train, max_shift=2)
    apart = 2 * 2 ** 0.5  # two single-dot images whose dots do not meet
    assert all(abs(d - apart) < 1e-5 for d in dist.tolist())  # upright, the dots never meet within 2 px
    dist, index = formulas.nearest_neighbours(fake, train, max_shift=2, mirror=True)
    assert dist.tolist() == [0.0, 0.0] and index.tolist() == [0, 0]
    assert formulas.authenticity(train, fake, max_shift=2)[0] == 1.0
    assert formulas.authenticity(train, fake, max_shift=2, mirror=True)[0] == 0.0
    # the two orientations of one image are one training image: its spacing is to the other image
    pair = torch.cat([left, right, top])
    spacing, nearest = formulas.nearest_neighbours(pair, pair, exclude_self=True, mirror=True)
    assert spacing.tolist()[:2] == [0.0, 0.0] and nearest.tolist()[:2] == [1, 0]
    assert abs(spacing[2].item() - apart) < 1e-5
    spacing, _ = formulas.nearest_neighbours(pair[[0, 2]], pair[[0, 2]], exclude_self=True, mirror=True)
    assert all(abs(d - apart) < 1e-5 for d in spacing.tolist())
    upright = formulas.paired_distances(fake, torch.cat([right, right]), max_shift=1)
    assert upright.tolist() == [0.0, 0.0] and formulas.paired_distances(fake, torch.cat([left, left])).min() > 2
    with pytest.raises(ValueError, match="images of one size"):
        formulas.nearest_neighbours(fake.flatten(1), train.flatten(1), mirror=True)


@pytest.mark.parametrize("k", [3, 5])
def test_identical_sets_have_full_precision_recall_coverage(k):
    x = np.random.default_rng(5).normal(size=(200, 8))
    p, r = formulas.precision_recall(x, x, k=k)
    d, c = formulas.density_coverage(x, x, k=k)
    assert abs(p - 1) < 1e-12 and abs(r - 1) < 1e-12 and abs(c - 1) < 1e-12
    assert d > 0.5


# --------------------------------------------------------------------------- sliced Wasserstein (SWD)

BINOMIAL_5x5 = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def test_pyramid_steps_match_progans_scipy_definition():
    import scipy.ndimage

    x = torch.randn(3, 2, 20, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # ProGAN's pyr_down: convolve with the binomial kernel, edges mirrored, then every second pixel
    down = scipy.ndimage.convolve(x.numpy(), BINOMIAL_5x5[None, None], mode="mirror")[:, :, ::2, ::2]
    assert np.abs(formulas.pyr_down(x).numpy() - down).max() < 1e-12
    # pyr_up: zeros between the pixels, then the kernel with 4x gain
    spread = np.zeros((3, 2, 40, 48))
    spread[:, :, ::2, ::2] = x.numpy()
    up = scipy.ndimage.convolve(spread, 4 * BINOMIAL_5x5[None, None], mode="mirror")
    assert np.abs(formulas.pyr_up(x).numpy() - up).max() < 1e-12


@pytest.mark.parametrize("size", [32, 33])
def test_laplacian_pyramid_gives_the_image_back(size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    levels = formulas.laplacian_pyramid(x, 2)
    assert [tuple(level.shape[2:]) for level in levels] == [(size, size), ((size + 1) // 2, (size + 1) // 2)]
    back = formulas.pyr_up(levels[1])[:, :, :size, :size] + levels[0]
    assert (back - x).abs().max() < 1e-5
    assert formulas.swd_resolutions(64) == [64, 32, 16] and formulas.swd_resolutions(28) == [28]
    assert formulas.swd_resolutions(15) == [] and formulas.swd_resolutions(65) == [65, 33, 17]


def test_patches_are_whole_patches_of_their_own_image_around_their_centres():
    n, c, h, w = 3, 2, 12, 10
    # every pixel's value says where it is: image, channel, row, column
    i, ch, y, x = torch.meshgrid(*(torch.arange(k) for k in (n, c, h, w)), indexing="ij")
    level = (i * 1000 + ch * 100 + y * 10 + x).float()
    ys, xs = formulas.patch_centres(n, h, w, 5, torch.Generator().manual_seed(0), patch=7)
    patches = formulas.patches_at(level, ys, xs, patch=7)
    assert patches.shape == (n * 5, c, 7, 7)
    for p, patch in enumerate(patches):
        image, cy, cx = p // 5, int(patch[0, 3, 3]) // 10 % 10, int(patch[0, 3, 3]) % 10
        assert 3 <= cy < h - 3 and 3 <= cx < w - 3 and (cy, cx) == (ys[p], xs[p])
        assert torch.equal(patch, level[image, :, cy - 3:cy + 4, cx - 3:cx + 4])


def test_sliced_wasserstein_of_a_shifted_set_is_the_mean_projected_shift():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(500, 6, generator=gen)
    shift = torch.tensor([0.5, -1.0, 0.0, 2.0, 0.0, 0.25])
    directions = formulas.random_directions(6, 40, gen)
    assert torch.allclose(directions.norm(dim=0), torch.ones(40))
    # a shift moves every projection by the same amount, so sorted orders match: W1 = |<shift, d>|
    expected = float((shift @ directions).abs().mean())
    assert abs(formulas.sliced_wasserstein(a, a + shift, directions, chunk=7) - expected) < 1e-5
    assert formulas.sliced_wasserstein(a, a[torch.randperm(500, generator=gen)], directions) < 1e-6
    with pytest.raises(ValueError, match="equally many"):
        formulas.sliced_wasserstein(a, a[:400], directions)
