from __future__ import annotations

import json
import math
import os
import re
import shutil

import pytest
import torch

from ganforge import checkpoint as ckpt_io
from ganforge import load_generator
from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.report import grid_nimg as report_grid_nimg
from ganforge.report import read_stats as report_stats
from ganforge.step import ema_beta, update_ema
from ganforge.trainer import Trainer, new_run_dir, resume, train


def quiet(_msg: str) -> None:
    pass


def final_weights(run_dir) -> dict:
    return ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))


def assert_same_state(a: dict, b: dict, nets: tuple[str, ...] = ("G", "D", "G_ema")) -> None:
    for net in nets:
        if a[net] is None:
            assert b[net] is None
            continue
        assert a[net].keys() == b[net].keys()
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"
    for opt in ("opt_G", "opt_D"):
        for pid, state in a[opt]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, b[opt]["state"][pid][key]), f"{opt}[{pid}].{key} differs"
    assert a["nimg"] == b["nimg"]


@pytest.mark.parametrize(
    "extra",
    [
        {"train.ema_kimg": 0.05},  # dcgan with BN and EMA, D first, fresh z
        {"model.g": '"mlp"', "model.d": '"mlp"', "model.g_hidden": "[16, 16]", "model.d_hidden": "[16]",
         "model.g_norm_first": "false", "train.step_order": '"g_first"', "train.reuse_fake": "true",
         "loss.d_reduction": '"mean"'},  # the R5 pattern
        {"train.step_order": '"simultaneous"', "loss.name": '"minimax"'},
        {"train.reuse_fake": "true"},  # the R4 pattern
        {"optim.lr_decay": '"cosine"', "optim.lr_decay_start_kimg": 0.02, "optim.lr_decay_end_kimg": 0.104},
        {"data.mirror": "true"},
        {"optim.name": '"rmsprop"', "loss.name": '"wgan"', "model.d_norm": '"none"', "loss.n_critic": 2},  # WGAN
    ],
    ids=["dcgan-ema", "g-first-reuse", "simultaneous", "d-first-reuse", "lr-decay", "mirror", "wgan-rmsprop"],
)
def test_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path, tiny_cfg, extra):
    # 0.104 kimg = 13 iterations of batch 8, across two epochs of the 32-image folder
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.104}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.048}), out=tmp_path / "b", log=quiet)
    assert final_weights(half)["nimg"] == 48
    resumed = resume(half, ["train.kimg=0.104"], log=quiet)
    assert resumed == half
    a, b = final_weights(full), final_weights(resumed)
    assert_same_state(a, b)
    # and training went on after the half run's first checkpoint: equal weights are not equal by standing still
    first = ckpt_io.load_checkpoint(ckpt_io.list_checkpoints(half)[0])
    assert first["nimg"] < a["nimg"]
    for net in ("G", "D"):  # learnt weights, not only batch norm's running statistics
        assert any(not torch.equal(v, first[net][k]) for k, v in a[net].items() if k.endswith("weight")), net


def test_a_checkpoint_whose_run_is_gone_goes_on_in_a_new_run_directory_to_the_same_weights(tmp_path, tiny_cfg,
                                                                                               monkeypatch):
    """A checkpoint copied from another machine, its run directory left behind, resumes into a new run
    directory that starts from a copy of it, and ends where the uninterrupted run ends, bit for bit."""
    full = train(tiny_cfg(**{"train.kimg": 0.064, "train.tick_kimg": 0.016}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**{"train.kimg": 0.032, "train.tick_kimg": 0.016}), out=tmp_path / "b", log=quiet)
    lone = tmp_path / "copied" / "from-the-cluster.pt"
    lone.parent.mkdir()
    shutil.copyfile(ckpt_io.resolve_checkpoint(half), lone)
    shutil.rmtree(half)
    source = lone.read_bytes()

    # a resume that fails before it trains leaves no run directory, nor the folders made for it
    def broken(*args, **kwargs):
        raise UserError("no device")

    monkeypatch.setattr(Trainer, "__init__", broken)
    with pytest.raises(UserError, match="no device"):
        resume(lone, ["train.kimg=0.064"], log=quiet, out=tmp_path / "new" / "runs")
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    with pytest.raises(UserError, match="--rewind goes back within a run"):
        resume(lone, ["train.kimg=0.064"], log=quiet, rewind=True)
    with pytest.raises(UserError, match="already reached train.kimg=0.032, so there is nothing to train"):
        resume(lone, log=quiet, out=tmp_path / "new")
    assert not (tmp_path / "new").exists()

    notes: list[str] = []
    run = resume(lone, ["train.kimg=0.064"], log=notes.append, out=tmp_path / "new", name="went-on")
    assert run == tmp_path / "new" / "0000-went-on"
    assert any(n.startswith(f"resuming {lone} at 0.032 kimg in a new run directory, {run}, from a copy") for n in notes)
    assert_same_state(final_weights(full), final_weights(run))
    assert [ckpt_io.checkpoint_nimg(p) for p in ckpt_io.list_checkpoints(run)] == [32, 48, 64]
    assert [r["kimg"] for r in report_stats(run / "stats.jsonl")] == [0.048, 0.064]
    assert load_config(path=run / "config.toml").train.kimg == 0.064
    assert lone.read_bytes() == source  # the file it was given is left as it was
    with pytest.raises(UserError, match="continues in the run's own directory; drop --out"):
        resume(run, ["train.kimg=0.08"], log=quiet, out=tmp_path / "new")


def test_a_checkpoint_with_later_ones_is_resumed_only_as_a_rewind(tmp_path, tiny_cfg):
    """Resuming an earlier checkpoint would write over the later ones: refused, leaving every file as it was,
    unless --rewind, which removes what came after it; a rewind with the same settings trains the same run."""
    cfg = tiny_cfg(**{"train.kimg": 0.064, "train.tick_kimg": 0.016, "train.keep_ckpts": 4})
    run = train(cfg, out=tmp_path / "runs", log=quiet)
    saved = ckpt_io.list_checkpoints(run)
    assert [ckpt_io.checkpoint_nimg(p) for p in saved] == [16, 32, 48, 64]
    end = final_weights(run)
    (run / "metrics.json").write_text(json.dumps([{"kimg": 0.016, "results": []}, {"kimg": 0.048, "results": []}]))
    best = run / "checkpoints" / "best.pt"
    shutil.copyfile(saved[2], best)  # the best of an evaluation at 0.048 kimg, after the rewind's checkpoint
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as info:
        resume(saved[1], log=quiet)
    assert str(info.value).startswith("ckpt-000000032.pt is not the run's latest checkpoint (ckpt-000000064.pt is): "
                                      "training on from it would write over ckpt-000000048.pt, ckpt-000000064.pt")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    notes: list[str] = []
    resume(saved[1], ["train.kimg=0.048"], log=notes.append, rewind=True)
    assert any(n.startswith("rewound to 0.032 kimg: removed ckpt-000000048.pt, ckpt-000000064.pt, best.pt")
               for n in notes), notes
    assert not best.exists()
    assert [ckpt_io.checkpoint_nimg(p) for p in ckpt_io.list_checkpoints(run)] == [16, 32, 48]
    assert [r["kimg"] for r in json.loads((run / "metrics.json").read_text())] == [0.016]
    assert [r["kimg"] for r in report_stats(run / "stats.jsonl")] == [0.016, 0.032, 0.048]
    assert not any(report_grid_nimg(g) > 48 for g in (run / "samples").glob("fakes*.png"))
    resume(run, ["train.kimg=0.064"], log=quiet)
    assert_same_state(end, final_weights(run))
    # a best from before the checkpoint rewound to stays
    saved = ckpt_io.list_checkpoints(run)
    shutil.copyfile(saved[0], best)
    notes.clear()
    resume(saved[2], ["train.kimg=0.064"], log=notes.append, rewind=True)
    assert any(n.startswith("rewound to 0.048 kimg: removed ckpt-000000064.pt, and") for n in notes), notes
    assert best.read_bytes() == saved[0].read_bytes()


def test_a_resume_drops_the_evaluations_recorded_after_its_checkpoint(tmp_path, tiny_cfg):
    """A kill between a tick's evaluation and its checkpoint leaves an evaluation that the resumed run makes
    again: it is recorded once."""
    run = train(tiny_cfg(**{"train.kimg": 0.032, "train.tick_kimg": 0.016}), out=tmp_path / "runs", log=quiet)
    history = [{"kimg": 0.016, "checkpoint": None, "results": []}, {"kimg": 0.048, "checkpoint": None, "results": []},
               {"checkpoint": "ckpt-000000032.pt", "kimg": 0.032, "results": []}]
    (run / "metrics.json").write_text(json.dumps(history))
    resume(run, ["train.kimg=0.064"], log=quiet)
    assert [r["kimg"] for r in json.loads((run / "metrics.json").read_text())] == [0.016, 0.032]


def test_a_time_limit_ends_the_run_where_it_is_and_a_resume_past_it_repeats_an_uninterrupted_run(tmp_path, tiny_cfg):
    full = train(tiny_cfg(**{"train.kimg": 0.104}), out=tmp_path / "a", log=quiet)
    said: list[str] = []
    # any time at all passes the limit: the run ends after its first step, as a finished run does
    run_dir = train(tiny_cfg(**{"train.kimg": 0.104, "train.minutes": 1e-9}), out=tmp_path / "b", log=said.append)
    assert final_weights(run_dir)["nimg"] == 8
    assert (run_dir / "final.png").is_file() and (run_dir / "progress.gif").is_file()
    assert any(line.startswith("train.minutes=1e-09 reached at 0.01 of 0.104 kimg") and "--set train.minutes=N" in line
               for line in said), said
    assert "Finished at its time limit: 0.008 kimg of 0.104" in (run_dir / "report.html").read_text()
    from ganforge.compare import compare_runs, format_comparison

    assert [v.ended_by for v in compare_runs([full, run_dir])] == ["train.kimg", "train.minutes"]
    assert "ended by" in format_comparison(compare_runs([full, run_dir]))
    ticks = (run_dir / "stats.jsonl").read_text()

    said.clear()
    resume(run_dir, log=said.append)  # the limit still holds: nothing more is trained
    assert final_weights(run_dir)["nimg"] == 8 and (run_dir / "stats.jsonl").read_text() == ticks
    assert any("already trained for train.minutes=1e-09" in line for line in said), said

    resume(run_dir, ["train.minutes=0"], log=quiet)  # no limit: on to train.kimg, from exactly where it ended
    assert_same_state(final_weights(full), final_weights(run_dir))
    with pytest.raises(UserError, match="train.minutes must be >= 0"):
        tiny_cfg(**{"train.minutes": -1})
    said.clear()
    Trainer(tiny_cfg(**{"train.minutes": 5, "optim.lr_decay": '"linear"'}), tmp_path / "decay", log=said.append)
    assert any("if train.minutes=5 ends the run sooner, they stop short of 0" in line for line in said), said


def test_resume_trains_with_the_optimizer_settings_it_is_given(tmp_path, tiny_cfg):
    # the optimizer's saved state carries its own lr and betas; an override on resume must win over them
    run_dir = train(tiny_cfg(**{"train.kimg": 0.048}), out=tmp_path, log=quiet)
    resume(run_dir, ["train.kimg=0.096", "optim.g_lr=1e-5", "optim.d_betas=[0.0, 0.9]", "optim.eps=1e-6"],
           log=quiet)
    ckpt = final_weights(run_dir)
    assert ckpt["nimg"] == 96
    assert {g["lr"] for g in ckpt["opt_G"]["param_groups"]} == {1e-5}
    assert {tuple(g["betas"]) for g in ckpt["opt_D"]["param_groups"]} == {(0.0, 0.9)}
    assert {g["eps"] for g in ckpt["opt_G"]["param_groups"] + ckpt["opt_D"]["param_groups"]} == {1e-6}
    d_lr = ckpt["config"]["optim"]["d_lr"]
    assert {g["lr"] for g in ckpt["opt_D"]["param_groups"]} == {d_lr}


