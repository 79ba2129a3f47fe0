from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ganforge
from ganforge import checkpoint as ckpt_io
from ganforge.cli import main
from ganforge.config import load_config, preset_names

from .conftest import fill_disk_after, tiny_overrides, write_digit_folder


def set_args(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def only_run(out: Path) -> Path:
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 1
    return runs[0]


def test_version_names_ganforge_and_torch(capsys):
    from importlib import metadata

    import ganforge

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    torch_version = torch.__version__.split("+")[0]
    out = capsys.readouterr().out
    assert out.startswith(f"ganforge {ganforge.__version__} (torch {torch_version}")
    assert metadata.version("ganforge") == ganforge.__version__  # the installed metadata reads the same number
    assert "installed plugins" not in out  # none here


def test_version_names_the_installed_plugins(tmp_path, monkeypatch, capsys):
    info = tmp_path / "gf_nets-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gf-nets\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[ganforge.plugins]\nnets = gf_nets.models\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.splitlines()[1] == "installed plugins: gf_nets.models (gf-nets 0.3)"


def test_presets_lists_every_preset_with_a_description(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert all(len(line.split()) > 3 for line in lines)


def test_settings_prints_a_config_to_edit_with_what_each_setting_means(tmp_path, capsys):
    assert main(["settings", "--preset", "mnist-dcgan", "--set", "train.kimg=3", "--changed"]) == 0
    text = capsys.readouterr().out
    assert "kimg = 3.0  " in text and "# length of the run in thousands of real images" in text
    assert "z_dim" not in text  # the built-in default: not something the preset sets
    mine = tmp_path / "mine.toml"
    mine.write_text(text)
    assert load_config(path=mine) == load_config(preset="mnist-dcgan", overrides=["train.kimg=3"])
    assert main(["train", "--config", str(mine), "--dry-run"]) == 0
    assert "kimg = 3.0\n" in capsys.readouterr().out

    assert main(["settings", "loss"]) == 0
    sections = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert sections == ["[loss]"]


def test_train_resume_sample_end_to_end(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    overrides = tiny_overrides(image_folder, **{"train.ema_kimg": 0.05, "train.kimg": 0.032})
    assert main(["train", "--preset", "default", "--out", str(out), "--seed", "3", *set_args(overrides)]) == 0
    run_dir = only_run(out)
    assert "seed = 3" in (run_dir / "config.toml").read_text()
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.064"]) == 0
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["nimg"] == 64

    # the settings a run and a checkpoint trained with, read back as a preset's are
    capsys.readouterr()
    assert main(["settings", str(run_dir), "--changed"]) == 0
    assert "seed = 3  " in capsys.readouterr().out
    assert main(["settings", str(ckpt_io.resolve_checkpoint(run_dir)), "train"]) == 0
    text = capsys.readouterr().out
    assert "kimg = 0.064  " in text and "[model]" not in text
    assert main(["settings", str(run_dir), "--preset", "default"]) == 2
    assert "not both" in capsys.readouterr().err

    grid = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "--n", "9", "--out", str(grid), "--seed", "7"]) == 0
    with Image.open(grid) as image:
        assert image.size == (3 * 18 + 2, 3 * 18 + 2)
    assert main(["sample", str(run_dir), "--n", "9", "--out", str(grid)]) == 2  # never overwrites
    assert "--force" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--n", "1", "--out", str(tmp_path / "one.png")]) == 0
    assert capsys.readouterr().out == f"wrote a grid of 1 sample to {tmp_path / 'one.png'}\n"
    assert main(["sample", str(run_dir), "--n", "3", "--out", os.devnull]) == 2  # no suffix: a folder of PNGs
    assert capsys.readouterr().err == (f"error: {os.devnull} is a file where a folder is needed; choose another path "
                                       "or move the file\n")

    npz = tmp_path / "samples.npz"
    assert main(["sample", str(run_dir), "--n", "7", "--out", str(npz), "--batch-size", "3", "--seed", "7"]) == 0
    import numpy as np

    array = np.load(npz)["arr_0"]
    assert array.shape == (7, 16, 16, 1) and array.dtype == np.uint8
    grid_again = tmp_path / "grid7.png"
    assert main(["sample", str(run_dir), "--n", "7", "--out", str(grid_again), "--seed", "7", "--nrow", "7"]) == 0
    row = np.asarray(Image.open(grid_again).convert("L")).astype(int)
    for i in range(7):  # the same samples, though the .npz drew them 3 at a time
        assert np.abs(row[2:18, 2 + 18 * i : 18 + 18 * i] - array[i, :, :, 0]).max() <= 1, i
    assert main(["sample", str(run_dir), "--n", "7", "--out", str(npz)]) == 2

    folder = tmp_path / "samples"
    ckpt = ckpt_io.resolve_checkpoint(run_dir)
    assert main(["sample", str(ckpt), "--n", "5", "--out", str(folder), "--batch-size", "2"]) == 0
    files = sorted(folder.glob("*.png"))
    assert len(files) == 5
    with Image.open(files[0]) as image:
        assert image.size == (16, 16)
    before = {p.name: p.read_bytes() for p in files}
    assert main(["sample", str(ckpt), "--n", "3", "--out", str(folder)]) == 2  # a non-empty folder needs --force
    assert main(["sample", str(ckpt), "--n", "3", "--out", str(folder), "--seed", "1", "--force"]) == 0
    assert "(000005.png to 000007.png)" in capsys.readouterr().out
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in range(8)]
    assert all((folder / name).read_bytes() == data for name, data in before.items())  # added, none replaced


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path, image_folder, capsys, monkeypatch):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    grid = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "--n", "9", "--out", str(grid)]) == 0
    old_grid, old_ckpt = grid.read_bytes(), ckpt_io.resolve_checkpoint(run_dir).read_bytes()
    capsys.readouterr()

    fill_disk_after(monkeypatch, room=100)
    assert main(["sample", str(run_dir), "--n", "9", "--out", str(grid), "--seed", "1", "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {grid}: No space left on device" in err
    assert grid.read_bytes() == old_grid

    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "Traceback" not in err
    monkeypatch.undo()
    assert ckpt_io.resolve_checkpoint(run_dir).read_bytes() == old_ckpt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "images", "runs"]
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 0  # and goes on once freed


def test_sampling_is_seeded(tmp_path, image_folder):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    paths = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (1, 1, 2), strict=True):
        assert main(["sample", str(run_dir), "--n", "4", "--out", str(path), "--seed", str(seed)]) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()
    # a grid's suffix picks its format; the pixels are the same grid's
    for suffix, fmt in ((".jpg", "JPEG"), (".webp", "WEBP")):
        other = paths[0].with_suffix(suffix)
        assert main(["sample", str(run_dir), "--n", "4", "--out", str(other), "--seed", "1"]) == 0
        with Image.open(other) as im, Image.open(paths[0]) as png:
            assert im.format == fmt and im.size == png.size
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "a.gif")]) == 2
    huge = tmp_path / "huge.png"
    assert main(["sample", str(run_dir), "--n", "10001", "--out", str(huge)]) == 2
    assert not huge.exists()  # refused before drawing anything


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_trains_from_the_cli(tmp_path, preset):
    """Each preset's own nets and step order, on the bundled digits, for a few iterations."""
    out = tmp_path / "runs"
    args = ["train", "--preset", preset, "--out", str(out), "--set", "train.kimg=0.256",
            "--set", "train.tick_kimg=0.128", "--set", "train.grid_size=4"]
    if load_config(preset=preset).loss.critic_burst:  # a burst is never split: keep its first one short
        args += ["--set", "loss.critic_burst=2"]
    assert main(args) == 0
    run_dir = only_run(out)
    assert (run_dir / "progress.gif").is_file()
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "g.png")]) == 0


