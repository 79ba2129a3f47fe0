from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.cli import main
from ganforge.config import DataConfig, load_config
from ganforge.data import DATASETS, EpochSampler, convert_channels, load_dataset, prepare
from ganforge.errors import UserError

from .conftest import write_digit_folder


def write_idx(root: Path, folder: str, n: int = 20) -> np.ndarray:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())
    return images


def test_registry_lists_all_datasets():
    assert {"mnist5k", "mnist", "fashion-mnist", "cifar10", "celeba", "stacked-mnist5k", "stacked-mnist"} <= set(
        DATASETS.names())


def test_bundled_digits_load_in_memory_normalised():
    data = load_dataset(DataConfig(name="mnist5k"))
    assert data.images.shape == (5000, 1, 28, 28)
    assert data.images.dtype == torch.float32
    assert abs(data.images.min().item() + 1) < 1e-6 and abs(data.images.max().item() - 1) < 1e-6
    assert sorted(data.labels.unique().tolist()) == list(range(10))
    counts = torch.bincount(data.labels)
    assert counts.min() > 400


def test_bundled_digits_resize_and_convert():
    data = load_dataset(DataConfig(name="mnist5k", img_size=32, channels=3))
    assert data.images.shape == (5000, 3, 32, 32)
    assert torch.equal(data.images[:, 0], data.images[:, 2])


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_sets_read_idx_files_without_download(tmp_path, name, folder):
    images = write_idx(tmp_path, folder)
    data = load_dataset(DataConfig(name=name, root=str(tmp_path)))
    assert data.images.shape == (20, 1, 28, 28)
    expected = torch.from_numpy(images).float().div(127.5).sub(1).unsqueeze(1)
    assert torch.allclose(data.images, expected)
    assert data.labels.tolist() == [i % 10 for i in range(20)]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_missing_torchvision_set_says_how_to_get_it(tmp_path, name):
    with pytest.raises(UserError, match="data.download=true"):
        load_dataset(DataConfig(name=name, root=str(tmp_path)))


def test_stacked_mnist_stacks_the_full_mnist_under_data_root(tmp_path):
    with pytest.raises(UserError, match="stacked-mnist has three channels; set data.channels=3"):
        load_dataset(DataConfig(name="stacked-mnist", root=str(tmp_path)))
    with pytest.raises(UserError, match=f"MNIST not found under {tmp_path}/MNIST/raw; download it with "
                                        "--set data.download=true"):
        load_dataset(DataConfig(name="stacked-mnist", root=str(tmp_path), channels=3))
    images = write_idx(tmp_path, "MNIST")
    data = load_dataset(DataConfig(name="stacked-mnist", root=str(tmp_path), channels=3))
    assert data.images.shape == (50_000, 3, 28, 28) and len(data.classes) == 1000
    # the same stacks as stacked-mnist5k's recipe: seeded picks, label = 100 * d0 + 10 * d1 + d2
    picks = torch.randint(0, 20, (50_000, 3), generator=torch.Generator().manual_seed(0))
    expected = torch.from_numpy(images)[picks].float().div(127.5).sub(1)
    assert torch.allclose(data.images, expected)
    assert torch.equal(data.labels, ((picks % 10) * torch.tensor([100, 10, 1])).sum(1))


def test_damaged_cifar10_files_are_named_as_corrupt_not_missing(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"not a CIFAR batch")
    with pytest.raises(UserError, match="cifar-10-batches-py is incomplete or corrupt") as info:
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), channels=3))
    assert "data.download=true" in str(info.value) and "\n" not in str(info.value)


def test_missing_celeba_says_where_it_is_expected(tmp_path):
    with pytest.raises(UserError, match="img_align_celeba"):
        load_dataset(DataConfig(name="celeba", root=str(tmp_path), img_size=16, channels=3))


def test_celeba_layout_reads_train_split(tmp_path):
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for i in range(6):
        Image.new("RGB", (178, 218), (i * 40, 10, 10)).save(folder / f"{i:06d}.jpg")
        lines.append(f"{i:06d}.jpg {0 if i < 4 else 1}")
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(name="celeba", root=str(tmp_path), img_size=16, channels=3)
    data = load_dataset(cfg)
    assert data.images.shape == (4, 3, 16, 16)
    again = load_dataset(cfg)  # from the cache written beside the images
    assert torch.equal(again.images, data.images)
    cache = tmp_path / "celeba" / "ganforge-train-16px-3ch.pt"
    assert cache.is_file() and not list(cache.parent.glob(".*tmp*"))
    written = torch.load(cache, weights_only=True)
    for damage in (b"PK\x03\x04 cut short", None):
        if damage is None:
            torch.save(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), cache)  # another size under this name
        else:
            cache.write_bytes(damage)
        rebuilt = load_dataset(cfg)  # read from the images again, and the cache replaced
        assert torch.equal(rebuilt.images, data.images)
        assert torch.equal(torch.load(cache, weights_only=True), written)