def test_a_resume_that_changes_settings_records_what_the_run_trained_with_before(tmp_path, tiny_cfg):
    """config.toml holds the settings a run ended with: a resume that changes one says so, and its first
    tick records the old and new values and where the change began, for the report and compare."""
    from ganforge.compare import format_comparison, load_run
    from ganforge.html_report import build_html

    run_dir = train(tiny_cfg(**{"train.kimg": 0.048}), out=tmp_path, log=quiet)
    said: list[str] = []
    resume(run_dir, ["train.kimg=0.096", "optim.g_lr=1e-5"], log=said.append)
    was = load_config(path=run_dir / "config.toml").optim.g_lr  # the file now says the new rate
    assert was == 1e-5
    old_lr = tiny_cfg().optim.g_lr
    assert any(f"optim.g_lr {old_lr!r} -> 1e-05" in line for line in said), said
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    marked = [r for r in records if "resumed" in r]
    assert len(marked) == 1 and marked[0]["kimg"] > 0.048
    assert marked[0]["resumed"] == {"kimg": 0.048, "changed": {"optim.g_lr": [old_lr, 1e-5]}}
    view = load_run(run_dir)
    assert view.resumes_changed == [(0.048, {"optim.g_lr": [old_lr, 1e-5]})]
    assert f"at 0.048 kimg optim.g_lr {old_lr!r} -> 1e-05" in format_comparison([view])
    assert "changed at a resume" in build_html(run_dir)
    resume(run_dir, ["train.kimg=0.144"], log=quiet)  # going on further changes nothing in how it trains
    records = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert sum("resumed" in r for r in records) == 1


def test_rmsprop_trains_both_networks_and_takes_resume_overrides(tmp_path, tiny_cfg):
    settings = {"optim.name": '"rmsprop"', "optim.g_lr": 1e-3, "optim.d_lr": 2e-3}
    trainer = Trainer(tiny_cfg(**settings), tmp_path / "probe", log=quiet)
    for opt, lr in ((trainer.state.opt_G, 1e-3), (trainer.state.opt_D, 2e-3)):
        assert type(opt) is torch.optim.RMSprop and {g["lr"] for g in opt.param_groups} == {lr}
    run_dir = train(tiny_cfg(**settings, **{"train.kimg": 0.048}), out=tmp_path, log=quiet)
    ckpt = final_weights(run_dir)
    # RMSprop's own state (the running mean of squared gradients) was saved for every parameter
    assert all("square_avg" in state for state in ckpt["opt_G"]["state"].values())
    assert len(ckpt["opt_D"]["state"]) == len(ckpt["opt_D"]["param_groups"][0]["params"])
    resume(run_dir, ["train.kimg=0.096", "optim.d_lr=1e-4", "optim.eps=1e-6"], log=quiet)
    ckpt = final_weights(run_dir)
    assert ckpt["nimg"] == 96 and {g["lr"] for g in ckpt["opt_D"]["param_groups"]} == {1e-4}
    assert {g["eps"] for g in ckpt["opt_G"]["param_groups"]} == {1e-6}
    assert all("betas" not in g for g in ckpt["opt_G"]["param_groups"])


def test_run_directory_outputs(tmp_path, tiny_cfg):
    run_dir = train(tiny_cfg(**{"train.ema_kimg": 0.05}), out=tmp_path, log=quiet)
    for name in ("config.toml", "stats.jsonl", "progress.gif", "losses.png", "final.png", "samples/reals.png"):
        assert (run_dir / name).is_file(), name
    grids = sorted((run_dir / "samples").glob("fakes*.png"))
    assert len(grids) == 2
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["tick"] for s in stats] == [1, 2]
    assert {"kimg", "sec_per_kimg", "d_loss", "g_loss", "d_real", "d_fake"} <= set(stats[0])
    assert all(0 <= s["d_real"] <= 1 and 0 <= s["d_fake"] <= 1 for s in stats)
    ckpt = final_weights(run_dir)
    assert ckpt["G_ema"] is not None
    assert {"python", "numpy", "torch", "z"} <= set(ckpt["rng"])
    assert ckpt["config"]["train"]["ema_kimg"] == 0.05


def test_run_directories_are_never_reused(tmp_path):
    (tmp_path / "0007-default").mkdir()
    (tmp_path / "notes.txt").write_text("keep me")
    first = new_run_dir(tmp_path, "default")
    second = new_run_dir(tmp_path, "mnist-mlp")
    assert first.name == "0008-default" and second.name == "0009-mnist-mlp"
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_runs_started_together_take_a_number_each(tmp_path):
    """A sweep started at once (other --name each) gets 0000, 0001, ..., not 0000 for all: the numbering holds
    a lock on the folder while it picks the next number and makes the directory."""
    import threading

    made: list = []
    with ckpt_io.folder_lock(tmp_path):  # another process picking its number
        picker = threading.Thread(target=lambda: made.append(new_run_dir(tmp_path, "lr-1e-3")))
        picker.start()
        picker.join(timeout=0.3)
        assert not made  # it waits for the lock
        (tmp_path / "0004-lr-3e-4").mkdir()
    picker.join(timeout=10)
    assert [p.name for p in made] == ["0005-lr-1e-3"]
    assert not [p for p in tmp_path.iterdir() if p.is_file()]  # no lock file left behind


