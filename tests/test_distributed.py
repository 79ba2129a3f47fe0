"""Data parallel training on 2 CPU processes with gloo."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ganforge.config import from_dict, load_config
from ganforge.trainer import Trainer

from .conftest import tiny_overrides
from .test_train import assert_same_state

NO_BN = {"model.g_norm": '"none"', "model.d_norm": '"none"', "train.batch_size": 8, "train.kimg": 0.048,
         "train.tick_kimg": 0.016, "train.ema_kimg": 0.02}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _FastClock:
    """The time module, with a clock that runs 1,000 times fast: one rank passes a time limit long before the
    other."""

    def __getattr__(self, name: str):
        return getattr(time, name)

    @staticmethod
    def perf_counter() -> float:
        return time.perf_counter() * 1000


def _worker(rank: int, world: int, port: int, folder: str, run_dir: str, out: str, extra: dict | None = None,
            fast_clock_rank: int = -1, scores: list[float] | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # a rank left waiting in a collective fails the test within a minute rather than hanging it
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        if rank == fast_clock_rank:
            import ganforge.trainer

            ganforge.trainer.time = _FastClock()
        if scores is not None:  # rank 0's evaluations, one per tick
            values = iter(scores)
            Trainer._evaluate = lambda self: [{"metric": "fd_digits", "value": next(values)}]
        cfg = load_config(preset="default", overrides=tiny_overrides(Path(folder), **{**NO_BN, **(extra or {})}))
        trainer = Trainer(cfg, Path(run_dir), log=lambda msg: None)
        trainer.run()
        torch.save({"G": trainer.state.G.state_dict(), "D": trainer.state.D.state_dict(),
                    "G_ema": trainer.state.G_ema.state_dict(), "nimg": trainer.state.nimg},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
    os._exit(0)  # as the CLI's torchrun workers do: DDP's leftover gloo threads can abort the interpreter's shutdown


def _resume_worker(rank: int, world: int, port: int, run_dir: str, out: str, overrides: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        from ganforge.trainer import resume

        resume(Path(run_dir), overrides, log=lambda msg: None)
        (Path(out) / f"resumed{rank}").touch()
    finally:
        dist.destroy_process_group()
    os._exit(0)


def _losses(run_dir: Path) -> list[tuple[float, float]]:
    return [(s["d_loss"], s["g_loss"]) for s in map(json.loads, (run_dir / "stats.jsonl").read_text().splitlines())]


def test_two_processes_hold_identical_weights_and_track_one_process(tmp_path, image_folder):
    two = tmp_path / "two"
    two.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(image_folder), str(two), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("G", "D", "G_ema"):
        for key in rank0[net]:
            assert torch.equal(rank0[net][key], rank1[net][key]), f"{net}.{key} differs between ranks"
    assert not (two / "rank1").exists() and len(list((two / "checkpoints").glob("ckpt-*.pt"))) >= 1

    one = tmp_path / "one"
    one.mkdir()
    cfg = load_config(preset="default", overrides=tiny_overrides(image_folder, **NO_BN))
    trainer = Trainer(cfg, one, log=lambda msg: None)
    trainer.run()
    # Same global batch of data and noise, gradients averaged by DDP: the same trajectory up to the order
    # of floating-point sums. Tolerance: 1e-4 on losses and weights after 6 Adam steps.
    losses_one, losses_two = _losses(one), _losses(two)
    assert len(losses_one) == len(losses_two) == 3
    for (d1, g1), (d2, g2) in zip(losses_one, losses_two, strict=True):
        assert abs(d1 - d2) < 1e-4 and abs(g1 - g2) < 1e-4
    for key, value in trainer.state.G.state_dict().items():
        assert (value - rank0["G"][key]).abs().max().item() < 1e-4, key


def test_ranks_stop_together_when_one_passes_the_time_limit(tmp_path, image_folder):
    # rank 1's clock passes train.minutes=0.05 (3 s) within milliseconds, rank 0's never in this short run:
    # both must end at the same step, or one would wait for the other in its next collective
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mp.spawn(_worker, args=(2, free_port(), str(image_folder), str(run_dir), str(tmp_path),
                            {"train.minutes": 0.05, "train.kimg": 1.0}, 1), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["nimg"] == rank1["nimg"] < 1000
    for net in ("G", "D"):
        for key in rank0[net]:
            assert torch.equal(rank0[net][key], rank1[net][key]), f"{net}.{key} differs between ranks"
    assert (run_dir / "checkpoints" / f"ckpt-{rank0['nimg']:09d}.pt").is_file()  # rank 0 ended it as a run


def test_ranks_stop_together_when_rank_zero_stops_early(tmp_path, image_folder):
    # only rank 0 evaluates; at its evaluation of 0.032 kimg fd_digits has not improved for 0.016 kimg
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    settings = {"eval.every_kimg": 0.008, "eval.patience_kimg": 0.016, "train.tick_kimg": 0.008, "train.kimg": 1.0}
    mp.spawn(_worker, args=(2, free_port(), str(image_folder), str(run_dir), str(tmp_path), settings, -1,
                            [5.0, 4.0, 4.5, 4.2, 3.0]), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["nimg"] == rank1["nimg"] == 32
    for net in ("G", "D"):
        for key in rank0[net]:
            assert torch.equal(rank0[net][key], rank1[net][key]), f"{net}.{key} differs between ranks"


def test_a_two_process_run_stopped_and_resumed_ends_as_an_uninterrupted_one(tmp_path, image_folder):
    from ganforge import checkpoint as ckpt_io

    runs = {}
    for name, kimg in (("full", 0.048), ("half", 0.032)):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        mp.spawn(_worker, args=(2, free_port(), str(image_folder), str(runs[name]), str(tmp_path),
                                {"train.kimg": kimg}), nprocs=2, join=True)
    # _worker trains a Trainer as train() would, less the config.toml that train() writes first
    saved = ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(runs["half"]))["config"]
    (runs["half"] / "config.toml").write_text(from_dict(saved).to_toml())
    mp.spawn(_resume_worker, args=(2, free_port(), str(runs["half"]), str(tmp_path), ["train.kimg=0.048"]),
             nprocs=2, join=True)
    assert (tmp_path / "resumed0").is_file() and (tmp_path / "resumed1").is_file()
    full, resumed = (ckpt_io.load_checkpoint(ckpt_io.resolve_checkpoint(runs[n])) for n in ("full", "half"))
    assert full["nimg"] == resumed["nimg"] == 48
    assert_same_state(full, resumed)  # G, D, G_ema and both optimizers' states
    first = ckpt_io.load_checkpoint(ckpt_io.list_checkpoints(runs["half"])[0])  # and it trained after the resume
    assert first["nimg"] < 48 and any(not torch.equal(v, first["G"][k]) for k, v in full["G"].items())
    stats = [json.loads(line) for line in (runs["half"] / "stats.jsonl").read_text().splitlines()]
    assert [s["kimg"] for s in stats] == pytest.approx([0.016, 0.032, 0.048])


def test_torchrun_cli_writes_one_run_from_rank_zero(tmp_path, image_folder):
    overrides = tiny_overrides(image_folder, **NO_BN)
    sets = [a for item in overrides for a in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "--log-dir", str(tmp_path / "torchrun"), "-m", "ganforge", "train", "--out", str(tmp_path / "runs"), *sets],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "progress.gif").is_file()
    assert len((runs[0] / "stats.jsonl").read_text().splitlines()) == 3
    assert "2 processes" in proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr[-2000:]  # e.g. a deprecated DDP argument, printed per rank


def test_a_torchrun_worker_leaves_without_interpreter_shutdown(monkeypatch, capsys, tmp_path):
    from ganforge import distributed
    from ganforge.cli import main

    exits = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", fake_exit)
    assert main(["presets"]) == 0 and exits == []  # a process outside a torchrun group returns as usual
    monkeypatch.setattr(distributed, "_joined_from_env", True)
    try:
        main(["sample", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "grid.png")])
    except SystemExit:
        pass
    assert exits == [2] and "no-such-run" in capsys.readouterr().err


def test_errors_of_the_other_ranks_name_their_rank(monkeypatch, capsys, tmp_path):
    from ganforge.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, prefix in (("0", "error: "), ("1", "error (rank 1): ")):
        monkeypatch.setenv("RANK", rank)
        assert main(["sample", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "grid.png")]) == 2
        assert capsys.readouterr().err.startswith(prefix)


def test_a_rank_whose_peer_stopped_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    """A Ctrl-C that stops rank 0 while it starts up finds rank 1 already training: its next collective fails."""
    from ganforge import cli, distributed

    gloo = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
            "[127.0.0.1]:7907. This is typically caused by a remote worker crashing. Check the logs of the remote "
            "worker before reporting an error.")

    def collective_fails(args):
        raise RuntimeError(gloo)

    monkeypatch.setattr(cli, "cmd_presets", collective_fails)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError):  # outside a torchrun group it is no peer's doing: the traceback stays
        cli.main(["presets"])
    monkeypatch.setattr(distributed, "_joined_from_env", True)
    monkeypatch.setattr(os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit) as exited:
        cli.main(["presets"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "error (rank 1): another process of this torchrun launch stopped, so this one cannot go on (gloo: "
        "Connection closed by peer [127.0.0.1]:7907); that process's own line says why\n")


def test_an_interrupted_launch_is_told_to_resume_the_way_it_was_launched(monkeypatch):
    from ganforge import distributed

    assert distributed.launch_command() == "ganforge"
    monkeypatch.setattr(distributed, "info", lambda: distributed.DistInfo(rank=0, world_size=4, local_rank=0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert distributed.launch_command() == "torchrun --nproc_per_node 4 -m ganforge"
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.launch_command() == "torchrun --nnodes 2 --nproc_per_node 2 ... -m ganforge"


def test_torchrun_errors_say_which_rank_printed_them(tmp_path, image_folder):
    sets = [a for item in tiny_overrides(image_folder, **{"train.batch_size": 5}) for a in ("--set", item)]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "--log-dir", str(tmp_path / "torchrun"), "-m", "ganforge", "train", "--out", str(tmp_path / "runs"), *sets],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "must divide evenly across 2 processes" in ln]
    # each rank prints its own line, named by rank, unless torchrun stops it first (it sends SIGTERM to the
    # others once one rank has failed), so one line or both
    prefixes = sorted(ln.split(":")[0] for ln in lines)
    assert prefixes in (["error"], ["error (rank 1)"], ["error", "error (rank 1)"]), proc.stderr[-2000:]
    assert all(ln.endswith("use --set train.batch_size=4 or 6") for ln in lines)  # the cure, both ways
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_what_torchrun_cannot_train_is_refused_before_a_run_directory_is_made(monkeypatch, tmp_path, image_folder):
    from ganforge import distributed
    from ganforge.errors import UserError
    from ganforge.step import check_batch_and_order
    from ganforge.trainer import train

    monkeypatch.setattr(distributed, "info", lambda: distributed.DistInfo(rank=0, world_size=2, local_rank=0))
    cfg = load_config(overrides=tiny_overrides(image_folder, **{"train.step_order": '"simultaneous"'}))
    with pytest.raises(UserError, match=r"train.step_order=simultaneous does not run under torchrun .*; use --set "
                                        r"train.step_order=d_first, or train in one process$"):
        train(cfg, out=tmp_path / "runs", log=lambda msg: None)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError, match="train.batch_size 7 must divide evenly across 2 processes"):
        check_batch_and_order(load_config(overrides=tiny_overrides(image_folder, **{"train.batch_size": 7})))
    check_batch_and_order(load_config(overrides=tiny_overrides(image_folder)))  # batch 8, d_first: fine
    # PacGAN packs within each process's share: 6 splits into 3 and 3, which pairs do not fill
    with pytest.raises(UserError) as info:
        check_batch_and_order(load_config(overrides=tiny_overrides(image_folder, **{"train.batch_size": 6,
                                                                                "model.pac": 2})))
    assert str(info.value) == ("train.batch_size 6 must split across 2 processes into shares that are multiples of "
                               "model.pac=2 (each trains its share, and D judges packs of 2); use --set "
                               "train.batch_size=4 or 8")
    check_batch_and_order(load_config(overrides=tiny_overrides(image_folder, **{"model.pac": 2})))  # 4 and 4