def test_folder_labels_come_from_subfolders(image_folder):
    data = load_dataset(DataConfig(name=f"folder:{image_folder}", img_size=16))
    assert len(data) == 32
    assert data.classes == ["class0", "class1"]
    assert torch.bincount(data.labels).tolist() == [16, 16]


def test_hidden_files_and_macos_leftovers_are_not_images_or_classes(image_folder):
    # what unzipping a macOS archive or opening the folder in Jupyter leaves beside the images
    (image_folder / "__MACOSX" / "class0").mkdir(parents=True)
    (image_folder / "__MACOSX" / "class0" / "._000.png").write_bytes(b"\x00\x05\x16\x07\x00\x02Mac OS X")
    (image_folder / "class0" / "._001.png").write_bytes(b"\x00\x05\x16\x07\x00\x02Mac OS X")
    (image_folder / ".ipynb_checkpoints").mkdir()
    Image.new("L", (16, 16), 255).save(image_folder / ".ipynb_checkpoints" / "000-checkpoint.png")
    Image.new("L", (16, 16), 255).save(image_folder / "class1" / ".thumbnail.png")
    data = load_dataset(DataConfig(name=f"folder:{image_folder}", img_size=16))
    assert len(data) == 32
    assert data.classes == ["class0", "class1"]


def test_linked_class_folders_are_read_and_a_link_cycle_ends(tmp_path):
    write_digit_folder(tmp_path / "store", n_per_class=3, classes=2)
    root = tmp_path / "images"
    root.mkdir()
    (root / "zeros").symlink_to(tmp_path / "store" / "class0", target_is_directory=True)
    (root / "ones").symlink_to(tmp_path / "store" / "class1", target_is_directory=True)
    (root / "ones" / "back").symlink_to(root, target_is_directory=True)  # a link back up: walked once
    data = load_dataset(DataConfig(name=f"folder:{root}", img_size=16))
    assert len(data) == 6
    assert data.classes == ["ones", "zeros"]
    assert torch.bincount(data.labels).tolist() == [3, 3]


def zip_folder(folder: Path, archive: Path, wrapper: str = "") -> Path:
    """folder's files into archive under wrapper/ (as `zip -r` of the folder makes), plus macOS's leftovers."""
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{wrapper}{p.relative_to(folder).as_posix()}")
        z.writestr(f"__MACOSX/{wrapper}class0/._000.png", b"\x00\x05\x16\x07Mac OS X")
        z.writestr(f"{wrapper}.DS_Store", b"\x00\x00\x00\x01Bud1")
    return archive


@pytest.mark.parametrize("wrapper", ["", "images/"])
def test_a_zip_archive_reads_like_its_folder(image_folder, tmp_path, monkeypatch, wrapper):
    from ganforge import data as data_module

    archive = zip_folder(image_folder, tmp_path / "images.zip", wrapper)
    unpacked = load_dataset(DataConfig(name=f"folder:{image_folder}", img_size=16))
    zipped = load_dataset(DataConfig(name=f"folder:{archive}", img_size=16))
    assert zipped.classes == ["class0", "class1"]  # the wrapper folder is not a class
    assert torch.equal(zipped.images, unpacked.images) and torch.equal(zipped.labels, unpacked.labels)

    def no_decoding(*args):
        raise AssertionError("decoded again")

    with monkeypatch.context() as m:
        m.setattr(data_module, "_read_image", no_decoding)
        assert torch.equal(load_dataset(DataConfig(name=f"folder:{archive}", img_size=16)).images, zipped.images)


