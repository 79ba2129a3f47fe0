"""The benchmark scripts behind the README's tables still run, on tiny settings: a change to ganforge's
internals that breaks one would otherwise go unnoticed until the next measurement. The Stacked MNIST script runs
here on fewer samples than its protocol's, the copies script on runs alone (its reference rows compare
thousands of digits), swd on a few dozen digits; the one-line fd_floor is left to its own runs."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(name: str, *argv: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> str:
    """Run benchmarks/NAME as `python benchmarks/NAME ARGV...` does, in this process; its printed output."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / name), *argv])
    capsys.readouterr()
    try:
        runpy.run_path(str(BENCHMARKS / name), run_name="__main__")
    except SystemExit as stop:
        assert stop.code in (None, 0), f"{name} exited with {stop.code}: {capsys.readouterr().err[-500:]}"
    return capsys.readouterr().out


def refusal(name: str, *argv: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The message benchmarks/NAME stops with when run as `python benchmarks/NAME ARGV...` on bad input."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / name), *argv])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(BENCHMARKS / name), run_name="__main__")
    return str(stop.value.code)


def table_rows(out: str) -> list[list[str]]:
    """The cells of a printed markdown table's body rows."""
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in out.splitlines()
            if line.startswith("|") and not line.startswith("|---")][1:]


