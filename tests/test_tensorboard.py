from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the test extras have it

from ganforge import checkpoint as ckpt_io
from ganforge.cli import main
from ganforge.errors import UserError
from ganforge.tensorboard_log import eval_scalars, scalars
from ganforge.trainer import resume, train


def quiet(_msg: str) -> None:
    pass


def events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def stats_lines(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def as_float32(logged: float, value: float) -> bool:
    """TensorBoard keeps scalars in float32."""
    return abs(logged - value) <= 1e-6 * max(1.0, abs(value))


def decoded(event) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def png(path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


def test_each_tick_logs_the_stats_line_and_the_grid_written_to_samples(tmp_path, tiny_cfg):
    run_dir = train(tiny_cfg(**{"train.tensorboard": "true", "train.kimg": 0.048, "train.tick_kimg": 0.016}),
                    out=tmp_path, log=quiet)
    acc, stats = events(run_dir), stats_lines(run_dir)
    assert len(stats) == 3
    steps = [round(s["kimg"] * 1000) for s in stats]
    for key, tag in (("d_loss", "loss/D"), ("g_loss", "loss/G"), ("d_real", "D/real"), ("d_fake", "D/fake")):
        logged = acc.Scalars(tag)
        assert [e.step for e in logged] == steps, tag
        assert all(as_float32(e.value, s[key]) for e, s in zip(logged, stats, strict=True)), tag
    fakes = acc.Images("fakes")
    assert [e.step for e in fakes] == steps
    grids = sorted((run_dir / "samples").glob("fakes*.png"))
    for event, path in zip(fakes, grids, strict=True):  # the very pixels of the saved grid
        assert np.array_equal(decoded(event), png(path)), path.name
    (reals,) = acc.Images("reals")
    assert reals.step == 0 and np.array_equal(decoded(reals), png(run_dir / "samples" / "reals.png"))
    assert "config/text_summary" in acc.Tags()["tensors"]
    assert f"tensorboard --logdir {run_dir / 'tensorboard'}" in (run_dir / "report.html").read_text()


def test_a_resume_hides_the_ticks_logged_after_its_checkpoint(tmp_path, tiny_cfg):
    # ticks at 16, 32, 48, 64 images; checkpoints at 32 and 64 (every second tick and the end)
    cfg = tiny_cfg(**{"train.tensorboard": "true", "train.kimg": 0.064, "train.tick_kimg": 0.016,
                      "train.ckpt_ticks": 2})
    run_dir = train(cfg, out=tmp_path, log=quiet)
    latest = ckpt_io.resolve_checkpoint(run_dir)
    assert ckpt_io.load_checkpoint(latest)["nimg"] == 64
    latest.unlink()  # as if killed after logging the ticks at 48 and 64, before their checkpoint
    resume(run_dir, ["optim.g_lr=1e-5"], log=quiet)  # another lr, so the repeated ticks log other values
    acc, stats = events(run_dir), stats_lines(run_dir)
    assert [round(s["kimg"] * 1000) for s in stats] == [16, 32, 48, 64]
    logged = acc.Scalars("loss/G")
    assert [e.step for e in logged] == [16, 32, 48, 64]  # once each: the first run's 48 and 64 are gone
    assert all(as_float32(e.value, s["g_loss"]) for e, s in zip(logged, stats, strict=True))
    assert [e.step for e in acc.Images("fakes")] == [16, 32, 48, 64]
    assert [e.step for e in acc.Images("reals")] == [0]  # kept from the first run, not logged again


def test_scalars_take_finite_numbers_and_the_evaluated_metrics():
    stats = {"tick": 3, "kimg": 0.048, "d_loss": 1.5, "g_loss": float("nan"), "diversity": None,
             "duplicates": 0.25, "change": None, "jumped": 3,
             "metrics": {"fd_digits": 12.5, "modes": 1000, "classes_hist": [1, 2]}}
    assert scalars(stats) == {"loss/D": 1.5, "samples/duplicates": 0.25, "samples/jumped": 3.0,
                              "metrics/fd_digits": 12.5, "metrics/modes": 1000.0}


def test_eval_results_of_another_protocol_chart_apart():
    records = [{"metric": "kid_digits", "value": 0.5, "n_fake": 40},
               {"metric": "kid_digits", "value": 0.25, "n_fake": 40, "truncation": 0.7},
               {"metric": "kid_digits", "value": 0.125, "n_fake": 40, "generator": "G (not G_ema)", "truncation": 1.0},
               {"metric": "fd_digits", "value": float("nan"), "n_fake": 40}]
    assert eval_scalars(records) == {"eval n=40/kid_digits": 0.5, "eval n=40 trunc 0.7/kid_digits": 0.25,
                                     "eval n=40 G trunc 1/kid_digits": 0.125}
    assert eval_scalars(records[:1], reference="mnist") == {"eval n=40 vs mnist/kid_digits": 0.5}


def test_without_the_package_the_setting_is_refused_before_any_file(tmp_path, tiny_cfg, image_folder,
                                                                     monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard raises ImportError
    out = tmp_path / "runs"
    with pytest.raises(UserError, match=r"train.tensorboard=true needs the tensorboard package.*pip install"):
        train(tiny_cfg(**{"train.tensorboard": "true"}), out=out, log=quiet)
    assert not out.exists()
    code = main(["train", "--preset", "default", "--set", "train.tensorboard=true", "--dry-run"])
    assert code == 2 and "needs the tensorboard package" in capsys.readouterr().err
    run_dir = train(tiny_cfg(**{"train.kimg": 0.032}), out=out, log=quiet)  # off, nothing needs it
    assert not (run_dir / "tensorboard").exists()
    assert "tensorboard --logdir" not in (run_dir / "report.html").read_text()


def test_eval_adds_its_results_at_each_checkpoint_one_chart_group_per_protocol(tmp_path, tiny_cfg, capsys):
    cfg = tiny_cfg(**{"train.tensorboard": "true", "train.kimg": 0.064, "train.tick_kimg": 0.032,
                      "train.ema_kimg": 0.01})
    run_dir = train(cfg, out=tmp_path, log=quiet)
    assert main(["eval", str(run_dir), "--ckpt", "all", "--n", "40", "--metrics", "kid_digits,classes"]) == 0
    assert main(["eval", str(run_dir), "--n", "30", "--metrics", "kid_digits", "--no-ema"]) == 0
    capsys.readouterr()
    acc = events(run_dir)
    records = [r for entry in json.loads((run_dir / "metrics.json").read_text()) for r in entry["results"]]
    kid = [r for r in records if r["metric"] == "kid_digits"]
    logged = acc.Scalars("eval n=40/kid_digits")
    assert [e.step for e in logged] == [32, 64]  # each checkpoint at its own images
    assert all(as_float32(e.value, r["value"]) for e, r in zip(logged, kid[:2], strict=True))
    assert [e.step for e in acc.Scalars("eval n=40/classes_covered")] == [32, 64]
    (g_only,) = acc.Scalars("eval n=30 G/kid_digits")  # G rather than G_ema, and another n: its own chart
    assert g_only.step == 64 and as_float32(g_only.value, kid[2]["value"])
    assert [e.step for e in acc.Scalars("loss/G")] == [32, 64]  # training's own charts untouched


def test_eval_leaves_a_run_without_tensorboard_without_it(tmp_path, tiny_cfg, capsys):
    run_dir = train(tiny_cfg(**{"train.kimg": 0.032}), out=tmp_path, log=quiet)
    assert main(["eval", str(run_dir), "--n", "30", "--metrics", "kid_digits"]) == 0
    assert not (run_dir / "tensorboard").exists()


def test_eval_of_a_tensorboard_run_without_the_package_says_so_and_still_records(tmp_path, tiny_cfg, monkeypatch,
                                                                                  capsys):
    run_dir = train(tiny_cfg(**{"train.tensorboard": "true", "train.kimg": 0.032}), out=tmp_path, log=quiet)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(["eval", str(run_dir), "--n", "30", "--metrics", "kid_digits"]) == 0
    assert "is not updated, as the tensorboard package is not installed" in capsys.readouterr().out
    assert json.loads((run_dir / "metrics.json").read_text())[-1]["results"][0]["metric"] == "kid_digits"