def test_a_damaged_zip_or_member_is_named(image_folder, tmp_path):
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("not an archive")
    with pytest.raises(UserError, match="notes.zip is a file but not a readable zip archive"):
        load_dataset(DataConfig(name=f"folder:{not_zip}", img_size=16))
    archive = zip_folder(image_folder, tmp_path / "images.zip")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("class1/broken.png", b"not an image")
    with pytest.raises(UserError, match=r"images.zip:class1/broken.png") as info:
        load_dataset(DataConfig(name=f"folder:{archive}", img_size=16))
    assert " object at 0x" not in str(info.value)  # PIL names the member's in-memory file; the message does not
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.txt", "no images")
    with pytest.raises(UserError, match=r"holds no images \(.*\); it holds 1 .txt file: convert them"):
        load_dataset(DataConfig(name=f"folder:{empty}", img_size=16))


def test_a_folder_says_whether_its_images_are_in_colour(tmp_path):
    grey, palette_grey, colour = tmp_path / "grey", tmp_path / "palette", tmp_path / "colour"
    for folder in (grey, palette_grey, colour):
        folder.mkdir()
    Image.new("L", (8, 8), 90).save(grey / "a.png")
    Image.new("L", (8, 8), 90).convert("P").save(palette_grey / "a.png")  # a palette of greys only
    Image.new("RGB", (8, 8), (90, 20, 20)).convert("P").save(colour / "a.png")
    for folder, expected in ((grey, False), (palette_grey, False), (colour, True)):
        data = load_dataset(DataConfig(name=f"folder:{folder}", img_size=8, channels=1))
        assert data.colour_source is expected, folder.name
    assert load_dataset(DataConfig(name="mnist5k")).colour_source is False


def test_max_images_keeps_a_fixed_class_balanced_subset():
    full = load_dataset(DataConfig(name="mnist5k"))
    small = load_dataset(DataConfig(name="mnist5k", max_images=500))
    assert len(small) == 500 and small.split == "train, 500 of 5000"
    assert torch.bincount(small.labels).tolist() == [50] * 10  # every digit keeps its share
    again = load_dataset(DataConfig(name="mnist5k", max_images=500))
    assert torch.equal(again.images, small.images)  # the same images every time, whatever the run's seed
    for image, label in zip(small.images[:5], small.labels[:5], strict=True):  # images of the set, labels kept
        same = (full.images == image).flatten(1).all(1).nonzero().squeeze(1)
        assert len(same) >= 1 and bool((full.labels[same] == label).any())
    tiny = load_dataset(DataConfig(name="mnist5k", max_images=7))
    assert len(torch.unique(tiny.labels)) == 7  # seven images, seven different digits
    assert len(load_dataset(DataConfig(name="mnist5k", max_images=10_000))) == 5000  # more than there are: all


def test_webp_and_avif_images_are_read(tmp_path):
    from PIL import features

    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.webp", lossless=True)
    if features.check("avif"):  # a Pillow built with libavif
        Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "b.avif", quality=100)
    data = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=3))
    assert len(data) == (2 if features.check("avif") else 1)
    assert data.images[:, 0].min().item() > 0.95 and data.images[:, 1:].max().item() < -0.95  # red


def test_folder_non_square_rgb_is_cropped_resized_and_converted(tmp_path):
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "a.png")
    data = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=1))
    assert data.images.shape == (1, 1, 8, 8)
    grey = round(0.299 * 255) / 127.5 - 1
    assert abs(data.images.mean().item() - grey) < 0.01


def test_fit_pad_keeps_the_whole_of_a_non_square_image(tmp_path):
    Image.new("RGB", (16, 8), (255, 0, 0)).save(tmp_path / "wide.png")  # red, twice as wide as high
    cropped = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=3)).images[0]
    assert cropped[0].min().item() > 0.99 and cropped[1:].max().item() < -0.99  # all red: the sides cut off
    padded = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=3, fit="pad",
                                     background="black")).images[0]
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1)
    assert padded[:, 3:5].flatten(1).sub(red).abs().max().item() < 0.01  # the image, centred (its edge rows
    assert padded[:, [0, 7]].sub(-1.0).abs().max().item() < 0.01  # blur in the resize); black bands around it
    white = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=1, fit="pad")).images[0, 0]
    assert white[[0, 7]].sub(1.0).abs().max().item() < 0.01  # bands of data.background, white by default
    with pytest.raises(UserError, match="data.fit must be crop or pad"):
        load_config(overrides=["data.fit=stretch"])