def test_summary_prints_layers_and_parameter_counts(capsys):
    assert main(["summary", "--preset", "mnist-mlp-bn"]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 1,510,032" in out
    assert "total parameters: 533,505" in out
    assert "[2, 1, 28, 28]" in out and "BatchNorm1d" in out


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--preset", "mnist-dcgan", "--set", "train.kimg=7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "kimg = 7.0" in out and "lr" in out


def test_dry_run_refuses_a_config_the_networks_cannot_take(capsys):
    assert main(["train", "--preset", "default", "--set", "data.img_size=17", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "data.img_size = s * 2^n" in captured.err and "[train]" not in captured.out
    assert main(["train", "--preset", "default", "--set", "model.g_norm_first=false", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "note: model.g_norm_first = false has no effect on the dcgan generator" in captured.err
    assert "g_norm_first = false" in captured.out


def test_dry_run_refuses_a_loss_setting_or_device_the_run_would_refuse(capsys):
    """Checked when the run builds its loss and picks its device: the dry run gives the same line."""
    dry = ["train", "--preset", "default", "--dry-run", "--set"]
    cases = [(["loss.name=hinge", "--set", "loss.label_smoothing=0.1"],
              "loss.label_smoothing applies to the BCE losses (ns, minimax), not hinge"),
             (["loss.name=rpgan", "--set", "loss.label_smoothing=0.1"],
              "loss.label_smoothing applies to the BCE losses (ns, minimax), not rpgan"),
             (["train.device=cpu", "--set", "train.amp=fp16"], "train.amp=fp16 needs a CUDA device"),
             (["train.device=cpu", "--set", "train.cuda_graph=true"], "train.cuda_graph needs a CUDA device"),
             (["train.device=cuda:99"], "device cuda:99 asked for, but ")]
    for settings, message in cases:
        assert main([*dry, *settings]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""
    assert main([*dry, "loss.label_smoothing=0.1", "--set", "train.device=cpu"]) == 0  # ns takes it


def test_dry_run_says_when_the_data_is_not_where_the_config_points(tmp_path, image_folder, capsys):
    """The one line the run would give, without reading an image or a data file."""
    dry = ["train", "--preset", "default", "--dry-run", "--set"]
    missing = tmp_path / "no-such-folder"
    assert main([*dry, f'data.name="folder:{missing}"']) == 2
    captured = capsys.readouterr()
    assert f"image folder {missing} does not exist" in captured.err and captured.out == ""
    assert main([*dry, f'data.name="folder:{image_folder}"']) == 0  # there: printed as usual
    assert "folder:" in capsys.readouterr().out
    for name, folder in (("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py"), ("celeba", "celeba")):
        assert main([*dry, f'data.name="{name}"', "--set", f'data.root="{tmp_path}"']) == 2
        err = capsys.readouterr().err
        assert f"not found under {tmp_path / folder}" in err and "--set data.download=true" in err
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # files are checked when the run reads them
    assert main([*dry, 'data.name="mnist"', "--set", f'data.root="{tmp_path}"']) == 0
    assert main([*dry, 'data.name="fashion-mnist"', "--set", f'data.root="{tmp_path}"', "--set",
                 "data.download=true"]) == 0  # the run would fetch it: nothing to say yet
    assert not any(tmp_path.glob("FashionMNIST*"))


def test_dry_run_gives_the_notes_on_the_data_format_that_the_run_would(tmp_path, capsys):
    """Colour trained as grey and images upscaled, read from a few image headers, as the run says them."""
    from PIL import Image

    colour = tmp_path / "colour"
    colour.mkdir()
    for i in range(16):
        Image.new("RGB", (20, 12), (200, 10 * i, 30)).save(colour / f"{i}.png")
    dry = ["train", "--preset", "default", "--dry-run", "--set", f'data.name="folder:{colour}"']
    grey_note = "is in colour and data.channels is 1, so G learns grey images; --set data.channels=3 trains in colour"
    assert main(dry) == 0
    captured = capsys.readouterr()
    assert captured.err.count(grey_note) == 1 and "[data]" in captured.out
    assert "images are about 12 px on their short side, upscaled 2.67x to data.img_size=32" in captured.err
    assert main([*dry, "--set", "data.channels=3", "--set", "data.img_size=16"]) == 0
    assert "note:" not in capsys.readouterr().err  # 1.33x: nothing to say
    assert main(["train", "--preset", "default", "--dry-run"]) == 0  # the bundled digits at 32 px: 1.14x
    assert "note:" not in capsys.readouterr().err
    assert main(["train", "--preset", "default", "--dry-run", "--set", "data.img_size=64"]) == 0
    assert "mnist5k's images are about 28 px on their short side, upscaled 2.29x" in capsys.readouterr().err


def test_dry_run_checks_a_conditional_model_against_the_classes_of_a_built_in_set(capsys):
    """The line the run would give after loading its data, from the set's known class count."""
    dry = ["train", "--dry-run", "--set"]
    cases = [("mnist-cgan", "model.n_classes=12",
              "model.n_classes=12 but mnist5k has 10 classes; set model.n_classes=10"),
             ("stacked-dcgan", "model.n_classes=10",
              "model.n_classes=10 but stacked-mnist5k has labels up to 999; set model.n_classes=1000")]
    for preset, setting, message in cases:
        assert main([*dry, setting, "--preset", preset]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""
    assert main([*dry, "model.n_classes=1000", "--preset", "stacked-dcgan"]) == 0
    # which 5 classes: known on reading
    assert main([*dry, "data.max_images=5", "--set", "train.batch_size=4", "--preset", "mnist-cgan"]) == 0


def test_dry_run_refuses_a_batch_larger_than_its_data(tmp_path, capsys):
    """As the run would after loading its data, from a built-in set's known size (under data.max_images), or
    a folder's, zip's or .npz's count of images, without decoding them."""
    from ganforge.config import DataConfig
    from ganforge.data import KNOWN_SIZES, load_raw

    for name in ("mnist5k", "stacked-mnist5k"):
        assert len(load_raw(DataConfig(name=name, channels=3 if name.startswith("stacked") else 1)).images) == \
            KNOWN_SIZES[name]
    dry = ["train", "--dry-run", "--preset", "default", "--set"]
    assert main([*dry, "train.batch_size=5000"]) == 0
    capsys.readouterr()
    for settings, size in ((["train.batch_size=5001"], 5000),
                           (["data.max_images=50", "--set", "train.batch_size=51"], 50)):
        assert main([*dry, *settings]) == 2
        captured = capsys.readouterr()
        assert f"is larger than the dataset ({size:,} images)" in captured.err and captured.out == ""
    folder = write_digit_folder(tmp_path / "digits", n_per_class=3)  # 6 images
    np.savez(tmp_path / "digits.npz", np.zeros((5, 8, 8), dtype=np.uint8))
    np.savez(tmp_path / "one.npz", np.zeros((1, 8, 8), dtype=np.uint8))
    with zipfile.ZipFile(tmp_path / "digits.zip", "w") as archive:
        for image in sorted(folder.rglob("*.png"))[:4]:
            archive.write(image, image.relative_to(folder).as_posix())
    for source, size in ((folder, 6), (tmp_path / "digits.npz", 5), (tmp_path / "digits.zip", 4),
                         (tmp_path / "one.npz", 1)):
        images = "1 image" if size == 1 else f"{size} images"
        at = ["--set", f"data.name=folder:{source}", "--set", "data.img_size=8"]
        assert main([*dry, f"train.batch_size={size}", *at]) == 0
        capsys.readouterr()
        assert main([*dry, f"train.batch_size={size + 1}", *at]) == 2
        assert f"is larger than the dataset ({images})" in capsys.readouterr().err


def test_known_class_counts_are_those_the_bundled_sets_load_with():
    from ganforge.config import DataConfig
    from ganforge.data import KNOWN_CLASSES, load_raw

    for name in ("mnist5k", "stacked-mnist5k"):
        raw = load_raw(DataConfig(name=name, channels=3 if name.startswith("stacked") else 1))
        assert int(raw.labels.max()) + 1 == KNOWN_CLASSES[name] == len(raw.labels.unique())


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'; valid choices:"),
        (["train", "--set", "train.speed=9"], "unknown config key train.speed"),
        (["settings", "warp"], "no setting mentions 'warp'; `ganforge settings` lists them all"),
        (["settings", "--preset", "nope"], "unknown preset 'nope'; valid choices:"),
        (["settings", "{tmp}/nope.pt"], "nope.pt does not exist; give a run directory or checkpoint made by"),
        (["settings", "{tmp}/", "train"], "is not a run directory (no config.toml in it) or a checkpoint file"),
        (["eval", "--real", "folder:{tmp}/nope", "--fake", "mnist5k", "--metrics", "fd_digits"],
         "image folder {tmp}/nope does not exist"),
        (["eval", "{tmp}/bad.pt", "--real", "folder:{tmp}/nope"], "image folder {tmp}/nope does not exist"),
        (["train", "--set", "data.name=folder:/no/such/dir", "--out", "{tmp}"], "does not exist"),
        (["train", "--set", "model.d=resnet9"], "unknown discriminator 'resnet9'"),
        (["train", "--resume", "{tmp}/nope"], "nope does not exist; give a run directory or a checkpoint file"),
        (["train", "--resume", "{tmp}/bad.pt", "--preset", "default"], "--resume takes its config from the "
         "checkpoint; use --set to change settings"),
        (["settings", "{tmp}/bad.pt", "train", "kimg"], "settings takes a run (or checkpoint) and one word to look "
         "up, got {tmp}/bad.pt train kimg"),
        (["sample", "{tmp}/bad.pt", "--n", "600", "--nearest", "20", "--out", "{tmp}/x.png"], "--n 600 samples with "
         "20 neighbours each is more than one picture shows (at most 10,000 images); draw fewer"),
        (["sample", "{tmp}/nope", "--out", "{tmp}/x.png"], "nope does not exist; give a run directory or a"),
        (["sample", "{tmp}/bad.pt", "--out", "{tmp}/x.png"], "truncated or corrupt"),
        (["sample", "{tmp}/bad.pt", "--out", "{tmp}/x.jpg"], "truncated or corrupt"),
        (["eval", "--real", "mnist5k", "--fake", "mnist5k", "--out", "{tmp}"], "is a folder"),
        (["eval", "--real", "mnist5k", "--fake", "mnist5k", "--out", "{tmp}/bad.pt"], "not valid JSON"),
        (["eval", "--real", "mnist5k", "--fake", "mnist5k", "--out", "{tmp}/object.json"], "object.json is not a "
         "list of evaluations; move it aside"),  # before the evaluation, which says nothing first
        (["eval", "{tmp}/bad.pt", "--out", "{tmp}/m.json"], "--out is for --real/--fake"),
        (["eval", "--real", "mnist5k", "--fake", "mnist5k", "--metrics", " , "], "--metrics ' , ' names no metric; "
         "give one or more, comma-separated"),
        (["sample", "{tmp}/bad.pt", "--out", "{tmp}/x.npz", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["sample", "{tmp}/bad.pt", "--out", "{tmp}/.png"], "is an extension without a name; give a file such as "
         "samples.png"),
        (["train", "--out", "{tmp}/bad.pt/runs"], "{tmp}/bad.pt is a file where a folder is needed"),
        (["train", "--out", "{tmp}/runs", "--name", "a" * 300], "File name too long (its longest part has 305 "
         "characters); give a shorter name (--name, --out)"),
        # a net too large for the address space: torch's allocator refuses it at once
        (["train", "--set", "model.z_dim=100000000000", "--out", "{tmp}/runs"], "out of memory (tried to allocate"),
        (["train", "--set", "model.g_width=1e9", "--dry-run"], "out of memory (a tensor of shape [4000000000, "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "object.json").write_text('{"kimg": 1}\n')  # one line of a stats.jsonl, say
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    needle = needle.replace("{tmp}", str(tmp_path))
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert needle in err and captured.out == ""  # nothing said about the input before what is wrong with it
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("command", [["sample", "run", "--out", "x.png"], ["eval", "run"], ["train"]])
@pytest.mark.parametrize("seed, needle", [("-1", "from 0 to 4294967295, got -1"), ("2**40", "a whole number")])
def test_seeds_outside_every_random_streams_range_are_refused(command, seed, needle, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--seed", seed])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --seed: a seed is" in err and needle in err
    assert err.startswith("error: ") and err.count("\n") == 1  # one line, as every error is, not the usage too


@pytest.mark.parametrize("argv, said", [
    ([], "error: ganforge: give a command: presets, settings, train, sample, eval, compare, report, summary, "
         "export, download (see ganforge --help)"),
    (["sample", "run"], "error: ganforge sample: the following arguments are required: --out "
                        "(see ganforge sample --help)"),
    (["sample", "run", "--out", "x.png", "--n", "2.5"], "error: ganforge sample: argument --n: a whole number, "
                                                        "got '2.5' (see ganforge sample --help)"),
    (["eval", "run", "--n", "1e400"], "error: ganforge eval: argument --n: a whole number, got '1e400' "
                                      "(see ganforge eval --help)"),
    # an empty path would read as the current folder
    (["train", "--config", ""], "error: ganforge train: argument --config: an empty value; give a name or path "
                                "(see ganforge train --help)"),
    (["sample", "run", "--out", "x.png", "--ckpt", ""], "error: ganforge sample: argument --ckpt: an empty value; "
                                                        "give a name or path (see ganforge sample --help)"),
    (["eval", "--real", "mnist5k", "--fake", " "], "error: ganforge eval: argument --fake: an empty value; give a "
                                                   "name or path (see ganforge eval --help)"),
])
def test_usage_mistakes_are_one_line_that_points_to_help(argv, said, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err == said + "\n"


def test_counts_take_the_ways_people_write_them(tmp_path, image_folder):
    import numpy as np

    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder))]) == 0
    for written in ("1e3", "1_000", "1000", "1.0e3"):
        out = tmp_path / f"{written}.npz"
        assert main(["sample", str(only_run(tmp_path / "runs")), "--n", written, "--out", str(out)]) == 0
        assert np.load(out)["arr_0"].shape[0] == 1000


def test_an_os_error_without_a_file_name_is_one_line_too(monkeypatch, capsys):
    import errno

    from ganforge import cli

    def failing_io(args):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cli, "cmd_summary", failing_io)
    assert main(["summary"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: Input/output error while reading or writing a file (--debug shows which)"


def test_a_run_that_cannot_start_leaves_no_run_directory(tmp_path, image_folder):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), "--set", "data.name=folder:/no/such/dir"]) == 2
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    assert only_run(out).name.startswith("0000-")  # the failed start neither stayed nor took a number
    deep = tmp_path / "new" / "runs"  # the folders made for a run that could not start go with it
    assert main(["train", "--out", str(deep), "--set", "data.name=folder:/no/such/dir"]) == 2
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert main(["train", "--out", str(tmp_path / "kept" / "runs"), "--set", "data.name=folder:/no/such/dir"]) == 2
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_runs_are_kept_out_of_the_image_folder_they_train_on(tmp_path, image_folder, capsys):
    # the folder is read again at each start: runs inside it would feed their sample grids back as training images
    tiny = set_args(tiny_overrides(image_folder))
    before = sorted(p.relative_to(image_folder) for p in image_folder.rglob("*"))
    for out in (image_folder / "runs", image_folder):
        for dry in ([], ["--dry-run"]):
            assert main(["train", "--out", str(out), *tiny, *dry]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"--out {out} is inside the image folder {image_folder}" in err, err
            assert f"--out {image_folder.parent / 'runs'}" in err
    assert sorted(p.relative_to(image_folder) for p in image_folder.rglob("*")) == before
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *tiny]) == 0
    run_dir = only_run(out)
    lone = tmp_path / "ckpt.pt"
    shutil.copyfile(ckpt_io.list_checkpoints(run_dir)[-1], lone)
    capsys.readouterr()
    assert main(["train", "--resume", str(lone), "--out", str(image_folder / "more"), "--kimg", "0.096"]) == 2
    assert "is inside the image folder" in capsys.readouterr().err
    # a run moved into its image folder (made before this check) is refused too, and goes on once moved out
    inside = image_folder / "runs" / run_dir.name
    shutil.move(run_dir, inside)
    for dry in ([], ["--dry-run"]):
        assert main(["train", "--resume", str(inside), "--kimg", "0.096", *dry]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"run directory {inside} lies inside its image folder" in err, err
    assert not (inside / "checkpoints" / "ckpt-000000096.pt").exists()
    shutil.move(inside, run_dir)
    assert main(["train", "--resume", str(run_dir), "--kimg", "0.096"]) == 0
    assert (run_dir / "checkpoints" / "ckpt-000000096.pt").is_file()


def test_a_failed_resume_changes_nothing_in_the_run(tmp_path, image_folder):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    ckpt = ckpt_io.list_checkpoints(run_dir)[0]  # an early checkpoint: a resume from it trims stats.jsonl
    assert main(["train", "--resume", str(ckpt), "--set", "data.name=folder:/no/such/dir"]) == 2
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_resuming_a_finished_run_says_how_to_go_on(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    checkpoints = ckpt_io.list_checkpoints(run_dir)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0  # a job script may resume until done
    assert "nothing to train; to go on, resume with --set train.kimg=N" in capsys.readouterr().out
    assert ckpt_io.list_checkpoints(run_dir) == checkpoints
    # an override that trains nothing is not written into config.toml, where it would describe no checkpoint
    config = (run_dir / "config.toml").read_text()
    assert main(["train", "--resume", str(run_dir), "--set", "optim.g_lr=0.5"]) == 0
    assert (run_dir / "config.toml").read_text() == config


def test_sample_interpolate_draws_one_latent_walk_per_row_or_all_at_once_in_a_gif(tmp_path, image_folder, capsys):
    import numpy as np
    from PIL import ImageSequence

    from ganforge.generators import load_generator
    from ganforge.report import grid_image

    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    walk = tmp_path / "walk.png"
    assert main(["sample", str(run_dir), "--interpolate", "4", "--n", "9", "--out", str(walk), "--seed", "2"]) == 0
    assert "wrote 2 latent walks of 4 images" in capsys.readouterr().out
    with Image.open(walk) as image:
        assert image.size == (4 * 18 + 2, 2 * 18 + 2)  # 16 px images, 2 px padding
    for argv, needle in ((["--interpolate", "1"], "at least 2"), (["--interpolate", "4", "--n", "3"], "--n 4 or more"),
                         (["--interpolate", "4", "--out", str(tmp_path / "w.npz")], "or a .gif whose frames"),
                         (["--out", str(tmp_path / "w.gif")], "a .gif animates latent walks; add --interpolate"),
                         (["--interpolate", "2", "--n", "20002", "--out", str(tmp_path / "w.gif")],
                          "more images than one picture or animation shows (at most 10,000)"),
                         (["--interpolate", "4", "--class", "1"], "needs a class-conditional run")):
        default_out = [] if "--out" in argv else ["--out", str(tmp_path / "w.png")]
        assert main(["sample", str(run_dir), *default_out, *argv]) == 2
        assert needle in capsys.readouterr().err
    gif = tmp_path / "walk.gif"
    assert main(["sample", str(run_dir), "--interpolate", "5", "--n", "6", "--out", str(gif), "--seed", "2"]) == 0
    assert "wrote 1 latent walk of 5 images" in capsys.readouterr().out
    with Image.open(gif) as im:
        frames = [np.asarray(frame.convert("RGB")).astype(int) for frame in ImageSequence.Iterator(im)]
    assert len(frames) == 8  # 5 steps there, 3 back between the ends
    walk = load_generator(run_dir).interpolate(1, 5, seed=2)
    for t, frame in enumerate(frames[:5]):
        expected = grid_image(walk[t : t + 1]).permute(1, 2, 0).numpy().astype(int)
        assert frame.shape == expected.shape and np.abs(frame - expected).max() <= 2  # GIF's palette
    assert all(np.array_equal(frames[5 + k], frames[3 - k]) for k in range(3))
    assert not np.array_equal(frames[0], frames[4])  # the walk moves


def test_sample_truncation_draws_the_truncated_samples_into_every_output(tmp_path, image_folder, capsys):
    import numpy as np

    from ganforge.generators import load_generator
    from ganforge.report import to_uint8

    out = tmp_path / "runs"  # a fast-learning G without an average: samples that differ at 8 bits
    overrides = tiny_overrides(image_folder, **{"train.ema_kimg": 0, "optim.g_lr": 0.02})
    assert main(["train", "--out", str(out), *set_args(overrides)]) == 0
    run_dir = only_run(out)
    expected = to_uint8(load_generator(run_dir).sample(5, seed=2, truncation=0.7)).permute(0, 2, 3, 1).numpy()
    npz, folder = tmp_path / "cut.npz", tmp_path / "cut"
    for target in (npz, folder):
        assert main(["sample", str(run_dir), "--n", "5", "--out", str(target), "--seed", "2", "--truncation", "0.7",
                     "--batch-size", "2"]) == 0
    assert np.abs(np.load(npz)["arr_0"].astype(int) - expected).max() <= 1
    pngs = np.stack([np.asarray(Image.open(folder / f"{i:06d}.png")) for i in range(5)])
    assert np.abs(pngs.astype(int) - expected[..., 0]).max() <= 1
    plain = to_uint8(load_generator(run_dir).sample(5, seed=2)).permute(0, 2, 3, 1).numpy()
    assert np.abs(plain.astype(int) - expected).max() > 8  # truncation changed them
    walk = tmp_path / "walk.png"
    assert main(["sample", str(run_dir), "--interpolate", "3", "--n", "3", "--out", str(walk), "--truncation",
                 "0.7"]) == 0
    with pytest.raises(SystemExit):
        main(["sample", str(run_dir), "--out", str(tmp_path / "x.png"), "--truncation", "-1"])
    assert "argument --truncation: a threshold above 0 such as 0.5 or 1" in capsys.readouterr().err


def test_nearest_training_grid_puts_each_sample_before_its_nearest_training_images():
    from ganforge.report import nearest_training_grid

    train = torch.stack([torch.full((1, 2, 2), v) for v in (-1.0, 0.0, 0.5, 1.0)])
    samples = torch.stack([torch.full((1, 2, 2), 0.9), torch.full((1, 2, 2), -0.4)])
    images, dists = nearest_training_grid(samples, train, 2)
    assert images.shape == (6, 1, 2, 2)
    assert [round(v, 2) for v in images[:, 0, 0, 0].tolist()] == [0.9, 1.0, 0.5, -0.4, 0.0, -1.0]
    assert torch.allclose(dists, torch.tensor([[0.2, 0.8], [0.8, 1.2]], dtype=torch.float64), atol=1e-6)
    dots = torch.full((3, 1, 9, 9), -1.0)
    dots[0, 0, 4, 4] = dots[1, 0, 2, 2] = dots[2, 0, 4, 6] = 1.0  # the last: the first moved 2 px right
    images, dists = nearest_training_grid(dots[2:], dots[:2], 1)
    assert torch.equal(images[1], dots[0]) and dists[0, 0] == 0  # a copy moved by 2 px is still found
    left = torch.full((2, 1, 9, 9), -1.0)
    left[0, 0, 4, 1] = left[1, 0, 1, 4] = 1.0  # a dot left of centre, and one near the top
    images, dists = nearest_training_grid(left[:1].flip(-1), left, 2, mirror=True)  # its mirror image
    assert torch.equal(images[1], left[0].flip(-1)) and dists[0, 0] == 0  # shown as it matched
    assert torch.equal(images[2], left[1]) and dists[0, 1] > 0  # symmetric: either way round
    images, dists = nearest_training_grid(left[:1].flip(-1), left, 1)
    assert dists[0, 0] > 0  # without mirror, the mirror image is another picture


def test_sample_nearest_draws_each_sample_beside_its_nearest_training_images(tmp_path, image_folder, capsys):
    import shutil

    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    grid = tmp_path / "nn.png"
    assert main(["sample", str(run_dir), "--nearest", "3", "--n", "2", "--out", str(grid)]) == 0
    assert "each followed by its 3 nearest of the run's 32 training images" in capsys.readouterr().out
    with Image.open(grid) as image:
        assert image.size == (4 * 18 + 2, 2 * 18 + 2)  # 16 px images, 2 px padding
    for argv, needle in ((["--nearest", "0"], "at least 1"), (["--nearest", "33"], "more than the run's 32"),
                         (["--nearest", "2", "--interpolate", "3"], "give one of them"),
                         (["--nearest", "2", "--out", str(tmp_path / "nn.npz")], "give a .png"),
                         (["--nearest", "2", "--out", str(grid)], "exists"),
                         (["--out", str(tmp_path / "x.txt")], "--out " + str(tmp_path / "x.txt") + ": give a .png (or "
                          ".jpg, .webp) for a grid, a .npz for an array, or a directory for PNGs")):
        default_out = [] if "--out" in argv else ["--out", str(tmp_path / "other.png")]
        assert main(["sample", str(run_dir), *default_out, *argv]) == 2
        assert needle in capsys.readouterr().err
    shutil.rmtree(image_folder)  # the training images moved away: said, not a traceback
    assert main(["sample", str(run_dir), "--nearest", "2", "--out", str(tmp_path / "gone.png")]) == 2
    assert "are not there any more" in capsys.readouterr().err


def test_a_run_on_mirrored_images_counts_mirror_images_as_training_images(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder, **{"data.mirror": "true"}))]) == 0
    run_dir = only_run(out)
    assert main(["sample", str(run_dir), "--nearest", "2", "--n", "2", "--out", str(tmp_path / "nn.png")]) == 0
    assert "nearest of the run's 32 training images and their mirror images" in capsys.readouterr().out
    assert main(["eval", str(run_dir), "--metrics", "copies", "--n", "16"]) == 0
    records = json.loads((run_dir / "metrics.json").read_text())[-1]["results"]
    assert [r["metric"] for r in records] == ["authenticity", "nn_ratio"] and all(r["mirror"] for r in records)


def test_eval_names_the_metrics_file_it_appended_to(tmp_path, image_folder, capsys):
    import json
    import shutil

    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    loose = tmp_path / "kept" / "g.pt"  # a checkpoint copied out of its run
    loose.parent.mkdir()
    shutil.copy(ckpt_io.resolve_checkpoint(run_dir), loose)
    for target, expected in ((run_dir, run_dir / "metrics.json"), (loose, loose.parent / "metrics.json")):
        capsys.readouterr()
        assert main(["eval", str(target), "--n", "20", "--metrics", "fd_digits"]) == 0
        said = capsys.readouterr().out.rstrip()
        assert f"appended to {expected}" in said
        assert said.endswith(f"; report {run_dir / 'report.html'}") == (target == run_dir)  # a run's report only
        assert json.loads(expected.read_text())[-1]["results"][0]["metric"] == "fd_digits"
    # a config.toml broken by hand stops the report, not the evaluation: its results are shown and kept
    config = run_dir / "config.toml"
    config.write_text(config.read_text() + "garbage [[[\n")
    before = len(json.loads((run_dir / "metrics.json").read_text()))
    for ckpt in ("latest", "all"):
        assert main(["eval", str(run_dir), "--n", "20", "--metrics", "kid_digits", "--ckpt", ckpt]) == 0
        said = capsys.readouterr().out
        assert "kid_digits" in said and f"report.html not rewritten: {config} is not valid TOML" in said
    assert len(json.loads((run_dir / "metrics.json").read_text())) == before + 1 + len(ckpt_io.list_checkpoints(
        run_dir))


def test_eval_of_a_folder_of_runs_evaluates_each_and_goes_on_past_one_it_cannot(tmp_path, image_folder, capsys):
    import json

    out = tmp_path / "runs"
    for seed in (1, 2):
        assert main(["train", "--out", str(out), "--seed", str(seed), *set_args(tiny_overrides(image_folder))]) == 0
    first, second = sorted(out.iterdir())
    (out / "0002-stopped").mkdir()  # a run that stopped before its first checkpoint
    (out / "0002-stopped" / "config.toml").write_text((first / "config.toml").read_text())
    capsys.readouterr()
    assert main(["eval", str(out), "--n", "20", "--metrics", "fd_digits"]) == 2
    captured = capsys.readouterr()
    for run in (first, second):
        assert f"== {run}" in captured.out
        assert json.loads((run / "metrics.json").read_text())[-1]["results"][0]["metric"] == "fd_digits"
    assert f"evaluated 2 of 3 runs; `ganforge compare {out}` puts them side by side" in captured.out
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and "0002-stopped has no checkpoints" in errors[0]
    assert errors[1] == f"error: 1 of 3 runs not evaluated ({out / '0002-stopped'}): see the errors above"

    # runs named one by one; a checkpoint path cannot stand for several runs
    evaluations = len(json.loads((first / "metrics.json").read_text()))
    assert main(["eval", str(first), str(second), f"{first}/", "--n", "20", "--metrics", "kid_digits"]) == 0
    assert "evaluated 2 of 2 runs" in capsys.readouterr().out  # a run named twice is evaluated once
    assert len(json.loads((first / "metrics.json").read_text())) == evaluations + 1
    for run in (first, second):
        assert json.loads((run / "metrics.json").read_text())[-1]["results"][0]["metric"] == "kid_digits"
    ckpt = ckpt_io.resolve_checkpoint(first)
    assert main(["eval", str(first), str(second), "--ckpt", str(ckpt)]) == 2
    assert "is one checkpoint and 2 runs are given" in capsys.readouterr().err


def test_resume_dry_run_seed_and_out(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), "--seed", "4", *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.5", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "kimg = 0.5" in captured.out and "seed = 4" in captured.out  # the checkpoint's config plus the override
    assert captured.err == ""  # the run's length alone is no change of settings
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.5", "--set", "optim.d_lr=1e-5",
                 "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "d_lr = 1e-05" in captured.out
    assert captured.err.startswith("note: this resume would change ") and "optim.d_lr " in captured.err
    assert captured.err.rstrip().endswith("-> 1e-05"), captured.err
    for argv, needle in (
        (["--seed", "5"], "continues the random streams of its checkpoint (train.seed = 4)"),
        (["--set", "train.seed=5"], "drop the seed override"),
        (["--out", str(tmp_path / "elsewhere")], "continues in the run's own directory; drop --out"),
        (["--name", "other"], "continues in the run's own directory; drop --name"),
        (["--set", "data.name=mnist5k", "--set", "train.batch_size=6000", "--dry-run"],  # checked as train's is
         "train.batch_size 6000 is larger than the dataset (5,000 images)"),
    ):
        assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.5", *argv]) == 2
        assert needle in capsys.readouterr().err
    first = run_dir / "checkpoints" / "ckpt-000000032.pt"
    for argv, needle in (
        (["train", "--resume", str(first), "--dry-run"], "ckpt-000000032.pt is not the run's latest checkpoint"),
        (["train", "--rewind", *set_args(tiny_overrides(image_folder))], "--rewind goes with --resume"),
    ):
        assert main(argv) == 2
        assert needle in capsys.readouterr().err
    assert main(["train", "--resume", str(first), "--rewind", "--dry-run"]) == 0
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # nothing trained
    assert not (tmp_path / "elsewhere").exists()
    assert main(["train", "--resume", str(run_dir), "--seed", "4", "--set", "train.kimg=0.128"]) == 0  # its own seed
    config_file = run_dir / "config.toml"
    config_file.write_text(config_file.read_text().replace("\nbatch_size = 8\n", "\nbatch_size = 4\n"))
    capsys.readouterr()
    for argv in (["--dry-run"], ["--set", "train.kimg=0.16"]):  # an edit to config.toml alone is named, not lost
        assert main(["train", "--resume", str(run_dir), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "train.batch_size = 4 there, 8 in the checkpoint" in err, err
        assert "resume with --set train.batch_size=4 to train with the change" in err


def test_a_checkpoint_from_elsewhere_resumes_into_a_new_run_under_out(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    lone = tmp_path / "ckpt.pt"
    shutil.copyfile(only_run(out) / "checkpoints" / "ckpt-000000032.pt", lone)
    elsewhere = tmp_path / "elsewhere"
    capsys.readouterr()
    assert main(["train", "--resume", str(lone), "--out", str(elsewhere), "--kimg", "0.096", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith(f"note: {lone} lies in no run directory, so the resume would go on in a new one "
                                   f"under {elsewhere}")
    assert "kimg = 0.096" in captured.out and not elsewhere.exists()
    for argv, needle in (
        (["--kimg", "0.096", "--rewind"], "drop --rewind"),
        (["--kimg", "0.032"], "the run already reached train.kimg=0.032, so there is nothing to train"),
        (["--kimg", "0.096", "--name", "/"], "run name '/' has no letter or digit"),
    ):
        assert main(["train", "--resume", str(lone), "--out", str(elsewhere), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert not elsewhere.exists()
    assert main(["train", "--resume", str(lone), "--out", str(elsewhere), "--name", "more", "--kimg", "0.096"]) == 0
    assert "in a new run directory" in capsys.readouterr().out
    run = only_run(elsewhere)
    assert run.name == "0000-more"
    assert [p.name for p in sorted((run / "checkpoints").glob("ckpt-*.pt"))][-1] == "ckpt-000000096.pt"
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0


def test_a_run_can_be_named_in_place_of_its_preset(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    tiny = set_args(tiny_overrides(image_folder, **{"train.kimg": 0.032}))
    assert main(["train", "--out", str(out), "--name", "lr 3e-3/bs16", *tiny]) == 0
    assert main(["train", "--out", str(out), *tiny]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000-lr-3e-3-bs16", "0001-default"]  # one numbering
    capsys.readouterr()
    for name in ("", "/", " .. "):
        assert main(["train", "--out", str(out), "--name", name, "--dry-run", *tiny]) == 2
        assert capsys.readouterr().err.strip() == (f"error: run name {name!r} has no letter or digit to name a "
                                                   "directory with; give one such as lr-1e-3")
    assert len(list(out.iterdir())) == 2


def test_resume_names_an_override_that_would_change_the_networks(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    for overrides, needle in (
        (["model.g_width=16"], "built with model.g_width = 8; drop that override"),
        (["model.d_spectral_norm=true", "train.batch_size=4"], "built with model.d_spectral_norm = false; drop"),
        (["data.img_size=32", "model.g_width=16"], "built with data.img_size = 16, model.g_width = 8; drop those"),
        (["optim.name=rmsprop"], "continues its optimizer's state (optim.name = adam); drop the override"),
    ):
        argv = [a for o in [*overrides, "train.kimg=0.5"] for a in ("--set", o)]
        assert main(["train", "--resume", str(run_dir), *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and f"--config {run_dir / 'config.toml'}" in err, err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    # settings that leave the weights' shapes alone still resume
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.5", "--set", "model.init=xavier",
                 "--set", "train.batch_size=4", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "model.init=xavier"]) == 0
    assert "note: model.init=xavier has no effect here" in capsys.readouterr().out
    assert main(["train", "--resume", str(run_dir), "--set", "train.ema_kimg=0", "--set", "train.kimg=0.096"]) == 0
    assert "note: train.ema_kimg=0 leaves the checkpoint's average of G behind" in capsys.readouterr().out
    assert main(["train", "--resume", str(run_dir), "--set", "train.ema_kimg=1", "--set", "train.kimg=0.128"]) == 0
    assert "note: the average of G (train.ema_kimg=1) starts here" in capsys.readouterr().out


def test_resume_survives_a_stats_line_torn_by_a_crash(tmp_path, image_folder):
    import json

    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    with open(run_dir / "stats.jsonl", "a") as f:
        f.write('{"tick": 3, "kimg": 0.0')  # the disk filled mid-append
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 0
    ticks = [json.loads(line)["tick"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert ticks == [1, 2, 3, 4]


def test_a_run_being_trained_cannot_be_resumed_by_a_second_process(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with ckpt_io.run_lock(run_dir):  # as a trainer of this run holds it
        assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 2
        assert "being trained by another process" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 0  # free again


def test_a_run_still_before_its_first_checkpoint_says_so(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    for ckpt in (run_dir / "checkpoints").iterdir():
        ckpt.unlink()
    capsys.readouterr()
    with ckpt_io.run_lock(run_dir):  # as a trainer in its first tick holds it
        for argv in (["train", "--resume", str(run_dir)], ["eval", str(run_dir)],
                     ["sample", str(run_dir), "--out", str(tmp_path / "g.png")]):
            assert main(argv) == 2
            assert "is training and has not written its first checkpoint yet" in capsys.readouterr().err
    assert main(["eval", str(run_dir)]) == 2  # nobody training it: the checkpoints are gone
    err = capsys.readouterr().err
    assert "has no checkpoints in" in err
    command = err.split("train it afresh with `")[1].split("`")[0].split()  # the config the run was made with
    assert main(command[1:]) == 0 and len(list(run_dir.parent.glob("0*"))) == 2


def _spawn(args: list[str], cwd: Path, stderr: int = subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ganforge", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=stderr, text=True)


def _wait_for_checkpoint(run_parent: Path, proc: subprocess.Popen, timeout: float = 60) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = list(run_parent.glob("*/checkpoints/ckpt-*.pt")) if run_parent.exists() else []
        if runs:
            return runs[0].parent.parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no checkpoint appeared")


def test_a_real_process_reports_bad_input_without_traceback(tmp_path):
    proc = _spawn(["train", "--preset", "nope"], tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.strip().startswith("error: unknown preset") and "Traceback" not in err


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, image_folder):
    overrides = tiny_overrides(image_folder, **{"train.kimg": 1000, "train.tick_kimg": 0.016})
    proc = _spawn(["train", "--out", "runs", *set_args(overrides)], tmp_path)
    run_dir = _wait_for_checkpoint(tmp_path / "runs", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    ckpt = ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))
    assert ckpt["nimg"] > 0
    assert "Stopped at" in (run_dir / "report.html").read_text()  # the report says where and how to go on


@pytest.mark.parametrize("stop", ["pipe", "ctrl_c", "ctrl_c_stderr_too"])
def test_a_run_whose_output_reader_exits_stops_as_on_ctrl_c(tmp_path, image_folder, stop):
    """`ganforge train ... | head -2`: training on unseen, the shell waiting on it, helps no one; nor did
    exiting 0 at the next log line with that tick's work unsaved. `... | tee log` (or `2>&1 | tee log`) and
    Ctrl-C, which stops tee too: the stop's log line (or its 'stopping' note) found the pipe closed, and the
    stop's checkpoint was not saved."""
    overrides = tiny_overrides(image_folder, **{"train.kimg": 1000, "train.tick_kimg": 0.016})
    proc = _spawn(["train", "--out", "runs", *set_args(overrides)], tmp_path,
                  stderr=subprocess.STDOUT if stop == "ctrl_c_stderr_too" else subprocess.PIPE)
    first = proc.stdout.readline()
    while first.startswith("note: "):  # what this machine's CPU would say first (a note on bf16)
        first = proc.stdout.readline()
    assert first.startswith("run directory")
    if stop != "pipe":  # once under way: a Ctrl-C while the run starts leaves nothing to resume
        _wait_for_checkpoint(tmp_path / "runs", proc)
    before = ckpt_io.list_checkpoints(only_run(tmp_path / "runs"))
    proc.stdout.close()  # as head does once it has its lines, or tee on Ctrl-C
    if stop != "pipe":
        proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1] or ""  # communicate closes the pipes it read
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    if proc.stderr:
        assert "interrupted: stopped at" in err and "continue with: ganforge train --resume" in err, err
    assert stop != "pipe" or "because the program reading its output exited" in err, err
    run_dir = only_run(tmp_path / "runs")
    after = ckpt_io.list_checkpoints(run_dir)
    assert after and after[-1] not in before  # the stop's own
    assert ckpt_io.load_checkpoint(after[-1])["nimg"] > 0


def test_a_run_whose_terminal_hangs_up_trains_on(tmp_path, image_folder):
    """`ganforge train ... & disown`, then the SSH session ends: no SIGHUP reaches the run, but each write to
    its terminal fails with EIO, which ended it at the next progress-bar update with no checkpoint of the
    tick. It now trains to the end, as under nohup."""
    import pty

    overrides = tiny_overrides(image_folder, **{"train.kimg": 0.4, "train.tick_kimg": 0.016})
    terminal, its_side = pty.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "train", "--out", "runs", *set_args(overrides)],
                            cwd=tmp_path, env=env, stdin=its_side, stdout=its_side, stderr=its_side,
                            start_new_session=True)  # the terminal is not its controlling one: no SIGHUP
    os.close(its_side)
    seen = b""
    while b"run directory" not in seen:
        seen += os.read(terminal, 4096)
    os.close(terminal)  # the session ends
    assert proc.wait(timeout=120) == 0
    run_dir = only_run(tmp_path / "runs")
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["nimg"] == 400
    assert (run_dir / "progress.gif").is_file()


def test_a_hang_up_stops_a_run_as_ctrl_c_does_unless_nohup_ignores_it(tmp_path, image_folder):
    """The run's terminal closes or its SSH connection drops (SIGHUP): it ended at once, losing the work since
    its last tick. It now stops as on Ctrl-C, with a checkpoint of the step it was at. Under nohup, which
    ignores SIGHUP, it trains on."""
    import fcntl
    import pty
    import select
    import termios

    overrides = tiny_overrides(image_folder, **{"train.kimg": 1000, "train.tick_kimg": 0.016})
    terminal, its_side = pty.openpty()

    def own_terminal() -> None:  # a login's shell: the pty is the session's controlling terminal
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a login has it, though the tests run under nohup

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "train", "--out", "runs", *set_args(overrides)],
                            cwd=tmp_path, env=env, stdin=its_side, stdout=its_side, stderr=its_side,
                            preexec_fn=own_terminal)
    os.close(its_side)
    deadline = time.time() + 60
    while not list(tmp_path.glob("runs/*/checkpoints/ckpt-*.pt")):
        assert proc.poll() is None and time.time() < deadline
        if select.select([terminal], [], [], 0.1)[0]:
            os.read(terminal, 65536)  # as the terminal shows it: a full pty would block the run's writes
    run_dir = only_run(tmp_path / "runs")
    before = ckpt_io.list_checkpoints(run_dir)
    os.close(terminal)  # the terminal goes: the kernel hangs up its session
    assert proc.wait(timeout=60) == 130
    after = ckpt_io.list_checkpoints(run_dir)
    assert after and after[-1] not in before  # the stop's own
    assert ckpt_io.load_checkpoint(after[-1])["nimg"] > 0
    assert "Stopped at" in (run_dir / "report.html").read_text()

    overrides = tiny_overrides(image_folder, **{"train.kimg": 0.2, "train.tick_kimg": 0.016})
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "train", "--out", "nohup", *set_args(overrides)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    _wait_for_checkpoint(tmp_path / "nohup", proc)
    proc.send_signal(signal.SIGHUP)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, err
    assert "stopping" not in err
    ckpt = ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(only_run(tmp_path / "nohup")))
    assert ckpt["nimg"] == 200


def test_a_sample_whose_terminal_hangs_up_finishes_and_says_it_did(tmp_path, image_folder):
    """`ganforge sample ... & disown`, then log out: it wrote every file, then its last line met the closed
    terminal (EIO) and it exited 2, as a failure. The rest of its output now goes nowhere and it exits 0."""
    import pty

    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(tmp_path / "runs")
    terminal, its_side = pty.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ganforge", "sample", str(run_dir), "--n", "3000", "--out",
                             "many", "--batch-size", "50"], cwd=tmp_path, env=env, stdin=its_side, stdout=its_side,
                            stderr=its_side, start_new_session=True)  # no controlling terminal: no SIGHUP
    os.close(its_side)
    deadline = time.time() + 60
    while len(list((tmp_path / "many").glob("*.png"))) < 50:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.close(terminal)  # the session ends while it samples
    assert proc.wait(timeout=120) == 0
    assert len(list((tmp_path / "many").glob("*.png"))) == 3000


def test_eval_into_a_closed_pipe_still_saves_its_results(tmp_path, image_folder):
    """`ganforge eval RUN | head -1`: the notes said before the table met the closed pipe, and the results
    were never appended to metrics.json (nor the report rewritten)."""
    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(tmp_path / "runs")
    proc = _spawn(["eval", str(run_dir), "--metrics", "fd_digits", "--n", "64"], tmp_path)
    proc.stdout.close()  # long before the results: a note about n = 64 is the first line
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, err
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert [(r["metric"], r["n_fake"]) for entry in saved for r in entry["results"]] == [("fd_digits", 64)]
    assert "fd_digits" in (run_dir / "report.html").read_text()


def test_a_refusal_into_a_closed_pipe_keeps_its_exit_code(tmp_path):
    """`ganforge train --preset nope 2>&1 | true`: the error line meets the closed pipe; a script that checks
    the exit code still reads 2, not the 1 of a traceback nobody sees."""
    proc = _spawn(["train", "--preset", "nope"], tmp_path, stderr=subprocess.STDOUT)
    proc.stdout.close()  # long before the process has imported torch and found the preset unknown
    assert proc.wait(timeout=60) == 2


def test_sigterm_unwinds_a_sample_like_ctrl_c(tmp_path, image_folder):
    """A scheduler's time limit (SIGTERM) mid-way through a large .npz leaves no temp file behind."""
    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(tmp_path / "runs")
    proc = _spawn(["sample", str(run_dir), "--n", "50000000", "--out", "big.npz"], tmp_path)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".big.npz.*")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "interrupted", err
    assert not list(tmp_path.glob("*big.npz*"))

    # kill -9 leaves its partial file; the next sample to that name removes it
    proc = _spawn(["sample", str(run_dir), "--n", "50000000", "--out", "big.npz"], tmp_path)
    while not list(tmp_path.glob(".big.npz.*")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    assert len(list(tmp_path.glob(".big.npz.tmp-*"))) == 1
    live = tmp_path / f".big.npz.tmp-{os.getppid()}"  # a live process's write in progress is left alone
    live.write_bytes(b"")
    assert main(["sample", str(run_dir), "--n", "10", "--out", str(tmp_path / "big.npz")]) == 0
    assert sorted(p.name for p in tmp_path.glob("*big.npz*")) == [live.name, "big.npz"]


def test_an_interrupted_sample_folder_says_how_to_write_the_rest(tmp_path, image_folder):
    """Ctrl-C (or SIGTERM) while writing PNGs keeps those written and prints the command that adds the rest;
    that command, like any --force into the folder, goes on in the seed's noise rather than repeating it."""
    import numpy as np

    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(tmp_path / "runs")
    proc = _spawn(["sample", str(run_dir), "--n", "2000000", "--out", "many", "--seed", "3", "--batch-size", "64"],
                  tmp_path)
    deadline = time.time() + 60
    while len(list((tmp_path / "many").glob("*.png"))) < 100:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    written = len(list((tmp_path / "many").glob("*.png")))
    assert proc.returncode == 130, err
    assert err.strip() == (f"interrupted after writing {written} of 2000000 samples to many/; write the rest with: "
                           f"ganforge sample {run_dir} --n {2000000 - written} --out many --force --seed 3 "
                           "--batch-size 64")

    def pixels(folder: Path) -> list:
        return [np.asarray(Image.open(p), dtype=int) for p in sorted(folder.glob("*.png"))]

    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["sample", str(run_dir), "--n", "7", "--out", str(whole), "--seed", "3"]) == 0
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(split), "--seed", "3"]) == 0
    assert main(["sample", str(run_dir), "--n", "3", "--out", str(split), "--seed", "3", "--force"]) == 0
    assert len(pixels(split)) == 7
    for a, b in zip(pixels(whole), pixels(split), strict=True):
        assert np.abs(a - b).max() <= 1
    first_written = np.asarray(Image.open(tmp_path / "many" / "000000.png"), dtype=int)
    assert np.abs(first_written - pixels(whole)[0]).max() <= 1  # the interrupted run began where a seed begins
    torn = split / "000006.png"
    torn.write_bytes(torn.read_bytes()[:40])  # as a kill -9 mid-write leaves the last one
    assert main(["sample", str(run_dir), "--n", "1", "--out", str(split), "--seed", "3", "--force"]) == 0
    assert len(pixels(split)) == 7 and np.abs(pixels(split)[6] - pixels(whole)[6]).max() <= 1


def test_samples_larger_than_the_free_disk_are_refused_before_a_byte_is_written(tmp_path, image_folder, monkeypatch,
                                                                              capsys):
    """A count mistyped by a few zeros would otherwise stream until the disk is full."""
    import collections
    import shutil

    overrides = tiny_overrides(image_folder, **{"data.channels": 3})
    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(overrides)]) == 0
    run_dir = only_run(tmp_path / "runs")
    usage = collections.namedtuple("usage", "total used free")
    spare = 2**30
    needed = 1000 * 16 * 16 * 3  # uint8 [N, 16, 16, 3]
    before = {p.name for p in tmp_path.iterdir()}
    for free, code in ((spare + needed - 1, 2), (spare + needed + 10_000, 0)):
        monkeypatch.setattr(shutil, "disk_usage", lambda _path, free=free: usage(10 * free, 0, free))
        capsys.readouterr()
        assert main(["sample", str(run_dir), "--n", "1000", "--out", str(tmp_path / "s.npz")]) == code
        if code == 2:
            err = capsys.readouterr().err
            assert f"1,000 samples as an .npz take 0.0 GiB and the disk under {tmp_path} has 1.0 GiB free" in err
            assert {p.name for p in tmp_path.iterdir()} == before  # no temp file either
    assert (tmp_path / "s.npz").is_file()

    # a folder of PNGs: each takes a file entry and at least a block
    statvfs = collections.namedtuple("statvfs", "f_frsize f_files f_favail")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10 * 2**40, 0, 2**40))
    monkeypatch.setattr(os, "statvfs", lambda _path: statvfs(4096, 10**6, 999))
    assert main(["sample", str(run_dir), "--n", "1000", "--out", str(tmp_path / "pngs")]) == 2
    assert (f"1,000 samples as PNGs need 1,000 files and the disk under {tmp_path} has room for 999 more; "
            "lower --n") in capsys.readouterr().err
    assert not (tmp_path / "pngs").exists()
    monkeypatch.setattr(os, "statvfs", lambda _path: statvfs(2**31, 0, 0))  # no fixed count of entries
    assert main(["sample", str(run_dir), "--n", "1000", "--out", str(tmp_path / "pngs")]) == 2
    assert "1,000 samples as PNGs take 2,000.0 GiB" in capsys.readouterr().err
    monkeypatch.setattr(os, "statvfs", lambda _path: statvfs(4096, 10**6, 1000))
    assert main(["sample", str(run_dir), "--n", "1000", "--out", str(tmp_path / "pngs")]) == 0
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 1000


def test_an_evaluation_whose_samples_cannot_fit_in_memory_is_refused_before_drawing(tmp_path, image_folder,
                                                                                      monkeypatch, capsys):
    """The OS would otherwise kill the process part way through the drawing, with no message."""
    from ganforge import device

    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(tmp_path / "runs")
    needed = 100 * 1 * 16 * 16 * 4  # float32 [100, 1, 16, 16]
    monkeypatch.setattr(device, "available_memory", lambda: needed - 1)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--n", "100", "--metrics", "fd_digits"]) == 2
    assert "the 100 samples of 1x16x16 to evaluate hold 0.0 GiB in memory, and 0.0 GiB is available; lower --n" \
           in capsys.readouterr().err
    assert not (run_dir / "metrics.json").exists()
    ticks = ["--set", "eval.every_kimg=0.032", "--set", "eval.n=100"]
    for dry in ([], ["--dry-run"]):
        assert main(["train", "--out", str(tmp_path / "more"), *set_args(tiny_overrides(image_folder)), *ticks,
                     *dry]) == 2
        assert "lower eval.n" in capsys.readouterr().err and not (tmp_path / "more").exists()
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128", *ticks]) == 2
    assert "lower eval.n" in capsys.readouterr().err
    monkeypatch.setattr(device, "available_memory", lambda: needed)
    assert main(["eval", str(run_dir), "--n", "100", "--metrics", "fd_digits"]) == 0


def test_kill_9_leaves_the_last_checkpoint_loadable(tmp_path, image_folder):
    overrides = tiny_overrides(image_folder, **{"train.kimg": 1000, "train.tick_kimg": 0.008,
                                                "train.keep_ckpts": 2})
    proc = _spawn(["train", "--out", "runs", *set_args(overrides)], tmp_path)
    run_dir = _wait_for_checkpoint(tmp_path / "runs", proc)
    time.sleep(1.5)  # checkpoints are being written every iteration now
    assert main(["train", "--resume", str(run_dir)]) == 2  # the running process holds the run
    proc.kill()
    proc.communicate(timeout=60)
    latest = ckpt_io.resolve_checkpoint(run_dir)
    state = ckpt_io.load_checkpoint(latest)
    assert state["nimg"] > 0 and isinstance(state["G"], dict)
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    # and the run resumes from it
    assert main(["train", "--resume", str(run_dir), "--set", f"train.kimg={(state['nimg'] + 8) / 1000}",
                 "--set", "train.tick_kimg=1"]) == 0


def test_every_public_name_resolves():
    import ganforge

    for name in ganforge.__all__:
        assert getattr(ganforge, name) is not None, name
    assert callable(ganforge.evaluate_run) and callable(ganforge.compare_runs)
    assert set(ganforge.__all__) <= set(dir(ganforge))  # tab completion offers the lazy names


def test_a_run_on_a_relative_folder_is_evaluated_and_resumed_from_anywhere(tmp_path, image_folder, monkeypatch,
                                                                           capsys):
    monkeypatch.chdir(image_folder.parent)
    settings = [s for s in tiny_overrides(image_folder) if not s.startswith("data.name=")]
    assert main(["train", "--out", str(tmp_path / "runs"), "--set", f"data.name=folder:{image_folder.name}",
                 *set_args(settings)]) == 0
    run_dir = only_run(tmp_path / "runs")
    assert f'name = "folder:{image_folder}"' in (run_dir / "config.toml").read_text()  # made absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--n", "16", "--metrics", "fd_digits"]) == 0
    # the split apart from the path: folder:PATH/train would name a subfolder that is not there
    assert f" folder:{image_folder} (train) / ganforge-digits-cnn\n" in capsys.readouterr().out
    assert f"folder:{image_folder} (train)" in (run_dir / "report.html").read_text()
    # the images moved: one line says so and how to point at them, and nothing is written
    image_folder.rename(tmp_path / "moved")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--n", "16", "--metrics", "fd_digits"]) == 2
    assert (f"this run's training images, folder:{image_folder}, are not there any more (moved or renamed?); "
            "evaluate against them where they are now with --real folder:PATH") in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 2
    assert "resume with --set data.name=folder:PATH where they are now" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128", "--set",
                 f"data.name=folder:{tmp_path / 'moved'}"]) == 0
    assert main(["eval", str(run_dir), "--n", "16", "--metrics", "fd_digits"]) == 0  # config.toml follows


