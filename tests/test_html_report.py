"""report.html: built from a run directory's own files, refreshed by eval, and honest about what it read."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from ganforge.cli import main
from ganforge.device import cpu_name
from ganforge.generators import load_generator
from ganforge.html_report import MAX_TICK_ROWS, REPORT_NAME, write_html_report
from ganforge.models import build_discriminator, build_generator
from ganforge.trainer import train

VOID = {"meta", "img", "br", "link", "hr", "input"}


class _Page(HTMLParser):
    """Checks that every element closes in order, and collects image sources and text."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (self.open[-3:], tag)
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def read_page(run_dir: Path) -> _Page:
    page = _Page()
    page.feed((run_dir / REPORT_NAME).read_text())
    page.close()
    assert page.open == []
    assert all((run_dir / src).is_file() for src in page.images), page.images
    return page


@pytest.fixture
def run_dir(tmp_path, tiny_cfg):
    return train(tiny_cfg(**{"train.ema_kimg": 0.05}), out=tmp_path / "runs", log=lambda msg: None)


def test_training_writes_a_report_of_the_finished_run(run_dir, tiny_cfg):
    page = read_page(run_dir)
    text = " ".join(page.text)
    assert "Finished: 0.064 kimg of 0.064" in text and "final samples of G_ema" in text
    cpu = f"{cpu_name()}, " if cpu_name() else ""
    assert f"trained on cpu, {cpu}1 thread, {torch.backends.cpu.get_cpu_capability()}" in text  # the tests' one thread
    assert {"final.png", "samples/reals.png", "progress.gif", "losses.png"} <= set(page.images)
    cfg = tiny_cfg()
    for net in (build_generator(cfg), build_discriminator(cfg)):  # the networks section counts the real nets
        assert f"total parameters: {sum(p.numel() for p in net.parameters()):,}" in text
    assert (run_dir / "config.toml").read_text() in "".join(page.text)
    # above it, what the run sets beyond the built-in defaults, with meanings: ema_kimg=0.05 but not z_dim
    assert re.search(r"\nema_kimg = 0.05 +# half-life of the EMA of G in kimg", "".join(page.text))
    assert not re.search(r"\nz_dim = 100 +#", "".join(page.text))
    assert "No evaluation recorded" in text and not (run_dir / "metrics.png").exists()


def test_eval_refreshes_the_report_with_each_metric_and_its_protocol(run_dir, capsys):
    assert main(["eval", str(run_dir), "--n", "40", "--metrics", "fd_digits,classes"]) == 0
    said = capsys.readouterr().out
    assert f"report {run_dir / REPORT_NAME}" in said
    assert "note: classes_kl " in said and "fewest and most drawn digits" in said
    history = json.loads((run_dir / "metrics.json").read_text())
    fd = next(r for r in history[-1]["results"] if r["metric"] == "fd_digits")
    html = (run_dir / REPORT_NAME).read_text()
    row = re.search(r"<tr><td class=l>fd_digits</td><td>([^<]+)</td>", html)
    assert row is not None and abs(float(row[1]) - fd["value"]) <= 1e-3 * abs(fd["value"])
    assert "<td class=l>40</td>" in html  # n fake, from the protocol
    assert "fewest and most drawn digits" in html
    assert not (run_dir / "metrics.png").exists()  # one point per metric: nothing to draw yet
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.096"]) == 0
    assert "metrics.png" not in read_page(run_dir).images  # the resumed run's report still has one point
    assert main(["eval", str(run_dir), "--n", "40", "--metrics", "fd_digits"]) == 0
    assert "metrics.png" in read_page(run_dir).images  # fd_digits at 0.064 and 0.096 kimg