def test_a_photo_tagged_as_rotated_is_turned_upright(tmp_path):
    # stored 16 wide and 8 high, columns 4-7 white; EXIF orientation 6 says "turn 90 degrees clockwise"
    stored = np.zeros((8, 16), dtype=np.uint8)
    stored[:, 4:8] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "photo.png", exif=exif.tobytes())
    data = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=1))
    upright = data.images[0, 0]  # 8 wide, 16 high, rows 4-7 white; cropped to rows 4-11: the top half white
    # (left as stored, the crop to columns 4-11 would make the left half white)
    assert upright.shape == (8, 8)
    assert abs(upright[:4].mean().item() - 1) < 0.05 and abs(upright[4:].mean().item() + 1) < 0.05


def test_corrupt_image_is_named_in_the_error(tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="broken.png"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8))


def test_a_link_to_nothing_is_named_as_such(tmp_path):
    """A link left behind by a moved data set: it said 'cannot use PATH: No such file or directory; check that
    its folder exists and is writable, and that the disk has space', as for a file it could not write."""
    Image.new("L", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "moved.png").symlink_to(tmp_path / "elsewhere" / "moved.png")
    with pytest.raises(UserError) as info:
        load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8))
    assert str(info.value) == (f"cannot read image {tmp_path / 'moved.png'}: it is a link to "
                               f"{tmp_path / 'elsewhere' / 'moved.png'}, which does not exist; remove the link or "
                               "restore what it points to")


def test_a_large_photo_reads_quietly_and_one_past_pillows_limit_is_one_line(tmp_path, monkeypatch):
    """Pillow warns past MAX_IMAGE_PIXELS (a guard against decompression bombs) and refuses past twice it; a
    user's own photo should read without the warning, and a refused one be named, not raise a traceback."""
    import warnings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 8x8 = 64 px under it, 12x12 = 144 between, 16x16 past
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    Image.new("L", (12, 12)).save(tmp_path / "large.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8)).images.shape[0] == 2
    Image.new("L", (16, 16)).save(tmp_path / "huge.png")
    with pytest.raises(UserError) as info:
        load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8))
    assert str(info.value) == (f"cannot read image {tmp_path / 'huge.png'}: it has more pixels than Pillow decodes "
                               "(256 against at most 200), a guard against decompression bombs; remove or replace "
                               "the file")


def test_a_folder_whose_images_cannot_fit_in_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    from ganforge import device

    for i in range(3):
        Image.new("RGB", (20, 20), (i, 0, 0)).save(tmp_path / f"{i}.png")
    cfg = DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=3)
    monkeypatch.setattr(device, "available_memory", lambda: 3 * 3 * 8 * 8 - 1)  # uint8 [3, 3, 8, 8]
    with pytest.raises(UserError) as info:
        load_dataset(cfg)
    assert str(info.value) == (f"the 3 images of {tmp_path} at 8x8 hold 0.0 GiB in memory, and 0.0 GiB is available; "
                               "lower the size they are read at (data.img_size, or eval's --img-size) or use fewer "
                               "images")
    monkeypatch.setattr(device, "available_memory", lambda: 3 * 3 * 8 * 8)
    assert load_dataset(cfg).images.shape == (3, 3, 8, 8)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'nope'}"))
    with pytest.raises(UserError, match=r"holds no images \([^)]*\)$"):  # and nothing else to name
        load_dataset(DataConfig(name=f"folder:{tmp_path}"))
    # a phone's photo library: say what is there instead (hidden files not counted)
    for i in range(3):
        (tmp_path / "photos" / "2024").mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / "2024" / f"IMG_{i}.HEIC").write_bytes(b"")
    (tmp_path / "photos" / "notes.txt").write_text("")
    (tmp_path / "photos" / ".DS_Store").write_bytes(b"")
    with pytest.raises(UserError, match=r"; it holds 3 .heic files, 1 .txt file: convert them to PNG or JPEG"):
        load_dataset(DataConfig(name=f"folder:{tmp_path / 'photos'}"))


def test_channel_conversion_and_antialiased_resize():
    grey = torch.full((2, 1, 4, 4), 100, dtype=torch.uint8)
    assert convert_channels(grey, 3).shape == (2, 3, 4, 4)
    checker = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    checker[..., ::2, ::2] = 255
    checker[..., 1::2, 1::2] = 255
    small = prepare(checker, 1, 4)
    assert small.shape == (1, 1, 4, 4)
    # antialiasing averages the checkerboard to mid-grey instead of picking one phase
    assert abs(small.float().mean().item() - 127.5) < 2 and small.float().std().item() < 2