def test_summary_of_a_run_shows_the_networks_it_trained(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder, **{"model.g_width": 4}))]) == 0
    run_dir = only_run(out)
    capsys.readouterr()
    ckpt = ckpt_io.resolve_checkpoint(run_dir)
    exported = ganforge.export_generator(run_dir, tmp_path / "g.safetensors").path
    for target in (run_dir, ckpt, exported):
        assert main(["summary", str(target)]) == 0
        text = capsys.readouterr().out
        G = ganforge.load_generator(run_dir)
        assert f"total parameters: {sum(p.numel() for p in G.parameters()):,}" in text
        assert "[2, 1, 16, 16]" in text  # the run's 16x16 images, not the preset's 32x32
        assert ("holds G alone; D is the one its config builds" in text) == (target == exported)
    assert main(["summary", str(run_dir), "--set", "model.g_width=8"]) == 2
    assert "give a run (or checkpoint), or --preset/--config/--set, not both" in capsys.readouterr().err


def test_a_file_where_a_folder_is_needed_is_named(tmp_path, image_folder, capsys):
    blocker = tmp_path / "notes"
    blocker.write_text("mine")
    for argv in (["train", "--out", str(blocker / "runs"), *set_args(tiny_overrides(image_folder))],
                 ["train", "--out", str(blocker / "a" / "b"), *set_args(tiny_overrides(image_folder))]):
        assert main(argv) == 2
        assert f"error: {blocker} is a file where a folder is needed" in capsys.readouterr().err
    assert blocker.read_text() == "mine"