def test_resume_keeps_stats_of_earlier_ticks_only(tmp_path, tiny_cfg):
    run_dir = train(tiny_cfg(**{"train.kimg": 0.048}), out=tmp_path, log=quiet)
    with open(run_dir / "stats.jsonl", "a") as f:  # a tick written after the last checkpoint
        f.write(json.dumps({"tick": 9, "kimg": 5.0}) + "\n")
    resume(run_dir, ["train.kimg=0.096"], log=quiet)
    kimgs = [json.loads(line)["kimg"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert kimgs == sorted(kimgs) and 5.0 not in kimgs
    assert kimgs[-1] == 0.096


def test_a_resume_refuses_to_write_over_settings_changed_in_config_toml_alone(tmp_path, tiny_cfg):
    """A resume trains with its checkpoint's settings and --set, then rewrites config.toml: an edit made in the
    file alone would be neither trained nor kept, so it is refused, naming the --set that applies or drops it."""
    run_dir = train(tiny_cfg(**{"train.kimg": 0.032}), out=tmp_path, log=quiet)
    config_file = run_dir / "config.toml"
    text = config_file.read_text()
    assert text.count("\nkimg = 0.032\n") == 1 and text.count('\nname = "ns"\n') == 1
    edited = text.replace("\nkimg = 0.032\n", "\nkimg = 0.064\n").replace('\nname = "ns"\n', '\nname = "hinge"\n')
    config_file.write_text(edited)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as info:
        resume(run_dir, log=quiet)
    message = str(info.value)
    assert message.startswith(f"{config_file} differs from the settings ckpt-000000032.pt was written with"), message
    assert 'loss.name = "hinge" there, "ns" in the checkpoint; train.kimg = 0.064 there, 0.032 in the checkpoint' \
        in message
    assert message.endswith("resume with --set loss.name=hinge --set train.kimg=0.064 to train with the change, or "
                            "with --set loss.name=ns --set train.kimg=0.032 to drop it")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    with pytest.raises(UserError):  # one setting given leaves the other unaccounted for
        resume(run_dir, {"train.kimg": 0.064}, log=quiet)
    with ckpt_io.run_lock(run_dir), pytest.raises(UserError) as info:
        # while a process trains the run, its config.toml runs ahead of its checkpoints: the lock is what to say
        resume(run_dir, log=quiet)
    assert "is being trained by another process" in str(info.value)

    resume(run_dir, ["train.kimg=0.064", "loss.name=ns"], log=quiet)  # the kimg kept, the loss dropped
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["nimg"] == 64
    assert config_file.read_text() == text.replace("\nkimg = 0.032\n", "\nkimg = 0.064\n")
    resume(run_dir, ["train.kimg=0.08"], log=quiet)  # an untouched config.toml is no obstacle
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["nimg"] == 80

    config_file.write_text("[train\nkimg = 1\n")  # a file that no longer parses is not written over either
    with pytest.raises(UserError) as info:
        resume(run_dir, ["train.kimg=0.096"], log=quiet)
    assert f"a resume writes {config_file} anew from ckpt-000000080.pt's settings, so mend the file first, or put " \
        f"the checkpoint's settings back with `ganforge settings " in str(info.value)
    assert config_file.read_text() == "[train\nkimg = 1\n"


def test_a_saved_setting_a_later_ganforge_refuses_is_named_as_the_runs_own_on_resume(tmp_path, tiny_cfg):
    run_dir = train(tiny_cfg(**{"train.kimg": 0.032}), out=tmp_path, log=quiet)
    latest = ckpt_io.resolve_checkpoint(run_dir)
    state = ckpt_io.load_checkpoint(latest)
    state["config"]["eval"]["metrics"] = ["fd"]  # as an earlier ganforge saved it, unchecked while unused
    torch.save(state, latest)
    with pytest.raises(UserError) as info:
        resume(run_dir, ["train.kimg=0.048"], log=quiet)
    assert str(info.value).startswith("unknown metric 'fd'")
    assert str(info.value).endswith("(a setting of the run's saved config, which this ganforge checks more "
                                    "strictly than the one that wrote it; resume with --set to change it)")
    with pytest.raises(UserError) as info:  # a mistake in the overrides is the user's, said as usual
        resume(run_dir, ["train.kimg=-1"], log=quiet)
    assert str(info.value) == "train.kimg must be positive, got -1.0"
    resume(run_dir, ["train.kimg=0.048", "eval.metrics=fd_digits"], log=quiet)
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["nimg"] == 48


def test_resume_says_when_the_data_or_torch_changed_under_the_run(tmp_path, tiny_cfg, image_folder):
    import shutil

    run_dir = train(tiny_cfg(**{"train.kimg": 0.032}), out=tmp_path / "runs", log=quiet)
    lines: list[str] = []
    resume(run_dir, ["train.kimg=0.048"], log=lines.append)
    assert not any("training images where the run had" in line for line in lines)
    assert not any("was written under torch" in line for line in lines)
    shutil.copytree(image_folder / "class0", image_folder / "class0" / "more")  # 16 more images, same class
    resume(run_dir, ["train.kimg=0.064"], log=lines.append)
    assert any("has 48 training images where the run had 32" in line for line in lines)
    assert not any("changed since" in line for line in lines)  # the count's note says it
    lines.clear()
    first, second = sorted((image_folder / "class1").glob("*.png"))[:2]
    first.write_bytes(second.read_bytes())  # one image edited: as many images as before
    resume(run_dir, ["train.kimg=0.08"], log=lines.append)
    assert any("images (or their labels) changed since ckpt-000000064.pt was written, though there are 48 as "
               "before" in line for line in lines), lines
    lines.clear()
    resume(run_dir, ["train.kimg=0.096"], log=lines.append)  # the checkpoint now records the edited set
    assert not any("changed since" in line for line in lines)
    latest = ckpt_io.resolve_checkpoint(run_dir)
    state = ckpt_io.load_checkpoint(latest)
    assert state["versions"]["torch"] == torch.__version__
    state["versions"]["torch"] = "2.4.0"  # as if written by an older install
    torch.save(state, latest)
    resume(run_dir, ["train.kimg=0.112"], log=lines.append)
    assert any(f"was written under torch 2.4.0 and this is torch {torch.__version__}" in line for line in lines)
    assert not any("is resumed" in line for line in lines)  # the same threads and CPU as the run's


def test_resume_says_when_the_cpu_threads_or_device_differ_from_the_run(tmp_path, tiny_cfg):
    run_dir = train(tiny_cfg(**{"train.kimg": 0.032, "train.threads": 1}), out=tmp_path / "runs", log=quiet)
    saved = ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["platform"]
    assert saved["device"] == "cpu" and saved["cpu_threads"] == 1 and saved["processes"] == 1
    assert saved["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    lines: list[str] = []
    resume(run_dir, ["train.kimg=0.048", "train.threads=2"], log=lines.append)
    note = next(line for line in lines if "is resumed" in line)
    assert "was trained with 1 CPU thread and is resumed with 2 CPU threads: the run goes on, but need not repeat" \
        in note and note.endswith("(--set train.threads=1 trains with its thread count)")
    latest = ckpt_io.resolve_checkpoint(run_dir)
    state = ckpt_io.load_checkpoint(latest)
    assert state["platform"]["cpu_threads"] == 2
    state["platform"] = {"device": "cuda", "processes": 4, "gpu": "NVIDIA H200"}  # as if trained on GPUs
    torch.save(state, latest)
    lines.clear()
    resume(run_dir, ["train.kimg=0.064"], log=lines.append)
    assert any("was trained on cuda and is resumed on cpu: the run goes on" in line and "--set" not in line
               for line in lines), lines
    from ganforge.step import platform_change

    cpu = {"device": "cpu", "processes": 1, "cpu_threads": 2, "cpu_kernels": "AVX2"}
    assert platform_change(cpu, dict(cpu)) is None and platform_change(None, cpu) is None
    assert platform_change({**cpu, "processes": 2, "cpu_kernels": "AVX512"}, cpu) == \
        "was trained in 2 processes, with AVX512 CPU kernels and is resumed in 1 process, with AVX2 CPU kernels"
    xeon, epyc = {**cpu, "cpu": "Intel Xeon Processor (AMX)"}, {**cpu, "cpu": "AMD EPYC 9R14 (AVX512_BF16)"}
    assert platform_change(xeon, epyc) == \
        "was trained on Intel Xeon Processor (AMX) and is resumed on AMD EPYC 9R14 (AVX512_BF16)"
    assert platform_change(cpu, epyc) is None  # a checkpoint from before the CPU's name was recorded


def test_the_cpu_is_named_with_the_matrix_units_that_set_its_bfloat16_speed(tmp_path):
    from ganforge.device import cpu_name

    for model, flags, name in (
        ("Intel(R) Xeon(R) Platinum 8488C CPU @ 2.40GHz", "fpu avx512f amx_bf16 amx_tile avx512_bf16",
         "Intel Xeon Platinum 8488C (AMX)"),
        ("AMD EPYC 9R14 96-Core Processor", "fpu avx2 avx512f avx512_bf16", "AMD EPYC 9R14 96-Core Processor "
                                                                            "(AVX512_BF16)"),
        ("AMD EPYC 7R13 Processor", "fpu avx2", "AMD EPYC 7R13 Processor"),
    ):
        info = tmp_path / f"{len(name)}.cpuinfo"
        info.write_text(f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n"
                        f"processor\t: 1\nmodel name\t: {model}\nflags\t\t: {flags}\n")
        assert cpu_name(info) == name
    arm = tmp_path / "arm.cpuinfo"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU part\t: 0xd0c\n")
    assert cpu_name(arm) is None and cpu_name(tmp_path / "none") is None


def test_mirror_shows_every_image_once_as_it_is_and_once_flipped_per_epoch(tmp_path, tiny_cfg):
    trainer = Trainer(tiny_cfg(**{"data.mirror": "true"}), new_run_dir(tmp_path, "tiny"), log=quiet)
    images = trainer.data.batch(torch.arange(len(trainer.data)))
    assert len(images) == 32 and trainer.sampler.batches_per_epoch == 8  # 64 = 32 images and their mirrors
    seen = torch.cat([trainer.real_batch(i)[0] for i in range(8)])

    def count(target: torch.Tensor) -> int:
        return sum(torch.equal(x, target) for x in seen)

    for image in images:
        assert not torch.equal(image, image.flip(-1))  # the noisy test images are not symmetric
        assert count(image) == 1 and count(image.flip(-1)) == 1
    assert trainer.sampler.epochs(8) == 2.0  # a pass over the mirrored set shows each image twice


def test_stop_request_saves_a_checkpoint_and_raises(tmp_path, tiny_cfg):
    from ganforge.trainer import TrainingInterrupted, _StopFlag

    run_dir = new_run_dir(tmp_path, "tiny")
    trainer = Trainer(tiny_cfg(**{"train.kimg": 1.0}), run_dir, log=quiet)
    original_enter = _StopFlag.__enter__

    def enter_and_request(self):
        flag = original_enter(self)
        flag.requested = True
        return flag

    _StopFlag.__enter__ = enter_and_request
    try:
        with pytest.raises(TrainingInterrupted):
            trainer.run()
    finally:
        _StopFlag.__enter__ = original_enter
    ckpt = final_weights(run_dir)
    assert ckpt["nimg"] == 8  # one iteration, then a clean stop


def test_a_stop_saves_its_checkpoint_without_a_tick_evaluation(tmp_path, tiny_cfg, monkeypatch):
    """A scheduler's SIGTERM leaves seconds: the stop's checkpoint must not wait for an evaluation (Stacked
    MNIST's modes take most of a minute on a CPU)."""
    from ganforge.trainer import TrainingInterrupted, _StopFlag

    evaluated: list[int] = []
    monkeypatch.setattr(Trainer, "_evaluate", lambda self: evaluated.append(self.state.nimg) or [])
    original_enter = _StopFlag.__enter__

    def enter_and_request(self):
        flag = original_enter(self)
        flag.requested = True
        return flag

    run_dir = new_run_dir(tmp_path, "tiny")
    monkeypatch.setattr(_StopFlag, "__enter__", enter_and_request)
    with pytest.raises(TrainingInterrupted):
        Trainer(tiny_cfg(**{"train.kimg": 1.0, "eval.every_kimg": 0.016}), run_dir, log=quiet).run()
    assert final_weights(run_dir)["nimg"] == 8 and evaluated == []
    monkeypatch.setattr(_StopFlag, "__enter__", original_enter)
    train(tiny_cfg(**{"train.kimg": 0.032, "train.tick_kimg": 0.016, "eval.every_kimg": 0.016}), out=tmp_path / "whole",
          log=quiet)
    assert evaluated == [16, 32]  # a run that is not stopped evaluates as set, at its end too


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_during_a_tick_evaluation_drops_it_and_saves_the_checkpoint_at_once(tmp_path, tiny_cfg, monkeypatch,
                                                                                   signum):
    """A scheduler's SIGTERM while a tick is being evaluated waited for the evaluation (most of a minute for
    modes on a CPU), so SIGKILL could come first and the run resumed from the tick before. The evaluation is
    now dropped at once, its tick's training kept, and the run stops with its checkpoint."""
    import signal
    import time

    from ganforge.metrics import core
    from ganforge.trainer import TrainingInterrupted

    def slow_evaluate(ctx, metrics, kimg):
        os.kill(os.getpid(), getattr(signal, signum))
        time.sleep(60)  # an evaluation far longer than a scheduler waits
        raise AssertionError("the stop did not end the evaluation")

    monkeypatch.setattr(core, "evaluate", slow_evaluate)
    said: list[str] = []
    cfg = tiny_cfg(**{"train.kimg": 1.0, "train.tick_kimg": 0.016, "eval.every_kimg": 0.032})
    handler, started = signal.getsignal(signal.SIGTERM), time.perf_counter()
    with pytest.raises(TrainingInterrupted):
        train(cfg, out=tmp_path / "runs", log=said.append)
    assert time.perf_counter() - started < 30
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert any("evaluation at 0.03 kimg dropped: a stop was asked for" in line for line in said), said
    assert final_weights(run_dir)["nimg"] == 40  # the tick at 32, then the step under way, then the stop
    assert not (run_dir / "metrics.json").exists()
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [round(line["kimg"], 3) for line in stats] == [0.016, 0.032, 0.04] and "metrics" not in stats[1]
    assert signal.getsignal(signal.SIGTERM) is handler  # the loop's handlers are gone after it


def test_a_stop_between_ticks_leaves_the_tick_grids_as_an_uninterrupted_run_writes_them(tmp_path, tiny_cfg,
                                                                                        monkeypatch):
    """A stop at 1.5 kimg of a run that ticks every kimg: its grid would be named as the 1 kimg tick's."""
    from ganforge import trainer as trainer_module
    from ganforge.trainer import TrainingInterrupted

    cfg = tiny_cfg(**{"train.kimg": 2.4, "train.tick_kimg": 1.0})
    whole = train(cfg, out=tmp_path / "whole", log=quiet)
    run_dir = new_run_dir(tmp_path / "stopped", "tiny")
    ckpt_io.atomic_write_text(cfg.to_toml(), run_dir / "config.toml")  # as train() writes it, for the resume
    trainer = Trainer(cfg, run_dir, log=quiet)

    class StopPastHalfway(trainer_module._StopFlag):
        @property
        def requested(self) -> bool:
            return trainer.state.nimg >= 1500

        @requested.setter
        def requested(self, value: bool) -> None:
            pass

    monkeypatch.setattr(trainer_module, "_StopFlag", StopPastHalfway)
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    monkeypatch.undo()
    assert final_weights(run_dir)["nimg"] == 1504
    resume(run_dir, log=quiet)
    grids = sorted(p.name for p in (whole / "samples").iterdir())
    assert grids == ["fakes000001.png", "fakes000002.png", "reals.png"]
    assert grids == sorted(p.name for p in (run_dir / "samples").iterdir())
    for name in grids:
        assert (whole / "samples" / name).read_bytes() == (run_dir / "samples" / name).read_bytes(), name
    assert (whole / "progress.gif").read_bytes() == (run_dir / "progress.gif").read_bytes()


def test_the_first_ctrl_c_says_what_happens_next(capsys):
    import signal

    from ganforge.trainer import _StopFlag

    flag = _StopFlag()
    flag._handle(signal.SIGINT, None)
    assert flag.requested
    assert "stopping: the current step finishes, then a checkpoint is saved (Ctrl-C again aborts without one)" in (
        capsys.readouterr().err)
    with pytest.raises(KeyboardInterrupt):  # the second aborts
        flag._handle(signal.SIGINT, None)
    quiet_rank = _StopFlag(announce=False)
    quiet_rank._handle(signal.SIGTERM, None)
    assert quiet_rank.requested and capsys.readouterr().err == ""


@pytest.mark.parametrize("during_stop", [False, True])
def test_an_interrupt_during_an_import_waits_for_the_import_to_finish(tmp_path, monkeypatch, during_stop):
    """torch and numpy import much of themselves lazily, and one broken off by Ctrl-C can be left half-made for
    the rest of the process; the interrupt comes once the import is done (also a second Ctrl-C during a stop)."""
    import signal
    import sys
    import time

    from ganforge.interrupts import raise_interrupt
    from ganforge.trainer import _StopFlag

    name = f"interrupted_module_{int(during_stop)}"
    (tmp_path / f"{name}.py").write_text("import signal\nsignal.raise_signal(signal.SIGINT)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    flag = _StopFlag(announce=False)
    flag.requested = during_stop
    previous = signal.signal(signal.SIGINT, flag._handle if during_stop else raise_interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            __import__(name)
            time.sleep(5)  # the held-back interrupt arrives here
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sys.modules[name].DONE


def test_ema_half_life_matches_closed_form():
    beta = ema_beta(batch_size=64, ema_kimg=10.0)
    steps = int(10_000 / 64)
    assert abs(beta**steps - 0.5) < 0.01
    ema, net = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        for p in ema.parameters():
            p.zero_()
        for p in net.parameters():
            p.fill_(1.0)
    for _ in range(steps):
        update_ema(ema, net, beta)
    assert abs(ema.weight[0, 0].item() - (1 - beta**steps)) < 1e-5


def test_g_ema_follows_the_half_life_it_is_given(tmp_path, tiny_cfg):
    # batch 8 and a half-life of 0.05 kimg: each step keeps 0.5 ** (8 / 50) of the average
    trainer = Trainer(tiny_cfg(**{"train.ema_kimg": 0.05}), tmp_path / "run", log=quiet)
    s = trainer.state
    beta = 0.5 ** (8 / 50)
    expected = [p.detach().clone() for p in s.G_ema.parameters()]
    for i in range(6):
        trainer.stepper.set_progress(i * 8)
        trainer.stepper([trainer.real_batch(i)])
        expected = [beta * e + (1 - beta) * p.detach() for e, p in zip(expected, s.G.parameters(), strict=True)]
    moved = max((e - p.detach()).abs().max().item() for e, p in zip(expected, s.G.parameters(), strict=True))
    assert moved > 1e-3  # G_ema lags G by enough to tell half-lives apart
    for e, p in zip(expected, s.G_ema.parameters(), strict=True):
        assert (e - p).abs().max().item() < 1e-6


def test_g_ema_half_life_changes_g_ema_alone(tmp_path, tiny_cfg):
    # half-lives are compared on runs that share their seed: G_ema must not feed back into what trains,
    # adaptive augmentation and R2 included, or the comparison would mix in a different training run
    extra = {"train.diffaugment": '"translation,cutout"', "train.ada_target": 0.6, "train.ada_kimg": 0.01,
             "loss.r2_gamma": 0.1, "loss.r1_every": 2, "train.reuse_fake": "true", "train.kimg": 0.096}
    runs = [final_weights(train(tiny_cfg(**extra, **{"train.ema_kimg": h}), out=tmp_path / str(h), log=quiet))
            for h in (0.05, 0.1)]
    assert_same_state(runs[0], runs[1], nets=("G", "D"))
    assert any(not torch.equal(v, runs[1]["G_ema"][k]) for k, v in runs[0]["G_ema"].items() if k.endswith("weight"))


def test_divergence_is_reported_not_hidden(tmp_path, tiny_cfg, monkeypatch):
    from ganforge import config
    from ganforge.errors import UserError

    monkeypatch.setattr(config, "MAX_LR", 1e30)  # the config check refuses such rates; the nets blow up with them
    with pytest.raises(UserError, match="diverged"):
        train(tiny_cfg(**{"optim.g_lr": 1e30, "optim.d_lr": 1e30, "model.init": '"torch"'}), out=tmp_path,
              log=quiet)


def test_a_config_edited_in_python_is_checked_before_a_run_directory_is_made(tmp_path, tiny_cfg):
    from ganforge.errors import UserError

    cfg = tiny_cfg()
    cfg.train.step_order = "gfirst"
    with pytest.raises(UserError, match="train.step_order must be d_first, g_first or simultaneous, got 'gfirst'"):
        train(cfg, out=tmp_path / "runs", log=quiet)
    cfg.train.step_order, cfg.train.kimg = "g_first", "0.016"
    with pytest.raises(UserError, match="train.kimg must be a number, got '0.016'"):
        train(cfg, out=tmp_path / "runs", log=quiet)
    cfg.train.kimg = 0.016
    cfg.train.g_lr = 1e-4  # a setting of [optim]: set on [train], no run would read it
    with pytest.raises(UserError, match=r"cfg.train.g_lr is not a setting.*\(did you mean optim.g_lr\?\)"):
        train(cfg, out=tmp_path / "runs", log=quiet)
    del cfg.train.g_lr
    cfg.model.z_dims = 8
    with pytest.raises(UserError, match=r"cfg.model.z_dims is not a setting.*\(did you mean model.z_dim\?\)"):
        train(cfg, out=tmp_path / "runs", log=quiet)
    assert not (tmp_path / "runs").exists()


def test_a_run_stopped_before_its_first_checkpoint_leaves_no_run_directory(tmp_path, tiny_cfg, monkeypatch):
    """Nothing in it could be resumed: an early Ctrl-C, or an error at the first tick, takes it away (with the
    folder made for it), and a stop once training is under way keeps the run with its checkpoint."""
    from ganforge.trainer import TrainingInterrupted

    original = Trainer._write_reals

    def reals_then_ctrl_c(self):
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_write_reals", reals_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(), out=tmp_path / "runs" / "new", log=quiet)
    assert not (tmp_path / "runs").exists()
    monkeypatch.setattr(Trainer, "_write_reals", original)

    def first_tick_fails(self, *args, **kwargs):
        (self.run_dir / "stats.jsonl").write_text("")  # written before the failure, as a tick writes
        raise UserError("training diverged at 0.01 kimg (d_loss nan, g_loss nan)")

    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(Trainer, "_tick", first_tick_fails)
    with pytest.raises(UserError, match="diverged"):
        train(tiny_cfg(), out=tmp_path / "runs", log=quiet)
    assert list((tmp_path / "runs").iterdir()) == []  # the folder was there before: it stays
    monkeypatch.undo()

    def stop_at_once(self, *args, **kwargs):
        self._save_checkpoint()
        raise TrainingInterrupted(self.run_dir, self.state.nimg / 1000)

    monkeypatch.setattr(Trainer, "_tick", stop_at_once)
    with pytest.raises(TrainingInterrupted):
        train(tiny_cfg(), out=tmp_path / "runs", log=quiet)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["0000-default"]


def test_evaluation_at_ticks_logs_metrics_and_keeps_best(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    extra = {"eval.every_kimg": 0.016, "eval.n": 40, "eval.metrics": '["fd_digits", "classes"]',
             "train.kimg": 0.048, "train.tick_kimg": 0.016}
    lines: list[str] = []
    run_dir = train(tiny_cfg(**extra), out=tmp_path / "a", log=lines.append)
    # the folder's images are digits here, but nothing says so: the digit metrics come with a note
    assert sum("note: fd_digits, classes read images through" in line for line in lines) == 1
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert all("fd_digits" in s["metrics"] and "classes_covered" in s["metrics"] for s in stats)
    history = json.loads((run_dir / "metrics.json").read_text())
    assert len(history) == len(stats) == 3
    best = ckpt_io.load_checkpoint(run_dir / "checkpoints" / "best.pt")
    fds = [s["metrics"]["fd_digits"] for s in stats]
    assert abs(best["best"]["value"] - min(fds)) < 1e-9
    assert best["nimg"] == int(round(best["best"]["kimg"] * 1000))
    # evaluation draws its own noise: it must not change the training trajectory
    plain = train(tiny_cfg(**{k: v for k, v in extra.items() if not k.startswith("eval.")}), out=tmp_path / "b",
                  log=quiet)
    assert_same_state(final_weights(run_dir), final_weights(plain))


def test_early_stopping_ends_the_run_at_the_evaluation_that_finds_no_progress(tmp_path, tiny_cfg, monkeypatch):
    # scripted fd_digits, one per tick of 0.016 kimg: best at 0.032, no better for the 0.032 kimg after it
    scores = iter([5.0, 4.0, 4.5, 4.2, 3.0, 3.9, 3.8, 3.7])
    monkeypatch.setattr(Trainer, "_evaluate", lambda self: [{"metric": "fd_digits", "value": next(scores)}])
    extra = {"eval.every_kimg": 0.016, "eval.patience_kimg": 0.032, "train.kimg": 0.32, "train.tick_kimg": 0.016}
    said: list[str] = []
    run_dir = train(tiny_cfg(**extra), out=tmp_path, log=said.append)
    assert final_weights(run_dir)["nimg"] == 64
    best = ckpt_io.load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert best["nimg"] == 32 and best["best"]["value"] == 4.0
    # --ckpt best samples the generator of that checkpoint, not the run's latest
    weights = best["G_ema"] if best.get("G_ema") is not None else best["G"]
    G_best = load_generator(run_dir, ckpt="best")
    G_latest = load_generator(run_dir, ckpt="latest")
    assert all(torch.equal(G_best.state_dict()[name], tensor) for name, tensor in weights.items())
    assert any(not torch.equal(G_latest.state_dict()[name], tensor) for name, tensor in weights.items())
    assert any(line.startswith("eval.patience_kimg=0.032: fd_digits has not improved on 4 (at 0.032 kimg)")
               for line in said), said
    page = (run_dir / "report.html").read_text()
    assert "Ended early at 0.064 kimg of 0.32: fd_digits had not improved on 4 (at 0.032 kimg)" in page
    from ganforge.compare import load_run

    assert load_run(run_dir).ended_by == "eval.patience_kimg"

    # a resume trains on while the metric improves (3.0 at 0.08) and ends at the first evaluation 0.032 kimg
    # after the new best that finds nothing better
    resume(run_dir, log=quiet)
    assert final_weights(run_dir)["nimg"] == 112
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in stats if "early_stop" in r] == [0.064, 0.112]

    with pytest.raises(UserError, match="set eval.every_kimg too"):
        tiny_cfg(**{"eval.patience_kimg": 1})
    with pytest.raises(UserError, match="has no better direction"):
        tiny_cfg(**{**extra, "eval.metrics": '["copies"]'})


def test_bf16_autocast_trains_with_finite_losses(tmp_path, tiny_cfg):
    run_dir = train(tiny_cfg(**{"train.amp": '"bf16"', "train.kimg": 0.016}), out=tmp_path, log=quiet)
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert all(abs(s["d_loss"]) < 1e3 and abs(s["g_loss"]) < 1e3 for s in stats)


def test_fp16_without_cuda_is_a_clear_error(tmp_path, tiny_cfg):
    from ganforge.errors import UserError

    with pytest.raises(UserError, match="fp16 needs a CUDA device"):
        train(tiny_cfg(**{"train.amp": '"fp16"'}), out=tmp_path, log=quiet)


def test_cuda_graph_is_refused_where_it_cannot_run(tmp_path, tiny_cfg):
    """On a CPU, with torch.compile or with fp16's GradScaler: one line each, and no run directory."""
    from ganforge.errors import UserError

    with pytest.raises(UserError, match="train.cuda_graph needs a CUDA device and this run would train on cpu"):
        train(tiny_cfg(**{"train.cuda_graph": "true"}), out=tmp_path / "runs", log=quiet)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError, match="train.cuda_graph and train.compile do not combine"):
        tiny_cfg(**{"train.cuda_graph": "true", "train.compile": "true"})
    with pytest.raises(UserError, match="does not combine with train.amp=fp16"):
        tiny_cfg(**{"train.cuda_graph": "true", "train.amp": '"fp16"'})


def test_a_gpu_run_without_cuda_graphs_is_told_of_them(tiny_cfg):
    from ganforge.step import cuda_graph_note

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert "--set train.cuda_graph=true replays each training step" in cuda_graph_note(tiny_cfg(), gpu)
    assert cuda_graph_note(tiny_cfg(), cpu) is None
    for where_it_cannot_run in ({"train.compile": "true"}, {"train.amp": '"fp16"'}):
        assert cuda_graph_note(tiny_cfg(**where_it_cannot_run), gpu) is None
    assert cuda_graph_note(tiny_cfg(**{"train.cuda_graph": "true"}), gpu) is None


def test_graph_key_repeats_with_the_iterations_that_launch_the_same_kernels(tiny_cfg):
    """The kinds of iteration a CUDA graph is captured for: lazy R1 and ADA's adjustment recur with their
    periods, so a run needs few graphs; a schedule in progress makes every iteration a new kind."""
    from ganforge.losses import get_loss
    from ganforge.step import ADA_INTERVAL, Stepper, build_state

    def keys(cfg, iterations: int = 64) -> list:
        stepper = Stepper(build_state(cfg, torch.device("cpu")), get_loss(cfg.loss.name, 0.0))
        found = []
        for i in range(iterations):
            stepper.set_progress(i * cfg.train.batch_size)
            found.append(stepper.graph_key(1))
        return found

    plain = keys(tiny_cfg())
    assert len(set(plain)) == 1
    lazy_r1 = keys(tiny_cfg(**{"loss.r1_gamma": 1.0, "loss.r1_every": 4}))
    assert len(set(lazy_r1)) == 2 and lazy_r1[0] == lazy_r1[4] != lazy_r1[1]
    both = keys(tiny_cfg(**{"loss.r1_gamma": 1.0, "loss.r1_every": 8, "train.diffaugment": '"translation"',
                            "train.ada_target": 0.6}))
    # R1 at D steps 0, 8, ...; ADA adjusts after steps 3, 7, ...: plain, R1 and ADA kinds
    assert ADA_INTERVAL == 4 and len(set(both)) == 3 and both[:8] == both[8:16] and both[3] == both[7] != both[0]
    noisy = keys(tiny_cfg(**{"loss.instance_noise": 0.1, "loss.instance_noise_kimg": 10.0}))
    assert len(set(noisy)) == len(noisy)


def test_channels_last_is_left_to_inductor_when_compiling_for_cuda(tiny_cfg):
    from ganforge.device import use_channels_last

    eager, compiled = tiny_cfg(), tiny_cfg(**{"train.compile": "true"})
    assert use_channels_last(eager, torch.device("cuda")) and use_channels_last(compiled, torch.device("cpu"))
    assert not use_channels_last(compiled, torch.device("cuda"))
    assert not use_channels_last(tiny_cfg(**{"train.channels_last": "false"}), torch.device("cpu"))


def test_compile_on_a_cpu_says_what_it_costs_and_hides_inductors_cuda_warning(tmp_path, tiny_cfg):
    import logging

    from ganforge.trainer import Trainer

    logged: list[str] = []
    Trainer(tiny_cfg(**{"train.compile": "true"}), tmp_path / "run", log=logged.append)  # compiles at first use
    assert any("train.compile=true on a CPU spends the first steps compiling" in m for m in logged)
    assert logging.getLogger("torch.utils.cpp_extension").getEffectiveLevel() == logging.ERROR
    logged.clear()
    Trainer(tiny_cfg(), tmp_path / "eager", log=logged.append)
    assert not any("compile" in m for m in logged)


def test_lr_scale_schedules():
    from ganforge.step import lr_scale

    assert lr_scale(5_000, "none", 0.0, 10.0) == 1.0
    assert lr_scale(2_000, "linear", 2.0, 10.0) == 1.0  # constant until the decay starts
    assert abs(lr_scale(6_000, "linear", 2.0, 10.0) - 0.5) < 1e-12
    assert abs(lr_scale(6_000, "cosine", 2.0, 10.0) - 0.5) < 1e-12
    assert abs(lr_scale(4_000, "cosine", 2.0, 10.0) - (1 + math.cos(math.pi / 4)) / 2) < 1e-12
    assert lr_scale(10_000, "linear", 2.0, 10.0) == 0.0 and lr_scale(12_000, "cosine", 2.0, 10.0) == 0.0


def test_lr_decay_reaches_the_optimizers(tmp_path, tiny_cfg):
    # 12 iterations of batch 8 over 0.096 kimg; the last step runs at nimg 88: 1 - 88/96 of each rate
    run_dir = train(tiny_cfg(**{"train.kimg": 0.096, "optim.lr_decay": '"linear"', "optim.g_lr": 1e-3,
                                "optim.d_lr": 4e-3}), out=tmp_path, log=quiet)
    ckpt = final_weights(run_dir)
    assert abs(ckpt["opt_G"]["param_groups"][0]["lr"] - 1e-3 * (1 - 88 / 96)) < 1e-12
    assert abs(ckpt["opt_D"]["param_groups"][0]["lr"] - 4e-3 * (1 - 88 / 96)) < 1e-12
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert abs(stats[-1]["lr_scale"] - (1 - 88 / 96)) < 1e-12 and stats[0]["lr_scale"] < 1.0


@pytest.mark.parametrize(
    "extra",
    [
        {"model.g": '"mlp"', "model.d": '"mlp"', "model.g_hidden": "[16, 16]", "model.d_hidden": "[16]"},
        {},  # dcgan: batch norm in D, so real and fake take separate D passes
        {"model.n_classes": 2, "model.d_cond": '"acgan"', "loss.r1_gamma": 1.0},
    ],
    ids=["mlp-joint-d", "dcgan-bn-d", "acgan-r1"],
)
def test_g_first_on_a_reused_fake_batch_equals_its_one_pass_form(tmp_path, tiny_cfg, extra):
    cfg = tiny_cfg(**{"train.step_order": '"g_first"', "train.reuse_fake": "true", "train.channels_last": "false",
                      **extra})
    one_pass = Trainer(cfg, tmp_path / "a", log=quiet)
    two_steps = Trainer(cfg, tmp_path / "b", log=quiet)
    assert one_pass.stepper.share_fake_pass
    two_steps.stepper.share_fake_pass = False  # the literal order: G step, then D step on the detached fake
    start = {k: v.clone() for k, v in one_pass.state.G.state_dict().items()}
    for i in range(3):
        stats_a = one_pass.stepper([one_pass.real_batch(i)])
        stats_b = two_steps.stepper([two_steps.real_batch(i)])
        assert (stats_a - stats_b).abs().max().item() < 1e-5
    for net in ("G", "D"):
        a = dict(getattr(one_pass.state, net).named_parameters())
        b = dict(getattr(two_steps.state, net).named_parameters())
        for name in a:
            assert (a[name] - b[name]).abs().max().item() < 1e-5, f"{net}.{name}"
    after = one_pass.state.G.state_dict()
    moved = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, start[k])]
    assert moved


def test_bf16_on_a_cpu_without_a_bf16_path_is_warned(tmp_path, tiny_cfg, monkeypatch):
    from ganforge import trainer as trainer_module

    for supported, warned in ((True, False), (False, True)):
        monkeypatch.setattr(trainer_module, "cpu_has_bf16_matmul", lambda supported=supported: supported)
        lines: list[str] = []
        Trainer(tiny_cfg(**{"train.amp": '"bf16"'}), tmp_path / f"run{supported}", log=lines.append)
        assert any("train.amp=bf16 on a CPU without a bfloat16 path" in line for line in lines) == warned


def test_matmul_precision_applies_to_training_steps_only(tmp_path, tiny_cfg):
    assert torch.get_float32_matmul_precision() == "highest"
    trainer = Trainer(tiny_cfg(**{"train.matmul_precision": '"medium"'}), tmp_path, log=quiet)
    seen = []
    forward = trainer.state.G.forward
    trainer.state.G.forward = lambda *a: (seen.append(torch.get_float32_matmul_precision()), forward(*a))[1]
    stats = trainer.stepper([trainer.real_batch(0)])
    assert torch.isfinite(stats).all()
    assert seen and set(seen) == {"medium"}
    assert torch.get_float32_matmul_precision() == "highest"  # grids and metrics keep torch's default


@pytest.mark.parametrize(
    "setting",
    [{"loss.instance_noise": 0.5, "loss.instance_noise_kimg": 1.0}, {"train.diffaugment": '"translation"'},
     {"loss.r1_gamma": 10.0}, {"loss.name": '"wgan-gp"', "loss.gp_weight": 10.0}, {"loss.label_smoothing": 0.2},
     {"loss.lecam": 10.0}, {"loss.r2_gamma": 10.0}, {"loss.name": '"rpgan"'}],
    ids=["instance-noise", "diffaugment", "r1", "gradient-penalty", "label-smoothing", "lecam", "r2", "rpgan"],
)
@pytest.mark.parametrize("order", ["d_first", "simultaneous", "g_first"])
def test_every_d_setting_reaches_d_step_in_every_step_order(tmp_path, tiny_cfg, setting, order):
    base = {"train.step_order": f'"{order}"', "train.reuse_fake": str(order == "g_first").lower()}
    if "loss.gp_weight" in setting:
        base.update({"loss.name": '"wgan-gp"', "loss.gp_weight": 0.0})

    def d_after_one_step(extra: dict) -> torch.Tensor:
        trainer = Trainer(tiny_cfg(**{**base, **extra}), tmp_path / str(len(extra)), log=quiet)
        trainer.stepper.set_progress(0)
        trainer.stepper([trainer.real_batch(0)])
        return torch.cat([p.detach().flatten() for p in trainer.state.D.parameters()])

    without, with_setting = d_after_one_step({}), d_after_one_step(setting)
    assert (without - with_setting).abs().max().item() > 1e-6


def test_matmul_precision_medium_says_when_the_cpu_cannot_use_it(tmp_path, tiny_cfg, monkeypatch):
    import ganforge.trainer as trainer_module

    lines: list[str] = []
    cfg = tiny_cfg(**{"train.matmul_precision": '"medium"'})
    monkeypatch.setattr(trainer_module, "cpu_has_bf16_matmul", lambda: False)
    Trainer(cfg, tmp_path / "a", log=lines.append)
    assert any("matmuls stay float32" in line for line in lines)
    lines.clear()
    monkeypatch.setattr(trainer_module, "cpu_has_bf16_matmul", lambda: True)
    Trainer(cfg, tmp_path / "b", log=lines.append)
    assert not any("matmuls stay float32" in line for line in lines)


def test_sample_spread_is_the_mean_distance_between_different_images():
    from ganforge.health import sample_spread

    assert sample_spread(torch.ones(5, 1, 4, 4)) == 0.0
    pair = torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 1.5)])  # four pixels 1.5 apart: distance 3
    assert abs(sample_spread(pair) - 3.0) < 1e-6
    assert math.isnan(sample_spread(torch.zeros(1, 1, 4, 4)))


