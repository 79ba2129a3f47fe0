"""`ganforge compare`: settings that differ, speed and metrics side by side, and honest about protocols."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ganforge import compare_runs
from ganforge.cli import main
from ganforge.compare import best_runs, format_comparison, platform_notes, protocol_notes, settings_diff
from ganforge.report import read_stats

from .conftest import tiny_overrides, write_digit_folder
from .test_cli import set_args


def _train(out: Path, folder: Path, **extra: object) -> Path:
    before = set(out.iterdir()) if out.is_dir() else set()
    evals = {"eval.every_kimg": 0.032, "eval.n": 40, "eval.metrics": '["fd_digits", "classes"]'}
    assert main(["train", "--preset", "default", "--out", str(out),
                 *set_args(tiny_overrides(folder, **{**evals, **extra}))]) == 0
    (run_dir,) = set(out.iterdir()) - before
    return run_dir


def _record(metric: str, value: float, n_fake: int, kimg: float) -> dict:
    return {"metric": metric, "value": value, "n_fake": n_fake, "n_real": 5000, "reference": "mnist5k/train",
            "extractor": "ganforge-digits-cnn", "extractor_sha256": "abc", "resize": "none", "kimg": kimg}


def _write_metrics(run_dir: Path, entries: list[tuple[float, list[dict]]]) -> None:
    history = [{"time": "t", "checkpoint": None, "kimg": kimg, "results": results} for kimg, results in entries]
    (run_dir / "metrics.json").write_text(json.dumps(history))


@pytest.fixture(scope="module")
def _trained_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs trained once per module; each test gets its own copy to change."""
    with pytest.MonkeyPatch.context() as mp:  # the autouse private cache is per test: this runs before it
        mp.setenv("GANFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        folder = write_digit_folder(tmp_path_factory.mktemp("images"))
        out = tmp_path_factory.mktemp("trained") / "runs"
        return _train(out, folder), _train(out, folder, **{"optim.g_lr": 0.001, "loss.name": '"hinge"'})


@pytest.fixture
def two_runs(_trained_pair: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    a, b = (shutil.copytree(run, tmp_path / "runs" / run.name) for run in _trained_pair)
    return Path(a), Path(b)


def test_compare_shows_the_settings_that_differ_and_each_runs_metrics(two_runs, tmp_path, capsys):
    a, b = two_runs
    plot = tmp_path / "compare.png"
    assert main(["compare", str(a), str(b), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["run", a.name, b.name]
    diff = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ") and "." in line.split()[0]}
    assert diff == {"loss.name": ["ns", "hinge"], "optim.g_lr": ["0.003", "0.001"]}
    fd_line = next(line for line in lines if line.split()[0] == "fd_digits")
    values = [json.loads((r / "metrics.json").read_text())[-1]["results"][0]["value"] for r in (a, b)]
    for value in values:
        assert f"{value:.4g}" in fd_line
    cells = fd_line.split()[1::2]  # "value[*]" per run, each followed by "@kimg"
    best = min(range(2), key=lambda i: values[i])
    assert [c.endswith("*") for c in cells] == [i == best for i in range(2)]  # the lower FD, measured alike
    assert "* the best value of the metric among the runs" in lines
    assert "note:" not in out
    with Image.open(plot) as image:
        assert image.size[0] > 500
    for suffix, magic in ((".pdf", b"%PDF"), (".svg", b"<?xml")):  # the suffix picks the format
        other = plot.with_suffix(suffix)
        assert main(["compare", str(a), str(b), "--plot", str(other)]) == 0
        assert other.read_bytes().startswith(magic)


def test_compare_says_where_each_run_trained_and_when_speeds_come_from_different_machines(two_runs, capsys):
    import torch

    a, b = two_runs
    from ganforge.device import cpu_name

    here = "cpu, " + (f"{cpu_name()}, " if cpu_name() else "") + f"{torch.get_num_threads()} thread" + \
        "s" * (torch.get_num_threads() != 1) + f", {torch.backends.cpu.get_cpu_capability()}"
    stats = [json.loads(line) for line in (b / "stats.jsonl").read_text().splitlines()]
    assert "platform" in stats[0] and all("platform" not in s for s in stats[1:])  # once a process
    assert compare_runs([a, b])[0].platforms == [here]
    assert main(["compare", str(a), str(b)]) == 0
    assert "note:" not in capsys.readouterr().out  # both trained here
    stats[-1]["platform"] = {"device": "cuda", "gpu": "NVIDIA H200", "processes": 4}  # as if resumed on GPUs
    (b / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    assert compare_runs([a, b])[1].platforms == [here, "cuda, NVIDIA H200, 4 processes"]
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("trained on"))
    assert here in row and f"{here} + cuda, NVIDIA H200, 4 processes" in row
    assert "sec/kimg and train time: the runs trained on different machines" in out
    assert main(["compare", str(a), str(b), "--seeds"]) == 0  # means over seeds say it too
    assert "sec/kimg and train time: the runs trained on different machines" in capsys.readouterr().out
    for cpu_b, differ in ((None, False), ("AMD EPYC 9R14 (AVX512_BF16)", True)):
        stats[0]["platform"] = {**stats[0]["platform"], "cpu": "Intel Xeon Processor (AMX)"}
        stats[-1]["platform"] = {k: v for k, v in stats[0]["platform"].items() if k != "cpu"}
        if cpu_b:  # b trained on another CPU of the same kernel set; else b resumed on a ganforge that names none
            stats[-1]["platform"]["cpu"] = cpu_b
        (b / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
        for view in compare_runs([b]):
            assert platform_notes([view]) == [] and len(view.platforms) == 2
        notes = platform_notes(compare_runs([b, b]))
        assert notes == [], notes  # the same setups twice
        (a / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats[:1]))
        assert bool(platform_notes(compare_runs([a, b]))) is differ


def test_compare_through_the_python_api(two_runs):
    a, b = two_runs
    views = compare_runs([a, b / "checkpoints" / sorted(p.name for p in (b / "checkpoints").glob("ckpt-*"))[-1]])
    assert [v.path for v in views] == [a, b]
    assert [v.path for v in compare_runs([a / "checkpoints", b])] == [a, b]  # a run's checkpoints folder too
    assert views[0].kimg == pytest.approx(0.064, abs=1e-9)
    assert views[1].settings["optim.g_lr"] == pytest.approx(0.001)
    assert views[0].sec_per_kimg > 0
    stats = read_stats(a / "stats.jsonl")
    assert [k for k, _ in views[0].curves["fd_digits"]] == [s["kimg"] for s in stats]
    assert [key for key, _ in settings_diff(views)] == ["loss.name", "optim.g_lr"]
    # one run, or one folder of runs, may be given alone (a string is not a list of one-letter paths)
    assert [v.path for v in compare_runs(str(a))] == [a]
    assert [v.path for v in compare_runs(a.parent)] == [a, b]


def test_a_folder_of_runs_stands_for_every_run_in_it(two_runs, capsys):
    a, b = two_runs
    (a.parent / "notes.txt").write_text("not a run")
    assert [v.path for v in compare_runs([a.parent])] == [a, b]
    assert main(["compare", str(a.parent)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["run", a.name, b.name]


def test_one_broken_run_among_several_leaves_the_others_compared(two_runs, capsys):
    a, b = two_runs
    (a / "config.toml").write_text("[train\n")  # broken by hand
    assert main(["compare", str(a.parent)]) == 2
    said = capsys.readouterr()
    assert said.out.splitlines()[0].split() == ["run", b.name]
    first, last = said.err.strip().splitlines()
    assert f"{a / 'config.toml'} is not valid TOML" in first
    assert f"1 of 2 runs not compared ({a})" in last
    (b / "metrics.json").write_text("[{")
    assert main(["compare", str(a), str(b)]) == 2  # none left: no table
    said = capsys.readouterr()
    assert said.out == "" and "2 of 2 runs not compared" in said.err.strip().splitlines()[-1]


def test_runs_of_the_same_name_are_told_apart_by_their_folders(two_runs, tmp_path, capsys):
    from ganforge.compare import distinct_names

    a, _ = two_runs
    other = tmp_path / "elsewhere" / a.name
    shutil.copytree(a, other)
    views = compare_runs([a, other, a])  # a run named twice is shown once
    assert [v.name for v in views] == [f"runs/{a.name}", f"elsewhere/{a.name}"]
    assert main(["compare", str(a), str(other)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == ["run", f"runs/{a.name}", f"elsewhere/{a.name}"]
    assert distinct_names([Path("/x/a/r"), Path("/y/a/r"), Path("/x/b/q")]) == ["x/a/r", "y/a/r", "q"]


def test_values_measured_under_different_protocols_are_flagged_not_ranked(two_runs):
    a, b = two_runs
    _write_metrics(a, [(0.064, [_record("fd_digits", 3.0, 1000, 0.064)])])
    _write_metrics(b, [(0.064, [_record("fd_digits", 9.0, 10000, 0.064)])])
    views = compare_runs([a, b])
    notes = protocol_notes(views)
    assert len(notes) == 1 and "n_fake differs" in notes[0] and "1000" in notes[0] and "10000" in notes[0]
    assert best_runs(views, "fd_digits") == set()
    assert "*" not in format_comparison(views)
    _write_metrics(b, [(0.064, [_record("fd_digits", 9.0, 1000, 0.064)])])
    views = compare_runs([a, b])
    assert protocol_notes(views) == [] and best_runs(views, "fd_digits") == {0}


def test_protocol_notes_group_values_and_name_the_metrics_eval_takes(two_runs):
    """precision and coverage are reported by the metrics pr and dc: the note's command must name those, once
    for all the values one difference concerns; values scored against other images need another cure."""
    a, b = two_runs
    values = ("precision", "recall", "coverage")
    _write_metrics(a, [(0.064, [_record(v, 0.5, 1000, 0.064) for v in values])])
    _write_metrics(b, [(0.064, [_record(v, 0.5, 10000, 0.064) for v in values])])
    notes = protocol_notes(compare_runs([a, b]))
    assert len(notes) == 1 and notes[0].startswith("precision, recall, coverage: n_fake differs")
    assert "--metrics pr,dc`" in notes[0]
    other_data = [{**_record(v, 0.5, 10000, 0.064), "reference": "folder:/data/faces/train"} for v in values]
    _write_metrics(b, [(0.064, other_data)])
    notes = protocol_notes(compare_runs([a, b]))
    assert len(notes) == 1 and "reference differs" in notes[0] and "--real NAME --metrics pr,dc`" in notes[0]
    assert "n_fake" not in notes[0]  # the other images are the difference that matters


def test_one_reference_name_with_other_pixels_is_noted_and_an_older_record_without_it_is_not(two_runs):
    a, b = two_runs
    first = [json.loads((r / "metrics.json").read_text())[-1]["results"][0] for r in (a, b)]
    assert first[0]["reference_fingerprint"] == first[1]["reference_fingerprint"] is not None  # one folder
    assert protocol_notes(compare_runs([a, b])) == []
    record = _record("fd_digits", 3.0, 1000, 0.064)
    _write_metrics(a, [(0.064, [{**record, "reference_fingerprint": "0123456789abcdef"}])])
    _write_metrics(b, [(0.064, [{**record, "reference_fingerprint": "fedcba9876543210"}])])
    (note,) = protocol_notes(compare_runs([a, b]))
    assert note.startswith("fd_digits: reference_fingerprint differs (")
    assert note.endswith("the reference images changed between the evaluations: score each run against them as "
                         "they are now, `ganforge eval RUN --metrics fd_digits` on each")
    config = (b / "config.toml").read_text()
    size = re.search(r"^img_size = (\d+)$", config, re.M)
    (b / "config.toml").write_text(config.replace(size.group(0), f"img_size = {int(size.group(1)) * 2}"))
    (note,) = protocol_notes(compare_runs([a, b]))  # the same data at another size: eval RUN cannot align them
    assert "the same data set at another size or channel count" in note
    assert "--fake folder:DIR --img-size 28 --metrics fd_digits`" in note
    _write_metrics(b, [(0.064, [record])])  # recorded before the fingerprint was: unknown, not different
    assert protocol_notes(compare_runs([a, b])) == []


def test_a_curve_joins_only_values_measured_alike(two_runs):
    a, _ = two_runs
    _write_metrics(a, [(1.0, [_record("fd_digits", 30.0, 500, 1.0)]), (2.0, [_record("fd_digits", 20.0, 500, 2.0)]),
                       (2.0, [_record("fd_digits", 25.0, 10000, 2.0)]),
                       (3.0, [_record("fd_digits", 10.0, 500, 3.0)])])
    (view,) = compare_runs([a])
    assert view.curves["fd_digits"] == [(1.0, 30.0), (2.0, 20.0), (3.0, 10.0)]
    assert view.latest["fd_digits"]["value"] == 10.0


def test_a_torn_stats_line_is_skipped(two_runs):
    a, _ = two_runs
    whole = read_stats(a / "stats.jsonl")
    with open(a / "stats.jsonl", "a") as f:
        f.write('{"tick": 9, "kimg": 0.0')  # a crash mid-append
    assert read_stats(a / "stats.jsonl") == whole
    assert compare_runs([a])[0].kimg == whole[-1]["kimg"]


@pytest.mark.parametrize("case, needle", [
    ("missing", "x does not exist; give a run directory made by `ganforge train`; did you mean "),
    ("not_a_run", "not a run directory"),
    ("stray_file", "notes.txt is neither a run directory nor a file inside one"),
    ("bad_metrics", "is not a metrics.json"),
    ("bad_plot", "--plot takes"),
    ("plot_exists", "--force"),
    ("unknown_metric", "no run recorded the metric"),
])
def test_bad_input_to_compare_is_one_line_and_exit_2(two_runs, tmp_path, capsys, case, needle):
    a, _ = two_runs
    argv = ["compare", str(a)]
    if case == "missing":
        argv = ["compare", str(a.parent / f"{a.name}x")]  # a typo names the run it likely meant
    elif case == "not_a_run":
        argv = ["compare", str(tmp_path)]
    elif case == "stray_file":  # a file outside any run: named itself, not the folder it lies in
        (tmp_path / "notes.txt").write_text("")
        argv = ["compare", str(tmp_path / "notes.txt")]
    elif case == "bad_metrics":
        (a / "metrics.json").write_text("[{")
    elif case == "bad_plot":
        argv += ["--plot", str(tmp_path / "x.jpg")]
    elif case == "plot_exists":
        (tmp_path / "x.png").write_bytes(b"keep")
        argv += ["--plot", str(tmp_path / "x.png")]
    elif case == "unknown_metric":
        argv += ["--plot", str(tmp_path / "y.png"), "--metric", "fid"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert needle in captured.err and len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""
    if case == "plot_exists":
        assert (tmp_path / "x.png").read_bytes() == b"keep"


def test_settings_a_model_does_not_read_are_no_difference(tmp_path):
    from ganforge.config import load_config

    def run(name: str, preset: str, overrides: list[str]) -> Path:
        run_dir = tmp_path / name
        run_dir.mkdir()
        (run_dir / "config.toml").write_text(load_config(preset=preset, overrides=overrides).to_toml())
        return run_dir

    dcgan = run("0000-a", "mnist-dcgan", [])
    dcgan_hidden = run("0001-b", "mnist-dcgan", ["model.g_hidden=[8, 8]"])  # dcgan's G has no hidden list
    mlp = run("0002-c", "mnist-mlp", [])
    assert settings_diff(compare_runs([dcgan, dcgan_hidden])) == []
    rows = dict(settings_diff(compare_runs([dcgan, mlp])))
    assert rows["model.g_hidden"] == [None, [256, 512, 1024]] and rows["model.g_width"] == [64, None]
    assert "-" in format_comparison(compare_runs([dcgan, mlp])).split("model.g_hidden")[1].splitlines()[0]


def test_losses_png_marks_where_a_resume_changed_settings(tmp_path, monkeypatch):
    from ganforge import report

    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    record = {"d_loss": 1.0, "g_loss": 2.0, "d_real": 0.6, "d_fake": 0.4}
    stats = [{**record, "kimg": k} for k in (1.0, 2.0, 3.0)]
    report.plot_losses(stats, tmp_path / "losses.png")
    stats[2]["resumed"] = {"kimg": 2.0, "changed": {"optim.g_lr": [3e-4, 1e-4]}}
    report.plot_losses(stats, tmp_path / "losses.png")

    def marks(fig):
        return [[(line.get_label(), list(line.get_xdata())) for line in ax.lines
                 if line.get_label() == "settings changed at a resume"] for ax in fig.axes]

    assert marks(figures[0]) == [[], []]
    assert marks(figures[1]) == [[("settings changed at a resume", [2.0, 2.0])]] * 2
    from ganforge.compare import RunView

    stats[1]["resumed"] = {"kimg": 1.0, "changed": {"optim.d_lr": 5, "train.amp": ["none"]}}  # edited by hand
    stats[2]["resumed"]["changed"]["optim.d_betas"] = [[0.5, 0.99], [0.0, 0.99]]
    view = RunView("run", tmp_path, {}, stats)
    assert view.resumes_changed == [(2.0, {"optim.g_lr": [3e-4, 1e-4], "optim.d_betas": [[0.5, 0.99], [0.0, 0.99]]})]
    noted = "at 2 kimg optim.g_lr 0.0003 -> 0.0001, optim.d_betas [0.5, 0.99] -> [0.0, 0.99]"
    assert noted in format_comparison([view])


def test_a_run_of_one_tick_is_drawn_as_points(two_runs, tmp_path, monkeypatch):
    from ganforge import report
    from ganforge.compare import plot_comparison

    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    record = {"kimg": 0.032, "d_loss": 1.0, "g_loss": 2.0, "d_real": 0.6, "d_fake": 0.4}
    for stats, marker in (([record], "."), ([record, {**record, "kimg": 0.064}], "None")):
        report.plot_losses(stats, tmp_path / "losses.png")
        views = compare_runs([two_runs[0]])
        views[0].stats = stats
        plot_comparison(views, tmp_path / "compare.png")
        assert [line.get_marker() for line in figures[-2].axes[0].lines] == [marker] * 2
        assert [line.get_marker() for line in figures[-1].axes[-1].lines] == [marker] * 2


def test_compare_seeds_gathers_runs_that_differ_in_the_seed_alone(tmp_path, capsys):
    from ganforge.config import load_config

    def run(name: str, overrides: list[str], fd: float | None) -> None:
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        (run_dir / "config.toml").write_text(load_config(preset="default", overrides=overrides).to_toml())
        (run_dir / "stats.jsonl").write_text(json.dumps({"kimg": 1.0, "sec_per_kimg": 2.0, "time_s": 2.0}) + "\n")
        if fd is not None:
            _write_metrics(run_dir, [(1.0, [_record("fd_digits", fd, 1000, 1.0)])])

    run("0000-a", ["train.seed=0"], 4.0)
    run("0001-a", ["train.seed=1"], 6.0)
    run("0002-b", ["train.seed=0", "loss.name=hinge"], 3.0)
    run("0003-b", ["train.seed=1", "loss.name=hinge"], 3.5)
    run("0004-b", ["train.seed=2", "loss.name=hinge"], None)  # not evaluated: counted apart
    _write_metrics(tmp_path / "runs" / "0002-b", [(1.0, [_record("fd_digits", 3.0, 1000, 1.0),
                                                         _record("kid_digits", 0.5, 1000, 1.0)])])
    assert main(["compare", str(tmp_path / "runs"), "--seeds"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["group", "0000-a", "+1", "0002-b", "+2"]
    rows = {line.split()[0]: line.split()[1:] for line in lines if line}
    assert rows["runs"] == ["2", "3"] and rows["seeds"] == ["0,1", "0,1,2"]
    assert rows["loss.name"] == ["ns", "hinge"] and "train.seed" not in rows
    # means 5 and 3.25, sample sds 1.4 and 0.35; the lower mean FD is marked, over its two evaluated runs
    assert rows["fd_digits"] == ["5", "(1.4)", "3.25", "(0.35)*", "n=2"]
    assert lines[-2:] == ["", "* the best mean of the metric among the groups"]
    assert rows["kid_digits"] == ["-", "0.5", "n=1"]  # a group with none of it: no mean, nor a count of none

    # a value measured at another n is no mean to rank: no mark, and the note says so
    _write_metrics(tmp_path / "runs" / "0001-a", [(1.0, [_record("fd_digits", 6.0, 500, 1.0)])])
    assert main(["compare", str(tmp_path / "runs"), "--seeds"]) == 0
    out = capsys.readouterr().out
    assert "*" not in out and "n_fake differs" in out


def test_a_run_that_reached_its_time_limit_within_the_rounding_of_stats_is_ended_by_it(tmp_path):
    from ganforge.compare import RunView

    def view(time_s: float, minutes: float) -> RunView:
        return RunView("r", tmp_path, {"train.kimg": 1.0, "train.minutes": minutes},
                       [{"tick": 1, "kimg": 0.008, "time_s": time_s}])

    # a first step faster than 5 ms is logged as 0.0 s; its 1e-9 minute limit still ended the run
    assert view(0.0, 1e-9).ended_by == "train.minutes"
    assert view(59.996, 1.0).ended_by == "train.minutes"
    assert view(59.9, 1.0).ended_by is None  # stopped (Ctrl-C) a tenth of a second before the limit
    assert view(0.0, 0.0).ended_by is None