def test_epoch_sampler_covers_each_image_once_per_epoch_and_is_reproducible():
    sampler = EpochSampler(10, 3, seed=5, device=torch.device("cpu"))
    assert sampler.batches_per_epoch == 3
    epoch0 = torch.cat([sampler.indices(i) for i in range(3)])
    assert len(set(epoch0.tolist())) == 9
    epoch1 = torch.cat([sampler.indices(i) for i in range(3, 6)])
    assert not torch.equal(epoch0, epoch1)
    fresh = EpochSampler(10, 3, seed=5, device=torch.device("cpu"))
    assert torch.equal(fresh.indices(4), sampler.indices(4))


def test_batch_larger_than_dataset_is_refused():
    with pytest.raises(UserError, match="larger than the dataset"):
        EpochSampler(4, 8, seed=0, device=torch.device("cpu"))


def test_an_image_folder_is_decoded_once_and_again_when_its_files_change(tmp_path, monkeypatch):
    import os

    from ganforge import data as data_module
    from ganforge.data import cache_root

    folder = write_digit_folder(tmp_path / "imgs", n_per_class=3)
    cfg = DataConfig(name=f"folder:{folder}", img_size=8)
    first = load_dataset(cfg)
    (cache,) = (cache_root() / "folders").glob("*.pt")

    def no_decoding(*args):
        raise AssertionError("decoded again")

    with monkeypatch.context() as m:
        m.setattr(data_module, "_read_image", no_decoding)
        again = load_dataset(cfg)  # from the cache
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)

    edited = folder / "class1" / "000.png"
    Image.new("L", (16, 16), 255).save(edited)
    os.utime(edited, ns=(1, 1))  # a new modification time even on a coarse clock
    changed = load_dataset(cfg)
    assert not torch.equal(changed.images, first.images)
    assert abs(changed.images[3].mean().item() - 1.0) < 1e-6  # the white image, read afresh
    (replaced,) = (cache_root() / "folders").glob("*.pt")  # the stale entry is gone
    assert replaced != cache
    cached_uint8 = torch.load(replaced, weights_only=True)

    pixels = bytearray(replaced.read_bytes())
    with zipfile.ZipFile(replaced) as archive:
        stored = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    name_len, extra_len = struct.unpack("<HH", pixels[stored.header_offset + 26:stored.header_offset + 30])
    pixels[stored.header_offset + 30 + name_len + extra_len] ^= 0x01  # the first pixel, one grey level off
    replaced.write_bytes(bytes(pixels))
    assert not torch.equal(torch.load(replaced, weights_only=True), cached_uint8)  # torch.load alone takes it
    assert torch.equal(load_dataset(cfg).images, changed.images)  # the CRC tells, and it is decoded again
    replaced.write_bytes(b"PK\x03\x04 cut short")  # a damaged cache is decoded again, not an error
    assert torch.equal(load_dataset(cfg).images, changed.images)


def test_transparent_pixels_show_the_background_not_the_colour_stored_under_them(tmp_path):
    # transparent red around an opaque blue square: a viewer shows the background there, not red
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[2:6, 2:6] = (0, 0, 255, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a_rgba.png")
    grey_alpha = np.zeros((8, 8, 2), dtype=np.uint8)  # LA: grey 128 everywhere, opaque only in the square
    grey_alpha[..., 0] = 128
    grey_alpha[2:6, 2:6, 1] = 255
    Image.fromarray(grey_alpha, "LA").save(tmp_path / "b_la.png")
    palette = Image.fromarray(np.where(rgba[..., 3] > 0, 1, 0).astype(np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 0, 255])  # index 0 red, marked transparent; index 1 blue
    palette.save(tmp_path / "c_palette.png", transparency=0)
    border = torch.ones(8, 8, dtype=torch.bool)
    border[2:6, 2:6] = False
    for background, level in (("white", 1.0), ("black", -1.0)):
        data = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8, channels=3, background=background))
        for image in data.images:
            assert image[:, border].sub(level).abs().max().item() < 0.01, background
        blue = torch.tensor([-1.0, -1.0, 1.0])
        assert data.images[0, :, 3, 3].sub(blue).abs().max().item() < 0.01  # the opaque part is kept
        assert data.images[2, :, 3, 3].sub(blue).abs().max().item() < 0.01
        assert abs(data.images[1, 0, 3, 3].item() - (128 / 127.5 - 1)) < 0.01
    with pytest.raises(UserError, match="data.background must be white or black"):
        load_config(overrides=["data.background=grey"])