def test_a_resume_that_could_not_record_its_evaluations_is_refused_before_training(tmp_path, image_folder, capsys):
    out = tmp_path / "runs"
    settings = tiny_overrides(image_folder, **{"eval.every_kimg": 0.032, "eval.n": 16, "eval.metrics": '["fd_digits"]'})
    assert main(["train", "--out", str(out), *set_args(settings)]) == 0
    run_dir = only_run(out)
    (run_dir / "metrics.json").write_text('[{"time": "x", "results": [')  # cut short by a full disk, say
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 2
    assert "metrics.json is not valid JSON; move it aside to record new results" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # nothing trained, nothing lost


def test_a_config_file_without_a_preset_says_what_it_builds_on(tmp_path, image_folder, capsys):
    settings = "\n".join(f"{k.split('.')[1]} = {v}" for k, v in (s.split("=", 1) for s in tiny_overrides(image_folder))
                         if k.startswith("train."))
    config = tmp_path / "mine.toml"
    config.write_text(f'[data]\nname = "folder:{image_folder}"\nimg_size = 16\n[train]\n{settings}\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "note: this config builds on no preset, so the settings it leaves out take ganforge's built-in " \
           "defaults rather than the default preset's (this run: 16x16 dcgan/dcgan, lr 0.0002, batch 8)" in out
    body = config.read_text()
    config.write_text('preset = "my-faces"\n' + body)  # a label of the user's own: the same note
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "runs")]) == 0
    assert "builds on no preset" in capsys.readouterr().out
    config.write_text('preset = "defualt"\n' + body)  # a misspelt preset is refused, not built on the defaults
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "runs")]) == 2
    assert "names preset 'defualt', which is not a preset (did you mean default?)" in capsys.readouterr().err
    config.write_text('preset = "default"\n' + body)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "runs")]) == 0
    assert "builds on no preset" not in capsys.readouterr().out
    assert len(list((tmp_path / "runs").iterdir())) == 3