def test_the_benchmarks_run_on_tiny_settings(tmp_path, monkeypatch, capsys):
    # one test, so that the real digits' statistics are computed once for all of them
    runs = tmp_path / "runs"
    out = run_benchmark("quality.py", "--kimg", "0.05", "--n", "100", "--presets=", "--row",
                        "mnist-mlp-small optim.g_lr=1e-4", "--out", str(runs), monkeypatch=monkeypatch, capsys=capsys)
    (row,) = table_rows(out)
    assert row[0] == "mnist-mlp-small optim.g_lr=1e-4" and float(row[2]) > 0  # an untrained G: far from the data
    for seed in (0, 1):
        (tmp_path / f"seed{seed}.txt").write_text(out)
    table = run_benchmark("seed_table.py", str(tmp_path / "seed0.txt"), str(tmp_path / "seed1.txt"),
                          monkeypatch=monkeypatch, capsys=capsys)
    assert f"{row[2]}, {row[2]}" in table  # fd_digits of each seed, listed
    (mean_row,) = table_rows(table)
    assert abs(float(mean_row[-1]) - float(row[-1])) < 0.01  # sec/kimg: the mean of two equal seeds
    assert "| kimg |" not in table.splitlines()[0]  # the same kimg on every seed: nothing to average
    # an equal-time table, where each seed fitted its own kimg into the same seconds, lists their mean first
    (tmp_path / "seed1.txt").write_text(out.replace(f"| {row[0]} | {row[1]} |", f"| {row[0]} | {float(row[1]) + 2} |"))
    table = run_benchmark("seed_table.py", str(tmp_path / "seed0.txt"), str(tmp_path / "seed1.txt"),
                          monkeypatch=monkeypatch, capsys=capsys)
    assert table.splitlines()[0].startswith("| preset / setting | fd_digits per seed | mean (sd) | kimg |")
    (mean_row,) = table_rows(table)
    assert abs(float(mean_row[3]) - (float(row[1]) + 1)) < 0.01

    (run,) = [path.parent for path in runs.rglob("config.toml")]
    out = run_benchmark("truncation.py", str(run), "--truncations", "1", "--n", "100",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert [cells[1] for cells in table_rows(out)] == ["1"]

    out = run_benchmark("throughput.py", "--models", "mlp-bn", "--batches", "64", "--reps", "1", "--seconds", "0.2",
                        "--window", "0.1", monkeypatch=monkeypatch, capsys=capsys)
    (row,) = [cells for cells in table_rows(out) if cells[0] == "mlp-bn"]
    assert float(row[4].split("x")[0]) > 0  # ganforge's images/s over the tutorial loop's

    out = run_benchmark("preset_speed.py", "--kimg", "0.02", "--presets", "mnist-mlp-small",
                        monkeypatch=monkeypatch, capsys=capsys)
    assert [cells[0] for cells in table_rows(out)] == ["mnist-mlp-small"]

    out = run_benchmark("optimizer_step.py", "--presets", "mnist-mlp-small", "--reps", "1", "--seconds", "0.05",
                        "--check", "3", monkeypatch=monkeypatch, capsys=capsys)
    (row,) = table_rows(out)
    assert row[0] == "mnist-mlp-small" and float(row[4].rstrip("x")) > 0 and row[5] == "yes"

    out = run_benchmark("latent_layer.py", "--presets", "mnist-dcgan,mnist-mlp-small", "--reps", "1", "--seconds",
                        "0.05", "--set", "train.batch_size=4", monkeypatch=monkeypatch, capsys=capsys)
    dcgan, mlp = table_rows(out)
    assert dcgan[0] == "mnist-dcgan" and float(dcgan[4].rstrip("x")) > 0 and float(dcgan[5]) < 1e-4
    assert mlp[0] == "mnist-mlp-small" and "no such layer" in mlp[5]

    out = run_benchmark("small_data.py", "--images", "50", "--kimg", "0.05", "--seeds", "0", "--n", "100", "--row",
                        "mnist-mlp-small train.batch_size=25", "--out", str(tmp_path / "small"),
                        monkeypatch=monkeypatch, capsys=capsys)
    assert [cells[0] for cells in table_rows(out)][-1].startswith("mnist-mlp-small")

    (subset_run,) = [path.parent for path in (tmp_path / "small").rglob("config.toml")]
    # not the 5,000-digit run: its training digits' distances to each other take 20 s
    out = run_benchmark("copies.py", str(subset_run), "--n", "100", "--sizes=",
                        monkeypatch=monkeypatch, capsys=capsys)
    rows = table_rows(out)
    # the run's samples against its 50 training digits, then the other 4,950 bundled digits against them
    assert [(cells[0], cells[1], cells[2]) for cells in rows] == [
        (str(subset_run), "100", "50"), (f"the other bundled digits against {subset_run}'s", "4,950", "50")]
    for cells in rows:
        assert all(0 <= float(value) for value in cells[3:9])

    out = run_benchmark("swd.py", "--img-size", "16", "--n", "20,40", "--repeats", "1", "--runs", str(subset_run),
                        "--run-n", "60", monkeypatch=monkeypatch, capsys=capsys)
    rows = table_rows(out)
    assert [cells[1] for cells in rows[:2]] == ["20", "40"] and rows[-1][0] == "0.1"  # the run's last checkpoint
    one_digit = next(cells for cells in rows if cells[0] == "one image repeated")
    assert float(one_digit[2]) > float(rows[1][2].split()[0])  # collapse is far from new draws of the data


def test_the_stacked_mnist_benchmark_runs_on_tiny_settings(tmp_path, monkeypatch, capsys):
    import math

    from ganforge.metrics import core

    monkeypatch.setattr(core, "MODES_N", 500)  # the protocol's 26,000 would take a minute to classify
    label = "stacked-dcgan model.g_width=8 model.d_width=8"
    out = run_benchmark("stacked.py", "--presets=", "--row", label, "--seeds", "0,1", "--kimg", "0.128", "--every",
                        "0.064", "--device", "cpu", "--truncation", "2", "--out", str(tmp_path / "runs"),
                        monkeypatch=monkeypatch, capsys=capsys)
    assert "500 samples" in out.splitlines()[0]
    rows = table_rows(out)
    assert [(cells[0], cells[1]) for cells in rows] == [(label, "0"), (f"{label}, truncation 2", "0"),
                                                         (label, "1"), (f"{label}, truncation 2", "1")]
    for cells in rows:
        modes, kl = int(cells[2]), float(cells[3])
        assert 1 <= modes <= 500 and 0 <= kl <= math.log(1000) + 1e-3
    assert f"{label}: modes" in out and f"{label}, truncation 2: modes" in out  # the means over seeds
    # each seed's path of modes along the run (a batch of 64 is 0.064 kimg)
    assert out.count(": 0.064: ") == 2 and out.count(", 0.128: ") == 2


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="tests/test_cuda.py runs it on a GPU")
def test_the_cuda_graph_benchmark_says_it_needs_a_gpu(monkeypatch, capsys):
    assert "needs a CUDA device; this machine offers cpu" in refusal("cuda_graph.py", "--device", "cpu",
                                                                    monkeypatch=monkeypatch)


def test_small_data_adds_class_acc_for_conditional_rows(tmp_path, monkeypatch, capsys):
    out = run_benchmark("small_data.py", "--images", "50", "--kimg", "0.05", "--seeds", "0", "--n", "100",
                        "--row", "mnist-cgan train.batch_size=25", "--row", "mnist-mlp-small train.batch_size=25",
                        "--out", str(tmp_path), monkeypatch=monkeypatch, capsys=capsys)
    assert "| class_acc all |" in out
    conditional, unconditional = table_rows(out)
    assert 0 <= float(conditional[7]) <= 1 and unconditional[7] == ""  # left blank where G takes no class