def test_sixteen_bit_and_float_images_keep_their_grey_levels(tmp_path):
    ramp = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    Image.fromarray(np.round(ramp * 65535).astype(np.uint16)).save(tmp_path / "a16.png")  # PIL mode I;16
    Image.fromarray(ramp.astype(np.float32)).save(tmp_path / "b.tif")  # mode F, values in [0, 1]
    Image.fromarray(np.round(ramp * 255).astype(np.uint8)).save(tmp_path / "c8.png")
    data = load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=16))
    means = data.images.mean(dim=(1, 2, 3))
    assert all(abs(m.item()) < 0.01 for m in means)  # a 0-1 ramp averages mid-grey, 0 in [-1, 1], in each format
    assert abs(data.images[0] - data.images[2]).max().item() < 0.01  # the 16-bit ramp reads as the 8-bit one

    Image.fromarray((ramp * 1000).astype(np.float32)).save(tmp_path / "d.tif")
    with pytest.raises(UserError, match=r"d.tif holds F values from 0 to 1000"):
        load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=16))


def test_every_unreadable_image_is_named_in_one_error(tmp_path, monkeypatch):
    """A scraped folder with several broken files: one attempt names them all (up to five, then a count),
    rather than one per attempt, each after decoding up to it."""
    from ganforge import data as data_module

    monkeypatch.setattr(data_module.os, "cpu_count", lambda: 2)  # the thread pool even on a one-core machine
    for i in range(20):
        Image.new("L", (8, 8), i).save(tmp_path / f"{i:03d}.png")
    good = Image.new("RGB", (8, 8))
    good.save(tmp_path / "cut.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:200])
    for i in range(7):
        (tmp_path / f"{i:03d}.png").write_bytes(b"not an image")
    with pytest.raises(UserError) as info:
        load_dataset(DataConfig(name=f"folder:{tmp_path}", img_size=8))
    message = str(info.value)
    assert message.startswith("cannot read 8 of 21 images: ")
    assert message.endswith("; and 3 more; remove or replace them")
    assert f"{tmp_path / '000.png'} (cannot identify image file)" in message  # the path is not said twice
    assert message.count(str(tmp_path)) == 5 and "\n" not in message


def test_a_cache_that_cannot_be_written_does_not_stop_loading(tmp_path, monkeypatch):
    import errno

    from ganforge import data as data_module

    def read_only(obj, path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(data_module, "atomic_save", read_only)
    folder = write_digit_folder(tmp_path / "imgs", n_per_class=2)
    data = load_dataset(DataConfig(name=f"folder:{folder}", img_size=8, max_images=3))
    assert data.images.shape == (3, 1, 8, 8)
    assert "(Read-only file system), so they are decoded again next time; set GANFORGE_CACHE" in data.cache_note
    faces = tmp_path / "celeba" / "img_align_celeba"
    faces.mkdir(parents=True)
    Image.new("RGB", (20, 24), (200, 10, 10)).save(faces / "000001.jpg")
    data = load_dataset(DataConfig(name="celeba", root=str(tmp_path), img_size=8, channels=3))
    assert data.images.shape == (1, 3, 8, 8)
    assert data.cache_note.endswith(f"decoded again next time; make {tmp_path / 'celeba'} writable")


def test_training_on_a_folder_says_when_its_decoded_images_cannot_be_cached(tmp_path, monkeypatch, capsys):
    folder = write_digit_folder(tmp_path / "imgs", n_per_class=2)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "file" / "cache"))  # under a file: cannot be made
    argv = ["train", "--preset", "mnist-mlp-small", "--out", str(tmp_path / "runs"), "--set",
            f"data.name=folder:{folder}", "--set", "train.kimg=0.008", "--set", "train.batch_size=4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"note: could not keep the decoded images at {tmp_path / 'file' / 'cache' / 'folders'}" in out
    assert main(argv) == 0  # the cache folder is still not there: said again
    assert "could not keep the decoded images" in capsys.readouterr().out
    other = write_digit_folder(tmp_path / "other", n_per_class=2)
    assert main(["eval", "--real", f"folder:{folder}", "--fake", f"folder:{other}", "--metrics", "swd"]) == 0
    assert capsys.readouterr().out.count("note: could not keep the decoded images") == 2  # each folder's
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    assert main(argv) == 0
    assert "could not keep" not in capsys.readouterr().out


def test_a_failed_download_is_one_line_that_says_what_to_do(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets as tvd

    def offline(root, **kwargs):
        os.makedirs(root, exist_ok=True)  # torchvision makes its folders before it fetches
        raise urllib.error.URLError("Name or service not known")

    def mirrors(root, **kwargs):
        os.makedirs(os.path.join(root, "MNIST", "raw"), exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://a/, got:\n<urlopen error x>\n")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    monkeypatch.setattr(tvd, "MNIST", mirrors)
    for name, needle in (("cifar10", f"could not download CIFAR10 to {tmp_path}: Name or service not known"),
                         ("mnist", f"could not download MNIST to {tmp_path}: Error downloading "
                                   "train-images-idx3-ubyte.gz: Tried https://a/, got: <urlopen error x>")):
        with pytest.raises(UserError) as info:
            load_dataset(DataConfig(name=name, root=str(tmp_path), download=True))
        message = str(info.value)
        assert message.startswith(needle) and "\n" not in message
        assert message.endswith("point --set data.root=DIR at their parent")
        assert sorted(os.listdir(tmp_path)) == []  # the folders the failed download made are gone
    # folders a failed download made are removed up to the one that was there; what was there stays
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    with pytest.raises(UserError):
        load_dataset(DataConfig(name="mnist", root=str(tmp_path / "mine" / "new" / "data"), download=True))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["mine", "notes.txt"]
    (tmp_path / "mine" / "notes.txt").unlink()
    (tmp_path / "mine").rmdir()
    monkeypatch.setattr(tvd, "CelebA", mirrors)
    with pytest.raises(UserError) as info:
        load_dataset(DataConfig(name="celeba", root=str(tmp_path), download=True))
    message = str(info.value)
    assert message.startswith(f"could not download CelebA to {tmp_path / 'celeba'}: Error downloading") and (
        "\n" not in message)
    assert message.endswith(f"unzip them into {tmp_path / 'celeba'}, giving {tmp_path / 'celeba' / 'img_align_celeba'}")
    assert not (tmp_path / "celeba").exists()


def test_celeba_download_asks_torchvision_for_the_training_split_and_reads_what_it_wrote(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fetch(root, split, download):  # torchvision's layout: root/celeba/img_align_celeba, the partition list
        calls.append((root, split, download))
        faces = Path(root) / "celeba" / "img_align_celeba"
        faces.mkdir(parents=True)
        for i, colour in enumerate([(200, 10, 10), (10, 200, 10), (10, 10, 200)]):
            Image.new("RGB", (20, 24), colour).save(faces / f"{i:06d}.jpg")
        (Path(root) / "celeba" / "list_eval_partition.txt").write_text("000000.jpg 0\n000001.jpg 1\n000002.jpg 0\n")

    monkeypatch.setattr(tvd, "CelebA", fetch)
    data = load_dataset(DataConfig(name="celeba", root=str(tmp_path), img_size=8, channels=3, download=True))
    assert calls == [(str(tmp_path), "train", True)]
    assert data.images.shape == (2, 3, 8, 8)  # the training partition only: 000000 and 000002
    blue = data.batch(torch.tensor([1], device=data.device))[0]
    assert blue[2].mean() > 0.5 and blue[0].mean() < -0.5
    load_dataset(DataConfig(name="celeba", root=str(tmp_path), img_size=8, channels=3, download=True))
    assert len(calls) == 1  # on disk now: not fetched again


def _latin1_name(folder: Path, name: bytes) -> Path:
    """A path whose last part is not UTF-8, as Python holds it (surrogates); skipped where the file system
    refuses such names."""
    path = folder / os.fsdecode(name)
    try:
        path.touch()
        path.unlink()
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    return path


def test_an_image_named_in_another_encoding_is_read_and_named_when_unreadable(image_folder):
    name = _latin1_name(image_folder / "class0", b"caf\xe9.png")
    Image.new("L", (16, 16), 200).save(name, format="PNG")
    count = len(load_dataset(DataConfig(name=f"folder:{image_folder}", img_size=16)))
    name.write_bytes(b"not an image")
    with pytest.raises(UserError) as info:
        load_dataset(DataConfig(name=f"folder:{image_folder}", img_size=16))
    assert str(info.value) == f"cannot read image {name}: cannot identify image file; remove or replace the file"
    assert count == len(list(image_folder.rglob("*.png")))


def test_image_counts_read_as_english_for_one_and_for_thousands():
    from ganforge.data import image_count

    assert image_count(1) == "1 image"
    assert image_count(0) == "0 images"
    assert image_count(5000) == "5,000 images"
    assert image_count(1, "training image") == "1 training image"
    assert image_count(1200, "training image") == "1,200 training images"


def test_cifar10_batches_load_as_rgb_images_with_their_labels(tmp_path, monkeypatch):
    """CIFAR-10's pickled batches (rows of 3,072 bytes, all red then green then blue) become [N, 3, 32, 32]."""
    import pickle

    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 256, (4, 3 * 32 * 32), dtype=np.uint8) for _ in range(5)]
    for i, data in enumerate(rows, start=1):
        batch = {"data": data, "labels": [(i + j) % 10 for j in range(4)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (folder / "test_batch").write_bytes(pickle.dumps({"data": rows[0][:1], "labels": [9]}))  # not the training set
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    # the files are not the published ones, so their MD5s cannot match
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    data = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), img_size=32, channels=3))
    assert data.images.shape == (20, 3, 32, 32)
    expected = torch.from_numpy(np.concatenate(rows)).float().div(127.5).sub(1).view(20, 3, 32, 32)
    assert torch.allclose(data.images, expected)
    assert data.labels.tolist() == [(i + j) % 10 for i in range(1, 6) for j in range(4)]
    assert data.classes == names
    grey = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), img_size=32, channels=1))
    assert grey.images.shape == (20, 1, 32, 32)
    rgb = torch.from_numpy(np.concatenate(rows)).double().view(20, 3, 32, 32)
    luma = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]).round()  # ITU-R 601, as PIL's "L"
    off = (grey.images[:, 0].double() - (luma / 127.5 - 1)).abs() * 127.5  # in grey levels
    # float32 sums may round a value at exactly .5 the other way: a level at most, and rarely
    assert off.max() < 1 + 1e-4 and (off > 1e-4).double().mean() < 0.01


