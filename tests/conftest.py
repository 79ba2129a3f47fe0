"""Shared fixtures: tiny datasets written into tmp_path and tiny configs that train in a second."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.config import Config, load_config

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _cpu_without_a_bf16_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see a CPU without a bfloat16 matrix unit, whose notes do not depend on the machine the
    suite runs on (a run of conv nets on an AMX or AVX512_BF16 CPU starts with a note on bf16; test_train checks
    it)."""
    from ganforge import device

    monkeypatch.setattr(device, "cpu_matrix_unit", lambda: None)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded folders and real-image statistics go to a temporary cache, never the user's."""
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _no_stray_processes(monkeypatch: pytest.MonkeyPatch):
    """A test that fails while a process it started still runs (a run of 1,000 kimg waiting for its stop)
    kills it, rather than leave it training through the rest of the suite."""
    started: list[subprocess.Popen] = []

    class Tracked(subprocess.Popen):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Tracked)
    yield
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def write_digit_folder(root: Path, n_per_class: int = 16, classes: int = 2, size: int = 16) -> Path:
    """A folder of small grey images, one subfolder per class, each class a different bright square."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 40, size=(size, size), dtype=np.uint8)
            img[2 + c * 4 : 8 + c * 4, 3:12] = 230
            Image.fromarray(img, mode="L").save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_digit_folder(tmp_path / "images")


def tiny_overrides(folder: Path, **extra: object) -> list[str]:
    settings: dict[str, object] = {
        "data.name": f'"folder:{folder}"',
        "data.img_size": 16,
        "model.g": '"dcgan"',
        "model.d": '"dcgan"',
        "model.z_dim": 8,
        "model.g_width": 8,
        "model.d_width": 8,
        "train.batch_size": 8,
        "train.kimg": 0.064,
        "train.tick_kimg": 0.032,
        "train.grid_size": 4,
        "train.device": '"cpu"',
        # the default preset's adaptive augmentation, R2 penalty and shared fake batch off: tests turn on
        # what they test
        "train.diffaugment": '""',
        "train.ada_target": 0,
        "loss.r2_gamma": 0,
        "loss.r1_every": 1,
        "train.reuse_fake": "false",
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


@pytest.fixture
def tiny_cfg(image_folder: Path):
    """tiny_cfg(**{"train.ema_kimg": 1.0}) -> a Config on the folder dataset with 16x16 nets."""

    def make(preset: str = "default", **extra: object) -> Config:
        return load_config(preset=preset, overrides=tiny_overrides(image_folder, **extra))

    return make


class _FillingFile:
    """A file on a disk with `room` bytes left: writes past that raise ENOSPC, as a full disk does."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        size = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
        if size > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= size
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def fill_disk_after(monkeypatch, room: int) -> None:
    """Every atomic write (checkpoints, grids, GIFs, plots, sample files) meets a disk that fills after `room`
    bytes."""
    import builtins

    from ganforge import checkpoint as ckpt_io
    from ganforge import report

    def filling_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return _FillingFile(f, room) if "w" in mode else f

    for module in (ckpt_io, report):  # the atomic writer, and report's per-image sample files
        monkeypatch.setattr(module, "open", filling_open, raising=False)