@pytest.mark.parametrize("collapsed", [True, False])
def test_a_collapsed_grid_is_logged_and_warned_about(tmp_path, tiny_cfg, monkeypatch, collapsed):
    from ganforge import health

    monkeypatch.setattr(health, "COLLAPSE_CHECK_FROM_KIMG", 0.0)  # tiny runs end long before 5 kimg
    if collapsed:  # every grid image the same, as when G has collapsed to one output
        monkeypatch.setattr(Trainer, "_sample_grid", lambda self: self._real_grid()[:1].expand_as(self._real_grid()))
    else:  # a G that draws the data itself
        monkeypatch.setattr(Trainer, "_sample_grid", lambda self: self._real_grid())
    lines: list[str] = []
    run_dir = train(tiny_cfg(), out=tmp_path, log=lines.append)
    spreads = [json.loads(line)["diversity"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    warnings = [line for line in lines if "looks collapsed" in line]
    if collapsed:
        assert spreads and all(abs(v) < 1e-6 for v in spreads)
        assert len(warnings) == len(spreads)
    else:
        assert spreads and all(abs(v - 1.0) < 1e-4 for v in spreads)
        assert not warnings


def test_near_copy_share_counts_samples_that_come_in_copies():
    from ganforge.health import near_copy_share, nearest_distances

    real = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    real_nearest = nearest_distances(real)
    assert near_copy_share(real, real_nearest) == 0.0
    few_modes = real[:4].repeat(4, 1, 1, 1) + 0.01 * torch.randn(16, 1, 8, 8)  # four modes, a little variety
    assert near_copy_share(few_modes, real_nearest) == 1.0
    half = torch.cat([real[:8], real[8:12].repeat(2, 1, 1, 1)])  # eight distinct, four pairs
    assert abs(near_copy_share(half, real_nearest) - 0.5) < 1e-9


@pytest.mark.parametrize("grid", ["few_modes", "data"])
def test_a_partly_collapsed_grid_is_warned_about(tmp_path, tiny_cfg, monkeypatch, grid):
    from ganforge import health

    monkeypatch.setattr(health, "COLLAPSE_CHECK_FROM_KIMG", 0.0)
    monkeypatch.setattr(health, "DUPLICATE_CHECK_FROM_KIMG", 0.0)
    if grid == "few_modes":  # four distinct samples, each four times: spread stays high, variety does not
        monkeypatch.setattr(Trainer, "_sample_grid", lambda self: self._real_grid()[:4].repeat(4, 1, 1, 1))
    else:
        monkeypatch.setattr(Trainer, "_sample_grid", lambda self: self._real_grid())
    lines: list[str] = []
    run_dir = train(tiny_cfg(**{"train.grid_size": 16}), out=tmp_path, log=lines.append)
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    warnings = [line for line in lines if "partly collapsed" in line]
    assert not any("looks collapsed" in line for line in lines)
    if grid == "few_modes":
        assert all(s["duplicates"] == 1.0 and s["diversity"] > 0.5 for s in stats)
        assert len(warnings) == len(stats) and "100% of the grid's samples" in warnings[0]
    else:
        assert all(s["duplicates"] == 0.0 for s in stats) and not warnings
    lines.clear()
    train(tiny_cfg(**{"train.grid_size": 16, "train.duplicate_warn": 0.0}), out=tmp_path, log=lines.append)
    assert not any("partly collapsed" in line for line in lines)  # 0 turns the check off


def test_images_upscaled_twice_or_more_are_noted_at_start(tmp_path, image_folder):
    from PIL import Image

    from .conftest import tiny_overrides

    lines: list[str] = []
    Trainer(load_config(overrides=tiny_overrides(image_folder)), tmp_path / "a", log=lines.append)  # 16 px at 16
    assert not any("upscaled" in line for line in lines)
    small = tmp_path / "small"
    small.mkdir()
    for i in range(8):
        Image.new("L", (10, 8), 30 * i).save(small / f"{i}.png")  # short side 8, trained at 16
    Trainer(load_config(overrides=tiny_overrides(small)), tmp_path / "b", log=lines.append)
    assert sum("images are about 8 px on their short side, upscaled 2x to data.img_size=16" in line
               for line in lines) == 1
    lines.clear()
    Trainer(load_config(overrides=tiny_overrides(small, **{"data.fit": "pad"})), tmp_path / "p", log=lines.append)
    assert not any("upscaled" in line for line in lines)  # padded, the 10-px side is the square's: 1.6x
    Trainer(load_config(overrides=tiny_overrides(small, **{"data.img_size": 8, "model.g": '"mlp"',
                                                           "model.d": '"mlp"'})), tmp_path / "c", log=lines.append)
    assert not any("upscaled" in line for line in lines)


def test_the_start_line_says_the_images_size_colour_and_the_side_they_were_resized_from(tmp_path, image_folder):
    import numpy as np
    from PIL import Image

    from ganforge.config import DataConfig
    from ganforge.data import load_dataset
    from ganforge.trainer import data_summary

    from .conftest import tiny_overrides

    colour = tmp_path / "colour.npz"
    np.savez(colour, np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    lines: list[str] = []
    train(load_config(overrides=tiny_overrides(colour, **{"data.channels": 3})), out=tmp_path / "runs",
          log=lines.append)
    assert sum(line.endswith("(device cpu, 8 images, 16x16 colour, resized from 32 px)") for line in lines) == 1, lines

    def summary(name: str, **settings: object) -> str:
        cfg = DataConfig(name=name, img_size=16, **settings)
        return data_summary(load_dataset(cfg), cfg)

    assert summary(f"folder:{image_folder}") == "32 images, 16x16 grey"  # stored at the size it trains at
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 30), (60 * i, 0, 0)).save(wide / f"{i}.png")
    # a folder's side is the median of a few headers; cropped, the short side becomes the square's, padded the long
    assert summary(f"folder:{wide}", channels=3) == "4 images, 16x16 colour, resized from about 30 px"
    assert summary(f"folder:{wide}", fit="pad") == "4 images, 16x16 grey, resized from about 40 px"
    assert summary("mnist5k") == "5,000 images, 16x16 grey, resized from 28 px"


def test_mirroring_images_that_lean_one_way_is_noted_at_start(tmp_path):
    import numpy as np
    from PIL import Image

    from .conftest import tiny_overrides

    rng = np.random.default_rng(0)
    leaning, balanced = tmp_path / "leaning", tmp_path / "balanced"
    leaning.mkdir()
    balanced.mkdir()
    for i in range(12):
        img = rng.integers(0, 60, size=(16, 16), dtype=np.uint8)
        img[4:12, 1 + i % 3 : 7 + i % 3] = 220  # a subject left of centre
        Image.fromarray(img, mode="L").save(leaning / f"{i}.png")
        Image.fromarray(img, mode="L").save(balanced / f"{i}.png")
        Image.fromarray(np.ascontiguousarray(img[:, ::-1]), mode="L").save(balanced / f"{i}-mirrored.png")
    lines: list[str] = []
    Trainer(load_config(overrides=tiny_overrides(leaning, **{"data.mirror": "true"})), tmp_path / "a",
            log=lines.append)
    (note,) = [line for line in lines if "data.mirror: these images lean one way" in line]
    assert note.startswith("note: ") and "Compare a run without it" in note
    lines.clear()
    Trainer(load_config(overrides=tiny_overrides(leaning)), tmp_path / "b", log=lines.append)  # mirror off
    Trainer(load_config(overrides=tiny_overrides(balanced, **{"data.mirror": "true"})), tmp_path / "c",
            log=lines.append)
    assert not any("lean one way" in line for line in lines)


def test_a_label_embedding_as_wide_as_many_classes_is_noted_at_start(tmp_path):
    from PIL import Image

    from .conftest import tiny_overrides

    many = tmp_path / "many"
    for i in range(130):
        (many / f"c{i:03d}").mkdir(parents=True)
        Image.new("L", (16, 16), i).save(many / f"c{i:03d}" / "0.png")
    lines: list[str] = []
    Trainer(load_config(overrides=tiny_overrides(many, **{"model.n_classes": 130})), tmp_path / "a", log=lines.append)
    wide = [line for line in lines if "label embedding as wide as model.n_classes (130)" in line]
    assert len(wide) == 1 and "--set model.embed_dim=128 (or less)" in wide[0]
    lines.clear()
    for extra in ({"model.embed_dim": 32}, {"model.g_cond": '"cbn"'}):
        Trainer(load_config(overrides=tiny_overrides(many, **{"model.n_classes": 130, **extra})),
                tmp_path / str(len(lines)), log=lines.append)
    assert not any("label embedding" in line for line in lines)


def test_conv_nets_in_float32_on_a_bf16_cpu_are_noted_at_start(tmp_path, monkeypatch, capsys):
    """Where bf16 was measured to train the default 1.44x (AMX) or 1.41x (AVX512_BF16) faster to about the same
    quality; not for MLPs, bf16 runs or CPUs without either; the dry run says it too."""
    from ganforge import device
    from ganforge.cli import main

    notes = {unit: f"this CPU has {unit}: --set train.amp=bf16 trained the default preset {speedup}x faster"
             for unit, speedup in (("AMX", "1.44"), ("AVX512_BF16", "1.41"))}
    for unit, overrides, said in (("AMX", [], True), ("AMX", ["train.amp=bf16"], False),
                                  ("AMX", ['model.g="mlp"', 'model.d="mlp"', "data.img_size=28"], False),
                                  ("AVX512_BF16", [], True), ("AVX512_BF16", ["train.amp=bf16"], False),
                                  (None, [], False)):
        monkeypatch.setattr(device, "cpu_matrix_unit", lambda unit=unit: unit)
        lines: list[str] = []
        cfg = load_config(preset="default", overrides=["train.device=cpu", *overrides])
        Trainer(cfg, tmp_path / str(len(list(tmp_path.iterdir()))), log=lines.append)
        said_lines = [line for line in lines if "--set train.amp=bf16 trained" in line]
        assert len(said_lines) == (1 if said else 0), (unit, overrides, lines)
        if said:
            assert notes[unit] in said_lines[0], (unit, said_lines)
        assert main(["train", "--preset", "default", "--dry-run", *[a for o in overrides for a in ("--set", o)]]) == 0
        err = capsys.readouterr().err
        assert ("--set train.amp=bf16 trained" in err) == said, (unit, overrides)
        if said:
            assert notes[unit] in err, (unit, err)


def test_colour_images_trained_as_grey_are_noted_at_start(tmp_path, image_folder):
    from PIL import Image

    from .conftest import tiny_overrides

    note = "is in colour and data.channels is 1, so G learns grey images; --set data.channels=3 trains in colour"
    lines: list[str] = []
    Trainer(load_config(overrides=tiny_overrides(image_folder)), tmp_path / "grey", log=lines.append)
    assert not any(note in line for line in lines)  # grey images: nothing to say
    colour = tmp_path / "colour"
    colour.mkdir()
    for i in range(8):
        Image.new("RGB", (16, 16), (200, 40 * (i % 4), 30)).save(colour / f"{i}.png")
    Trainer(load_config(overrides=tiny_overrides(colour)), tmp_path / "run", log=lines.append)
    assert sum(note in line for line in lines) == 1
    lines.clear()
    Trainer(load_config(overrides=tiny_overrides(colour, **{"data.channels": 3})), tmp_path / "run3",
            log=lines.append)
    assert not any(note in line for line in lines)
    Trainer(load_config(overrides=tiny_overrides(colour, **{"data.channels": 3, "data.max_images": 50})),
            tmp_path / "run4", log=lines.append)
    assert "note: data.max_images = 50 but folder:" in lines[-1]
    assert lines[-1].endswith("has 8 images: training on all of them")


@pytest.mark.parametrize("n_classes, message", [
    (1, "model.n_classes=1 but folder:.* has labels up to 1; set model.n_classes=2"),
    (10, r"model.n_classes=10 but folder:.* has 2 classes \(class0, class1\); set model.n_classes=2"),
])
def test_a_conditional_model_must_match_the_data_sets_classes(tmp_path, tiny_cfg, n_classes, message):
    with pytest.raises(UserError, match=message):
        Trainer(tiny_cfg("mnist-cgan", **{"model.n_classes": n_classes}), tmp_path / "run", log=lambda msg: None)


def test_a_setting_the_network_does_not_read_is_noted_at_start(tmp_path, tiny_cfg):
    lines: list[str] = []
    Trainer(tiny_cfg(**{"model.g_hidden": "[8]"}), tmp_path / "run", log=lines.append)
    assert "note: model.g_hidden = [8] has no effect on the dcgan generator" in lines
    lines.clear()
    Trainer(tiny_cfg(**{"model.d_cond": '"acgan"', "model.d_mbdisc_dim": 3}), tmp_path / "run1", log=lines.append)
    assert sum("has no effect" in line for line in lines) == 2
    assert any('model.d_cond = "acgan" has no effect on an unconditional model' in line for line in lines)
    lines.clear()
    Trainer(tiny_cfg(**{"train.sync_bn": "true"}), tmp_path / "run3", log=lines.append)
    assert any("train.sync_bn has no effect in a single process" in line for line in lines)
    lines.clear()
    Trainer(tiny_cfg(**{"data.download": "true"}), tmp_path / "run4", log=lines.append)
    assert any(line.startswith("note: data.download has no effect on folder:") and line.endswith(
        "it fetches only mnist, fashion-mnist, cifar10, celeba, stacked-mnist") for line in lines)
    lines.clear()
    Trainer(tiny_cfg(**{"optim.name": '"rmsprop"', "optim.d_betas": "[0.0, 0.9]"}), tmp_path / "run5",
            log=lines.append)
    assert "note: optim.d_betas = [0.0, 0.9] has no effect on rmsprop (only adam has betas)" in lines
    assert not any("optim.g_betas" in line for line in lines)  # left at its default: nothing to say
    lines.clear()
    # the way to turn mnist-wgan's bursts off: their schedule stays, unread
    Trainer(tiny_cfg("mnist-wgan", **{"loss.critic_burst": 0}), tmp_path / "run6", log=lines.append)
    assert "note: loss.critic_burst_first = 25 has no effect without critic bursts (loss.critic_burst = 0)" in lines
    assert sum("has no effect" in line for line in lines) == 2
    lines.clear()
    Trainer(tiny_cfg(), tmp_path / "run2", log=lines.append)
    assert not any("has no effect" in line for line in lines)


def test_train_threads_hold_for_the_run_and_the_caller_gets_its_count_back(tmp_path, tiny_cfg, monkeypatch):
    seen = []
    loop = Trainer._train_loop
    monkeypatch.setattr(Trainer, "_train_loop", lambda self: seen.append(torch.get_num_threads()) or loop(self))
    before = torch.get_num_threads()
    run_dir = train(tiny_cfg(**{"train.threads": before + 1, "train.kimg": 0.016}), out=tmp_path, log=quiet)
    resume(run_dir, {"train.threads": before + 2, "train.kimg": 0.032}, log=quiet)
    assert seen == [before + 1, before + 2] and torch.get_num_threads() == before


def test_more_threads_than_cpus_is_noted_at_start(tmp_path, tiny_cfg, monkeypatch):
    from ganforge import device

    threads = torch.get_num_threads()
    monkeypatch.setattr(device, "available_cpus", lambda: 1)
    lines: list[str] = []
    try:
        Trainer(tiny_cfg(**{"train.threads": 2}), tmp_path / "run", log=lines.append)
    finally:
        torch.set_num_threads(threads)  # the Trainer set torch's process-wide count
    assert ("note: train.threads=2 is more threads than the 1 CPUs this run may use; the extra ones contend for "
            "them and slow training down: use train.threads=1, or 0 to let torch choose") in lines
    assert device.threads_note(0) is None and device.threads_note(1) is None  # 0: torch's own choice
    monkeypatch.setattr(device, "available_cpus", lambda: 8)
    assert device.threads_note(4) is None
    assert device.threads_note(4, processes=4) == (
        "train.threads=4 in each of 4 processes is more threads than the 8 CPUs this run may use; the extra ones "
        "contend for them and slow training down: use train.threads=2, or 0 to let torch choose")


def test_a_batch_too_small_for_batch_norm_over_linear_layers_is_refused_before_a_run_directory(tmp_path, tiny_cfg):
    mlp = {"model.g": '"mlp"', "model.d": '"mlp"', "model.g_hidden": "[16]", "model.d_hidden": "[16]",
           "model.g_norm": '"bn"', "model.d_norm": '"none"'}
    with pytest.raises(UserError) as info:
        train(tiny_cfg(**mlp, **{"train.batch_size": 1}), out=tmp_path / "runs", log=quiet)
    assert str(info.value) == ("G's batch norm over linear layers needs at least 2 samples a batch, and "
                               "train.batch_size=1 gives G 1; use --set train.batch_size=2 or more, or --set "
                               "model.g_norm=none")
    packed = {**mlp, "model.g_norm": '"none"', "model.d_norm": '"bn"', "model.pac": 2, "train.batch_size": 2}
    with pytest.raises(UserError, match=r"D's batch norm .* gives D 1 pack of model.pac=2; use --set "
                                        r"train.batch_size=4 or more, or --set model.d_norm=none$"):
        train(tiny_cfg(**packed), out=tmp_path / "runs", log=quiet)
    assert not (tmp_path / "runs").exists()
    conv = tiny_cfg(**{"train.batch_size": 1})  # a conv net's batch norm has every pixel: one image will do
    assert final_weights(train(conv, out=tmp_path / "runs", log=quiet))["nimg"] == conv.train.kimg * 1000


def test_a_device_this_machine_lacks_is_one_clear_error(monkeypatch):
    from ganforge.device import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA device is available"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="has 1 CUDA device"):
        pick_device("cuda:3")


def test_progress_gif_of_a_long_run_keeps_the_first_and_last_grid_and_a_bounded_count(tmp_path):
    from PIL import Image

    from ganforge.report import make_gif

    frames = []
    for i in range(250):
        path = tmp_path / f"fakes{i:06d}.png"
        Image.new("L", (8, 8), i).save(path)
        frames.append(path)
    make_gif(frames, tmp_path / "progress.gif", max_frames=200)
    with Image.open(tmp_path / "progress.gif") as gif:
        assert gif.n_frames == 200
        shades = []
        for k in range(gif.n_frames):
            gif.seek(k)
            shades.append(gif.convert("L").getpixel((0, 0)))
    assert shades[0] == 0 and shades[-1] == 249 and shades == sorted(shades)  # in order, both ends kept
    make_gif(frames[:5], tmp_path / "short.gif", max_frames=200)
    with Image.open(tmp_path / "short.gif") as gif:
        assert gif.n_frames == 5


def test_progress_gif_of_a_run_resumed_with_a_larger_grid_crops_nothing(tmp_path):
    from PIL import Image

    from ganforge.report import make_gif

    small, large = tmp_path / "fakes000001.png", tmp_path / "fakes000002.png"
    Image.new("RGB", (10, 10), (200, 200, 200)).save(small)
    Image.new("RGB", (30, 20), (90, 90, 90)).save(large)
    make_gif([small, large], tmp_path / "progress.gif")
    with Image.open(tmp_path / "progress.gif") as gif:
        assert gif.size == (30, 20) and gif.n_frames == 2
        gif.seek(1)
        assert gif.convert("L").getpixel((29, 19)) == 90  # the larger grid's far corner is there
        gif.seek(0)
        first = gif.convert("L")
        assert first.getpixel((0, 0)) == 200 and first.getpixel((29, 19)) == 0  # the small one on black


def test_grids_are_ordered_by_images_seen_not_by_name(tmp_path):
    from ganforge.report import fixed_noise_grids

    # ticks under 1 kimg name grids to the image; a resume with longer ticks names them to the kimg
    names = ["fakes000012.png", "fakes000012.500.png", "fakes000011.750.png", "fakes000013.png", "reals.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in fixed_noise_grids(tmp_path)] == [
        "fakes000011.750.png", "fakes000012.png", "fakes000012.500.png", "fakes000013.png"]


@pytest.mark.parametrize(("settings", "d_real", "d_fake", "warned"), [
    ({}, 0.999, 0.001, True),
    ({"loss.name": '"minimax"'}, 0.999, 0.001, True),
    ({}, 0.9, 0.1, False),  # a confident D that G still fools now and then
    ({"loss.name": '"rpgan"'}, 0.999, 0.001, True),  # a real's logit against its paired fake's
    ({"loss.name": '"hinge"'}, 0.999, 0.001, False),  # sigmoid of a hinge or critic logit is no probability
    ({"train.d_win_warn": 0.0}, 0.999, 0.001, False),  # 0 turns the check off
])
def test_a_discriminator_that_wins_outright_is_warned_about(tmp_path, tiny_cfg, monkeypatch, settings, d_real,
                                                            d_fake, warned):
    from ganforge import health
    from ganforge.step import Stepper

    monkeypatch.setattr(health, "COLLAPSE_CHECK_FROM_KIMG", 0.0)
    # each step reports (d_loss, g_loss, mean D(real), mean D(fake)); the tick averages them
    monkeypatch.setattr(Stepper, "__call__", lambda self, reals: torch.tensor([0.01, 7.0, d_real, d_fake]))
    lines: list[str] = []
    train(tiny_cfg(**settings), out=tmp_path, log=lines.append)
    warnings = [line for line in lines if "D tells real from fake almost perfectly" in line]
    assert len(warnings) == (2 if warned else 0)  # one per tick
    if warned:
        assert "mean D(real) 0.999, D(fake) 0.001" in warnings[0] and "optim.d_lr" in warnings[0]
        # label smoothing is a BCE setting: not advised where the config would refuse it
        assert ("loss.label_smoothing=0.1" in warnings[0]) is (settings.get("loss.name") != '"rpgan"')
        # the advice once: a later tick says what it finds there
        assert "at 0.06 kimg" in warnings[1] and warnings[1].endswith("G gets little to learn from (advice above)")
        # the instance noise it advises is one the config takes (alone, loss.instance_noise would add none)
        advice = re.search(r"loss\.instance_noise=\S+ loss\.instance_noise_kimg=\d+", warnings[0])
        assert advice and load_config(overrides=advice.group().split()).loss.instance_noise_kimg >= 10


DIFFAUGMENT_ADVICE = "--set train.diffaugment=translation,cutout --set train.ada_target=0.6"
PROJECTION_AUGMENT_ADVICE = ("--set train.diffaugment=translation,cutout --set train.ada_target=0.5 (adaptive "
                             "augmentation) kept mnist-projgan")
R2_ADVICE = "--set loss.r2_gamma=1 (R2 on the fakes, ten times the presets') kept mnist-acgan learning"
ACGAN = {"model.n_classes": 2, "model.d_cond": '"acgan"'}
BN_ADVICE = "--set model.d_norm=bn (batch norm in D's layers) with adaptive augmentation kept mnist-projgan"
PROJECTION = {"model.n_classes": 2, "model.d_cond": '"projection"', "model.d_norm": '"none"',
              "model.d_spectral_norm": "true"}
DROPOUT_ADVICE = "--set model.label_dropout=0.5 (half the labels made 'no label' in training) raised mnist-cgan's"


@pytest.mark.parametrize(("settings", "small_below", "advised"), [
    ({}, 1000, [DIFFAUGMENT_ADVICE, "kept the default nets"]),  # 32 training images
    # a conditional model (the folder's two classes): cites the conditional run
    ({"model.n_classes": 2}, 1000, [DIFFAUGMENT_ADVICE, "kept mnist-cgan learning", DROPOUT_ADVICE]),
    (ACGAN, 1000, [DIFFAUGMENT_ADVICE, "kept mnist-cgan learning", R2_ADVICE]),  # an AC-GAN D: R2 as well
    ({**ACGAN, "train.diffaugment": '"translation"'}, 1000, [R2_ADVICE]),  # augmentation on: R2 alone
    ({**ACGAN, "train.diffaugment": '"translation"', "loss.r2_gamma": 1}, 1000, []),  # both already on
    # a concat D: label dropout, not R2
    ({"model.n_classes": 2, "train.diffaugment": '"translation"'}, 1000, [DROPOUT_ADVICE]),
    ({"model.n_classes": 2, "train.diffaugment": '"translation"', "model.label_dropout": 0.5}, 1000, []),
    (PROJECTION, 1000, [PROJECTION_AUGMENT_ADVICE, BN_ADVICE]),  # a projection D without batch norm: both
    ({**PROJECTION, "model.d_norm": '"bn"'}, 1000, [PROJECTION_AUGMENT_ADVICE]),  # its lower target
    ({**PROJECTION, "train.diffaugment": '"translation"'}, 1000, [BN_ADVICE]),
    ({**PROJECTION, "train.diffaugment": '"translation"', "model.d_norm": '"bn"'}, 1000, []),
    ({"train.diffaugment": '"translation"'}, 1000, []),  # already on
    ({}, 16, []),  # a data set above the threshold
])
def test_warnings_on_a_small_data_set_point_to_what_cured_it(tmp_path, tiny_cfg, monkeypatch, settings, small_below,
                                                              advised):
    from ganforge import health
    from ganforge.step import Stepper

    monkeypatch.setattr(health, "COLLAPSE_CHECK_FROM_KIMG", 0.0)
    monkeypatch.setattr(health, "SMALL_DATA_IMAGES", small_below)
    monkeypatch.setattr(Stepper, "__call__", lambda self, reals: torch.tensor([0.01, 7.0, 0.999, 0.001]))
    monkeypatch.setattr(Trainer, "_sample_grid", lambda self: self._real_grid()[:1].expand_as(self._real_grid()))
    lines: list[str] = []
    train(tiny_cfg(**settings), out=tmp_path, log=lines.append)
    warnings = [line for line in lines if "warning:" in line]
    assert any("looks collapsed" in w for w in warnings) and any("almost perfectly" in w for w in warnings)
    advised_lines = [w for w in warnings if not w.endswith("(advice above)")]
    assert len(advised_lines) == 2 < len(warnings)  # a collapse and a D that wins, each advised once
    for w in advised_lines:
        assert ("With 32 training images D may be learning them by heart: " in w) is bool(advised)
        assert all(fragment in w for fragment in advised)
        assert (DIFFAUGMENT_ADVICE in w) is (DIFFAUGMENT_ADVICE in advised)
        assert (PROJECTION_AUGMENT_ADVICE in w) is (PROJECTION_AUGMENT_ADVICE in advised)
        assert (R2_ADVICE in w) is (R2_ADVICE in advised)
        assert (BN_ADVICE in w) is (BN_ADVICE in advised)
        assert (DROPOUT_ADVICE in w) is (DROPOUT_ADVICE in advised)


def test_a_failed_tick_evaluation_keeps_the_training_before_it(tmp_path, tiny_cfg, monkeypatch):
    calls = []

    def failing(self):
        calls.append(self.state.nimg)
        raise UserError("metrics.json is not valid JSON")

    monkeypatch.setattr(Trainer, "_evaluate", failing)
    cfg = tiny_cfg(**{"eval.every_kimg": 0.032, "eval.metrics": '["fd_digits"]', "train.ckpt_ticks": 5})
    with pytest.raises(UserError, match=r"^metrics.json is not valid JSON \(at the evaluation of 0.03 kimg; the "
                                        r"training up to it is saved in ckpt-000000032.pt, to resume once that is"):
        train(cfg, out=tmp_path / "runs", log=lambda msg: None)
    run_dir = next((tmp_path / "runs").iterdir())
    assert calls == [32]
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run_dir))["nimg"] == 32


