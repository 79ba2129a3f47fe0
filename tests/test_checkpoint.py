from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ganforge import checkpoint as ckpt_io
from ganforge.errors import UserError
from ganforge.generators import load_generator
from ganforge.trainer import train

from .conftest import fill_disk_after


def _state(nimg: int) -> dict:
    return {"nimg": nimg, "weights": torch.full((3,), float(nimg))}


def test_keep_last_n_after_success(tmp_path):
    for nimg in (100, 200, 300, 400):
        ckpt_io.save_checkpoint(_state(nimg), tmp_path, keep=2)
    names = [p.name for p in ckpt_io.list_checkpoints(tmp_path)]
    assert names == [ckpt_io.ckpt_name(300), ckpt_io.ckpt_name(400)]
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(tmp_path))["nimg"] == 400


def test_crash_mid_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    ckpt_io.save_checkpoint(_state(100), tmp_path, keep=1)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(40)  # half a file on disk, then the process "dies"
        raise SystemExit("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(SystemExit):
        ckpt_io.save_checkpoint(_state(200), tmp_path, keep=1)
    monkeypatch.undo()
    found = ckpt_io.list_checkpoints(tmp_path)
    assert [p.name for p in found] == [ckpt_io.ckpt_name(100)]
    assert ckpt_io.load_checkpoint(found[-1])["nimg"] == 100


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    import errno
    import os

    target = tmp_path / "config.toml"
    ckpt_io.atomic_write_text("old = 1\n", target)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    for write in (lambda: ckpt_io.atomic_write_text("new = 2\n", target),
                  lambda: ckpt_io.atomic_copy(target, tmp_path / "copy.toml"),
                  lambda: ckpt_io.atomic_save({"x": 1}, tmp_path / "x.pt")):
        with pytest.raises(OSError, match="No space left"):
            write()
    monkeypatch.undo()
    assert target.read_text() == "old = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_a_disk_that_fills_mid_write_raises_a_named_oserror_and_keeps_every_old_file(tmp_path, monkeypatch,
                                                                                     tiny_cfg):
    import errno

    import numpy as np
    from PIL import Image

    from ganforge import report
    from ganforge.models import build_generator

    images = torch.rand(16, 1, 16, 16) * 2 - 1
    ckpt_io.save_checkpoint(_state(100), tmp_path, keep=1)
    report.save_grid(images, tmp_path / "grid.png")
    report.make_gif([tmp_path / "grid.png"] * 2, tmp_path / "progress.gif")
    G = build_generator(tiny_cfg())
    report.save_npz_stream(G, 4, tmp_path / "samples.npz")
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    fill_disk_after(monkeypatch, room=200)
    big = {"nimg": 100, "weights": torch.randn(100_000)}  # torch's own zip writer used to hide ENOSPC
    writes = {
        "checkpoints/" + ckpt_io.ckpt_name(100): lambda: ckpt_io.save_checkpoint(big, tmp_path, keep=1),
        "grid.png": lambda: report.save_grid(images, tmp_path / "grid.png"),
        "progress.gif": lambda: report.make_gif([tmp_path / "grid.png"] * 2, tmp_path / "progress.gif"),
        "samples.npz": lambda: report.save_npz_stream(G, 64, tmp_path / "samples.npz"),
        "losses.png": lambda: report.plot_losses([{"kimg": k, "d_loss": 1.0, "g_loss": 1.0, "d_real": 0.5,
                                                   "d_fake": 0.5} for k in (1, 2)], tmp_path / "losses.png"),
        "folder/000000.png": lambda: report.save_images(images, tmp_path / "folder"),
    }
    for name, write in writes.items():
        with pytest.raises(OSError) as info:
            write()
        assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / name), name
    monkeypatch.undo()

    after = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing torn, replaced or left behind
    assert ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(tmp_path))["nimg"] == 100
    assert np.load(tmp_path / "samples.npz")["arr_0"].shape == (4, 16, 16, 1)
    with Image.open(tmp_path / "progress.gif") as gif:
        assert gif.n_frames >= 1


