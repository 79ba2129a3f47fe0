from __future__ import annotations

import re
import tomllib

import pytest
import torch

import ganforge
from ganforge.config import (
    Config,
    apply_overrides,
    describe,
    flatten,
    from_dict,
    load_config,
    parse_override,
    preset_names,
    setting_docs,
)
from ganforge.errors import UserError

RECIPES = ["mnist-dcgan", "mnist-mlp-convd", "mnist-mlp-small", "mnist-mlp", "mnist-mlp-bn"]


def test_all_recipes_and_default_are_presets():
    assert set(RECIPES + ["default"]) <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips_through_toml(name):
    cfg = load_config(preset=name)
    assert cfg.preset == name
    assert cfg.description
    again = from_dict(tomllib.loads(cfg.to_toml()))
    assert again == cfg


def test_overrides_parse_as_toml_values():
    assert parse_override("train.kimg=50") == (["train", "kimg"], 50)
    assert parse_override("optim.g_betas=[0.0, 0.99]") == (["optim", "g_betas"], [0.0, 0.99])
    assert parse_override("data.name=folder:/x/y") == (["data", "name"], "folder:/x/y")
    # list items without TOML quotes, as a shell passes --set eval.metrics=[fd_digits,classes]
    assert parse_override("eval.metrics=[fd_digits, classes]") == (["eval", "metrics"], ["fd_digits", "classes"])
    assert parse_override('eval.metrics=[fd_digits,"pr"]') == (["eval", "metrics"], ["fd_digits", "pr"])
    assert parse_override("eval.metrics=[modes]") == (["eval", "metrics"], ["modes"])
    assert load_config(overrides=["eval.metrics=[fd_digits,classes]"]).eval.metrics == ["fd_digits", "classes"]
    # and without the brackets, as a comma list; a list setting is never a plain string
    assert load_config(overrides=["eval.metrics=fd_digits,pr"]).eval.metrics == ["fd_digits", "pr"]
    assert load_config(overrides=["model.g_hidden=16, 32"]).model.g_hidden == [16, 32]
    with pytest.raises(UserError, match=r"model.g_hidden must be a list like \[256, 512, 1024\], got 5"):
        load_config(overrides=["model.g_hidden=5"])
    cfg = load_config(preset="mnist-mlp", overrides=["train.kimg=5", "optim.g_lr=1e-4", "train.ema_kimg=1"])
    assert cfg.train.kimg == 5.0 and isinstance(cfg.train.kimg, float)
    assert cfg.optim.g_lr == 1e-4
    assert cfg.model.g_hidden == [256, 512, 1024]