def test_a_folder_split_into_train_and_test_is_named_before_it_trains_on_both(tmp_path):
    from ganforge.data import split_subfolders_note

    from .conftest import tiny_overrides, write_digit_folder

    root = tmp_path / "set"
    write_digit_folder(root / "train")
    write_digit_folder(root / "test", n_per_class=4)
    lines: list[str] = []
    Trainer(load_config(overrides=tiny_overrides(root)), tmp_path / "run", log=lines.append)  # writes nothing
    notes = [line for line in lines if "look like splits" in line]
    assert notes == [f"note: folder:{root}'s subfolders test, train look like splits of one data set, and a folder's "
                     "subfolders are read as classes: this trains on all of them (a conditional model would learn "
                     f"them as its classes); to train on one, use folder:{root / 'train'}"]
    assert split_subfolders_note(f"folder:{root}", ["cat", "dog"]) is None
    assert split_subfolders_note(f"folder:{root}", ["train", "cat"]) is None  # one such name is a class
    assert split_subfolders_note("mnist5k", ["train", "test"]) is None
    assert split_subfolders_note("folder:x", ["Training", "Validation"]).endswith("use folder:x/Training")


def test_training_kernels_are_the_runs_inside_and_the_callers_after():
    """cuDNN autotuning for a CUDA run, deterministic kernels under train.deterministic; a Python caller of
    ganforge.train gets its own settings back (flags alone: no GPU needed to see them)."""
    from ganforge.device import training_kernels

    torch.backends.cudnn.benchmark = False
    with training_kernels(False, torch.device("cuda")):
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark
    with training_kernels(False, torch.device("cpu")):
        assert not torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        with training_kernels(True, torch.device("cuda")):
            assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
            assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.benchmark = False


