"""Sample-quality statistics on feature vectors: pure functions, float64 where it matters."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance in float64 (np.cov with N - 1)."""
    x = np.asarray(features, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))  (Heusel et al. 2017, FID).

    tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD
    matrix S1^(1/2) S2 S1^(1/2), which has the same spectrum as S1 S2, so no complex sqrtm is needed.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh(s1)
    sqrt_s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = sqrt_s1 @ s2 @ sqrt_s1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    # a squared distance: float rounding can take identical sets a hair below 0
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean))


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random
    subsets (Binkowski et al. 2018, as in StyleGAN2-ADA's metric). Returns (mean, std over subsets)."""
    real = np.asarray(real, np.float64)
    fake = np.asarray(fake, np.float64)
    d = real.shape[1]
    m = min(subset_size, real.shape[0], fake.shape[0])
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        mmd = (
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
            - 2 * k_xy.mean()
        )
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def inception_score(probs: np.ndarray, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split, mean and std over splits (Salimans et al. 2016).
    Rows are shuffled (seeded) first, so a set stored in class order is not split by class."""
    probs = np.asarray(probs, np.float64)
    probs = probs[np.random.default_rng(seed).permutation(probs.shape[0])]
    scores = []
    for part in np.array_split(probs, splits):
        p_y = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(p_y + 1e-12))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


_CHUNK = 2048  # rows of a distance block: 2048 x 10,000 float64 is 160 MB


def _kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point in the same set."""
    radii = []
    for i in range(0, x.shape[0], _CHUNK):
        d = torch.cdist(x[i : i + _CHUNK], x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at distance 0
    return torch.cat(radii)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): a fake sample is precise if it lies in
    some real sample's k-NN ball; a real sample is recalled if it lies in some fake sample's k-NN ball.
    Distances are taken a block of fakes at a time, so memory stays bounded for large sets."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    real_radii, fake_radii = _kth_neighbour_radii(r, k), _kth_neighbour_radii(f, k)
    precise = torch.zeros(f.shape[0], dtype=torch.bool)
    recalled = torch.zeros(r.shape[0], dtype=torch.bool)
    for i in range(0, f.shape[0], _CHUNK):
        d = torch.cdist(f[i : i + _CHUNK], r)  # [block of fakes, n_real]
        precise[i : i + _CHUNK] = (d <= real_radii[None, :]).any(dim=1)
        recalled |= (d <= fake_radii[i : i + _CHUNK, None]).any(dim=0)
    return precise.double().mean().item(), recalled.double().mean().item()


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): density counts how many real k-NN balls hold each fake
    sample, divided by k; coverage is the share of real balls that hold at least one fake sample."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64)
    real_radii = _kth_neighbour_radii(r, k)
    inside_count = 0
    nearest_fake = torch.full((r.shape[0],), float("inf"), dtype=torch.float64)
    for i in range(0, f.shape[0], _CHUNK):
        d = torch.cdist(f[i : i + _CHUNK], r)  # [block of fakes, n_real]
        inside_count += int((d <= real_radii[None, :]).sum())
        nearest_fake = torch.minimum(nearest_fake, d.min(dim=0).values)
    density = inside_count / (k * f.shape[0])
    coverage = (nearest_fake <= real_radii).double().mean().item()
    return density, coverage


def k_nearest(a: torch.Tensor, b: torch.Tensor, k: int, exclude_self: bool = False,
              max_shift: int = 0, mirror: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a, the Euclidean distances to its k nearest rows of b, nearest first, and their indices
    ([len(a), k] each), a block of a at a time. exclude_self: a and b are one set, and a row is not its own
    neighbour (a duplicate is; with mirror, nor is its own mirror image). max_shift > 0: a and b are images
    [N, C, H, W] of one size, and each distance is the smallest over shifts of the a image by up to that many
    pixels each way (see shifted). mirror: images too, and each distance is also the smallest over the a image
    flipped left-right (and its shifts), for a set trained on with its mirror images (data.mirror)."""
    if (max_shift > 0 or mirror) and (a.dim() != 4 or b.shape[1:] != a.shape[1:]):
        raise ValueError(f"shifts and mirror images need two sets of images of one size [N, C, H, W], got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    moves = shift_moves(max_shift)
    b = b.flatten(1).float()
    if not 1 <= k <= b.shape[0] - exclude_self:
        raise ValueError(f"k must be from 1 to the {b.shape[0] - exclude_self} candidate neighbours, got {k}")
    dists, index = [], []
    for i in range(0, a.shape[0], _CHUNK):
        block = a[i : i + _CHUNK].float()
        d = torch.cdist(block.flatten(1), b)
        candidates = [(block, dy, dx) for dy, dx in moves]
        if mirror:
            flipped = block.flip(-1)
            candidates += [(flipped, dy, dx) for dy, dx in [(0, 0), *moves]]
        for image, dy, dx in candidates:
            torch.minimum(d, torch.cdist(shifted(image, dy, dx).flatten(1), b), out=d)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = float("inf")
        nearest = d.topk(k, dim=1, largest=False)
        dists.append(nearest.values.double())
        index.append(nearest.indices)
    return torch.cat(dists), torch.cat(index)


def paired_distances(a: torch.Tensor, b: torch.Tensor, max_shift: int = 0) -> torch.Tensor:
    """The Euclidean distance between each image of a and the image of b at the same place (images
    [..., C, H, W] of one shape), the smallest over shifts of the a image by up to max_shift pixels each way."""
    if a.shape != b.shape or a.dim() < 3:
        raise ValueError(f"paired distances need two sets of images of one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    lead = a.shape[:-3]
    a, b = a.float().reshape(-1, *a.shape[-3:]), b.float().reshape(-1, *b.shape[-3:])  # shifted pads 4-D
    dists = (a - b).flatten(1).norm(dim=1)
    for dy, dx in shift_moves(max_shift):
        torch.minimum(dists, (shifted(a, dy, dx) - b).flatten(1).norm(dim=1), out=dists)
    return dists.view(lead)


def nearest_neighbours(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False,
                       max_shift: int = 0, mirror: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a, the Euclidean distance to its nearest row of b and that row's index (see k_nearest)."""
    dists, index = k_nearest(a, b, 1, exclude_self, max_shift, mirror)
    return dists[:, 0], index[:, 0]


def shift_moves(max_shift: int) -> list[tuple[int, int]]:
    """Every (dy, dx) of up to max_shift pixels each way but (0, 0): the shifts a distance takes its smallest over."""
    return [(dy, dx) for dy in range(-max_shift, max_shift + 1) for dx in range(-max_shift, max_shift + 1)
            if dy or dx]


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Images [N, C, H, W] moved dy pixels down and dx right (negative: up, left), the edge pixels repeated
    into the gap they leave."""
    if dy == dx == 0:
        return images
    s = max(abs(dy), abs(dx))
    padded = torch.nn.functional.pad(images.float(), (s, s, s, s), mode="replicate")
    height, width = images.shape[-2:]
    return padded[..., s - dy : s - dy + height, s - dx : s - dx + width]


def authenticity(train: torch.Tensor, fake: torch.Tensor, max_shift: int = 0,
                 mirror: bool = False) -> tuple[float, float]:
    """Authenticity (Alaa et al. 2022) and the nearest-neighbour distance ratio, for copies of training data.
    A sample is authentic when it lies no closer to its nearest training point than that point lies to its
    own nearest other training point; authenticity is the authentic share. The ratio is the median distance
    of a sample to its nearest training point over the median distance of a training point to its nearest
    other one: about 1 for fresh draws of the training distribution, 0 for copies. With max_shift > 0 (images
    [N, C, H, W]), every distance is the smallest over shifts of up to that many pixels, so a copy moved by a
    pixel or two is still a copy. With mirror, also the smallest over each image flipped left-right: the
    training set is taken with its mirror images (data.mirror), so a mirrored copy is a copy, and a training
    image's spacing is to the other images, not to its own mirror image."""
    if train.shape[0] < 2 or fake.shape[0] < 1:
        raise ValueError(f"authenticity needs at least 2 training points and 1 sample, got {train.shape[0]} and "
                         f"{fake.shape[0]}")
    train_nn, _ = nearest_neighbours(train, train, exclude_self=True, max_shift=max_shift, mirror=mirror)
    fake_nn, nearest = nearest_neighbours(fake, train, max_shift=max_shift, mirror=mirror)
    authentic = (fake_nn >= train_nn[nearest]).double().mean().item()
    median_train = train_nn.median().item()
    ratio = fake_nn.median().item() / median_train if median_train > 0 else float("inf")
    return authentic, ratio


def class_histogram(probs: np.ndarray, num_classes: int) -> dict[str, float | int | list[int]]:
    """Predicted-class counts, classes covered, KL(histogram || uniform) in nats, mean confidence."""
    probs = np.asarray(probs, np.float64)
    counts = np.bincount(probs.argmax(axis=1), minlength=num_classes)
    p = counts / counts.sum()
    nz = p > 0
    kl = float((p[nz] * np.log(p[nz] * num_classes)).sum())
    return {
        "counts": counts.tolist(),
        "covered": int(nz.sum()),
        "kl_uniform": kl,
        "confidence": float(probs.max(axis=1).mean()),
    }


def mode_statistics(triples: np.ndarray, num_modes: int = 1000) -> tuple[int, float]:
    """Stacked MNIST: modes seen among num_modes and KL(generated mode distribution || uniform) in nats
    (the protocol of VEEGAN and PacGAN)."""
    counts = np.bincount(np.asarray(triples, np.int64), minlength=num_modes)
    p = counts / counts.sum()
    nz = p > 0
    return int(nz.sum()), float((p[nz] * np.log(p[nz] * num_modes)).sum())


# ------------------------------------------------------------------ sliced Wasserstein distance (ProGAN)

# The 5x5 binomial kernel of cv2.pyrDown / pyrUp, as Karras et al. (2018) build their Laplacian pyramid.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(images: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """The binomial kernel over each channel, edges mirrored without repeating the edge pixel (scipy's
    'mirror', torch's 'reflect')."""
    c = images.shape[1]
    kernel = (torch.outer(_BINOMIAL, _BINOMIAL) * gain).to(images)[None, None].expand(c, 1, 5, 5)
    return torch.nn.functional.conv2d(torch.nn.functional.pad(images, (2, 2, 2, 2), mode="reflect"), kernel,
                                      groups=c)


def pyr_down(images: torch.Tensor) -> torch.Tensor:
    """Blur, then every second pixel: half the size (cv2.pyrDown)."""
    return _blur(images)[:, :, ::2, ::2]


def pyr_up(images: torch.Tensor) -> torch.Tensor:
    """Zeros between the pixels, then the blur with 4x gain: twice the size (cv2.pyrUp)."""
    n, c, h, w = images.shape
    spread = images.new_zeros(n, c, 2 * h, 2 * w)
    spread[:, :, ::2, ::2] = images
    return _blur(spread, gain=4.0)


def laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels, full size first: each level minus the upsampled next one; the last level is the
    blurred, downsampled image itself. pyr_up of each coarser level plus the finer band gives the image back."""
    pyramid = [images.float()]
    for _ in range(1, levels):
        pyramid.append(pyr_down(pyramid[-1]))
        h, w = pyramid[-2].shape[2:]  # an odd size comes back one pixel larger
        pyramid[-2] = pyramid[-2] - pyr_up(pyramid[-1])[:, :, :h, :w]
    return pyramid


def swd_resolutions(size: int) -> list[int]:
    """The pyramid's sizes, halving from the image's own down to 16 (the coarsest ProGAN compares); an odd
    size halves up, as pyr_down does."""
    sizes = []
    while size >= 16:
        sizes.append(size)
        size = -(-size // 2)
    return sizes


def patch_centres(n: int, h: int, w: int, per_image: int, generator: torch.Generator,
                  patch: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of `per_image` random patch centres in each of n images of h x w, every patch wholly
    inside its image: two [n * per_image] tensors, image by image."""
    r = patch // 2
    return (torch.randint(r, h - r, (n * per_image,), generator=generator),
            torch.randint(r, w - r, (n * per_image,), generator=generator))


def patches_at(level: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, patch: int = 7) -> torch.Tensor:
    """The patch x patch pixels (all channels) around each centre, len(ys) // N of them per image in order:
    [len(ys), C, patch, patch]."""
    r = patch // 2
    offsets = torch.arange(-r, r + 1)
    img = torch.arange(level.shape[0]).repeat_interleave(len(ys) // level.shape[0])
    rows = (ys[:, None] + offsets)[:, :, None]  # [P, patch, 1]
    cols = (xs[:, None] + offsets)[:, None, :]  # [P, 1, patch]
    return level.permute(0, 2, 3, 1)[img[:, None, None], rows, cols].permute(0, 3, 1, 2)


def normalized_descriptors(descriptors: torch.Tensor) -> torch.Tensor:
    """Each channel to zero mean and unit standard deviation over the whole set, then flattened: [P, C*patch^2]."""
    mean = descriptors.mean(dim=(0, 2, 3), keepdim=True)
    std = descriptors.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return ((descriptors - mean) / std.clamp_min(1e-8)).flatten(1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor, chunk: int = 32) -> float:
    """Mean over unit `directions` [D, K] of the 1-D Wasserstein-1 distance between the projections of the
    equally many rows of `a` and `b` (sorted projections matched in order)."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein compares equally many descriptors, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")

    def summed(start: int) -> float:  # numpy's SIMD sort is several times torch's on a CPU, and frees the GIL
        d = directions[:, start:start + chunk].T.to(a)
        sorted_a, sorted_b = (np.sort((d @ x.T).cpu().numpy(), axis=1) for x in (a, b))
        return float(np.abs(sorted_a - sorted_b).mean(axis=1, dtype=np.float64).sum())

    # chunks of directions bound the [chunk, P] projections' memory; a thread per core sorts them
    with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
        total = sum(pool.map(summed, range(0, directions.shape[1], chunk)))
    return total / directions.shape[1]


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` directions drawn uniformly on the unit sphere in `dim` dimensions: [dim, count]."""
    d = torch.randn(dim, count, generator=generator)
    return d / d.norm(dim=0, keepdim=True)