def test_mirror_asymmetry_is_zero_for_a_set_with_its_mirror_images_and_grows_as_images_lean_one_way():
    from ganforge.data import mirror_asymmetry

    g = torch.Generator().manual_seed(0)
    noise = torch.rand(400, 1, 12, 12, generator=g)
    with_mirrors = torch.cat([noise, noise.flip(-1)])
    assert abs(mirror_asymmetry(with_mirrors)) < 1e-6
    assert mirror_asymmetry(noise) < 0.05  # symmetric in distribution: what is left is sampling, taken out
    ramp = torch.linspace(-1, 1, 12).view(1, 1, 1, 12)  # a light from the right, in every image
    leaning = [mirror_asymmetry(noise + strength * ramp) for strength in (0.1, 0.3, 1.0)]
    assert leaning == sorted(leaning) and leaning[0] > 0.1 and leaning[-1] > 2
    # a large set is read at `most` evenly spaced images: the same lean, to sampling error
    assert abs(mirror_asymmetry(noise + 0.3 * ramp, most=200) - leaning[1]) < 0.05 * leaning[1]
    # by hand: each image 0 on its left half and 1 on its right, but for a bright pixel that makes them vary
    halves = torch.zeros(10, 1, 2, 2)
    halves[..., 1] = 1
    halves[torch.arange(10), 0, 0, torch.arange(10) % 2] = 2.0
    # mirror_asymmetry's formula by hand on these values, chunked or not alike
    x = halves.double()
    d = x - x.flip(-1)
    expected = ((d.mean(0) ** 2).mean() - (d.var(0) / 10).mean()).sqrt() / x.var(0).mean().sqrt()
    assert abs(mirror_asymmetry(halves) - float(expected)) < 1e-9
    assert abs(mirror_asymmetry(halves, chunk=3) - float(expected)) < 1e-9
    assert mirror_asymmetry(torch.full((5, 1, 4, 4), 0.5)) == 0.0  # no spread: nothing to compare with
    assert mirror_asymmetry(noise[:1]) == 0.0


def test_the_bundled_digits_lean_one_way_and_uint8_reads_as_normalised():
    from ganforge.data import MIRROR_ASYMMETRY_NOTE, mirror_asymmetry

    digits = load_dataset(DataConfig(name="mnist5k", max_images=500))
    lean = mirror_asymmetry(digits.images)
    assert lean > MIRROR_ASYMMETRY_NOTE  # a mirrored 2, 3 or 7 is not a digit
    as_uint8 = ((digits.images + 1) * 127.5).round().to(torch.uint8)
    assert abs(mirror_asymmetry(as_uint8) - lean) < 1e-3  # scale and offset do not change it