def test_config_file_applies_on_top_of_preset(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[train]\nkimg = 3\n[optim]\nd_lr = 0.001\n')
    cfg = load_config(preset="mnist-mlp-bn", path=path)
    assert cfg.train.kimg == 3.0 and cfg.optim.d_lr == 0.001
    assert cfg.train.step_order == "g_first"


def test_a_config_file_that_names_a_preset_builds_on_it(tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('preset = "mnist-mlp-bn"\n[train]\nkimg = 3\n')
    cfg = load_config(path=path)
    assert cfg.preset == "mnist-mlp-bn" and cfg.train.kimg == 3.0
    assert cfg.train.step_order == "g_first" and cfg.model.g_hidden == [128, 256, 512, 1024]  # the preset's
    assert load_config(preset="mnist-mlp-bn", path=path) == cfg
    with pytest.raises(UserError, match="builds on preset 'mnist-mlp-bn' but --preset mnist-dcgan was given"):
        load_config(preset="mnist-dcgan", path=path)
    # a run's resolved config.toml names its preset and spells out every setting: it loads as it was saved
    edited = load_config(preset="mnist-dcgan", overrides=["optim.g_lr=1e-4", "model.g_width=32"])
    resolved = tmp_path / "config.toml"
    resolved.write_text(edited.to_toml())
    assert load_config(path=resolved) == edited


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"preset": "nope"}, "valid choices: default"),
        ({"overrides": ["train.nope=1"]}, "unknown config key train.nope"),
        ({"overrides": ["nope.kimg=1"]}, "section among"),
        ({"overrides": ["train.kimg=-1"]}, "train.kimg must be positive"),
        ({"overrides": ["train.kimg=fast"]}, "train.kimg must be a number"),
        ({"overrides": ["train.batch_size=2.5"]}, "whole number"),
        ({"overrides": ["train.amp=true"]}, "train.amp must be none, bf16 or fp16, got 'true'"),  # the choices
        ({"overrides": ["train.amp=[1]"]}, "train.amp must be a string"),
        ({"overrides": ["train.kimg=1e400"]}, "train.kimg must be a finite number, got inf"),
        ({"overrides": ["optim.g_lr=nan"]}, "optim.g_lr must be a finite number"),
        ({"overrides": ["optim.g_lr=2e4"]}, "optim.g_lr = 20000 is above 1, where the optimizer's steps swamp the "
                                            "weights; GANs train at 1e-5 to 1e-2 (check the exponent's sign: 2e-4)"),
        ({"overrides": ["optim.d_lr=1.5"]}, "optim.d_lr = 1.5 is above 1"),
        ({"overrides": ["optim.name=sgd"]}, "optim.name must be adam or rmsprop, got 'sgd'"),
        ({"overrides": ["loss.critic_burst=100"]}, "loss.critic_burst = 100 needs the G steps that get it"),
        ({"overrides": ["loss.critic_burst=-1"]}, "loss.critic_burst_first and loss.critic_burst_every must be >= 0"),
        ({"overrides": ["loss.critic_burst=5", "loss.critic_burst_first=2", "train.step_order=simultaneous"]},
         "loss.critic_burst needs train.step_order d_first or g_first"),
        ({"overrides": ["train.grid_size=5000"]}, "train.grid_size must be between 1 and 1024"),
        ({"overrides": ["train.d_win_warn=0.3"]}, "train.d_win_warn must be between 0.5 and 1"),
        ({"overrides": ["model.g=transformer"]}, "unknown generator 'transformer'"),
        ({"overrides": ["loss.name=hinge2"]}, "unknown loss"),
        ({"overrides": ["data.name=imagenet"]}, "unknown dataset 'imagenet'"),
        ({"overrides": ["data.channels=2"]}, "data.channels must be 1 or 3"),
        ({"overrides": ["data.max_images=-5"]}, "data.max_images must be 0 (all images) or a positive count"),
        ({"overrides": ["loss.instance_noise=0.1"]}, "loss.instance_noise fades to 0 over loss.instance_noise_kimg"),
        ({"overrides": ["loss.lecam=-0.3"]}, "loss.lecam must be >= 0 (0 disables), got -0.3"),
        ({"overrides": ["loss.topk=0"]}, "loss.topk is the share of each fake batch G learns from, in (0, 1], got 0"),
        ({"overrides": ["loss.topk=50"]}, "loss.topk is the share of each fake batch G learns from, in (0, 1], got 50"),
        ({"overrides": ["loss.topk=0.5", "loss.topk_kimg=-1"]}, "loss.topk_kimg must be >= 0"),
        ({"overrides": ["loss.r2_gamma=-1"]}, "loss.r1_gamma and loss.r2_gamma must be >= 0"),
        ({"overrides": ["loss.name=rpgan", "loss.topk=0.5"]}, "loss.topk drops fakes from G's loss, and rpgan pairs"),
        ({"overrides": ["loss.name=rpgan", "loss.d_reduction=mean"]}, "rpgan's has one term, so leave it at sum"),
        ({"overrides": ["optim.lr_decay_start_kimg=10"]}, "optim.lr_decay_start_kimg / optim.lr_decay_end_kimg shape"),
        ({"overrides": ["train.diffaugment=", "train.ada_target=0.6"]},
         "train.ada_target adapts how often train.diffaugment applies"),
        ({"overrides": ["train.ada_target=1.5", "train.diffaugment=cutout"]}, "train.ada_target must be 0 (off) or"),
        ({"overrides": ["train.matmul_precision=low"]}, "train.matmul_precision must be highest, high or medium"),
        ({"overrides": ["train.step_order=random"]}, "train.step_order must be"),
        ({"overrides": ["optim.g_betas=[0.5]"]}, "optim.g_betas must be two numbers"),
        ({"overrides": ["optim.lr_decay=step"]}, "optim.lr_decay must be none, linear or cosine"),
        ({"overrides": ["model.lrelu_slope=-0.2"]}, "model.lrelu_slope must be in [0, 1)"),
        ({"overrides": ["train.seed=-1"]}, "train.seed must be a whole number from 0 to 4294967295"),
        ({"overrides": ["train.seed=1e10"]}, "train.seed must be a whole number from 0 to 4294967295, got 10000000000"),
        ({"overrides": ["train.seed=1e30"]}, "train.seed must be a whole number below 2**53, got 1e+30"),
        ({"overrides": ["model.g_width=1e13"]}, "model.g_width = 1e+13 is too large for a network's size"),
        ({"overrides": ["loss.n_critic=1e14"]}, "loss.n_critic must be from 1 to 1000 D steps per G step"),
        ({"overrides": ["train.threads=1e11"]}, "train.threads must be from 0 (torch's choice) to 1024"),
        ({"overrides": ["optim.eps=-1"]}, "optim.eps must be >= 0, got -1"),
        ({"overrides": ["loss.critic_burst=5000", "loss.critic_burst_first=1"]},
         "loss.critic_burst must be at most 1000 D steps per G step"),
        ({"overrides": ["model.g_hidden=[256, 1e13]"]}, "model.g_hidden = 1e+13 is too large for a network's size"),
        ({"overrides": ["train.kimg=10", "optim.lr_decay=linear", "optim.lr_decay_end_kimg=5"]},
         "learning rate 0 after it"),
        ({"overrides": ["train.kimg=10", "optim.lr_decay=linear", "optim.lr_decay_start_kimg=10"]},
         "optim.lr_decay_start_kimg must be"),
        ({"overrides": ["trainkimg"]}, "section.key=value"),
        ({"overrides": ["eval.every_kimg=5", "eval.best_metric=recall"]},
         "eval.best_metric 'recall' is not among the values eval.metrics report (fd_digits); add pr to eval.metrics"),
        ({"overrides": ["eval.best_metric=fd_digits"]}, "set eval.every_kimg too"),
        ({"overrides": ["eval.metrics=['fd']"]}, "unknown metric 'fd' (did you mean fid?)"),  # before every_kimg
        ({"overrides": ["eval.metrics=['FD_DIGITS']"]}, "unknown metric 'FD_DIGITS' (did you mean fd_digits?)"),
        ({"overrides": ["loss.name=HINGE"]}, "(did you mean hinge?)"),
        ({"path": "/no/such/file.toml"}, "does not exist"),
    ],
)
def test_bad_config_is_one_clear_error(kwargs, needle):
    with pytest.raises(UserError, match=None) as info:
        load_config(**kwargs)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_a_config_that_is_not_text_is_a_user_error(tmp_path):
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00kimg")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_config(path=tmp_path / "binary.toml")
    with pytest.raises(UserError, match="is not a file"):
        load_config(path=tmp_path)


