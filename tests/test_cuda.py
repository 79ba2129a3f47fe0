"""What only a GPU can show: deterministic GPU runs that resume bit for bit, and train.cuda_graph training as
the eager step does. Skipped where torch sees no CUDA device (as in CI); on a GPU machine,
`python -m pytest tests/test_cuda.py`."""

from __future__ import annotations

import pytest
import torch

from ganforge import checkpoint as ckpt_io
from ganforge.trainer import resume, train

from .test_train import assert_same_state, final_weights, quiet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CASES = {
    # the default preset's adaptive DiffAugment (off in tiny_cfg) and EMA: iterations of two kinds
    "default": {"train.diffaugment": '"translation,cutout"', "train.ada_target": 0.6},
    "lazy-r1": {"loss.r1_gamma": 1.0, "loss.r1_every": 4},
    "dcgan-ema": {"train.ema_kimg": 0.05},
    "g-first-reuse": {"model.g": '"mlp"', "model.d": '"mlp"', "model.g_hidden": "[16, 16]",
                      "model.d_hidden": "[16]", "model.g_norm_first": "false", "train.step_order": '"g_first"',
                      "train.reuse_fake": "true", "loss.d_reduction": '"mean"'},
    "wgan-gp": {"loss.name": '"wgan"', "loss.gp_weight": 10.0, "loss.r1_gamma": 0.0, "model.d_norm": '"none"',
                "loss.n_critic": 2},
    "ada-lecam-bf16": {"train.diffaugment": '"color,translation,cutout"', "train.ada_target": 0.6,
                       "loss.lecam": 0.01, "train.amp": '"bf16"'},
    "acgan": {"model.n_classes": 2, "model.g_cond": '"concat"', "model.d_cond": '"acgan"'},
}
GPU = {"train.device": '"cuda"', "train.deterministic": "true"}


def runs(tmp_path, tiny_cfg, extra: dict, **settings: object):
    """A run of 13 iterations and one of 6 resumed to 13, on the GPU under train.deterministic."""
    full = train(tiny_cfg(**extra, **GPU, **settings, **{"train.kimg": 0.104}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **GPU, **settings, **{"train.kimg": 0.048}), out=tmp_path / "b", log=quiet)
    assert resume(half, ["train.kimg=0.104"], log=quiet) == half
    return full, half


@pytest.mark.parametrize("extra", CASES.values(), ids=CASES.keys())
def test_deterministic_gpu_run_resumes_bit_for_bit(tmp_path, tiny_cfg, extra):
    full, resumed = runs(tmp_path, tiny_cfg, extra)
    a, b = final_weights(full), final_weights(resumed)
    assert_same_state(a, b)
    first = ckpt_io.load_checkpoint(ckpt_io.list_checkpoints(resumed)[0])
    assert any(not torch.equal(v, first["G"][k]) for k, v in a["G"].items() if k.endswith("weight"))


@pytest.mark.parametrize("extra", CASES.values(), ids=CASES.keys())
def test_cuda_graph_trains_the_weights_the_eager_step_trains(tmp_path, tiny_cfg, extra):
    """The replayed graphs launch the eager step's kernels on the same values, noise draws included."""
    eager = train(tiny_cfg(**extra, **GPU, **{"train.kimg": 0.104}), out=tmp_path / "eager", log=quiet)
    graphed = train(tiny_cfg(**extra, **GPU, **{"train.kimg": 0.104, "train.cuda_graph": "true"}),
                    out=tmp_path / "graphed", log=quiet)
    assert_same_state(final_weights(eager), final_weights(graphed))


@pytest.mark.parametrize("extra", CASES.values(), ids=CASES.keys())
def test_cuda_graph_run_resumes_bit_for_bit(tmp_path, tiny_cfg, extra):
    full, resumed = runs(tmp_path, tiny_cfg, extra, **{"train.cuda_graph": "true"})
    assert_same_state(final_weights(full), final_weights(resumed))


def test_cuda_graph_replays_after_one_eager_sighting_of_each_kind(tiny_cfg, tmp_path):
    from ganforge.trainer import Trainer

    trainer = Trainer(tiny_cfg(**{"train.device": '"cuda"', "train.cuda_graph": "true"}), tmp_path / "run",
                      log=quiet)
    stepper, batch = trainer.stepper, trainer.cfg.train.batch_size
    for iteration in range(6):
        stepper.set_progress(iteration * batch)
        stepper([trainer.real_batch(iteration)])
        if iteration == 1:  # run eagerly, then captured and replayed once
            captured = [p.detach().clone() for p in trainer.state.G.parameters()]
    torch.cuda.synchronize()
    assert len(stepper.graphs.graphs) == 1 and stepper.graphs.replays == 5
    assert any(not torch.equal(a, b) for a, b in zip(captured, trainer.state.G.parameters(), strict=True))


def test_the_cuda_graph_benchmark_runs_on_tiny_settings(monkeypatch, capsys):
    from .test_benchmarks import run_benchmark, table_rows

    out = run_benchmark("cuda_graph.py", "--presets", "mnist-mlp-small", "--batches", "64", "--reps", "1",
                        "--seconds", "0.2", "--window", "0.1", "--check", "5", monkeypatch=monkeypatch, capsys=capsys)
    (row,) = table_rows(out)
    assert row[0] == "mnist-mlp-small" and row[6] == "yes"