def test_collapse_signals_stopped_runs_and_long_runs_read_from_the_files(run_dir):
    config = (run_dir / "config.toml").read_text()
    (run_dir / "config.toml").write_text(config.replace("kimg = 0.064", "kimg = 500.0"))
    saturated = range(100, 105)  # D(real) 0.999, D(fake) 0.001 at 50 to 52 kimg
    ticks = [{"kimg": round(0.5 * i, 3), "d_loss": 1.0, "g_loss": 1.0, "d_real": 0.999 if i in saturated else 0.5,
              "d_fake": 0.001 if i in saturated else 0.5, "sec_per_kimg": 1.0, "time_s": float(i),
              "diversity": 0.1 if 20 <= i < 30 else 0.9, "duplicates": 0.0,
              # 3 of the grid's 4 jump at 100 kimg (a warning); 2 at 105 are too few for one
              "jumped": {200: 3, 210: 2}.get(i, 0)} for i in range(1, 301)]
    (run_dir / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    (run_dir / "checkpoints" / "kept-000099500.pt").write_bytes(b"")
    (run_dir / "final.png").unlink()
    write_html_report(run_dir)
    page = read_page(run_dir)
    text = " ".join(page.text)
    assert "Stopped at 150 kimg of 500" in text and "--resume" in text
    assert "sample spread under 0.25 of the real images' at 10 ticks, 10 to 14.5 kimg (lowest 0.10): G's samples " \
           "look alike, a collapse; clear from 15 kimg to the last tick (150)" in text
    assert "D told real from fake almost perfectly (mean D(real) above 0.99, D(fake) below 0.01) at 5 ticks, 50 to " \
           "52 kimg: G had little to learn from; clear from 52.5 kimg to the last tick (150)" in text
    assert not any("near-copy at" in t for t in page.text)
    assert "part of the grid jumped (moved more than 2.5x as far as over the ticks before) at the tick at 100 kimg: " \
           "G changed abruptly, as when a run breaks late; compare those grids with the ones before " \
           "(kept-000099500.pt set aside from before)" in text
    assert any(src.startswith("samples/fakes") for src in page.images)  # the latest grid stands in for final.png
    html = (run_dir / REPORT_NAME).read_text()
    table = html[html.index("<h2>Ticks</h2>"):html.index("<h2>Networks</h2>")]
    rows = re.findall(r"<tr(?: class=flag)?><td>([^<]+)</td>", table)
    assert len(rows) == MAX_TICK_ROWS and rows[0] == "0.5" and rows[-1] == "150"
    flagged = re.findall(r"<tr class=flag><td>([^<]+)</td>", table)
    assert flagged and all(10 <= float(k) <= 14.5 or 50 <= float(k) <= 52 or float(k) == 100 for k in flagged)
    # a signal still there at the last tick is not called clear
    ticks[-1]["diversity"] = 0.2
    (run_dir / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    write_html_report(run_dir)
    text = " ".join(read_page(run_dir).text)
    assert "at 11 ticks, 10 to 150 kimg (lowest 0.10): G's samples look alike, a collapse." in text
    assert "52 kimg: G had little to learn from; clear from 52.5 kimg to the last tick (150)" in text


def test_report_command_rebuilds_every_run_and_refuses_what_is_not_one(run_dir, tmp_path, capsys):
    (run_dir / REPORT_NAME).unlink()
    assert main(["report", str(run_dir.parent)]) == 0
    assert f"wrote {run_dir / REPORT_NAME}" in capsys.readouterr().out
    read_page(run_dir)
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    # one run that cannot be reported (a config.toml broken by hand) does not stop the others
    import shutil

    broken = run_dir.parent / "0009-broken"
    shutil.copytree(run_dir, broken)
    (broken / "config.toml").write_text("garbage [[[\n")
    (run_dir / REPORT_NAME).unlink()
    assert main(["report", str(broken), str(run_dir)]) == 2
    said = capsys.readouterr()
    assert f"wrote {run_dir / REPORT_NAME}" in said.out and (run_dir / REPORT_NAME).is_file()
    assert said.err.splitlines()[-1] == f"error: 1 of 2 reports not written ({broken}): see the errors above"
    assert "config.toml is not valid TOML" in said.err.splitlines()[0]


def test_a_malformed_metrics_json_is_named_on_the_page_and_does_not_fail_training(run_dir, capsys):
    (run_dir / "metrics.json").write_text("{ not json")
    write_html_report(run_dir)
    text = " ".join(read_page(run_dir).text)
    assert f"{run_dir / 'metrics.json'} is not a metrics.json" in text and "No evaluation recorded" in text
    assert main(["train", "--resume", str(run_dir), "--set", "train.kimg=0.096"]) == 0
    assert "Finished: 0.096 kimg" in " ".join(read_page(run_dir).text)
    assert main(["compare", str(run_dir)]) == 2  # comparing metrics it cannot read still says so
    assert "is not a metrics.json" in capsys.readouterr().err


def test_the_commands_on_the_page_survive_a_path_with_spaces(tmp_path, tiny_cfg):
    import shlex

    run_dir = train(tiny_cfg(), out=tmp_path / "my runs", log=lambda msg: None)
    text = "".join(read_page(run_dir).text)
    command = next(line for line in text.splitlines() if line.startswith("ganforge eval "))
    assert shlex.split(command) == ["ganforge", "eval", str(run_dir)]
    nearest = next(line for line in text.splitlines() if "--nearest" in line)
    argv = shlex.split(nearest, comments=True)[1:]
    argv[argv.index("nn.png")] = str(tmp_path / "nn.png")
    assert main(argv) == 0 and (tmp_path / "nn.png").is_file()  # the page's command works as written
    export = shlex.split(next(line for line in text.splitlines() if "ganforge export" in line), comments=True)[1:]
    export[export.index("G.safetensors")] = str(tmp_path / "G.safetensors")
    assert main(export) == 0 and main(["sample", str(tmp_path / "G.safetensors"), "--n", "4", "--out",
                                       str(tmp_path / "g.png")]) == 0
    program = shlex.split(next(line for line in text.splitlines() if "G.pt2" in line), comments=True)[1:]
    program[program.index("G.pt2")] = str(tmp_path / "G.pt2")
    z = torch.zeros(2, load_generator(run_dir).z_dim)
    assert main(program) == 0 and torch.export.load(tmp_path / "G.pt2").module()(z).shape[0] == 2


def test_a_run_given_as_dot_keeps_its_name(run_dir, monkeypatch, capsys):
    monkeypatch.chdir(run_dir)
    assert main(["report", "."]) == 0
    assert f"<h1>{run_dir.name}</h1>" in (run_dir / REPORT_NAME).read_text()
    assert main(["compare", "."]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["run", run_dir.name]


def test_a_config_that_no_longer_builds_still_gets_a_page(run_dir):
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace('g = "dcgan"', 'g = "stylegan9"'))
    write_html_report(run_dir)
    text = " ".join(read_page(run_dir).text)
    assert "the networks could not be built from config.toml" in text and "stylegan9" in text
    assert "beyond ganforge's built-in defaults" not in text  # no meanings for a config that does not load
    assert "Finished: 0.064 kimg of 0.064" in text


def test_the_tick_table_shows_the_adaptive_augment_probability_when_a_run_has_one(run_dir):
    def table() -> str:
        write_html_report(run_dir)
        html = (run_dir / REPORT_NAME).read_text()
        return html[html.index("<h2>Ticks</h2>"):html.index("<h2>Networks</h2>")]

    assert "augment p" not in table()
    ticks = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    for i, tick in enumerate(ticks):
        tick["augment_p"] = 0.125 * (i + 1)
    (run_dir / "stats.jsonl").write_text("".join(json.dumps(t) + "\n" for t in ticks))
    shown = table()
    assert "<th>augment p</th>" in shown and f"<td>{0.125 * len(ticks):g}</td>" in shown


def test_the_page_names_the_stabilisers_a_run_trained_with(tmp_path, tiny_cfg):
    def glance(run) -> str:
        html = (run / REPORT_NAME).read_text()
        return html[html.index("<h2>At a glance</h2>"):html.index("<h2>Samples</h2>")]

    plain = train(tiny_cfg(**{"train.ema_kimg": 0}), out=tmp_path / "a", log=lambda msg: None)
    assert "<th class=l>stabilisers</th><td class=l>none</td>" in glance(plain)
    run = train(tiny_cfg(**{"train.ema_kimg": 0.05, "train.diffaugment": '"translation,cutout"',
                            "train.ada_target": 0.6, "loss.r1_gamma": 0.1, "loss.r1_every": 4,
                            "model.d_spectral_norm": "true", "data.mirror": "true"}), out=tmp_path / "b",
                log=lambda msg: None)
    shown = glance(run)
    assert "1 channel(s), and each image mirrored" in shown and "mirrored" not in glance(plain)
    p = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])["augment_p"]
    assert (f"EMA of G (half-life 0.05 kimg); DiffAugment translation,cutout, adaptive (target 0.6, p {p:.4g} at "
            "the last tick); R1 (gamma 0.1, every 4 D steps); spectral norm on D") in shown
    wgan = train(tiny_cfg(**{"loss.name": '"wgan"', "model.d_norm": '"none"', "loss.n_critic": 2,
                             "loss.critic_burst": 3, "loss.critic_burst_first": 2, "loss.critic_burst_every": 22,
                             "loss.topk": 0.5, "loss.topk_kimg": 20, "loss.lecam": 0.3, "model.d_dropout": 0.2}),
                 out=tmp_path / "c", log=lambda msg: None)
    assert ("2 D steps per G step; 3 D steps in the first 2 and every 22nd G steps; LeCam (weight 0.3); top-k "
            "training (G learns from "
            "the 50% of fakes D rates best, from all over 20 kimg); dropout in D (0.2)") in glance(wgan)