def test_layer_speed_counts_each_layers_share_of_the_work(monkeypatch, capsys):
    out = run_benchmark("layer_speed.py", "--preset", "mnist-dcgan", "--batch", "2", "--seconds", "0.01",
                        monkeypatch=monkeypatch, capsys=capsys)
    rows = table_rows(out)
    assert [cells[0] for cells in rows] == ["G.net.0", "G.net.3", "G.net.6", "G.net.9", "D.body.0", "D.body.3",
                                            "D.body.6", "D.head"]
    # R1's multiply-accumulates per image, by hand: z -> 256x4x4, 256x4x4 -> 128x8x8, ..., 256x4x4 -> 1 logit
    g = [100 * 256 * 16, 16 * 256 * 128 * 16, 64 * 128 * 64 * 16, 256 * 64 * 1 * 16]
    d = [256 * 64 * 1 * 16, 64 * 128 * 64 * 16, 16 * 256 * 128 * 16, 256 * 16]
    shares = [100 * macs / sum(g + d) for macs in g + d]
    assert all(abs(float(cells[3]) - share) < 0.06 for cells, share in zip(rows, shares, strict=True))
    assert abs(sum(float(cells[5]) for cells in rows) - 100) < 0.5  # shares of the time add up


def test_lfw_faces_splits_the_faces_and_small_data_scores_the_held_out_half(tmp_path, monkeypatch, capsys):
    import zipfile

    import numpy as np

    crops = np.random.default_rng(0).random((200, 25, 25))  # stands in for scikit-image's lfw_subset.npy
    crops[100:] = 0  # the non-faces, which must not be written
    np.save(tmp_path / "lfw_subset.npy", crops)
    with zipfile.ZipFile(tmp_path / "scikit_image.whl", "w") as wheel:
        wheel.write(tmp_path / "lfw_subset.npy", "skimage/data/lfw_subset.npy")
    for source, out_dir in (("lfw_subset.npy", "from_npy"), ("scikit_image.whl", "from_wheel")):
        run_benchmark("lfw_faces.py", str(tmp_path / source), "--train", "30", "--out-dir", str(tmp_path / out_dir),
                      monkeypatch=monkeypatch, capsys=capsys)
    train, held_out = (np.load(tmp_path / "from_wheel" / f"faces-{part}.npz")["arr_0"] for part in ("train", "heldout"))
    assert train.shape == (30, 25, 25) and held_out.shape == (70, 25, 25) and train.dtype == np.uint8
    assert np.array_equal(np.load(tmp_path / "from_npy" / "faces-train.npz")["arr_0"], train)
    faces = np.round(crops[:100] * 255).astype(np.uint8)
    # together the two halves are the 100 faces, each once
    assert sorted(map(bytes, np.concatenate([train, held_out]))) == sorted(map(bytes, faces))

    halves = tmp_path / "from_wheel"
    out = run_benchmark("small_data.py", "--images", "30", "--kimg", "0.05", "--seeds", "0", "--n", "100", "--kid",
                        "--reference", f"folder:{halves / 'faces-heldout.npz'}", "--row",
                        f"mnist-mlp-small train.batch_size=25 data.name=folder:{halves / 'faces-train.npz'}",
                        "--out", str(tmp_path / "runs"), monkeypatch=monkeypatch, capsys=capsys)
    assert "'all' = against folder:" in out and "| kid_digits own | kid_digits all |" in out
    (row,) = table_rows(out)
    fd_own, fd_all = float(row[2]), float(row[3])
    assert fd_own > 0 and fd_all > 0 and abs(fd_own - fd_all) > 1e-6  # scored against two different sets


def test_lfw_faces_centre_crops_the_faces_to_their_least_lopsided_square(tmp_path, monkeypatch, capsys):
    import re

    import numpy as np

    crops = np.random.default_rng(0).random((200, 25, 25)) * 0.2
    crops[:100, 4:20, 6:16] = 0.9  # a subject whose middle is column 10.5: the 22-px square from column 0
    np.save(tmp_path / "lfw_subset.npy", crops)
    out = run_benchmark("lfw_faces.py", str(tmp_path / "lfw_subset.npy"), "--centre", "--out-dir", str(tmp_path),
                        monkeypatch=monkeypatch, capsys=capsys)
    found = re.search(r"cropped to 22x22 from row (\d+), column 0: left-right lean ([\d.]+), against ([\d.]+)", out)
    assert found, out
    assert float(found.group(2)) < 0.1 < float(found.group(3))
    train = np.load(tmp_path / "faces-train.npz")["arr_0"]
    assert train.shape == (50, 22, 22) and (train[:, 10, 6:16] > 200).all()  # the subject kept whole


def test_lfw_faces_refuses_a_file_that_is_not_the_face_subset(tmp_path, monkeypatch):
    import numpy as np

    np.save(tmp_path / "other.npy", np.zeros((10, 25, 25)))
    message = refusal("lfw_faces.py", str(tmp_path / "other.npy"), "--out-dir", str(tmp_path), monkeypatch=monkeypatch)
    assert "expected scikit-image's lfw_subset, 200 x 25 x 25, found (10, 25, 25)" in message
    assert not (tmp_path / "faces-train.npz").exists()


