"""Evaluation: fake and real image sets, features computed once and shared by every metric, real
statistics cached on disk, and a protocol recorded beside every number."""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import replace_atomically
from ..data import STACKED_SETS
from ..device import pick_device
from ..errors import UserError
from ..registry import Registry
from . import formulas
from .classifier import NUM_CLASSES, WEIGHTS_SHA256, classify, load_classifier

METRICS = Registry("metric")
OFFLINE_DEFAULT = ["fd_digits", "kid_digits", "is_digits", "pr", "dc", "classes"]
DIGIT_EXTRACTOR = "ganforge-digits-cnn"
DIGIT_RESIZE = "28x28 bilinear antialiased (torch.nn.functional.interpolate) when not 28x28; RGB averaged to grey"
MODES_N = 26_000  # the PacGAN / VEEGAN Stacked MNIST protocol
# k-NN metrics compare every fake with every real image: past this many real images, a seeded subset
# (Naeem et al. use 10,000 real and 10,000 fake)
KNN_MAX_REAL = 10_000
# Which way is better, for every value a metric reports (used to keep the best checkpoint).
BEST_DIRECTION = {
    "fd_digits": "min", "kid_digits": "min", "is_digits": "max", "precision": "max", "recall": "max",
    "density": "max", "coverage": "max", "classes_covered": "max", "classes_kl": "min",
    "classes_confidence": "max", "modes": "max", "modes_kl": "min", "fid": "min", "kid": "min", "is": "max",
    "precision_inception": "max", "recall_inception": "max", "class_acc": "max", "fd_digits_per_class": "min",
    "swd": "min",
}

# The values each registered metric reports (what eval.best_metric may name).
METRIC_VALUES = {
    "fd_digits": ("fd_digits",), "kid_digits": ("kid_digits",), "is_digits": ("is_digits", "is_digits_real"),
    "pr": ("precision", "recall"), "dc": ("density", "coverage"),
    "classes": ("classes_covered", "classes_kl", "classes_confidence"), "modes": ("modes", "modes_kl"),
    "class_acc": ("class_acc",), "fd_digits_per_class": ("fd_digits_per_class",), "fid": ("fid",),
    "kid": ("kid",), "is": ("is",), "pr_inception": ("precision_inception", "recall_inception"),
    "copies": ("authenticity", "nn_ratio"), "swd": ("swd",),
}

DIGIT_DATASETS = ("mnist5k", "mnist")  # what the digit classifier was made for
INCEPTION_METRICS = ("fid", "kid", "is", "pr_inception")
PIXEL_METRICS = ("copies", "swd")  # read the pixels themselves, so they mean the same on any images


def digit_metrics_note(dataset: str, metrics: list[str]) -> str | None:
    """A note when metrics on the digit classifier's features are asked of images that are not digits: the
    numbers still order runs on that same data, but nothing calibrates them and no paper reports them."""
    digit_metrics = [m for m in metrics if m not in INCEPTION_METRICS + PIXEL_METRICS]
    if dataset in STACKED_SETS:  # modes reads each channel as a digit; the others see the channels averaged
        digit_metrics = [m for m in digit_metrics if m != "modes"]
    if not digit_metrics or dataset in DIGIT_DATASETS:
        return None
    if dataset in STACKED_SETS:
        kind, papers = "are three digits, averaged into one by these metrics", "modes (each channel read as a digit)"
    else:
        kind = "may not be digits" if dataset.startswith("folder:") else "are not digits"
        papers = ("--metrics fid,kid,is with --inception-weights; for one that reads any images and needs no "
                  "download, swd")
    return (f"{', '.join(digit_metrics)} read images through ganforge's MNIST digit classifier and {dataset}'s "
            f"images {kind}: compare such numbers only between runs on the same data; for scores comparable with "
            f"papers use {papers}")


def check_sample_memory(n: int, channels: int, img_size: int, cure: str) -> None:
    """Refuse an evaluation whose n generated images (held as float32 while the metrics read them) cannot fit
    in memory, before drawing any."""
    from ..device import check_memory

    check_memory(n * channels * img_size * img_size * 4,
                 f"the {n:,} samples of {channels}x{img_size}x{img_size} to evaluate", cure)


def reference_label(reference: str | None) -> str | None:
    """A result's reference as a table shows it: a folder's split apart from its path (folder:~/imgs (train)),
    where the stored protocol string folder:~/imgs/train reads as a subfolder that does not exist."""
    if reference is None or not reference.startswith("folder:") or "/" not in reference:
        return reference
    path, split = reference.rsplit("/", 1)
    return f"{path} ({split})"


def log_digit_metrics_note(dataset: str, metrics: list[str], log: Callable[[str], None] | None) -> None:
    """Pass digit_metrics_note's line, if any, to `log` as a note; an unknown metric is refused first, so no
    note comes before its error."""
    for name in metrics:
        METRICS.get(name)
    note = digit_metrics_note(dataset, metrics)
    if note and log is not None:
        log(f"note: {note}")


def metric_names() -> list[str]:
    return METRICS.names()