def test_deterministic_kernels_are_on_while_training_and_restored_after(tmp_path, tiny_cfg, monkeypatch):
    from ganforge.step import Stepper

    seen: list[bool] = []
    step = Stepper.__call__

    def spy(self, reals):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return step(self, reals)

    monkeypatch.setattr(Stepper, "__call__", spy)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # restored as it was after the test
    exact = train(tiny_cfg(**{"train.deterministic": "true"}), out=tmp_path / "a", log=lambda msg: None)
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"  # set before any CUDA work, as cuBLAS needs
    seen.clear()
    plain = train(tiny_cfg(), out=tmp_path / "b", log=lambda msg: None)
    assert seen and not any(seen)
    # a CPU's kernels were deterministic already: the setting changes no weight
    weights = [ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(run))["G"] for run in (exact, plain)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_a_collapse_or_a_winning_d_that_goes_away_is_said_to_have_passed(tiny_cfg):
    from ganforge.health import HealthCheck

    real = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    check = HealthCheck(tiny_cfg(), lambda: real, 5000)
    assert check.check(4.0, 0.1, 0.0, 0.999, 0.001) == ([], [])  # before the checks start
    warned, passed = check.check(6.0, 0.1, 0.0, 0.999, 0.001)
    assert len(warned) == 2 and not passed
    # the spread is back but the samples come in near-copies: not over, though that check warns from 10 kimg
    warned, passed = check.check(8.0, 0.9, 0.8, 0.999, 0.001)
    assert len(warned) == 1 and "almost perfectly" in warned[0] and passed == []
    warned, passed = check.check(12.0, 0.9, 0.8, 0.7, 0.3)
    assert len(warned) == 1 and "partly collapsed" in warned[0] and warned[0].endswith("(advice above)")
    assert passed == ["D no longer tells real from fake almost perfectly at 12.00 kimg (mean D(real) 0.700, D(fake) "
                      "0.300), as it did from 6.00 kimg"]
    warned, passed = check.check(18.0, 0.85, 0.05, 0.7, 0.3)
    assert warned == [] and passed == ["the collapse warned of at 6.00 kimg has passed: the grid's samples at 18.00 "
                                       "kimg differ again (spread 0.85 of the real images', near-copy share 5%)"]
    assert check.check(24.0, 0.85, 0.05, 0.7, 0.3) == ([], [])  # said once
    # a collapse that comes back is warned of again and its passing dated from its own start; a grid too
    # small for the near-copy share is judged by its spread
    warned, _ = check.check(30.0, 0.2, float("nan"), 0.7, 0.3)
    assert warned[0].startswith("the grid's samples at 30.00 kimg are nearly alike")
    assert check.check(36.0, 0.5, float("nan"), 0.7, 0.3)[1] == [
        "the collapse warned of at 30.00 kimg has passed: the grid's samples at 36.00 kimg differ again (spread 0.50 "
        "of the real images')"]
    # a spread that could not be measured says nothing either way
    check.check(42.0, 0.2, float("nan"), 0.7, 0.3)
    assert check.check(48.0, float("nan"), float("nan"), 0.7, 0.3) == ([], [])