def test_truncated_checkpoint_is_refused_with_a_clear_message(tmp_path):
    path = ckpt_io.save_checkpoint(_state(100), tmp_path, keep=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt") as info:
        ckpt_io.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_garbage_and_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(UserError, match="truncated or corrupt"):
        ckpt_io.load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match="not a ganforge checkpoint"):
        ckpt_io.load_checkpoint(foreign)


def test_a_checkpoint_from_a_newer_format_is_refused_with_the_fix(tmp_path):
    ckpt_io.save_checkpoint(_state(100), tmp_path, keep=1)
    path = ckpt_io.list_checkpoints(tmp_path)[-1]
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["format_version"] == ckpt_io.FORMAT_VERSION  # today's checkpoints load
    ckpt_io.atomic_save({**ckpt, "format_version": ckpt_io.FORMAT_VERSION + 1}, path)
    with pytest.raises(UserError, match="written by a newer ganforge; upgrade ganforge") as info:
        ckpt_io.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt_io.FORMAT, "obj": object()}, path)
    with pytest.raises(UserError, match="holds pickled Python objects") as info:
        ckpt_io.load_checkpoint(path)
    assert "weights_only=False" not in str(info.value)


def test_text_file_given_as_checkpoint_is_named_as_not_a_checkpoint(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[train]\nkimg = 1\n")
    with pytest.raises(UserError, match="not a complete PyTorch zip archive") as info:
        ckpt_io.load_checkpoint(path)
    assert "weights_only" not in str(info.value)


def test_a_run_file_given_as_checkpoint_points_to_its_run(tmp_path):
    run = tmp_path / "0000-default"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.toml", "stats.jsonl"):
        (run / name).write_text("[train]\nkimg = 1\n")
        with pytest.raises(UserError, match=rf"^{re.escape(str(run / name))} is a file of run {re.escape(str(run))}, "
                                            rf"not a checkpoint; give the run directory"):
            ckpt_io.load_checkpoint(run / name)


def test_flipped_bit_in_a_weight_is_caught_by_its_crc(tmp_path):
    weights = torch.arange(1000, dtype=torch.float32)
    path = ckpt_io.save_checkpoint({"nimg": 100, "weights": weights}, tmp_path, keep=1)
    assert torch.equal(ckpt_io.load_checkpoint(path)["weights"], weights)
    data = bytearray(path.read_bytes())
    start = data.find(weights.numpy().tobytes())  # stored uncompressed, so the floats are there as they are
    assert start > 0
    data[start + 2000] ^= 0x01  # torch.load alone would return a wrong weight without a word
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="fails its CRC check") as info:
        ckpt_io.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_checkpoint_alone_rebuilds_generator_and_mismatch_is_clear(tmp_cfg_run):
    run_dir = tmp_cfg_run
    path = ckpt_io.resolve_checkpoint(run_dir)
    G = load_generator(path)
    images = G.sample(3, seed=0)
    assert images.shape == (3, 1, 16, 16) and images.is_contiguous()
    # a conv G samples in channels_last, as it trained (faster on a CPU)
    convs = [p for p in G.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    ckpt = ckpt_io.load_checkpoint(path)
    ckpt["config"]["model"]["g_width"] = 16
    bad = run_dir / "mismatch.pt"
    torch.save(ckpt, bad)
    with pytest.raises(UserError, match="does not match the generator") as info:
        load_generator(bad)
    # which tensor differs and how, in one line: the first layer's width halves
    message = str(info.value)
    assert "size mismatches (first: " in message and "in the checkpoint" in message and "\n" not in message


def test_missing_run_or_best_is_clear(tmp_path, tmp_cfg_run):
    with pytest.raises(UserError, match="nope does not exist; give a run directory or a checkpoint file"):
        ckpt_io.resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(UserError, match="no best checkpoint"):
        ckpt_io.resolve_checkpoint(tmp_cfg_run, "best")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is not a run directory"):
        ckpt_io.resolve_checkpoint(tmp_path / "empty")
    (tmp_path / "empty" / "config.toml").write_text("")
    with pytest.raises(UserError, match="has no checkpoints"):
        ckpt_io.resolve_checkpoint(tmp_path / "empty")
    # a folder of runs (runs/) given where one run is asked for names them
    for name in ("0000-default", "0001-mnist-dcgan", "0002-mnist-mlp", "0003-default"):
        (tmp_path / "many" / name).mkdir(parents=True)
        (tmp_path / "many" / name / "config.toml").write_text("")
    with pytest.raises(UserError) as info:
        ckpt_io.resolve_checkpoint(tmp_path / "many")
    assert str(info.value) == (f"{tmp_path / 'many'} is a folder of runs (0000-default, 0001-mnist-dcgan, "
                               f"0002-mnist-mlp and 1 more), not a run; give one of them, such as "
                               f"{tmp_path / 'many' / '0003-default'}")


def test_a_mistyped_run_path_names_the_runs_beside_it(tmp_path):
    runs = tmp_path / "runs"
    for name in ("0000-default", "0001-mnist-dcgan", "0002-mnist-mlp"):
        (runs / name).mkdir(parents=True)
        (runs / name / "config.toml").write_text("")
    (runs / "notes").mkdir()  # a folder that is no run is not offered

    def message(path) -> str:
        with pytest.raises(UserError) as info:
            ckpt_io.resolve_checkpoint(path)
        return str(info.value)

    said = "does not exist; give a run directory or a checkpoint file"
    assert message(runs / "0001") == f"{runs / '0001'} {said}; did you mean {runs / '0001-mnist-dcgan'}?"
    assert message(runs / "0003-mnist-dcgan") == f"{runs / '0003-mnist-dcgan'} {said}; did you mean " \
        f"{runs / '0001-mnist-dcgan'}?"
    assert message(runs / "7") == f"{runs / '7'} {said}; runs in {runs}: 0000-default, 0001-mnist-dcgan, 0002-mnist-mlp"
    assert message(tmp_path / "elsewhere" / "0001") == f"{tmp_path / 'elsewhere' / '0001'} {said}"
    for i in range(3, 9):
        (runs / f"000{i}-default").mkdir()
        (runs / f"000{i}-default" / "config.toml").write_text("")
    assert message(runs / "x").endswith(f"runs in {runs}: 9, the last: 0004-default, 0005-default, 0006-default, "
                                        "0007-default, 0008-default")


def test_a_mistyped_checkpoint_path_names_the_checkpoints_in_its_folder(tmp_cfg_run, tmp_path):
    kept = [p.name for p in ckpt_io.list_checkpoints(tmp_cfg_run)]
    folder = tmp_cfg_run / ckpt_io.CKPT_DIR
    with pytest.raises(UserError) as info:
        ckpt_io.load_checkpoint(folder / "ckpt-000000001.pt")
    assert str(info.value) == (f"checkpoint {folder / 'ckpt-000000001.pt'} does not exist; {folder} holds "
                               f"{', '.join(kept)}")
    for i in range(5):
        (tmp_path / f"c{i}.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"does not exist; .* holds 5, the last: c1.pt, c2.pt, c3.pt, c4.pt$"):
        ckpt_io.load_checkpoint(tmp_path / "c9.pt")
    with pytest.raises(UserError, match=r"^checkpoint \S+ does not exist$"):
        ckpt_io.load_checkpoint(tmp_path / "nowhere" / "c.pt")
    for given in (folder, tmp_cfg_run):  # --ckpt naming a folder, the run's own or the run: its checkpoints named
        with pytest.raises(UserError) as info:
            ckpt_io.resolve_checkpoint(tmp_cfg_run, str(given))
        assert str(info.value) == (f"--ckpt {given} is a folder; give latest, best or a checkpoint file; {folder} "
                                   f"holds {', '.join(kept)}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"is a folder; give latest, best or a checkpoint file$"):
        ckpt_io.resolve_checkpoint(tmp_cfg_run, str(tmp_path / "empty"))


def test_a_run_checkpoint_is_named_by_its_file_name_alone(tmp_cfg_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where no checkpoint lies: the name is the run's
    first = ckpt_io.list_checkpoints(tmp_cfg_run)[0]
    for name in (first.name, first.stem):
        assert ckpt_io.resolve_checkpoint(tmp_cfg_run, name) == first
        assert ckpt_io.resolve_checkpoint(tmp_cfg_run / ckpt_io.CKPT_DIR, name) == first
    for word in ("first", "ckpt-000000001.pt"):
        with pytest.raises(UserError, match=rf"checkpoint '{word}' is neither latest, best, a checkpoint file nor "
                                            rf"one of the run's checkpoints; .* holds .*{first.name}"):
            ckpt_io.resolve_checkpoint(tmp_cfg_run, word)
    (tmp_path / "mine.pt").write_bytes(b"")  # a file here is taken as given
    assert ckpt_io.resolve_checkpoint(tmp_cfg_run, "mine.pt") == Path("mine.pt")
    assert ckpt_io.resolve_checkpoint(first) == first
    for which in ("best", first.stem, "mine.pt"):  # a file holds one generator: --ckpt has nothing to pick
        with pytest.raises(UserError, match=rf"is a file holding one generator, and --ckpt {which} picks among"):
            ckpt_io.resolve_checkpoint(first, which)


def test_a_runs_checkpoints_folder_stands_for_the_run(tmp_cfg_run):
    latest = ckpt_io.resolve_checkpoint(tmp_cfg_run)
    assert ckpt_io.resolve_checkpoint(tmp_cfg_run / ckpt_io.CKPT_DIR) == latest


@pytest.fixture
def tmp_cfg_run(tmp_path, tiny_cfg):
    return train(tiny_cfg(), out=tmp_path / "runs", log=lambda msg: None)


def test_a_run_saved_under_looser_rules_still_loads_and_resumes_once_mended(tmp_cfg_run):
    from ganforge.cli import main
    from ganforge.trainer import resume_config

    ckpt = ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(tmp_cfg_run))
    # settings today's checks refuse, but which do not shape the networks
    ckpt["config"]["optim"]["g_lr"] = 5.0
    ckpt["config"]["data"]["fit"] = "stretch"
    loose = tmp_cfg_run / ckpt_io.CKPT_DIR / "loose.pt"
    torch.save(ckpt, loose)
    assert load_generator(loose).sample(2, seed=0).shape == (2, 1, 16, 16)
    assert main(["summary", str(loose)]) == 0
    # training with them is still refused, and an override mends them
    with pytest.raises(UserError, match="data.fit must be crop or pad, got 'stretch'"):
        resume_config(loose)
    with pytest.raises(UserError, match="optim.g_lr = 5 is above 1"):
        resume_config(loose, ["data.fit=crop"])
    _, _, cfg = resume_config(loose, ["optim.g_lr=2e-4", "data.fit=crop"])
    assert cfg.optim.g_lr == 2e-4 and cfg.data.fit == "crop"


def test_a_resume_removes_the_partial_files_of_a_killed_process_and_keeps_a_live_ones(tmp_cfg_run):
    import os
    import subprocess
    import sys

    from ganforge.trainer import resume

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    orphans = [tmp_cfg_run / ckpt_io.CKPT_DIR / f".ckpt-000000096.pt.tmp-{dead_pid}",  # kill -9 mid-checkpoint
               tmp_cfg_run / "samples" / f".fakes000000.096.png.tmp-{dead_pid}",
               tmp_cfg_run / f".progress.gif.tmp-{dead_pid}"]
    kept = [tmp_cfg_run / f".report.html.tmp-{os.getppid()}",  # a write in progress (its process runs)
            tmp_cfg_run / ckpt_io.CKPT_DIR / ".notes.tmp-draft"]  # not a temp file of ganforge's
    for path in orphans + kept:
        path.write_bytes(b"x" * 2**19)
    logged = []
    resume(tmp_cfg_run, {"train.kimg": 0.128}, log=logged.append)
    assert not any(path.exists() for path in orphans) and all(path.exists() for path in kept)
    assert any("removed the partial files (1.5 MiB) of writes that a killed process left" in m for m in logged)
    logged.clear()
    resume(tmp_cfg_run, {"train.kimg": 0.16}, log=logged.append)
    assert not any("partial files" in m for m in logged)


# --------------------------------------------------------------------------- generator files (ganforge export)


def test_an_exported_generator_samples_exactly_what_its_run_samples(tmp_path, tiny_cfg):
    from ganforge.generators import export_generator

    run = train(tiny_cfg(**{"train.ema_kimg": 0.01}), out=tmp_path / "runs", log=lambda msg: None)
    done = export_generator(run, tmp_path / "G.safetensors")
    raw = export_generator(run, tmp_path / "out" / "raw.safetensors", ema=False)
    assert (done.weights, raw.weights) == ("G_ema", "G") and done.kimg == abs(done.kimg) > 0
    ema_run, g_run = load_generator(run).sample(6, seed=3), load_generator(run, ema=False).sample(6, seed=3)
    assert not torch.equal(ema_run, g_run)  # the two weights differ, so a file holding the wrong one would show
    assert torch.equal(load_generator(done.path).sample(6, seed=3), ema_run)
    assert torch.equal(load_generator(raw.path).sample(6, seed=3), g_run)
    assert done.path.stat().st_size * 3 < done.source.stat().st_size  # no D, no optimizer state
    with pytest.raises(UserError, match="holds the run's G_ema alone.*--no-ema"):
        load_generator(done.path, ema=False)


def test_a_conditional_generator_file_keeps_its_class_names(tmp_path, tiny_cfg):
    from ganforge.generators import export_generator

    run = train(tiny_cfg(**{"model.n_classes": 2}), out=tmp_path / "runs", log=lambda msg: None)
    G = load_generator(export_generator(run, tmp_path / "G.safetensors").path)
    assert G.n_classes == 2 and G.classes == load_generator(run).classes == ["class0", "class1"]


def test_a_generator_file_refuses_resume_damage_and_overwrites_with_one_line_each(tmp_path, tmp_cfg_run):
    from safetensors.torch import save_file

    from ganforge.generators import export_generator
    from ganforge.trainer import resume_config

    path = export_generator(tmp_cfg_run, tmp_path / "G.safetensors").path
    before = path.read_bytes()
    with pytest.raises(UserError, match="G.safetensors exists; choose another --out or pass --force"):
        export_generator(tmp_cfg_run, path)
    assert path.read_bytes() == before
    export_generator(tmp_cfg_run, path, force=True)
    with pytest.raises(UserError, match=r"generator file .*no D or optimizer state to resume; resume the run it "
                                        r"was exported from \(.*/checkpoints/ckpt-\d+\.pt\)"):
        resume_config(path)
    with pytest.raises(UserError, match="not a generator file name: one ends in .safetensors, as G.safetensors .*.pt2"):
        export_generator(tmp_cfg_run, tmp_path / "G.pt")
    with pytest.raises(UserError, match="already a generator file"):
        export_generator(path, tmp_path / "H.safetensors")
    flipped = bytearray(before)
    flipped[-100] ^= 1  # a bit of the last weight
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(UserError, match="fails its SHA-256 check"):
        load_generator(tmp_path / "flipped.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {name: f.get_tensor(name) for name in f.keys()}
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata={**metadata, "nimg": "999999"})
    with pytest.raises(UserError, match="edited.safetensors is corrupt: it fails its SHA-256 check"):
        load_generator(tmp_path / "edited.safetensors")  # the settings are checked with the weights
    (tmp_path / "cut.safetensors").write_bytes(before[: len(before) // 2])
    with pytest.raises(UserError, match="cut.safetensors is truncated or corrupt"):
        load_generator(tmp_path / "cut.safetensors")
    save_file({"w": torch.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(UserError, match="not a ganforge generator"):
        load_generator(tmp_path / "foreign.safetensors")


def test_export_sample_and_eval_from_the_command_line(tmp_path, tiny_cfg, capsys):
    import json

    from ganforge.cli import main

    run = train(tiny_cfg(**{"train.ema_kimg": 0.01}), out=tmp_path / "runs", log=lambda msg: None)
    out = tmp_path / "G.safetensors"
    assert main(["export", str(run), "--out", str(out), "--no-ema"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("wrote G of ckpt-") and "MiB against the checkpoint's" in said
    assert main(["sample", str(out), "--n", "4", "--out", str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").is_file()
    assert main(["eval", str(out), "--metrics", "fd_digits", "--n", "64"]) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())[-1]
    # G of a run that kept G_ema: marked as such, as `eval RUN --no-ema` marks it
    assert saved["checkpoint"] == str(out) and saved["results"][0]["generator"] == "G (not G_ema)"
    assert main(["train", "--resume", str(out)]) == 2
    assert main(["report", str(out)]) == 2
    assert "generator file" in capsys.readouterr().err


def test_a_checkpoint_that_training_removes_while_it_is_read_is_followed(tmp_cfg_run, monkeypatch):
    """sample and eval of a run that trains meanwhile, keeping its last few checkpoints: the latest one can go
    between being looked up and opened (it is looked up again), or while it is read (the open file stays)."""
    latest = ckpt_io.resolve_checkpoint(tmp_cfg_run)
    nimg = ckpt_io.load_checkpoint(latest)["nimg"]
    newer = latest.with_name(f"ckpt-{nimg + 8:09d}.pt")
    resolve = ckpt_io.resolve_checkpoint

    def training_moves_on(run_or_ckpt, which="latest"):
        found = resolve(run_or_ckpt, which)
        if found == latest:
            ckpt_io.atomic_save({**ckpt_io.load_checkpoint(latest), "nimg": nimg + 8}, newer)
            latest.unlink()  # the trainer's keep_ckpts
        return found

    monkeypatch.setattr(ckpt_io, "resolve_checkpoint", training_moves_on)
    path, state = ckpt_io.load_resolved(tmp_cfg_run)
    assert path == newer and state["nimg"] == nimg + 8
    monkeypatch.undo()

    check = ckpt_io.damaged_zip_member

    def removed_after_the_check(f):
        found = check(f)
        newer.unlink()
        return found

    monkeypatch.setattr(ckpt_io, "damaged_zip_member", removed_after_the_check)
    assert ckpt_io.load_checkpoint(newer)["nimg"] == nimg + 8
    monkeypatch.undo()
    with pytest.raises(UserError, match="does not exist"):  # gone for good: no retry on a checkpoint file named
        ckpt_io.load_resolved(newer)


def test_export_of_a_checkpoint_removed_as_it_finishes_still_reports(tmp_cfg_run, tmp_path, monkeypatch, capsys):
    from ganforge import generators
    from ganforge.cli import main

    export = generators.export_generator

    def training_removes_the_source(*args, **kwargs):
        done = export(*args, **kwargs)
        done.source.unlink()  # the trainer's keep_ckpts, once its next checkpoint is written
        return done

    monkeypatch.setattr(generators, "export_generator", training_removes_the_source)
    out = tmp_path / "G.safetensors"
    assert main(["export", str(tmp_cfg_run), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert out.is_file() and f"to {out}: " in said and "against the checkpoint's" not in said


# --------------------------------------------------------------------------- torch.export programs (export --out G.pt2)


def test_a_generator_program_runs_without_ganforge_and_draws_what_the_run_draws(tmp_path, tiny_cfg, capsys):
    import json
    import subprocess
    import sys

    from ganforge.cli import main

    run = train(tiny_cfg(**{"train.ema_kimg": 0.01}), out=tmp_path / "runs", log=lambda msg: None)
    out = tmp_path / "G.pt2"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "torch.export.load(" in capsys.readouterr().out
    G = load_generator(run)
    extra = {"ganforge.json": ""}
    program = torch.export.load(out, extra_files=extra).module()
    meta = json.loads(extra["ganforge.json"])
    assert meta["weights"] == "G_ema" and meta["z_dim"] == G.z_dim and meta["n_classes"] == 0
    assert meta["output"].startswith(f"float32 [batch, {G.channels}, {G.img_size}, {G.img_size}], pixels in [-1, 1]")
    for n in (1, 7):  # the batch size is free
        z = G.make_z(n, torch.Generator().manual_seed(n))
        with torch.no_grad():
            assert (program(z) - G(z)).abs().max() <= 1e-5
    # a Python that cannot import ganforge loads and runs it
    code = ("import sys; sys.modules['ganforge'] = None; import torch; "
            f"m = torch.export.load({str(out)!r}).module(); x = m(torch.randn(3, {G.z_dim})); "
            "print(tuple(x.shape), bool(x.abs().max() <= 1))")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split("\n")[0] == f"({3}, {G.channels}, {G.img_size}, {G.img_size}) True"


def test_a_conditional_generator_program_takes_classes_and_comes_from_a_generator_file(tmp_path, tiny_cfg):
    import json

    from ganforge.generators import export_generator

    run = train(tiny_cfg(**{"model.n_classes": 2, "model.label_dropout": 0.5}), out=tmp_path / "runs",
                log=lambda msg: None)
    weights = export_generator(run, tmp_path / "G.safetensors", ema=False).path
    done = export_generator(weights, tmp_path / "G.PT2")  # the suffix in any case, as .safetensors
    assert done.weights == "G" and done.source == weights
    extra = {"ganforge.json": ""}
    program = torch.export.load(done.path, extra_files=extra).module()
    meta = json.loads(extra["ganforge.json"])
    assert meta["classes"] == ["class0", "class1"] and set(meta["inputs"]) == {"z", "y"}
    assert meta["inputs"]["y"].endswith("0 to 1, or 2 for none (G trained with model.label_dropout)")
    G = load_generator(run, ema=False)
    z, y = G.make_z(6, torch.Generator().manual_seed(0)), torch.tensor([0, 1, 1, 0, 0, 1])
    with torch.no_grad():
        assert (program(z, y) - G(z, y)).abs().max() <= 1e-5
        assert (program(z, 1 - y) - program(z, y)).abs().max() > 1e-3  # the classes reach the images
        none = torch.full_like(y, 2)
        assert (program(z, none) - G(z, none)).abs().max() <= 1e-5


def test_a_generator_program_is_refused_where_ganforge_wants_weights_and_written_only_when_it_works(
        tmp_path, tmp_cfg_run, monkeypatch, capsys):
    from ganforge import generators
    from ganforge.cli import main

    out = tmp_path / "G.pt2"
    assert main(["export", str(tmp_cfg_run), "--out", str(out)]) == 0
    for command in (["sample", str(out), "--n", "4", "--out", str(tmp_path / "grid.png")],
                    ["eval", str(out), "--metrics", "fd_digits", "--n", "16"], ["train", "--resume", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "is a torch.export program" in err and "a .safetensors export" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "grid.png").exists()
    import zipfile

    with zipfile.ZipFile(tmp_path / "old.pt2", "w") as archive:  # the layout torch 2.4 writes
        for name in ("serialized_exported_program.json", "serialized_state_dict.pt", "version"):
            archive.writestr(name, "{}")
    assert main(["sample", str(tmp_path / "old.pt2"), "--n", "4", "--out", str(tmp_path / "grid.png")]) == 2
    assert "old.pt2 is a torch.export program" in capsys.readouterr().err
    before = out.read_bytes()
    # a net torch.export cannot trace, or whose program draws other images: one line, and the old file kept
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("data-dependent")))
    assert main(["export", str(tmp_cfg_run), "--out", str(out), "--force"]) == 2
    assert "cannot be exported as a torch.export program (data-dependent)" in capsys.readouterr().err
    monkeypatch.undo()
    load = torch.export.load

    class Drifting:
        def __init__(self, *args, **kwargs):
            self.program = load(*args, **kwargs).module()

        def module(self):
            return lambda *inputs: self.program(*inputs) + 0.01

    monkeypatch.setattr(generators.torch.export, "load", Drifting)
    assert main(["export", str(tmp_cfg_run), "--out", str(out), "--force"]) == 2
    assert "program draws other images than G itself" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_a_net_torch_export_cannot_trace_is_refused_in_one_line_and_quietly(tmp_path, capfd):
    from torch import nn

    from ganforge.generators import save_generator_program
    from ganforge.models import Generator

    class Branching(Generator):  # a plugin's G whose forward branches on its values
        def __init__(self) -> None:
            super().__init__(4, 8, 1)
            self.linear = nn.Linear(4, 64)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            x = self.linear(z)
            if x.sum() > 0:
                x = -x
            return x.tanh().view(-1, 1, 8, 8)

    capfd.readouterr()
    with pytest.raises(UserError, match=r"^Branching cannot be exported as a torch.export program \(.+\); export it "
                                        r"as .safetensors"):
        save_generator_program(Branching(), tmp_path / "G.pt2", {})
    said = capfd.readouterr()
    assert (said.out, said.err) == ("", "") and not (tmp_path / "G.pt2").exists()  # torch's graph dump kept back