def test_a_stacked_mnist_kl_is_split_into_its_parts_on_the_page(run_dir):
    protocol = {"n_fake": 26000, "n_real": 0, "reference": "uniform-1000", "extractor": "ganforge-digits-cnn",
                "channel_kl": [0.04, 0.05, 0.03], "channel_digits": [[0.1] * 10] * 3, "mean_confidence": 0.8}
    results = [{"metric": "modes", "value": 1000, **protocol}, {"metric": "modes_kl", "value": 0.15, **protocol}]
    (run_dir / "metrics.json").write_text(json.dumps([{"kimg": 0.064, "results": results}]))
    write_html_report(run_dir)
    text = " ".join(read_page(run_dir).text)
    assert "modes_kl 0.150 = 0.120 from uneven digits within the channels (0.040, 0.050, 0.030)" in text
    assert "0.030 from dependence between them" in text


def test_the_metrics_figure_draws_every_metric_measured_twice(tmp_path):
    """The default eval alone records ten values a point; none may drop off the figure."""
    from PIL import Image

    from ganforge.compare import RunView
    from ganforge.html_report import plot_metrics

    names = ["fd_digits", "kid_digits", "is_digits", "precision", "recall", "density", "coverage",
             "classes_covered", "classes_kl", "classes_confidence"]
    view = RunView(name="run", path=tmp_path, settings={}, stats=[])
    view.curves = {name: [(18.75, 1.0 + i), (37.5, 0.5 + i)] for i, name in enumerate(names)}
    view.curves["once"] = [(37.5, 2.0)]  # one point: nothing to draw
    path = tmp_path / "metrics.png"
    assert plot_metrics(view, path) == names
    with Image.open(path) as image:
        three_rows = image.size
    view.curves = {name: view.curves[name] for name in names[:4]}
    assert plot_metrics(view, path) == names[:4]
    with Image.open(path) as image:
        one_row = image.size
    assert three_rows[0] == one_row[0] and three_rows[1] > 2.5 * one_row[1]
    view.curves = {"once": [(37.5, 2.0)]}
    assert plot_metrics(view, path) == [] and not path.exists()  # the old figure no longer matches