def test_a_config_saved_with_a_byte_order_mark_loads(tmp_path):
    """Notepad and other Windows editors start a UTF-8 file with one; TOML itself does not allow it."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[train]\nkimg = 7\n")
    assert load_config(path=path).train.kimg == 7


def test_invalid_toml_file_is_a_user_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\nkimg = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(path=path)


def test_defaults_without_preset_are_the_default_preset():
    assert load_config() == load_config(preset="default")
    assert isinstance(load_config(), Config)


def test_python_callers_may_give_one_string_or_a_mapping_of_overrides():
    assert load_config(preset="default", overrides="train.kimg=2").train.kimg == 2.0  # not one char at a time
    cfg = load_config(preset="default", overrides={"train.kimg": 3, "optim.g_betas": (0.0, 0.9)})
    assert cfg.train.kimg == 3.0 and cfg.optim.g_betas == [0.0, 0.9]
    assert from_dict(tomllib.loads(cfg.to_toml())) == cfg
    with pytest.raises(UserError, match="unknown config key train.kimgg"):
        load_config(overrides={"train.kimgg": 1})
    with pytest.raises(UserError, match="train.kimg must be a number"):
        load_config(overrides={"train.kimg": "x"})
    for wrong, said in ((5, "int 5"), (["train.kimg=2", ("train.seed", 3)], "tuple ('train.seed', 3)")):
        with pytest.raises(TypeError) as info:
            load_config(overrides=wrong)
        assert str(info.value) == ("overrides are 'section.key=value' strings (a list, or one) or a dict of Python "
                                   f"values, got {said}")
    with pytest.raises(TypeError, match="train\\(\\) takes a Config, got dict"):
        ganforge.train({"train": {"kimg": 1}})
    with pytest.raises(TypeError, match="preset is a preset's name, .* got int 5"):
        load_config(preset=5)


def test_a_string_setting_takes_a_number_or_word_as_its_text():
    assert load_config(preset="default", overrides=["data.root=2024"]).data.root == "2024"  # a folder named 2024


def test_apply_overrides_does_not_mutate_input():
    raw = {"train": {"kimg": 1.0}}
    apply_overrides(raw, ["train.kimg=2"])
    assert raw == {"train": {"kimg": 1.0}}


def test_a_misplaced_or_misspelt_setting_is_pointed_to_its_place(tmp_path):
    for overrides, message in (
        (["train.g_lr=1e-3"], r"unknown config key train.g_lr \(did you mean optim.g_lr\?\)"),
        (["train.kimgs=3"], r"unknown config key train.kimgs \(did you mean train.kimg\?\)"),
        (["model.z=3"], r"unknown config key model.z; valid keys in \[model\]"),  # nothing close: no guess
        (["trian.kimg=3"], r"among data, model, loss, optim, train, eval \(did you mean train.kimg\?\)"),
        (["kimg=3"], r"\(did you mean train.kimg\?\)"),
        (["batch_size=3"], r"\(did you mean train.batch_size\?\)"),
    ):
        with pytest.raises(UserError, match=message):
            load_config(overrides=overrides)
    for text, message in (("kimg = 3\n", r"^kimg is a setting of \[train\], not a section: put it under that header "
                                          r"\(or --set train.kimg=...\)$"),
                          ("[training]\nkimg = 3\n", r"unknown config section 'training' \(did you mean train\?\)")):
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            load_config(path=path)


def test_a_section_given_a_value_is_refused_with_or_without_overrides(tmp_path):
    for text, shown in (("train = 5\n", "train = 5"), ("train = []\n", "train = []")):
        path = tmp_path / "c.toml"
        path.write_text(text)
        for overrides in (None, ["train.kimg=1"], {"train.seed": 3}):
            with pytest.raises(UserError, match=rf"^\[train\] must be a table of settings \(a \[train\] line, then "
                                                rf"key = value lines\), got {re.escape(shown)}$"):
                load_config(path=path, overrides=overrides)


def test_a_misspelt_name_gets_the_close_one_first():
    for overrides, message in (
        (["data.name=fashion_mnist"], r"unknown dataset 'fashion_mnist' \(did you mean fashion-mnist\?\); valid"),
        (["loss.name=hing"], r"unknown loss 'hing' \(did you mean hinge\?\); valid choices: hinge, lsgan"),
        (["data.name=imagenet"], r"unknown dataset 'imagenet'; valid choices: celeba"),  # nothing close
    ):
        with pytest.raises(UserError, match=message):
            load_config(overrides=overrides)
    with pytest.raises(UserError, match=r"unknown preset 'defualt' \(did you mean default\?\); valid choices"):
        load_config(preset="defualt")


def test_a_relative_path_that_lies_next_to_the_config_file_is_named(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "imgs").mkdir(parents=True)
    config = project / "gan.toml"
    config.write_text('preset = "default"\n[data]\nname = "folder:imgs"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        load_config(path="project/gan.toml")
    message = str(info.value)
    assert "relative paths are read from the working directory" in message
    assert "use folder:project/imgs (or an absolute path) in the file, or run from project" in message
    # from the file's own folder the path is found; an override replaces it; a path found nowhere is left to
    # the data loader's own message
    monkeypatch.chdir(project)
    assert load_config(path="gan.toml").data.name == "folder:imgs"
    monkeypatch.chdir(tmp_path)
    assert load_config(path="project/gan.toml", overrides=["data.name=mnist5k"]).data.name == "mnist5k"
    config.write_text('preset = "default"\n[data]\nname = "folder:elsewhere"\n')
    assert load_config(path="project/gan.toml").data.name == "folder:elsewhere"


def test_numpy_scalars_and_0d_tensors_from_the_python_api_read_as_their_values():
    import numpy as np

    cfg = load_config(preset="mnist-mlp", overrides={"train.batch_size": np.int64(32), "optim.g_lr": np.float32(1e-3)})
    assert cfg.train.batch_size == 32 and type(cfg.train.batch_size) is int
    assert abs(cfg.optim.g_lr - 1e-3) < 1e-9 and type(cfg.optim.g_lr) is float
    cfg.train.kimg, cfg.train.channels_last = torch.tensor(2.5), np.bool_(False)
    cfg.model.g_hidden = list(np.array([64, 128]))
    rebuilt = from_dict(cfg.to_dict())
    assert (rebuilt.train.kimg, rebuilt.train.channels_last, rebuilt.model.g_hidden) == (2.5, False, [64, 128])
    assert "kimg = 2.5" in rebuilt.to_toml()
    with pytest.raises(UserError, match="train.batch_size must be a whole number, got 2.5"):
        load_config(overrides={"train.batch_size": np.float64(2.5)})


def test_every_setting_says_what_it_means():
    docs = setting_docs()
    assert set(docs) == set(flatten(Config().to_dict()))
    assert all(len(doc.split()) >= 3 for doc in docs.values()), [k for k, d in docs.items() if len(d.split()) < 3]


@pytest.mark.parametrize("name", preset_names())
def test_settings_output_loads_back_as_the_same_config(tmp_path, name):
    cfg = load_config(preset=name, overrides=["train.kimg=7", "optim.g_betas=[0.0, 0.9]"])
    for changed in (False, True):
        path = tmp_path / f"changed-{changed}.toml"
        path.write_text(describe(cfg, changed=changed))
        assert load_config(path=path) == cfg


def test_settings_changed_lists_what_the_preset_sets_and_a_word_filters():
    cfg = load_config(preset="mnist-dcgan")
    listed = {line.split(" = ")[0] for line in describe(cfg, changed=True).splitlines() if " = " in line}
    differ = {key.rpartition(".")[2] for key, value in flatten(cfg.to_dict()).items()
              if value != flatten(Config().to_dict())[key]}
    assert listed == differ | {"preset"}
    assert {"g_lr", "batch_size", "img_size"} <= listed and "z_dim" not in listed

    text = describe(cfg, "ema")
    assert text.startswith('preset = "mnist-dcgan"')
    assert "ema_kimg = 0.0" in text and "half-life" in text and "batch_size" not in text
    assert "[train]" in text and "[data]" not in text
    with pytest.raises(UserError, match="no setting mentions 'warp'"):
        describe(cfg, "warp")


def test_the_meanings_of_registry_settings_name_every_registered_choice():
    from ganforge.data import DATASETS
    from ganforge.losses import LOSSES
    from ganforge.models import DISCRIMINATORS, GENERATORS

    docs = setting_docs()
    for key, registry in (("data.name", DATASETS), ("model.g", GENERATORS), ("model.d", DISCRIMINATORS),
                          ("loss.name", LOSSES)):
        words = set(docs[key].replace(",", " ").replace("(", " ").replace(")", " ").split())
        assert set(registry.names()) <= words, (key, set(registry.names()) - words)