def cache_dir() -> Path:
    from ..data import cache_root

    return cache_root() / "stats"


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels a saved PNG holds, so a run and its exported images score the same."""
    from ..report import to_uint8

    return to_uint8(images).float().div(127.5).sub(1)


class ImageSet:
    """A named set of images in [-1, 1] [N, C, H, W], with a key for caching its features."""

    def __init__(self, images: torch.Tensor, name: str, split: str, cache_key: str | None = None,
                 labels: torch.Tensor | None = None, classes: list[str] | None = None,
                 fingerprint: str | None = None, mirrored: bool = False) -> None:
        self.images = images
        self.name = name
        self.split = split
        self.cache_key = cache_key  # None: never cached (generated images)
        # a digest of the pixels at this size and channels, and labels: what name/split cannot tell apart
        self.fingerprint = fingerprint
        self.labels = labels  # int64 [N]: dataset labels, or the classes a conditional G was asked for
        self.classes = classes  # the name of each label; None: label c is the digit c
        self.mirrored = mirrored  # trained on with each image flipped left-right too (data.mirror): copies

    def __len__(self) -> int:
        return self.images.shape[0]


class EvalContext:
    """What metrics need, computed lazily and at most once: digit features and probabilities of the fake
    and real sets (real ones from the on-disk cache when present). `fake` and `real` may each be a function
    that makes the set, called when a metric first needs it: modes draws its own 26,000 samples (fake_fn) and
    compares them with the uniform distribution, so it needs neither."""

    def __init__(self, fake: ImageSet | Callable[[], ImageSet], real: ImageSet | Callable[[], ImageSet] | None,
                 device: str | torch.device = "cpu", seed: int = 0,
                 fake_fn: Callable[[int], torch.Tensor] | None = None, inception_weights: str | None = None,
                 inception_extractor: str = "inception-v3-compat") -> None:
        self._fake = fake
        self._real = real
        self.device = pick_device(str(device))  # a device this machine lacks is one line, not a traceback
        self.seed = seed
        self.fake_fn = fake_fn  # draws more fakes when a protocol asks for its own n (modes)
        self.inception_weights = inception_weights
        self.inception_extractor = inception_extractor

    @property
    def fake(self) -> ImageSet:
        if callable(self._fake):
            self._fake = self._fake()
        return self._fake

    @property
    def real(self) -> ImageSet | None:
        if callable(self._real):
            self._real = self._real()
        return self._real

    @cached_property
    def classifier(self):
        return load_classifier(str(self.device))

    def _digits(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = classify(self.classifier, images)
        return feats.double().numpy(), probs.double().numpy()

    @cached_property
    def fake_digits(self) -> tuple[np.ndarray, np.ndarray]:
        return self._digits(self.fake.images)

    @cached_property
    def real_digits(self) -> tuple[np.ndarray, np.ndarray]:
        if self.real is None:
            raise UserError("this metric needs real images: evaluate a run, or pass --real")
        if self.real.cache_key is None:
            return self._digits(self.real.images)
        key = f"{self.real.cache_key}-{DIGIT_EXTRACTOR}-{WEIGHTS_SHA256[:12]}-n{len(self.real)}"
        path = cache_dir() / f"{key}.npz"
        if path.is_file():
            try:
                with np.load(path) as cached:
                    return cached["features"], cached["probs"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                pass  # a damaged cache entry (numpy checks the CRCs) is recomputed and replaced
        feats, probs = self._digits(self.real.images)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replace_atomically(path) as f:
                np.savez(f, features=feats.astype(np.float64), probs=probs.astype(np.float64))
            drop_stale_folder_entries(path)
        except OSError:
            pass  # a read-only or full cache only costs the features' recomputation next time
        return feats, probs

    def digit_protocol(self, real: bool = True, n_fake: int | None = None) -> dict[str, Any]:
        """The protocol fields of a metric on the digit classifier; real=False for one that reads no real set,
        n_fake for one that scores other samples than the fake set's."""
        reference = self.real if real else None
        return {
            "n_fake": len(self.fake) if n_fake is None else n_fake,
            "n_real": len(reference) if reference is not None else 0,
            "reference": f"{reference.name}/{reference.split}" if reference is not None else None,
            "reference_fingerprint": reference.fingerprint if reference is not None else None,
            "extractor": DIGIT_EXTRACTOR,
            "extractor_sha256": WEIGHTS_SHA256,
            "resize": DIGIT_RESIZE,
        }


def drop_stale_folder_entries(path: Path) -> None:
    """Remove the cached features of the same image folder, read the same way, from before its images
    changed (names differ in the content fingerprint and n alone), so that editing a folder does not grow the
    cache. `path` is a cache file named folder-PATHHASH-CONTENTHASH-...-nN plus a fixed tail (.npz, ...)."""
    match = re.fullmatch(r"(folder-[0-9a-f]{10}-)([0-9a-f]{12})(-.+)-n\d+(\D.*)", path.name)
    if match is None:
        return
    folder, content, reading, tail = match.groups()
    same_reading = re.compile(rf"{folder}([0-9a-f]{{12}}){re.escape(reading)}-n\d+{re.escape(tail)}")
    for stale in path.parent.glob(f"{folder}*"):
        found = same_reading.fullmatch(stale.name)
        if found and found.group(1) != content:
            stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------- the metrics


Result = list[tuple[str, float | int | list, dict[str, Any]]]  # (name, value, protocol)


@METRICS.register("fd_digits")
def fd_digits(ctx: EvalContext) -> Result:
    """Frechet distance between Gaussians fitted (float64) to the digit classifier's 128-d penultimate
    features of fake and real images; FID's formula (Heusel et al. 2017) on an MNIST-specific extractor."""
    for which, features in (("generated", ctx.fake_digits[0]), ("real", ctx.real_digits[0])):
        check_count("fd_digits", len(features), which, 2, "fits a covariance to each set")
    mu_f, sigma_f = formulas.feature_stats(ctx.fake_digits[0])
    mu_r, sigma_r = formulas.feature_stats(ctx.real_digits[0])
    return [("fd_digits", formulas.frechet_distance(mu_f, sigma_f, mu_r, sigma_r), ctx.digit_protocol())]


KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # StyleGAN2-ADA's and torch-fidelity's: subsets of the smaller set past it


@METRICS.register("kid_digits")
def kid_digits(ctx: EvalContext) -> Result:
    """Kernel inception distance (Binkowski et al. 2018) on the digit features: unbiased MMD^2 with the
    cubic polynomial kernel, mean over 100 subsets of up to 1,000."""
    for which, features in (("generated", ctx.fake_digits[0]), ("real", ctx.real_digits[0])):
        check_count("kid_digits", len(features), which, 2, "compares pairs of different images within each set")
    real, fake = ctx.real_digits[0], ctx.fake_digits[0]
    mean, std = formulas.kernel_inception_distance(real, fake, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE,
                                                   seed=ctx.seed)
    protocol = {**ctx.digit_protocol(), "subsets": KID_SUBSETS,
                "subset_size": min(KID_SUBSET_SIZE, len(real), len(fake)), "std": std}  # the size it drew
    return [("kid_digits", mean, protocol)]