def test_an_interrupted_run_in_a_folder_with_a_space_is_told_a_resume_command_that_pastes(tmp_path, monkeypatch,
                                                                                         capsys):
    import shlex

    from ganforge import trainer
    from ganforge.trainer import TrainingInterrupted

    run_dir = tmp_path / "my runs" / "0001-default"

    def stopped(*args, **kwargs):
        raise TrainingInterrupted(run_dir, 0.5)

    monkeypatch.setattr(trainer, "train", stopped)
    assert main(["train", "--preset", "default", "--out", str(tmp_path / "my runs")]) == 130
    err = capsys.readouterr().err.strip()
    command = err.split("continue with: ", 1)[1]
    assert shlex.split(command) == ["ganforge", "train", "--resume", str(run_dir)]


def test_a_ctrl_c_after_the_last_step_says_the_training_is_done_and_a_resume_writes_the_rest(
        tmp_path, image_folder, monkeypatch, capsys):
    """Ctrl-C while the GIF and report are written, after the last checkpoint: it said a bare 'interrupted'."""
    from ganforge import report

    make_gif = report.make_gif

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "make_gif", interrupted)
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 130
    err = capsys.readouterr().err.strip()
    run_dir = only_run(out)
    assert err.startswith("interrupted: stopped at 0.") and "with its training done" in err, err
    assert err.endswith(f"continue with: ganforge train --resume {run_dir}"), err
    assert not (run_dir / "report.html").exists() and not (run_dir / "progress.gif").exists()
    monkeypatch.setattr(report, "make_gif", make_gif)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert (run_dir / "progress.gif").is_file() and (run_dir / "report.html").is_file()