def test_the_training_log_notes_when_an_early_collapse_has_passed(tmp_path, tiny_cfg, monkeypatch):
    from ganforge import health

    monkeypatch.setattr(health, "COLLAPSE_CHECK_FROM_KIMG", 0.0)
    calls: list[int] = []

    def grid(self):  # the first tick's grid alike, the later ones the real images
        calls.append(1)
        real = self._real_grid()
        return real[:1].expand_as(real) if len(calls) == 1 else real

    monkeypatch.setattr(Trainer, "_sample_grid", grid)
    lines: list[str] = []
    train(tiny_cfg(**{"train.kimg": 0.096}), out=tmp_path, log=lines.append)
    said = [line for line in lines if "warning:" in line or "note:" in line]
    assert len(said) == 2 and "0.03 kimg are nearly alike" in said[0]
    assert said[1].startswith("  note: the collapse warned of at 0.03 kimg has passed: the grid's samples at 0.06 "
                              "kimg differ again (spread 1.00 of the real images'")


def test_a_tick_where_part_of_the_grid_jumps_is_warned_of_with_its_classes(tiny_cfg):
    """A grid image jumps when it moves more than train.jump_warn times its median move over the ticks before;
    a warning needs JUMP_MIN_IMAGES of them and JUMP_SHARE of the grid, and names the classes most of whose
    row jumped."""
    from ganforge.health import JUMP_HISTORY, HealthCheck

    gen = torch.Generator().manual_seed(0)
    real = torch.rand(20, 1, 8, 8, generator=gen) * 2 - 1
    check = HealthCheck(tiny_cfg(**{"train.grid_size": 20}), lambda: real, 5000)
    grid = real.clone()

    def tick(scale: torch.Tensor) -> float:
        nonlocal grid
        grid = grid + scale.view(-1, 1, 1, 1) * torch.randn(grid.shape, generator=gen)
        return check.change(grid)

    usual = torch.full((20,), 0.01)
    assert math.isnan(check.change(grid)) and not check.jumped.any()  # a run's first tick has nothing before it
    for _ in range(JUMP_HISTORY):
        change = tick(usual)
        assert not check.jumped.any()
    # the mean move over the real images' spread: 0.01 per pixel of 64 is about 0.08 in L2
    assert abs(change * check.reference()[0] - 0.08) < 0.02
    saved = check.state_dict()
    assert saved["moves"].shape == (JUMP_HISTORY, 20)
    tick(usual * 1.5)
    assert not check.jumped.any()  # faster than usual, not a jump
    two = usual.clone()
    two[:2] = 0.1
    tick(two)
    assert check.jumped.sum() == 2 and not check.jump_found(12.0)  # too few to warn
    assert check.check(12.0, 0.9, 0.0, 0.7, 0.3) == ([], [])
    row = usual.clone()
    row[10:15] = 0.1
    tick(row)
    assert check.jumped.tolist() == [10 <= i < 15 for i in range(20)]
    assert not check.jump_found(4.0)  # not before the checks start
    assert check.jump_starts(12.0)
    labels = torch.arange(4).repeat_interleave(5)
    classes = check.jumped_classes(labels, ["zero", "one", "two", "three"])
    assert classes == " (class two: 5 of 5)"
    assert check.jumped_classes(torch.arange(20), None) == " (most of the images of 5 of the 20 classes)"
    warned, passed = check.check(12.0, 0.9, 0.0, 0.7, 0.3, classes, "checkpoints/kept-000011000.pt")
    assert not passed and len(warned) == 1
    assert warned[0].startswith("5 of the grid's 20 samples at 12.00 kimg moved more than 2.5x as far since the tick "
                                "before as they did at the ticks before that (class two: 5 of 5): G changed abruptly")
    assert ("G changed abruptly, as when a run breaks late; checkpoints/kept-000011000.pt keeps the run from before "
            "it, out of the checkpoints' rotation. Compare the last grids in samples/. If they got worse, resume the "
            "checkpoint from before it with --rewind --set train.diffaugment=translation,cutout --set "
            "train.ada_target=0.6") in warned[0]
    assert not check.jump_starts(12.0)  # the same event, while it goes on
    tick(usual)
    assert check.check(13.0, 0.9, 0.0, 0.7, 0.3) == ([], [])
    # a checkpoint's record judges the next tick as the uninterrupted run does; without one, nothing is judged
    # until the history is whole again
    before = grid.clone()
    for record, judged in ((saved, True), (None, False)):
        again = HealthCheck(tiny_cfg(**{"train.grid_size": 20}), lambda: real, 5000)
        again.load_state_dict(record, before)
        again.change(before + row.view(-1, 1, 1, 1) * torch.randn(before.shape, generator=gen))
        assert bool(again.jumped.any()) == judged
    # a run with adaptive augmentation already is not told to add it
    ada = HealthCheck(tiny_cfg(**{"train.diffaugment": '"translation"', "train.ada_target": 0.6}), lambda: real, 5000)
    assert ada.jump_advice().startswith("take the checkpoint from before it as the result")
    assert "--rewind --set train.ada_target=0.6" in HealthCheck(
        tiny_cfg(**{"train.diffaugment": '"translation"'}), lambda: real, 5000).jump_advice()
    with pytest.raises(UserError, match="train.jump_warn must be above 1"):
        tiny_cfg(**{"train.jump_warn": 0.5})