IS_SPLITS = 10


def check_count(metric: str, n: int, which: str, minimum: int, why: str) -> None:
    """Refuse a set too small for the metric's formula (it would give nan, an error deep in numpy, or a
    number that means nothing), saying how many it needs and why."""
    if n < minimum:
        more = "raise --n (a --fake set: give more images)" if which == "generated" else "use a larger reference set"
        raise UserError(f"{metric} {why}, so it needs at least {minimum} {which} images, got {n}; {more}")


def check_is_splits(metric: str, n: int, which: str) -> None:
    """An Inception Score of fewer images than splits would average empty splits into nan."""
    check_count(metric, n, which, IS_SPLITS, f"scores {IS_SPLITS} splits of the {which} images")


@METRICS.register("is_digits")
def is_digits(ctx: EvalContext) -> Result:
    """Classifier-based Inception Score (Salimans et al. 2016) with 10 splits; the same score of the real
    reference set is reported beside it as the ceiling (10 is the most for 10 classes)."""
    check_is_splits("is_digits", len(ctx.fake), "generated")
    mean, std = formulas.inception_score(ctx.fake_digits[1], splits=IS_SPLITS)
    protocol = {**ctx.digit_protocol(), "splits": IS_SPLITS, "std": std}
    result: Result = [("is_digits", mean, protocol)]
    if ctx.real is not None:
        check_is_splits("is_digits", len(ctx.real), "real")
        real_mean, real_std = formulas.inception_score(ctx.real_digits[1], splits=IS_SPLITS)
        result.append(("is_digits_real", real_mean, {**protocol, "std": real_std}))
    return result