def _deb(path: Path, members: dict[str, bytes]) -> None:
    """A Debian package (an `ar` archive) holding `members` under data.tar.xz, as the real ones ship."""
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    archive = b"!<arch>\n"
    for name, body in (("debian-binary", b"2.0\n"), ("data.tar.xz", data.getvalue())):
        archive += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode() + body
        archive += b"\n" * (len(body) % 2)
    path.write_bytes(archive)


def test_emoji_set_draws_a_fonts_emoji_from_its_deb_and_splits_them(tmp_path, monkeypatch, capsys):
    import re

    import matplotlib
    import numpy as np

    # DejaVu Sans (an outline font matplotlib ships) stands in for Noto Color Emoji: it draws some of the
    # symbol blocks' code points, in black
    font = (Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf").read_bytes()
    _deb(tmp_path / "fonts.deb", {"usr/share/fonts/truetype/noto/NotoColorEmoji.ttf": font})
    (tmp_path / "font.ttf").write_bytes(font)
    for source, out_dir in (("fonts.deb", "from_deb"), ("font.ttf", "from_ttf")):
        out = run_benchmark("emoji_set.py", str(tmp_path / source), "--size", "16", "--train", "40", "--out-dir",
                            str(tmp_path / out_dir), monkeypatch=monkeypatch, capsys=capsys)
    drawn = int(re.search(r"drew ([\d,]+) emoji at 16x16", out).group(1).replace(",", ""))
    assert drawn > 100  # DejaVu's arrows, shapes and symbols
    train, held_out = (np.load(tmp_path / "from_deb" / f"emoji-{part}.npz")["arr_0"] for part in ("train", "heldout"))
    assert train.shape == (40, 16, 16, 3) and held_out.shape == (drawn - 40, 16, 16, 3) and train.dtype == np.uint8
    assert np.array_equal(np.load(tmp_path / "from_ttf" / "emoji-train.npz")["arr_0"], train)
    both = np.concatenate([train, held_out])
    assert (both[:, 0, 0] == 255).mean() > 0.9  # drawn on white, most glyphs clear of the corners
    assert (both.reshape(drawn, -1).min(axis=1) < 224).all()  # and every image holds a glyph
    assert len(set(map(bytes, both))) > 0.9 * drawn  # the halves do not repeat one image


def test_emoji_set_refuses_a_package_without_the_font(tmp_path, monkeypatch):
    _deb(tmp_path / "other.deb", {"usr/share/doc/other/README": b"not a font"})
    message = refusal("emoji_set.py", str(tmp_path / "other.deb"), "--out-dir", str(tmp_path), monkeypatch=monkeypatch)
    assert "holds no usr/share/fonts/truetype/noto/NotoColorEmoji.ttf" in message
    assert not (tmp_path / "emoji-train.npz").exists()


def test_grid_jumps_reads_back_from_the_saved_grids_the_jump_the_loop_warned_of(tmp_path, monkeypatch, capsys,
                                                                                  tiny_cfg):
    from ganforge import health
    from ganforge.report import read_stats
    from ganforge.trainer import Trainer, train

    monkeypatch.setattr(health, "COLLAPSE_CHECK_FROM_KIMG", 0.0)
    gen = torch.Generator().manual_seed(2)
    base, drift, leap = (torch.rand(8, 1, 16, 16, generator=gen) * 0.6 - 0.3 for _ in range(3))
    second_class = (torch.arange(8) >= 4).float().view(-1, 1, 1, 1)

    def grid(self):  # a steady drift, and class 1's row of the class grid leaping at 128 images
        t = self.state.nimg / 16
        return base + 0.03 * t * drift + second_class * leap * (t >= 8)

    monkeypatch.setattr(Trainer, "_sample_grid", grid)
    cfg = tiny_cfg(**{"model.n_classes": 2, "train.grid_size": 8, "train.tick_kimg": 0.016, "train.kimg": 0.16})
    lines: list[str] = []
    run = train(cfg, out=tmp_path, log=lines.append)
    assert any("4 of the grid's 8 samples at 0.13 kimg" in line and "(class class1: 4 of 4)" in line for line in lines)
    assert [s["jumped"] for s in read_stats(run / "stats.jsonl")] == [0] * 7 + [4, 0, 0]
    out = run_benchmark("grid_jumps.py", str(run), monkeypatch=monkeypatch, capsys=capsys)
    (row,) = table_rows(out)
    assert row[0] == run.name and row[1] == "4"  # ticks 7 to 10: the first six make the history
    assert float(row[3]) == 0.5 and row[-1] == "0.128"