def test_a_jump_in_training_is_warned_of_keeps_the_checkpoint_before_it_and_survives_a_resume(
        tmp_path, tiny_cfg, monkeypatch):
    """The training loop's side: the warning in the log, the checkpoint of the tick before set aside as
    kept-<nimg>.pt (the rotation would remove it), the moves in stats.jsonl, the history carried through a
    resume, and a rewind to the kept checkpoint."""
    from ganforge import health

    monkeypatch.setattr(health, "COLLAPSE_CHECK_FROM_KIMG", 0.0)
    gen = torch.Generator().manual_seed(1)
    base, drift, leap = (torch.randn(4, 1, 16, 16, generator=gen) for _ in range(3))

    def grid(self):  # a steady drift, and three of the four images leaping once, at 128 images
        t = self.state.nimg / 16
        return base + 0.01 * t * drift + (leap * torch.tensor([1.0, 1, 1, 0]).view(-1, 1, 1, 1)) * (t >= 8)

    monkeypatch.setattr(Trainer, "_sample_grid", grid)
    settings = {"train.tick_kimg": 0.016, "train.keep_ckpts": 2}
    lines: list[str] = []
    full = train(tiny_cfg(**settings, **{"train.kimg": 0.16}), out=tmp_path / "a", log=lines.append)
    warned = [line for line in lines if "warning:" in line]
    assert len(warned) == 1 and warned[0].startswith("  warning: 3 of the grid's 4 samples at 0.13 kimg moved more "
                                                      "than 2.5x as far")
    assert "; checkpoints/kept-000000112.pt keeps the run from before it" in warned[0]
    assert ("note: part of the grid jumped at 0.13 kimg (the warning above): sample and eval take the last "
            "checkpoint unless given --ckpt; --ckpt kept-000000112.pt is the run from before the first jump") in lines
    kept = full / "checkpoints" / "kept-000000112.pt"
    assert kept.is_file() and final_weights(full)["nimg"] == 160
    assert ckpt_io.load_checkpoint(kept)["nimg"] == 112
    assert [p.name for p in ckpt_io.list_checkpoints(full)] == ["ckpt-000000144.pt", "ckpt-000000160.pt"]
    stats = report_stats(full / "stats.jsonl")
    assert [s["jumped"] for s in stats] == [0] * 7 + [3] + [0, 0]
    assert stats[0]["change"] is None and all(s["change"] > 0 for s in stats[1:])

    half = train(tiny_cfg(**settings, **{"train.kimg": 0.096}), out=tmp_path / "b", log=quiet)
    lines.clear()
    resume(half, ["train.kimg=0.16"], log=lines.append)
    assert sum("warning: 3 of the grid's 4 samples at 0.13 kimg" in line for line in lines) == 1
    resumed = report_stats(half / "stats.jsonl")
    assert [s["jumped"] for s in resumed] == [s["jumped"] for s in stats]
    assert [s["change"] for s in resumed] == [s["change"] for s in stats]

    # back to before the jump: the later checkpoints, and the kept ones after it, go
    shutil.copyfile(kept, full / "checkpoints" / "kept-000000144.pt")
    resume(kept, ["train.kimg=0.128"], log=quiet, rewind=True)
    assert sorted(p.name for p in (full / "checkpoints").iterdir() if p.suffix == ".pt") == [
        "ckpt-000000128.pt", "kept-000000112.pt"]

    # a disk too full for the copy: the warning without it, and the run goes on
    def no_room(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_io, "atomic_copy", no_room)
    lines.clear()
    crowded = train(tiny_cfg(**settings, **{"train.kimg": 0.16}), out=tmp_path / "c", log=lines.append)
    assert "  note: could not set ckpt-000000112.pt aside as kept-000000112.pt: No space left on device" in lines
    assert any("3 of the grid's 4 samples at 0.13 kimg" in line and "kept-" not in line for line in lines)
    assert final_weights(crowded)["nimg"] == 160 and ckpt_io.kept_checkpoints(crowded) == []
    assert ("note: part of the grid jumped at 0.13 kimg (the warning above): sample and eval take the last "
            "checkpoint unless given --ckpt") in lines


def test_the_grids_move_is_the_same_after_a_resume_as_without_one(tmp_path, tiny_cfg):
    """A resumed run draws the grid of its checkpoint again as the grid before its first tick."""
    settings = {"train.tick_kimg": 0.016, "train.ema_kimg": 0.05}
    full = train(tiny_cfg(**settings, **{"train.kimg": 0.064}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**settings, **{"train.kimg": 0.032}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.064"], log=quiet)
    changes = [[s["change"] for s in report_stats(run / "stats.jsonl")] for run in (full, half)]
    assert changes[0] == changes[1] and all(c > 0 for c in changes[0][1:])


def test_small_data_advice_counts_one_image_in_the_singular(tiny_cfg):
    from ganforge.health import HealthCheck

    cfg = tiny_cfg()
    advice = [HealthCheck(cfg, lambda: torch.zeros(1), n).small_data_advice() for n in (1, 2)]
    assert advice[0].startswith("With 1 training image D may be learning it by heart: --set train.diffaugment=")
    assert advice[1].startswith("With 2 training images D may be learning them by heart: ")