def _knn_sets(ctx: EvalContext, metric: str, k: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Real and fake digit features for a k-nearest-neighbour metric, and its protocol: at most
    KNN_MAX_REAL real images (a subset seeded by the evaluation's seed), more than k in each set."""
    real, fake = ctx.real_digits[0], ctx.fake_digits[0]
    protocol = {**ctx.digit_protocol(), "k": k}
    real = _knn_real_subset(real, ctx, protocol)
    for which, size in (("generated", len(fake)), ("real", len(real))):
        if size <= k:
            raise UserError(f"{metric} finds each image's {k} nearest neighbours, so it needs at least {k + 1} "
                            f"{which} images, got {size}; raise --n")
    return real, fake, protocol


def _knn_real_subset(real: Any, ctx: EvalContext, protocol: dict[str, Any]) -> Any:
    """The real rows a k-NN metric compares with: all, or past KNN_MAX_REAL a subset seeded by the evaluation's
    seed, recorded in the protocol."""
    if len(real) <= KNN_MAX_REAL:
        return real
    pick = np.sort(np.random.default_rng(ctx.seed).choice(len(real), KNN_MAX_REAL, replace=False))
    protocol.update(n_real=KNN_MAX_REAL, real_subset=f"{KNN_MAX_REAL} of {len(real)}, seed {ctx.seed}")
    return real[torch.from_numpy(pick)] if isinstance(real, torch.Tensor) else real[pick]


@METRICS.register("pr")
def precision_recall(ctx: EvalContext) -> Result:
    """Improved precision and recall (Kynkaanniemi et al. 2019), k = 3, on the digit features."""
    real, fake, protocol = _knn_sets(ctx, "pr", 3)
    p, r = formulas.precision_recall(real, fake, k=3)
    return [("precision", p, protocol), ("recall", r, protocol)]


@METRICS.register("dc")
def density_coverage(ctx: EvalContext) -> Result:
    """Density and coverage (Naeem et al. 2020), k = 5, on the digit features."""
    real, fake, protocol = _knn_sets(ctx, "dc", 5)
    d, c = formulas.density_coverage(real, fake, k=5)
    return [("density", d, protocol), ("coverage", c, protocol)]


def _pixel_sets(ctx: EvalContext, what: str, how: str) -> tuple[ImageSet, ImageSet]:
    """The real and fake sets of a metric that reads pixels: both there, their images of one shape."""
    real, fake = ctx.real, ctx.fake
    if real is None:
        raise UserError(f"{what}: evaluate a run, or pass --real")
    if real.images.shape[1:] != fake.images.shape[1:]:
        raise UserError(f"{how}, but the generated ones are {tuple(fake.images.shape[1:])} and the real ones "
                        f"{tuple(real.images.shape[1:])}")
    return real, fake


PIXEL_EXTRACTOR = "pixels (L2 over the images in [-1, 1])"
COPIES_MAX_SHIFT = 2  # copies: distances are the smallest over shifts of up to this many pixels each way


@METRICS.register("copies")
def copies(ctx: EvalContext) -> Result:
    """Whether G copies its training images, by the Euclidean distance between images (pixels in [-1, 1], at
    the run's size; no features, so any images), each the smallest over shifts of one image by up to
    COPIES_MAX_SHIFT pixels each way, so that a copy moved by a pixel or two still counts as one:
    - authenticity (Alaa et al. 2022): the share of samples that lie no closer to their nearest training
      image than that image lies to its own nearest other one. Copies score 0; real digits held out of the
      bundled 5,000 score 0.59-0.60 against the other 4,000; samples unlike any training image (blurs,
      a collapse) score near 1, so it flags copying, not quality.
    - nn_ratio: the median distance of a sample to its nearest training image over the median distance of
      a training image to its nearest other one: about 1 for new draws of the data (held-out digits 1.003),
      towards 0 for copies, above 1 for samples far from every training image.
    At most KNN_MAX_REAL training images (a subset seeded by the evaluation's seed). With a run, the
    training images are its own, data.max_images subset included, and for a run with data.mirror (D saw
    each image flipped left-right too) every distance is also the smallest over the mirror image, so that a
    mirrored copy counts as a copy (`mirror` in the protocol)."""
    real, fake = _pixel_sets(ctx, "copies compares samples with the training images",
                             "copies compares images pixel by pixel")
    protocol = {**ctx.digit_protocol(), "extractor": PIXEL_EXTRACTOR, "extractor_sha256": None,
                "resize": "none: the images at the evaluated size", "max_shift": COPIES_MAX_SHIFT}
    train = _knn_real_subset(real.images, ctx, protocol)
    if len(train) < 2:
        raise UserError(f"copies needs at least 2 training images to measure their spacing, got {len(train)}")
    if real.mirrored:
        protocol["mirror"] = True
    authentic, ratio = formulas.authenticity(train.cpu(), fake.images.cpu(), max_shift=COPIES_MAX_SHIFT,
                                             mirror=real.mirrored)
    return [("authenticity", authentic, protocol), ("nn_ratio", ratio, protocol)]


SWD_PATCHES_PER_IMAGE = 128  # Karras et al. 2018 (ProGAN): 7x7 patches, 128 an image at each level,
SWD_PATCH = 7  # 4 x 128 random directions, each level's value x 1e3
SWD_DIRECTIONS = 512
SWD_BATCH = 500  # images whose pyramid is held at a time
SWD_EXTRACTOR = "Laplacian pyramid, 7x7 patches normalised per channel and set (Karras et al. 2018)"


@METRICS.register("swd")
def swd(ctx: EvalContext) -> Result:
    """Sliced Wasserstein distance between the patches of fake and real images (Karras et al. 2018, ProGAN's
    SWD; no features and no download, so it means the same on any images): each image's Laplacian pyramid
    from its own size down to 16 px, 128 random 7x7 patches (all channels) per image and level, each
    channel normalised to zero mean and unit variance over its set, then the Wasserstein-1 distance of the
    two sets' patches along 512 random directions, averaged. The value is the mean over levels x 1e3 (the
    paper's SWDx1e3_avg); the protocol keeps each level's (fine detail at the full size, layout at 16 px).
    Both sets give equally many images: the larger is cut to the smaller by a subset seeded by the seed."""
    real, fake = _pixel_sets(ctx, "swd compares generated images with real ones",
                             "swd compares patches of equal images")
    sizes = formulas.swd_resolutions(min(fake.images.shape[2:]))
    if not sizes:
        raise UserError(f"swd compares Laplacian pyramid levels from the image size down to 16 px, so it needs "
                        f"images of at least 16x16, got {tuple(fake.images.shape[2:])}")
    n = min(len(real), len(fake))
    check_count("swd", n, "generated" if len(fake) <= len(real) else "real", 2,
                "normalises each set's patches by their spread")
    generator = torch.Generator().manual_seed(ctx.seed)
    protocol = {**ctx.digit_protocol(), "n_fake": n, "n_real": n, "extractor": SWD_EXTRACTOR,
                "extractor_sha256": None, "resize": "none: the images at the evaluated size",
                "patches_per_image": SWD_PATCHES_PER_IMAGE, "patch": SWD_PATCH, "directions": SWD_DIRECTIONS}
    subsets = []
    for which, images in (("real", real.images), ("fake", fake.images)):
        if len(images) > n:
            pick = torch.randperm(len(images), generator=generator)[:n].sort().values
            images = images[pick]
            protocol[f"{which}_subset"] = f"{n} of {len(getattr(ctx, which))}, seed {ctx.seed}"
        subsets.append(images)
    # every random draw first, in one order, so the value does not depend on how the images are batched
    h, w = fake.images.shape[2:]
    shapes = [(-(-h // 2**i), -(-w // 2**i)) for i in range(len(sizes))]  # pyr_down rounds odd sizes up
    centres, directions = [], []
    for lh, lw in shapes:
        centres.append([formulas.patch_centres(n, lh, lw, SWD_PATCHES_PER_IMAGE, generator, SWD_PATCH)
                        for _ in subsets])
        directions.append(formulas.random_directions(fake.images.shape[1] * SWD_PATCH**2, SWD_DIRECTIONS,
                                                     generator))
    descriptors: list[list[list[torch.Tensor]]] = [[[] for _ in subsets] for _ in sizes]
    per_batch = SWD_BATCH * SWD_PATCHES_PER_IMAGE
    for k, images in enumerate(subsets):
        for start in range(0, n, SWD_BATCH):  # a batch's pyramid at a time bounds the memory to the patches
            pyramid = formulas.laplacian_pyramid(images[start:start + SWD_BATCH].cpu(), len(sizes))
            for i, level in enumerate(pyramid):
                ys, xs = (c[start * SWD_PATCHES_PER_IMAGE:start * SWD_PATCHES_PER_IMAGE + per_batch]
                          for c in centres[i][k])
                descriptors[i][k].append(formulas.patches_at(level, ys, xs, SWD_PATCH))
    per_level = {}
    for i, size in enumerate(sizes):
        a, b = (formulas.normalized_descriptors(torch.cat(parts)) for parts in descriptors[i])
        descriptors[i] = []
        per_level[str(size)] = formulas.sliced_wasserstein(a, b, directions[i]) * 1e3
    protocol["per_level"] = per_level
    return [("swd", float(np.mean(list(per_level.values()))), protocol)]


@METRICS.register("classes")
def classes(ctx: EvalContext) -> Result:
    """Histogram of the classifier's predicted classes over fakes: classes covered (of 10),
    KL(histogram || uniform) in nats, mean top-class confidence."""
    hist = formulas.class_histogram(ctx.fake_digits[1], NUM_CLASSES)
    protocol = {**ctx.digit_protocol(), "counts": hist["counts"]}
    return [("classes_covered", hist["covered"], protocol), ("classes_kl", hist["kl_uniform"], protocol),
            ("classes_confidence", hist["confidence"], protocol)]


def class_digits(classes: list[str]) -> list[int] | None:
    """The digit each class name names ("7", or torchvision MNIST's "7 - seven"), label by label; None when
    a name is not a digit or two name the same one, so the digit classifier cannot judge the classes."""
    digits = []
    for name in classes:
        match = re.fullmatch(r"\s*(\d)(\s+-.*)?\s*", name)
        if match is None:
            return None
        digits.append(int(match.group(1)))
    return digits if len(set(digits)) == len(digits) else None


def not_digit_classes(classes: list[str]) -> str:
    """class_acc's refusal for classes that are not digits."""
    shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
    return (f"class_acc asks the digit classifier whether each sample shows the digit G was asked for, but this "
            f"model's classes ({shown}) are not the digits 0-9; fd_digits_per_class compares each class with "
            "its own real images instead")


def _requested_labels(ctx: EvalContext) -> np.ndarray:
    if ctx.fake.labels is None:
        raise UserError("this metric needs samples asked for a class: a conditional generator's (train with "
                        "model.n_classes > 0), or --fake images labelled by class (subfolders, or an .npz with labels)")
    return ctx.fake.labels.cpu().numpy()


@METRICS.register("class_acc")
def class_acc(ctx: EvalContext) -> Result:
    """Share of conditional samples that the digit classifier assigns to the class G was asked for
    (1.0 = always right, 0.1 = chance for 10 classes), with the accuracy per requested class."""
    labels = _requested_labels(ctx)
    if ctx.fake.classes is None:
        if labels.max() >= NUM_CLASSES:
            raise UserError(f"class_acc checks digit classes 0-{NUM_CLASSES - 1}; this generator has labels up "
                            f"to {labels.max()}")
        classes, digits = [str(c) for c in range(NUM_CLASSES)], list(range(NUM_CLASSES))
    else:
        classes, digits = ctx.fake.classes, class_digits(ctx.fake.classes)
        if digits is None:
            raise UserError(not_digit_classes(classes))
    wanted = np.asarray(digits)[labels]  # the digit each sample was asked to show
    right = ctx.fake_digits[1].argmax(1) == wanted
    per_class = [float(right[labels == c].mean()) if (labels == c).any() else None for c in range(len(classes))]
    protocol = {**ctx.digit_protocol(), "per_class": per_class, "classes": list(classes)}
    return [("class_acc", float(right.mean()), protocol)]


@METRICS.register("fd_digits_per_class")
def fd_digits_per_class(ctx: EvalContext) -> Result:
    """fd_digits within each class: conditional samples of class c against the real images labelled c; the
    value is the mean over classes and the protocol lists each class's distance. Low only when every class
    looks right and varied, which the unconditional fd_digits cannot tell apart from a label mix-up."""
    labels = _requested_labels(ctx)
    if ctx.real is None or ctx.real.labels is None:
        raise UserError("fd_digits_per_class needs labelled real images")
    real_labels = ctx.real.labels.cpu().numpy()
    per_class = []
    for c in range(int(max(labels.max(), real_labels.max())) + 1):
        fake_c, real_c = ctx.fake_digits[0][labels == c], ctx.real_digits[0][real_labels == c]
        if len(fake_c) < 2 or len(real_c) < 2:
            per_class.append(None)
            continue
        mu_f, sigma_f = formulas.feature_stats(fake_c)
        mu_r, sigma_r = formulas.feature_stats(real_c)
        per_class.append(formulas.frechet_distance(mu_f, sigma_f, mu_r, sigma_r))
    scored = [v for v in per_class if v is not None]
    if not scored:
        raise UserError("fd_digits_per_class found no class with samples in both the fake and real sets")
    protocol = {**ctx.digit_protocol(), "per_class": per_class}
    return [("fd_digits_per_class", float(np.mean(scored)), protocol)]


MODES_NEED_COLOUR = "the modes metric needs 3-channel Stacked MNIST samples (train on stacked-mnist5k or stacked-mnist)"


@METRICS.register("modes")
def modes(ctx: EvalContext) -> Result:
    """Stacked MNIST mode coverage (VEEGAN / PacGAN protocol): 26,000 samples, each of the three channels
    classified as a digit, the number of the 1,000 digit triples seen and KL(triples || uniform)."""
    if ctx.fake_fn is not None:
        images = ctx.fake_fn(MODES_N)
    else:  # a fixed set: the protocol's 26,000, a seeded subset when there are more
        images = ctx.fake.images
        if images.shape[0] > MODES_N:
            pick = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(ctx.seed))[:MODES_N]
            images = images[pick]
    if images.shape[1] != 3:
        raise UserError(MODES_NEED_COLOUR)
    n, _, h, w = images.shape
    _, probs = classify(ctx.classifier, images.reshape(n * 3, 1, h, w))  # every channel is one digit
    digits = probs.argmax(1).view(n, 3).numpy()
    triples = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]
    seen, kl = formulas.mode_statistics(triples, 1000)
    protocol = {**ctx.digit_protocol(real=False, n_fake=int(images.shape[0])), "reference": "uniform-1000",
                # where the KL comes from: each channel's digit histogram against uniform over 10 (with
                # independent channels the triple KL is their sum), and how sure the classifier was
                "channel_kl": [formulas.mode_statistics(digits[:, c], 10)[1] for c in range(3)],
                "channel_digits": [(np.bincount(digits[:, c], minlength=10) / n).round(5).tolist() for c in range(3)],
                "mean_confidence": float(probs.max(1).values.mean())}
    return [("modes", seen, protocol), ("modes_kl", kl, protocol)]


# ------------------------------------------------------------------------------------------ running


def _version() -> str:
    from .. import __version__

    return __version__


def metric_list(metrics: str | Sequence[str]) -> list[str]:
    """Metric names as a list, each once, in the order given: a lone string is one name or a comma-separated
    list, as --metrics takes them (iterated as it is, "fd_digits" would be the metrics f, d, _, ...)."""
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    return list(dict.fromkeys(metrics))


def evaluate(ctx: EvalContext, metrics: str | Sequence[str], kimg: float | None = None) -> list[dict[str, Any]]:
    """Run the named metrics; each value comes back as a record with its full protocol."""
    metrics = metric_list(metrics)
    if not metrics:
        raise UserError("no metric to evaluate: name one or more, such as fd_digits,kid_digits")
    ctx.requested = list(metrics)
    records = []
    for name in metrics:
        fn = METRICS.get(name)
        for value_name, value, protocol in fn(ctx):
            records.append({
                "metric": value_name,
                "value": value,
                "family": name,
                **protocol,
                "seed": ctx.seed,
                "kimg": kimg,
                "ganforge_version": _version(),
            })
    return records


FD_SMALL_N = 1_000  # below this, fd_digits' sampling bias (~180 / n on mnist5k) is 5% of a good run's value
FD_METRICS = ("fd_digits", "fid")


def small_sample_note(records: list[dict[str, Any]]) -> str | None:
    """A note when a Frechet distance came from few images: it is biased upward by about c / n even for a
    perfect generator (real digits against all 5,000 bundled: 4.6 at n = 50, 0.09 at 2,000; benchmarks/
    fd_floor.py), so such numbers rank runs only at equal n. KID is unbiased at any n."""
    small = [r for r in records if r["metric"] in FD_METRICS and 0 < min(r["n_fake"], r["n_real"]) < FD_SMALL_N]
    if not small:
        return None
    names = list(dict.fromkeys(r["metric"] for r in small))
    n = min(min(r["n_fake"], r["n_real"]) for r in small)
    example = ("real digits score 4.6 against the bundled 5,000 at n = 50, 1.7 at 100, 0.09 at 2,000"
               if "fd_digits" in names else "published FIDs use 50,000 generated images")
    kids = " or ".join({"fd_digits": "kid_digits", "fid": "kid"}[name] for name in names)
    is_, it = ("are", "them") if len(names) > 1 else ("is", "it")
    return (f"{' and '.join(names)} from {n:,} images {is_} biased upward by sampling alone ({example}): compare "
            f"{it} only at equal n, raise --n, or read {kids}, unbiased at any n")


def swd_note(records: list[dict[str, Any]]) -> str | None:
    """A note when swd compared few images a set: like FD its floor falls with n (new draws of the bundled
    digits against each other, 32 px: 15.8 at 250, 7.4 at 1,000, 4.5 at 2,500; benchmarks/swd.py)."""
    record = next((r for r in records if r["metric"] == "swd" and 0 < r["n_fake"] < FD_SMALL_N), None)
    if record is None:
        return None
    return (f"swd compared {record['n_fake']:,} images a set, where chance alone leaves more than at larger n (new "
            "draws of the bundled digits score 15.8 against each other at 250, 4.5 at 2,500): compare it only at "
            "equal n")


def _fewest_and_most(shares: Sequence[float]) -> str:
    """'1s 4.2%, 7s 14.2%': the least and the most drawn digit of a histogram (shares or counts)."""
    p = np.asarray(shares, np.float64) / np.sum(shares)
    fewest, most = int(p.argmin()), int(p.argmax())
    return f"{fewest}s {p[fewest]:.1%}, {most}s {p[most]:.1%}"


def classes_note(records: list[dict[str, Any]]) -> str | None:
    """Which digits an uneven classes_kl comes from: the least and the most drawn."""
    kl = next((r for r in records if r["metric"] == "classes_kl" and r.get("counts")), None)
    if kl is None or sum(kl["counts"]) == 0:
        return None
    return (f"classes_kl {kl['value']:.3f}: fewest and most drawn digits {_fewest_and_most(kl['counts'])} "
            f"(10% each is even)")


def modes_note(records: list[dict[str, Any]]) -> str | None:
    """Where a Stacked MNIST KL comes from. KL(triples || uniform) is exactly the sum of the channels' KLs
    (each digit histogram against uniform over 10) plus the KL of the triples to the product of their
    channels' histograms: how far the three digits are from independent. That second part is not 0 for an
    ideal G: n draws over 1,000 cells score about (1000 - 1 - 3 * (10 - 1)) / (2 n) by chance (the chi-square
    approximation; real stacks of the bundled digits measure 0.018 at n = 26,000)."""
    kl = next((r for r in records if r["metric"] == "modes_kl" and r.get("channel_kl")), None)
    if kl is None:
        return None
    channels = [float(c) for c in kl["channel_kl"]]
    dependence = kl["value"] - sum(channels)
    n = kl["n_fake"]
    if n >= 5 * 1000:  # the approximation wants about 5 draws a cell
        dof = 1000 - 1 - 3 * (10 - 1)  # cells less the parameters of three channel histograms
        chance = f"an ideal G scores about {dof / (2 * n):.3f} of that by chance at n = {n:,}"
    else:
        chance = f"at n = {n:,}, far under the protocol's {MODES_N:,}, much of that is chance"
    note = (f"modes_kl {kl['value']:.3f} = {sum(channels):.3f} from uneven digits within the channels ("
            + ", ".join(f"{c:.3f}" for c in channels) + f") + {dependence:.3f} from dependence between them "
            f"({chance})")
    shares = kl.get("channel_digits")
    if shares:
        extremes = [f"channel {c}: {_fewest_and_most(h)}" for c, h in enumerate(shares)]
        note += "; fewest and most drawn digits (10% each is even): " + "; ".join(extremes)
    if kl.get("mean_confidence") is not None:
        note += f"; the digit classifier's mean confidence {kl['mean_confidence']:.3f} (real digits: 0.990-0.997)"
    return note


def metric_notes(records: list[dict[str, Any]]) -> list[str]:
    """Every note the records call for, in the order eval prints them and the report shows them."""
    notes = (small_sample_note(records), swd_note(records), classes_note(records), modes_note(records))
    return [note for note in notes if note]


def generated_labels(G: torch.nn.Module, n: int) -> torch.Tensor | None:
    """The labels `G.sample(n)` uses by default: balanced classes for a conditional G, None otherwise."""
    from ..models import balanced_labels

    return balanced_labels(n, G.n_classes) if getattr(G, "n_classes", 0) else None


def real_image_set(data_cfg: Any, data: Any = None) -> ImageSet:
    """The reference images of a dataset config (all of its training split) as a cacheable ImageSet;
    pass `data` (an ImageData) when it is already loaded."""
    from ..data import load_dataset, path_bytes

    data = data if data is not None else load_dataset(data_cfg)
    images = data.batch(torch.arange(len(data), device=data.device)).cpu().contiguous()
    name = data_cfg.name
    if name.startswith("folder:"):
        # a folder's images can change under the same path and count: its features are keyed by content too
        path = os.path.abspath(os.path.expanduser(name[len("folder:"):]))
        name = f"folder-{hashlib.sha1(path_bytes(path)).hexdigest()[:10]}-{data.fingerprint[:12]}"
    subset = f"-subset{len(data)}" if data.split != "train" else ""
    key = f"{name}-train{subset}-{data_cfg.img_size}px-{data_cfg.channels}ch"
    return ImageSet(images, data_cfg.name, data.split, cache_key=key, labels=data.labels.cpu(),
                    fingerprint=data.fingerprint, mirrored=data_cfg.mirror)


def read_metrics_history(path: Path) -> list:
    """The evaluations recorded in a metrics.json ([] when there is none yet); one that cannot take another
    raises UserError (checked before a run trains, so that no training is lost at its first evaluation)."""
    if not path.is_file():
        return []
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON; move it aside to record new results") from e
    if not isinstance(history, list):
        raise UserError(f"{path} is not a list of evaluations; move it aside to record new results")
    return history


def append_metrics_json(records: list[dict[str, Any]], path: Path, extra: dict[str, Any]) -> None:
    """metrics.json holds a list of evaluations; a new one is appended and the file replaced atomically."""
    from ..checkpoint import atomic_write_text, file_lock

    with file_lock(path):  # a concurrent appender would otherwise drop one of the two evaluations
        history = read_metrics_history(path)
        history.append({"time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **extra,
                        "results": records})
        atomic_write_text(json.dumps(history, indent=1) + "\n", path)


def offline_default(dataset: str, img_size: int) -> list[str]:
    """The offline metrics for images of `dataset`: the digit metrics, and swd where the images may not be
    digits (and have the 16 px its pyramid needs), since it reads any images and nothing calibrates the
    digit classifier's features on them."""
    pixels = dataset not in DIGIT_DATASETS and dataset not in STACKED_SETS and img_size >= 16
    return [*OFFLINE_DEFAULT, *(["swd"] if pixels else [])]


def default_metrics(cfg: Any, classes: list[str] | None = None) -> list[str]:
    """What `ganforge eval RUN` measures without --metrics: modes for Stacked MNIST, else the offline metrics
    (offline_default), plus for a conditional G per-class FD, and class accuracy where its `classes` are
    digits."""
    if cfg.data.name in STACKED_SETS:
        return ["modes"]
    offline = offline_default(cfg.data.name, cfg.data.img_size)
    if not cfg.model.n_classes:
        return offline
    digits = class_digits(classes) is not None if classes is not None else cfg.data.name in DIGIT_DATASETS
    return [*offline, *(["class_acc"] if digits else []), "fd_digits_per_class"]


def evaluate_run(run_or_ckpt: Path | str, metrics: str | Sequence[str] | None = None, n: int = 10_000,
                 ckpt: str = "latest", seed: int = 0, device: str = "cpu", inception_weights: str | None = None,
                 write: bool = True, log: Callable[[str], None] | None = None,
                 reference: str | None = None, reference_root: str | None = None,
                 ema: bool = True, truncation: float | None = None) -> list[dict[str, Any]]:
    """Evaluate a run's generator (G_ema when kept; G itself with ema=False) against its own training data,
    or against the dataset `reference` (a name or folder:PATH, at the run's size and channels, all of it; a
    torchvision set under `reference_root`, else the run's data.root). Without `reference`, `reference_root`
    says where the run's own torchvision set is now; metrics None: the run's default_metrics;
    inception_weights None: the run's eval.inception_weights, else torch's hub cache. `truncation`: sample
    with z truncated to [-t, t] (G.sample's truncation); its results are marked with it. `log` receives,
    once the evaluation has succeeded, a note where digit metrics meet images that are not digits."""
    import dataclasses

    from .. import checkpoint as ckpt_io
    from ..data import TORCHVISION_SETS, check_dataset_name, check_folder, missing_folder
    from ..generators import generator_from_checkpoint
    from ..models.layers import check_truncation, whole_number
    from ..plugins import stored_config

    try:
        truncation = check_truncation(truncation)
        n = whole_number(n, "n")
    except ValueError as e:
        raise UserError(str(e)) from None
    if n < 2:
        raise UserError(f"n must be at least 2 images to evaluate, got {n}")
    if reference is not None:
        check_dataset_name(reference)
        check_folder(reference)
    device = str(pick_device(str(device)))
    path, state = ckpt_io.load_resolved(run_or_ckpt, ckpt)
    cfg = stored_config(state)
    if reference is None and reference_root is not None and cfg.data.name not in TORCHVISION_SETS:
        raise UserError(f"--data-root says where a torchvision data set ({', '.join(TORCHVISION_SETS)}) lives, but "
                        f"this run trained on {cfg.data.name}; to score it against other images use --real")
    if reference is None:  # the run's own data set, under another root where one is given (moved data)
        real_cfg = dataclasses.replace(cfg.data, root=reference_root or cfg.data.root)
    else:
        real_cfg = dataclasses.replace(cfg.data, name=reference, max_images=0, root=reference_root or cfg.data.root)
        if reference in STACKED_SETS and cfg.data.channels != 3:
            raise UserError(f"--real {reference} has three channels, a digit in each, and this run's images are "
                            "grey (data.channels=1): score it against a grey set such as mnist5k")
    classes = state.get("classes")
    missing = missing_folder(real_cfg.name) if reference is None else None
    if missing:
        raise UserError(f"{missing}; evaluate against them where they are now with --real folder:PATH")
    metrics = default_metrics(cfg, classes) if metrics is None else metric_list(metrics)
    if "class_acc" in metrics and classes is not None and class_digits(classes) is None:
        raise UserError(not_digit_classes(classes))
    if "modes" in metrics and cfg.data.channels != 3:  # before any note, and before drawing its 26,000 samples
        raise UserError(MODES_NEED_COLOUR)
    check_sample_memory(n, cfg.data.channels, cfg.data.img_size, "lower --n")  # G draws at the data's format
    notes: list[str] = []  # said with the results, so that no note comes before an error (unreadable data)
    log_digit_metrics_note(real_cfg.name, metrics, notes.append)
    G = generator_from_checkpoint(state, path, device, ema=ema)
    # results of G where the run kept G_ema are marked, so they join neither its curves nor its rankings
    exported = state.get("exported")  # a generator file holds one of the two, whichever it was exported with
    g_of_ema_run = (exported["weights"] == "G" and exported["run_kept_ema"]) if exported is not None else \
        not ema and state.get("G_ema") is not None
    generator = {"generator": "G (not G_ema)"} if g_of_ema_run else {}
    if not ema and not generator:
        notes.append(f"note: {path.name} holds no average of G (train.ema_kimg = 0), so G is what is evaluated "
                     "either way")
    if truncation is not None:  # another distribution than G's own: marked too, a row of its own
        generator["truncation"] = truncation

    def draw(count: int) -> torch.Tensor:
        return quantize(G.sample(count, seed=seed, truncation=truncation)).cpu()

    def fake() -> ImageSet:
        return ImageSet(draw(n), "generated", f"{path.name}", labels=generated_labels(G, n), classes=classes)

    # a run's own data set is loaded only for a metric that reads it: modes needs no MNIST files at hand
    real = (lambda: real_image_set(real_cfg)) if reference is None else real_image_set(real_cfg)
    ctx = EvalContext(fake, real, device=device, seed=seed, fake_fn=draw,
                      inception_weights=inception_weights or cfg.eval.inception_weights or None)
    kimg = int(state["nimg"]) / 1000
    records = [{**record, **generator} for record in evaluate(ctx, metrics, kimg=kimg)]
    if write:  # kept before anything is said: `ganforge eval RUN | head -1` cuts the saying short
        append_metrics_json(records, metrics_path_for(path), {"checkpoint": str(path), "kimg": kimg})
    for note in notes if log is not None else ():
        log(note)
    if write:
        _log_to_tensorboard(metrics_path_for(path).parent, records, int(state["nimg"]), reference, log)
    return records


def _log_to_tensorboard(run_dir: Path, records: list[dict[str, Any]], nimg: int, reference: str | None,
                        log: Callable[[str], None] | None) -> None:
    """A run that trained with TensorBoard shows its evaluations there too; without the package, say so."""
    from ..tensorboard_log import LOG_DIR, log_eval

    try:
        log_eval(run_dir, records, nimg, reference)  # writes nothing, and imports nothing, for other runs
    except ImportError:
        if log is not None:
            log(f"note: {run_dir / LOG_DIR} is not updated, as the tensorboard package is not installed "
                "(pip install tensorboard); the results are in metrics.json")


def evaluate_checkpoints(run: Path | str, metrics: str | Sequence[str] | None = None,
                         log: Callable[[str], None] | None = None,
                         **options: Any) -> Iterator[tuple[Path, list[dict[str, Any]] | None]]:
    """evaluate_run on every checkpoint a run keeps, oldest first, each appended to its metrics.json at its
    own kimg; yields (checkpoint, records), or (checkpoint, None) for one that a run still training rotated
    out after the listing. `options` are evaluate_run's (n, seed, device, ema, reference, ...); `log` gets
    the not-digits note once."""
    from .. import checkpoint as ckpt_io

    latest = ckpt_io.resolve_checkpoint(run, "latest")
    if latest.parent.name != ckpt_io.CKPT_DIR:
        raise UserError(f"{run} is a checkpoint file outside a run directory; every checkpoint of a run needs "
                        "the run directory")
    noted = False
    for path in ckpt_io.list_checkpoints(latest.parent.parent):
        if not path.is_file():
            yield path, None
            continue
        yield path, evaluate_run(path, metrics, log=None if noted else log, **options)
        noted = True


def best_checkpoints(results: list[tuple[Path, list[dict[str, Any]] | None]]) -> dict[str, tuple[float, Path]]:
    """metric -> (best value, checkpoint) over evaluate_checkpoints' results, for the metrics whose better
    direction is known; a tie goes to the earlier checkpoint."""
    best: dict[str, tuple[float, Path]] = {}
    for path, records in results:
        for r in records or []:
            direction, value, held = BEST_DIRECTION.get(r["metric"]), r["value"], best.get(r["metric"])
            if direction is None or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            if held is None or (value < held[0] if direction == "min" else value > held[0]):
                best[r["metric"]] = (value, path)
    return best


def metrics_path_for(ckpt_path: Path) -> Path:
    """Where evaluate_run records a checkpoint's results: its run's metrics.json, or for a checkpoint kept
    outside a run, a metrics.json beside it."""
    from ..checkpoint import CKPT_DIR

    ckpt_path = Path(ckpt_path)
    folder = ckpt_path.parent.parent if ckpt_path.parent.name == CKPT_DIR else ckpt_path.parent
    return folder / "metrics.json"
