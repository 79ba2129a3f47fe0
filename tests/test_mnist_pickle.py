"""benchmarks/mnist_pickle.py: the classic mnist.pkl.gz becomes IDX files that `mnist` and `stacked-mnist` read."""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ganforge.config import DataConfig
from ganforge.data import load_raw

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mnist_pickle.py"


@pytest.fixture(scope="module")
def mnist_pickle():
    spec = importlib.util.spec_from_file_location("mnist_pickle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parts(sizes: tuple[int, int, int], seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    rng = np.random.default_rng(seed)
    return tuple((rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, rng.integers(0, 10, n).astype(np.int64))
                 for n in sizes)


def _write(path: Path, obj: object) -> Path:
    with gzip.open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_pixels_and_labels_come_back_exactly(tmp_path, mnist_pickle):
    parts = _parts((30, 10, 12))
    src = _write(tmp_path / "mnist.pkl.gz", parts)
    raw, n_train, n_test = mnist_pickle.convert(src, tmp_path / "root")
    assert (n_train, n_test) == (40, 12)
    assert sorted(os.listdir(raw)) == sorted(mnist_pickle.NAMES)
    mnist = load_raw(DataConfig(name="mnist", root=str(tmp_path / "root")))
    expected = np.concatenate([parts[0][0], parts[1][0]]) * 256
    assert mnist.images.shape == (40, 1, 28, 28)
    assert torch.equal(mnist.images.reshape(40, 784), torch.from_numpy(expected.astype(np.uint8)))
    assert torch.equal(mnist.labels, torch.from_numpy(np.concatenate([parts[0][1], parts[1][1]])))


def test_stacked_mnist_reads_the_converted_digits(tmp_path, mnist_pickle):
    src = _write(tmp_path / "mnist.pkl.gz", _parts((50, 10, 10)))
    mnist_pickle.convert(src, tmp_path / "root")
    stacked = load_raw(DataConfig(name="stacked-mnist", channels=3, root=str(tmp_path / "root")))
    digits = load_raw(DataConfig(name="mnist", root=str(tmp_path / "root")))
    assert stacked.images.shape == (50_000, 3, 28, 28)
    # every channel of a stack is one of the 60 digits, and its label names the three in order
    first = stacked.images[0]
    picks = [int(torch.nonzero((digits.images[:, 0] == first[c]).all(-1).all(-1))[0]) for c in range(3)]
    assert int(stacked.labels[0]) == sum(int(digits.labels[p]) * w for p, w in zip(picks, (100, 10, 1), strict=True))


def test_a_pickle_that_asks_for_other_code_is_refused(tmp_path, mnist_pickle):
    src = _write(tmp_path / "evil.pkl.gz", (os.getcwd, 1, 2))
    with pytest.raises(mnist_pickle.ConversionError, match="posix.getcwd, which is not part of the MNIST arrays"):
        mnist_pickle.convert(src, tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_bad_input_gets_one_line_and_exit_2(tmp_path, mnist_pickle, capsys):
    (tmp_path / "plain.txt").write_text("not gzip")
    assert mnist_pickle.main([str(tmp_path / "plain.txt"), str(tmp_path / "root")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'plain.txt'} is not a readable mnist.pkl.gz") and err.count("\n") == 1
    src = _write(tmp_path / "wrong.pkl.gz", tuple((np.zeros((4, 100), np.float32), np.zeros(4)) for _ in range(3)))
    assert mnist_pickle.main([str(src), str(tmp_path / "root")]) == 2
    assert "MNIST's are (N, 784) and (N,)" in capsys.readouterr().err


def test_existing_files_are_left_alone(tmp_path, mnist_pickle, capsys):
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"keep me")
    src = _write(tmp_path / "mnist.pkl.gz", _parts((5, 5, 5)))
    assert mnist_pickle.main([str(src), str(tmp_path / "root")]) == 2
    assert "already has train-images-idx3-ubyte; leaving them alone" in capsys.readouterr().err
    assert (raw / "train-images-idx3-ubyte").read_bytes() == b"keep me"
    assert sorted(os.listdir(raw)) == ["train-images-idx3-ubyte"]