def test_kimg_and_minutes_flags_are_their_settings_on_a_new_run_and_on_a_resume(tmp_path, image_folder, capsys):
    base = ["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder)), "--dry-run"]
    assert main([*base, "--kimg", "0.5", "--minutes", "2.5"]) == 0
    shorthand = capsys.readouterr().out
    assert main([*base, "--set", "train.kimg=0.5", "--set", "train.minutes=2.5"]) == 0
    assert shorthand == capsys.readouterr().out and "minutes = 2.5\n" in shorthand and "kimg = 0.5\n" in shorthand

    assert main(base[:-1]) == 0
    run_dir = only_run(tmp_path / "runs")
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--kimg", "0.128", "--minutes", "9", "--dry-run"]) == 0
    resumed = capsys.readouterr().out
    assert "kimg = 0.128\n" in resumed and "minutes = 9.0\n" in resumed
    assert main(["train", "--resume", str(run_dir), "--minutes", "-1"]) == 2
    assert "train.minutes must be >= 0" in capsys.readouterr().err


def test_data_flag_is_data_name_on_a_new_run_and_on_a_resume_from_a_moved_folder(tmp_path, image_folder, capsys,
                                                                                 monkeypatch):
    from ganforge.cli import build_parser
    from ganforge.data import DATASETS

    overrides = [item for item in tiny_overrides(image_folder) if not item.startswith("data.name=")]
    base = ["train", "--out", str(tmp_path / "runs"), *set_args(overrides)]
    monkeypatch.chdir(tmp_path)
    assert main([*base, "--data", "folder:images", "--dry-run"]) == 0  # a path as typed, resolved once
    assert f'name = "folder:{image_folder}"\n' in capsys.readouterr().out
    assert main([*base, "--data", "folder:no-such-folder", "--dry-run"]) == 2
    assert "no-such-folder does not exist" in capsys.readouterr().err

    assert main([*base, "--data", "folder:images"]) == 0
    run_dir = only_run(tmp_path / "runs")
    moved = image_folder.rename(tmp_path / "moved")
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--kimg", "0.128"]) == 2
    assert "data.name=folder:PATH" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--kimg", "0.128", "--data", f"folder:{moved}"]) == 0
    # the names --help offers are data sets that exist
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    help_text = next(a.help for a in commands.choices["train"]._actions if a.dest == "data")
    offered = [word.strip(",") for word in help_text.split(": ", 1)[1].split(", or ")[0].split()]
    assert len(offered) >= 5 and all(name in DATASETS for name in offered), offered


def test_eval_of_stacked_digits_says_where_their_kl_comes_from(tmp_path, capsys):
    import numpy as np

    from ganforge.data import DataConfig, load_dataset

    stacked = load_dataset(DataConfig(name="stacked-mnist5k", channels=3)).batch(torch.arange(40))  # [-1, 1]
    path = tmp_path / "stacks.npz"
    np.savez(path, ((stacked + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert main(["eval", "--real", "mnist5k", "--fake", f"folder:{path}", "--channels", "3", "--metrics", "modes"]) == 0
    said = capsys.readouterr().out
    assert "from uneven digits within the channels" in said
    assert "at n = 40, far under the protocol's 26,000, much of that is chance" in said
    assert said.count("channel 2: ") == 1 and "mean confidence" in said


def test_names_in_another_encoding_are_refused_in_settings_and_taken_in_run_folders(tmp_path, image_folder, capsys):
    latin1 = tmp_path / os.fsdecode(b"d\xe9j\xe0")
    try:
        latin1.mkdir()
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    for png in image_folder.rglob("*.png"):
        (latin1 / png.name).write_bytes(png.read_bytes())
    # config.toml, which records data.name, is UTF-8: one line, and no run directory
    assert main(["train", "--out", str(tmp_path / "runs"), *set_args(tiny_overrides(image_folder)),
                 "--set", f"data.name=folder:{latin1}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: data.name = folder:{tmp_path}/d\\xe9j\\xe0 holds a name that is not UTF-8; rename that "
                   "file or folder in UTF-8, the encoding of the config.toml that records it")
    assert not (tmp_path / "runs").exists()
    # a run directory under such a folder trains, resumes and is reported (report.html names the run's path)
    assert main(["train", "--out", str(latin1 / "runs"), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(latin1 / "runs")
    assert (run_dir / "report.html").is_file()
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.128"]) == 0
    assert os.fsencode(str(run_dir)) in (run_dir / "report.html").read_bytes()


def test_a_terminal_that_takes_ascii_alone_reads_and_shows_a_run_with_accents(tmp_path, image_folder):
    config = tmp_path / "été.toml"
    config.write_text('preset = "default"\ndescription = "données été"\n', encoding="utf-8")
    out = tmp_path / "runs"
    assert main(["train", "--config", str(config), "--out", str(out), *set_args(tiny_overrides(image_folder))]) == 0
    run_dir = only_run(out)
    ascii_only = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    for argv in (["settings", str(run_dir), "description"], ["report", str(run_dir)]):  # report reads as compare
        done = subprocess.run([sys.executable, "-m", "ganforge", *argv], env=ascii_only, capture_output=True)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        if argv[0] == "settings":
            assert b'description = "donn\\xe9es \\xe9t\\xe9"' in done.stdout  # escaped, where ASCII alone shows
    assert "données été" in (run_dir / "report.html").read_text(encoding="utf-8")
