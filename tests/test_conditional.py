"""Class-conditional GANs: shapes of every conditioning mode, the label paths, the metrics and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganforge import checkpoint as ckpt_io
from ganforge.cli import main
from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.metrics.core import METRIC_VALUES, EvalContext, ImageSet, evaluate, evaluate_run
from ganforge.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator
from ganforge.trainer import resume, train

from .test_train import assert_same_state, final_weights, quiet


@pytest.mark.parametrize("g_name", GENERATORS.names())
@pytest.mark.parametrize("g_cond", ["concat", "cbn"])
@pytest.mark.parametrize("d_name", DISCRIMINATORS.names())
@pytest.mark.parametrize("d_cond", ["concat", "projection", "acgan"])
def test_every_conditioning_mode_has_the_right_shapes(g_name, g_cond, d_name, d_cond):
    cfg = load_config(preset="default", overrides=[
        f"model.g={g_name}", f"model.d={d_name}", f"model.g_cond={g_cond}", f"model.d_cond={d_cond}",
        "model.n_classes=5", "data.img_size=16", "model.g_width=8", "model.d_width=8", "model.g_hidden=[16]",
        "model.d_hidden=[16]", "model.z_dim=12", "model.g_norm=bn"])
    G, D = build_generator(cfg), build_discriminator(cfg)
    z, y = torch.randn(6, 12), torch.tensor([0, 1, 2, 3, 4, 0])
    fake = G(z, y)
    assert fake.shape == (6, 1, 16, 16)
    out = D(fake, y)
    if d_cond == "acgan":
        logits, classes = out
        assert classes.shape == (6, 5)
    else:
        logits = out
    assert logits.shape == (6,) and torch.isfinite(logits).all()
    # the label reaches G's output: same z, other class, other image (cBN starts as plain BN, so give each
    # class its own shift first, as training would)
    from ganforge.models.conditional import ConditionalBatchNorm

    for m in G.modules():
        if isinstance(m, ConditionalBatchNorm):
            torch.nn.init.normal_(m.beta.weight)
    G.eval()
    assert (G(z, y) - G(z, (y + 1) % 5)).abs().max() > 0


def test_sample_checks_its_arguments_with_clear_messages():
    small = ["data.img_size=16", "model.g_width=8", "model.z_dim=12"]
    G = build_generator(load_config(preset="mnist-cgan", overrides=small))
    assert G.sample(4, seed=0, labels=[1, 2, 3, 9]).shape == (4, 1, 16, 16)
    assert torch.equal(G.sample(4, seed=0, labels=torch.tensor([1.0, 2.0, 3.0, 9.0])),
                       G.sample(4, seed=0, labels=[1, 2, 3, 9]))
    assert G.sample(0).shape == (0, 1, 16, 16)
    assert G.interpolate(3, 2, seed=0).shape == (6, 1, 16, 16)  # classes in turn, one per walk
    for kwargs, message in (({"n": -1}, "n >= 0"), ({"n": 2, "batch_size": 0}, "batch_size >= 1"),
                            ({"n": 2, "labels": [0, 10]}, r"0\.\.9, got 0\.\.10"),
                            ({"n": 2, "labels": [-1, 0]}, r"0\.\.9"),
                            ({"n": 2, "labels": [0.5, 1.0]}, "whole class numbers"),
                            ({"n": 2, "labels": [True, False]}, "class numbers"),
                            ({"n": 2, "labels": [1, 2, 3]}, r"shape \(2,\)")):
        with pytest.raises(ValueError, match=message):
            G.sample(**kwargs)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        G.interpolate(2, 3, labels=[0, 12])
    # one class for all, and classes by name
    assert torch.equal(G.sample(3, seed=0, labels=7), G.sample(3, seed=0, labels=[7, 7, 7]))
    G.classes = [f"{d} - digit" for d in range(10)]
    assert torch.equal(G.sample(2, seed=0, labels=["3 - digit", 9]), G.sample(2, seed=0, labels=[3, 9]))
    assert torch.equal(G.sample(2, seed=0, labels="1 - digit"), G.sample(2, seed=0, labels=[1, 1]))
    with pytest.raises(ValueError, match=r"'cat' is not a class name of this generator; its classes are 0 - digit"):
        G.sample(2, labels=["cat", 1])
    plain = build_generator(load_config(preset="default", overrides=small))
    for call in (lambda: plain.sample(2, labels=[0, 1]), lambda: plain.interpolate(2, 3, labels=[0, 1])):
        with pytest.raises(ValueError, match="unconditional"):
            call()


def test_conditional_batch_norm_uses_per_class_scale_and_shift():
    from ganforge.models.conditional import ConditionalBatchNorm

    cbn = ConditionalBatchNorm(torch.nn.BatchNorm2d(3), n_classes=2)
    with torch.no_grad():
        cbn.gamma.weight[1] = 2.0
        cbn.beta.weight[1] = 0.5
    x = torch.randn(4, 3, 5, 5)
    cbn.labels = torch.tensor([0, 0, 1, 1])
    out = cbn(x)
    normed = torch.nn.functional.batch_norm(x, None, None, training=True)
    assert (out[:2] - normed[:2]).abs().max() < 1e-5
    assert (out[2:] - (2 * normed[2:] + 0.5)).abs().max() < 1e-5


def test_a_conditional_generator_learns_the_requested_digit(tmp_path):
    """A few seconds of a small cGAN on the bundled digits: the digit classifier recognises the requested
    class far above the 10% of chance."""
    cfg = load_config(preset="default", overrides=[
        "model.n_classes=10", "model.d_cond=concat", "data.img_size=28", "model.g_width=32", "model.d_width=32",
        "train.batch_size=16", "train.kimg=5", "train.tick_kimg=5", "train.ema_kimg=0.5", "train.grid_size=10",
        "train.seed=0", "train.device=cpu"])
    run_dir = train(cfg, out=tmp_path, log=quiet)
    records = evaluate_run(run_dir, ["class_acc"], n=500, write=False, device="auto")
    acc = records[0]["value"]
    assert acc > 0.3, acc
    assert len(records[0]["per_class"]) == 10
    assert (run_dir / "final.png").is_file()


def test_conditional_training_resumes_bit_for_bit(tmp_path, tiny_cfg):
    extra = {"model.n_classes": 2, "model.d_cond": '"acgan"', "model.g_cond": '"cbn"'}
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.064}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.032}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.064"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))


@pytest.mark.parametrize("g_cond", ["concat", "cbn"])
@pytest.mark.parametrize("d_cond", ["concat", "projection"])
def test_label_dropout_gives_g_and_d_a_no_label_class_and_drops_that_share_of_labels(tmp_path, tiny_cfg, g_cond,
                                                                                       d_cond):
    from ganforge.losses import get_loss
    from ganforge.step import Stepper, build_state

    cfg = tiny_cfg(**{"model.n_classes": 2, "model.g_cond": f'"{g_cond}"', "model.d_cond": f'"{d_cond}"',
                      "model.label_dropout": 0.25})
    state = build_state(cfg, torch.device("cpu"))
    rows = {m.num_embeddings for net in (state.G, state.D) for m in net.modules() if isinstance(m, torch.nn.Embedding)}
    assert rows == {3}  # the two classes and "no label"
    stepper = Stepper(state, get_loss(cfg.loss.name))
    y = torch.zeros(20_000, dtype=torch.long)
    dropped = stepper._drop_labels(y)
    assert set(dropped.unique().tolist()) == {0, 2}
    assert abs((dropped == 2).float().mean().item() - 0.25) < 0.015
    with pytest.raises(ValueError, match="labels must lie in 0..1"):  # samples name a class, never "no label"
        state.G.sample(2, labels=[0, 2])
    run_dir = train(cfg, out=tmp_path, log=quiet)
    weights = final_weights(run_dir)["G"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    plain = train(tiny_cfg(**{"model.n_classes": 2, "model.g_cond": f'"{g_cond}"', "model.d_cond": f'"{d_cond}"'}),
                  out=tmp_path / "plain", log=quiet)
    with pytest.raises(UserError, match="built with model.label_dropout = 0.0"):  # other embedding shapes
        resume(plain, ["train.kimg=0.096", "model.label_dropout=0.25"], log=quiet)


def test_label_dropout_resumes_bit_for_bit(tmp_path, tiny_cfg):
    extra = {"model.n_classes": 2, "model.d_cond": '"projection"', "model.label_dropout": 0.5}
    full = train(tiny_cfg(**extra, **{"train.kimg": 0.064}), out=tmp_path / "a", log=quiet)
    half = train(tiny_cfg(**extra, **{"train.kimg": 0.032}), out=tmp_path / "b", log=quiet)
    resume(half, ["train.kimg=0.064"], log=quiet)
    assert_same_state(final_weights(full), final_weights(half))


def test_label_dropout_is_checked(tiny_cfg):
    with pytest.raises(UserError, match=r"model.label_dropout is a share of labels, in \[0, 1\), got 1.0"):
        tiny_cfg(**{"model.n_classes": 2, "model.label_dropout": 1})
    with pytest.raises(UserError, match="set model.n_classes, or leave it at 0"):
        tiny_cfg(**{"model.label_dropout": 0.5})
    with pytest.raises(UserError, match="does not combine with model.d_cond=acgan"):
        tiny_cfg(**{"model.n_classes": 2, "model.d_cond": '"acgan"', "model.label_dropout": 0.5})


def test_too_few_classes_for_the_data_is_refused(tmp_path, tiny_cfg):
    with pytest.raises(UserError, match="model.n_classes=2"):
        train(tiny_cfg(**{"model.n_classes": 1}), out=tmp_path, log=quiet)
    with pytest.raises(UserError, match="pac"):
        tiny_cfg(**{"model.n_classes": 2, "model.pac": 2})
    with pytest.raises(UserError, match="d_cond"):
        tiny_cfg(**{"model.n_classes": 2, "model.d_cond": '"aux"'})


def _digits(n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    from ganforge.config import DataConfig
    from ganforge.data import load_dataset

    data = load_dataset(DataConfig())
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n]  # the file is sorted by digit
    return data.batch(idx), data.labels[idx]


def test_class_acc_and_per_class_fd_on_real_digits():
    images, labels = _digits()
    real = ImageSet(images[:1000], "mnist5k", "a", labels=labels[:1000])

    def run(fake_labels):
        ctx = EvalContext(ImageSet(images[1000:], "generated", "b", labels=fake_labels), real)
        records = evaluate(ctx, ["class_acc", "fd_digits_per_class"])
        assert [r["metric"] for r in records] == [*METRIC_VALUES["class_acc"], *METRIC_VALUES["fd_digits_per_class"]]
        return {r["metric"]: r for r in records}

    right = run(labels[1000:])
    wrong = run((labels[1000:] + 1) % 10)  # every image asked to be the next digit
    assert right["class_acc"]["value"] > 0.95
    assert wrong["class_acc"]["value"] < 0.05
    assert right["fd_digits_per_class"]["value"] < 0.5 * wrong["fd_digits_per_class"]["value"]
    assert len(right["fd_digits_per_class"]["per_class"]) == 10


def test_class_metrics_need_a_conditional_generator():
    images, labels = _digits(200)
    ctx = EvalContext(ImageSet(images, "generated", "b"), ImageSet(images, "mnist5k", "a", labels=labels))
    with pytest.raises(UserError, match="conditional"):
        evaluate(ctx, ["class_acc"])


@pytest.fixture
def conditional_run(tmp_path, tiny_cfg):
    return train(tiny_cfg(**{"model.n_classes": 2, "train.kimg": 0.016, "train.tick_kimg": 0.016}),
                 out=tmp_path / "runs", log=quiet)


def test_the_report_says_how_the_networks_take_the_label(conditional_run):
    from ganforge.html_report import REPORT_NAME

    page = (conditional_run / REPORT_NAME).read_text()
    assert "G dcgan, D dcgan, z_dim 8; conditional on 2 classes (G concat, D concat)" in page


def test_cli_samples_one_class_and_class_grids(tmp_path, conditional_run, capsys):
    assert main(["sample", str(conditional_run), "--class", "1", "--n", "6", "--out", str(tmp_path / "c1.png")]) == 0
    assert main(["sample", str(conditional_run), "--n", "6", "--out", str(tmp_path / "grid.png")]) == 0
    assert main(["sample", str(conditional_run), "--class", "1", "--n", "5", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["arr_0"].shape == (5, 16, 16, 1)
        assert f["labels"].tolist() == [1] * 5
    capsys.readouterr()
    assert main(["sample", str(conditional_run), "--class", "2", "--n", "4", "--out", str(tmp_path / "x.png")]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    assert main(["sample", str(conditional_run), "--class", "cats", "--n", "4", "--out", str(tmp_path / "x.png")]) == 2
    assert "--class 'cats' is not a class of this run; its classes: class0, class1, or a number from 0 to 1" in \
        capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    # by name: the data set's class (here its subfolder) as the checkpoint recorded it
    assert main(["sample", str(conditional_run), "--class", "class1", "--n", "3", "--out", str(tmp_path / "n.npz")]) \
        == 0
    with np.load(tmp_path / "n.npz") as f:
        assert f["labels"].tolist() == [1] * 3
    assert main(["sample", str(conditional_run), "--class", "CLASS0", "--n", "2", "--out", str(tmp_path / "u.npz")]) \
        == 0  # a name in other letter case
    with np.load(tmp_path / "u.npz") as f:
        assert f["labels"].tolist() == [0] * 2


def test_class_is_refused_for_an_unconditional_run(tmp_path, tiny_cfg, capsys):
    run_dir = train(tiny_cfg(**{"train.kimg": 0.016, "train.tick_kimg": 0.016}), out=tmp_path / "runs", log=quiet)
    assert main(["sample", str(run_dir), "--class", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_a_checkpoint_alone_rebuilds_a_conditional_generator(conditional_run):
    from ganforge.generators import load_generator

    G = load_generator(ckpt_io.resolve_checkpoint(conditional_run))
    assert G.n_classes == 2
    assert G.classes == ["class0", "class1"]
    assert G.sample(4, seed=1, labels=torch.tensor([0, 1, 0, 1])).shape == (4, 1, 16, 16)
    assert torch.equal(G.sample(4, seed=1), G.sample(4, seed=1, labels=torch.tensor([0, 1, 0, 1])))


def test_summary_of_a_conditional_preset_shows_the_label_paths(capsys):
    assert main(["summary", "--preset", "mnist-acgan"]) == 0
    out = capsys.readouterr().out
    assert "label y [B] of 10 classes" in out
    assert "classifier (Linear)" in out and "[[2], [2, 10]]" in out


def test_class_metrics_at_ticks_need_a_conditional_config(tiny_cfg):
    with pytest.raises(UserError, match=r"class_acc needs a conditional model \(model.n_classes > 0\); set "
                                         r"model.n_classes, or drop it$"):
        tiny_cfg(**{"eval.every_kimg": 1.0, "eval.metrics": '["fd_digits", "class_acc"]'})
    with pytest.raises(UserError, match="class_acc and fd_digits_per_class need a conditional model .* drop them$"):
        tiny_cfg(**{"eval.every_kimg": 1.0, "eval.metrics": '["fd_digits_per_class", "class_acc"]'})
    cfg = tiny_cfg(**{"eval.every_kimg": 1.0, "eval.metrics": '["class_acc"]', "model.n_classes": 2})
    assert cfg.eval.metrics == ["class_acc"]


def test_tick_metrics_that_cannot_run_on_this_config_are_refused_before_training(tiny_cfg):
    with pytest.raises(UserError, match="class_acc reads digits 0-9, but model.n_classes is 12"):
        tiny_cfg(**{"eval.every_kimg": 1.0, "eval.metrics": '["class_acc"]', "model.n_classes": 12})
    with pytest.raises(UserError, match="modes counts the digit triples of 3-channel"):
        tiny_cfg(**{"eval.every_kimg": 1.0, "eval.metrics": '["modes"]'})
    assert tiny_cfg(**{"eval.every_kimg": 1.0, "eval.metrics": '["modes"]', "data.channels": 3}).data.channels == 3
    assert tiny_cfg(**{"eval.metrics": '["modes"]'}).eval.metrics == ["modes"]  # no ticks, nothing to check


def test_class_names_say_which_digit_each_label_is():
    from ganforge.metrics.core import class_digits

    assert class_digits([str(d) for d in range(10)]) == list(range(10))
    assert class_digits(["0 - zero", "1 - one"]) == [0, 1]  # torchvision's MNIST
    assert class_digits(["3", "7"]) == [3, 7]
    assert class_digits(["class0", "class1"]) is None
    assert class_digits(["T-shirt/top", "Trouser"]) is None
    assert class_digits(["7", "07"]) is None  # two names for one digit
    assert class_digits(["12"]) is None


def test_class_acc_reads_labels_through_their_class_names():
    """A G trained on a folder whose classes are 3 and 7 asks for label 0 meaning the digit 3."""
    images, labels = _digits()
    keep = (labels == 3) | (labels == 7)
    images, labels = images[keep], (labels[keep] == 7).long()
    real = ImageSet(images, "folder:x", "train", labels=labels)

    def acc(classes, fake_labels):
        ctx = EvalContext(ImageSet(images, "generated", "b", labels=fake_labels, classes=classes), real)
        return {r["metric"]: r for r in evaluate(ctx, ["class_acc"])}["class_acc"]

    right = acc(["3", "7"], labels)
    assert right["value"] > 0.95 and right["classes"] == ["3", "7"] and len(right["per_class"]) == 2
    assert acc(["7", "3"], labels)["value"] < 0.05
    with pytest.raises(UserError, match=r"classes \(red, blue\) are not the digits 0-9; fd_digits_per_class"):
        acc(["red", "blue"], labels)


def test_class_acc_is_left_out_or_refused_where_the_classes_are_not_digits(conditional_run, tiny_cfg, tmp_path):
    from ganforge.metrics.core import default_metrics

    records = evaluate_run(conditional_run, n=40, write=False)  # classes class0, class1
    names = [r["metric"] for r in records]
    assert "fd_digits_per_class" in names and "class_acc" not in names
    with pytest.raises(UserError, match=r"classes \(class0, class1\) are not the digits 0-9"):
        evaluate_run(conditional_run, ["class_acc"], n=40, write=False)
    assert "class_acc" not in default_metrics(load_config(preset="mnist-cgan", overrides=["data.name=fashion-mnist"]))
    with pytest.raises(UserError, match="fashion-mnist's classes are not digits; drop class_acc"):
        load_config(preset="mnist-cgan", overrides=["data.name=fashion-mnist", "eval.every_kimg=1",
                                                    'eval.metrics=["class_acc"]'])
    cfg = tiny_cfg(**{"model.n_classes": 2, "eval.every_kimg": 0.032, "eval.metrics": '["class_acc"]'})
    notes = []
    with pytest.raises(UserError, match=r"^eval.metrics: class_acc .* \(class0, class1\) .*; drop class_acc$"):
        train(cfg, out=tmp_path / "refused", log=notes.append)
    assert notes == []  # the refusal comes before any note about digit metrics on this folder
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())


def test_a_conditional_sample_file_is_scored_by_class_without_its_run(tmp_path, capsys):
    """ganforge sample writes labels and class names into the .npz; eval --fake reads them back, so
    class_acc needs only the file."""
    images, labels = _digits(600)
    uint8 = images.add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "right.npz", uint8, labels=labels.numpy(), classes=np.array([str(d) for d in range(10)]))
    np.savez(tmp_path / "shifted.npz", uint8, labels=((labels + 1) % 10).numpy())  # no names: label c is digit c
    np.savez(tmp_path / "plain.npz", uint8)
    scores = {}
    for name in ("right", "shifted"):
        out = tmp_path / f"{name}.json"
        assert main(["eval", "--real", "mnist5k", "--fake", f"folder:{tmp_path / name}.npz", "--metrics",
                     "class_acc,fd_digits_per_class", "--out", str(out)]) == 0
        scores[name] = {r["metric"]: r["value"] for r in json.loads(out.read_text())[0]["results"]}
    assert scores["right"]["class_acc"] > 0.95 and scores["shifted"]["class_acc"] < 0.05
    assert scores["right"]["fd_digits_per_class"] < 0.5 * scores["shifted"]["fd_digits_per_class"]
    capsys.readouterr()
    assert main(["eval", "--real", "mnist5k", "--fake", f"folder:{tmp_path / 'plain.npz'}", "--metrics",
                 "class_acc"]) == 2
    assert "or --fake images labelled by class (subfolders, or an .npz with labels)" in capsys.readouterr().err


def test_sample_npz_of_a_conditional_run_records_the_class_names(conditional_run, tmp_path):
    from ganforge.config import DataConfig
    from ganforge.data import load_raw

    out = tmp_path / "s.npz"
    assert main(["sample", str(conditional_run), "--n", "6", "--out", str(out)]) == 0
    raw = load_raw(DataConfig(name=f"folder:{out}"))
    assert raw.classes == ["class0", "class1"] and raw.labels.tolist() == [0, 1, 0, 1, 0, 1]


def test_class_grids_of_few_classes_stay_near_square(tmp_path, conditional_run):
    from PIL import Image

    from ganforge.report import class_grid_nrow
    from ganforge.step import grid_labels

    # (images per class, classes) -> row length: one row per class until the grid gets 3x wider than tall
    assert [class_grid_nrow(pc, k) for pc, k in ((10, 10), (16, 6), (50, 2), (33, 3), (32, 2), (16, 4), (1, 10),
                                                  (2, 10))] == [10, 16, 10, 11, 8, 8, 3, 4]
    labels, nrow = grid_labels(2, 100)
    assert nrow == 10 and labels.tolist() == [0] * 50 + [1] * 50  # each class fills 5 whole rows
    assert main(["sample", str(conditional_run), "--n", "64", "--out", str(tmp_path / "grid.png")]) == 0
    with Image.open(tmp_path / "grid.png") as image:
        width, height = image.size
    assert width == height  # 8 x 8 cells, the first 4 rows class0, not two rows of 32


def test_sample_folder_of_a_conditional_run_has_a_subfolder_per_class(conditional_run, tmp_path, capsys):
    from ganforge.config import DataConfig
    from ganforge.data import load_raw

    out = tmp_path / "samples"
    assert main(["sample", str(conditional_run), "--n", "6", "--out", str(out)]) == 0
    assert "in 2 class folders (class0/ to class1/)" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == \
        [f"class{c}/{i:06d}.png" for c in (0, 1) for i in range(3)]
    raw = load_raw(DataConfig(name=f"folder:{out}"))  # read back with the run's own class names
    assert raw.classes == ["class0", "class1"] and raw.labels.tolist() == [0] * 3 + [1] * 3
    assert main(["sample", str(conditional_run), "--n", "4", "--out", str(out), "--seed", "1", "--force"]) == 0
    assert sorted(p.name for p in (out / "class1").glob("*.png")) == [f"{i:06d}.png" for i in range(5)]
    assert main(["sample", str(conditional_run), "--class", "1", "--n", "2", "--out", str(tmp_path / "ones")]) == 0
    assert sorted(p.name for p in (tmp_path / "ones").iterdir()) == ["000000.png", "000001.png"]  # one class: flat


def test_class_folder_names_are_safe_and_sort_in_class_order():
    from ganforge.report import class_folder_names

    assert class_folder_names(["T-shirt/top", "Trouser"], 2) == ["T-shirt-top", "Trouser"]
    assert class_folder_names([], 12)[:3] == ["00", "01", "02"] and class_folder_names([], 12)[-1] == "11"
    assert class_folder_names(["a/b", "a-b"], 2) == ["0", "1"]  # two names in one folder: numbers instead
    assert class_folder_names(["..", "x"], 2) == ["0", "1"]
