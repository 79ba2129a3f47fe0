"""Networks and losses of a user's own, registered by a plugin file the command line loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import ganforge
from ganforge import plugins
from ganforge.cli import main
from ganforge.data import DATASETS
from ganforge.errors import UserError
from ganforge.losses import LOSSES
from ganforge.models import DISCRIMINATORS, GENERATORS
from ganforge.registry import Registry

from .conftest import tiny_overrides

PLUGIN = '''
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganforge.data import DATASETS, RawImages
from ganforge.losses import LOSSES, GANLoss
from ganforge.models import DISCRIMINATORS, GENERATORS, Discriminator, Generator


@GENERATORS.register("linear-test")
class LinearG(Generator):
    def __init__(self, cfg, img_size, channels):
        super().__init__(cfg.z_dim, img_size, channels)
        self.net = nn.Sequential(nn.Linear(cfg.z_dim, channels * img_size * img_size), nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, self.channels, self.img_size, self.img_size)


@DISCRIMINATORS.register("linear-test")
class LinearD(Discriminator):
    def __init__(self, cfg, img_size, channels):
        super().__init__(img_size, channels)
        self.body = nn.Flatten()
        self.make_head(channels * img_size * img_size, cfg)


@LOSSES.register("softplus-test")
def softplus_loss():
    def real(logits):
        return F.softplus(-logits).mean()

    def fake(logits):
        return F.softplus(logits).mean()

    return GANLoss("softplus-test", "the non-saturating loss, by a plugin", real, fake, real)


@LOSSES.register("jitter-test")
def jitter_loss():
    """the non-saturating loss with its targets jittered by Python's and NumPy's global generators"""
    def real(logits):
        return F.softplus(-logits + random.gauss(0, 1) + float(np.random.normal())).mean()

    def fake(logits):
        return F.softplus(logits + random.gauss(0, 1)).mean()

    return GANLoss("jitter-test", "jittered by global generators, by a plugin", real, fake, real)


@DATASETS.register("squares-test")
def squares(cfg):
    """16 grey images, each a bright square at its own place: uint8 [N, 1, 12, 12] with two classes."""
    images = torch.zeros(16, 1, 12, 12, dtype=torch.uint8)
    for i in range(16):
        images[i, 0, i % 8 : i % 8 + 4, i // 2 : i // 2 + 4] = 255
    return RawImages(images, torch.arange(16) % 2, ["left", "right"])
'''


@pytest.fixture
def fresh_registries(monkeypatch):
    """Each test starts as a new process would, and what its plugins register is gone after it."""
    for registry in (GENERATORS, DISCRIMINATORS, LOSSES, DATASETS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    monkeypatch.setattr(plugins, "_loaded", [])
    monkeypatch.setattr(plugins, "_installed_loaded", False)
    monkeypatch.delenv(plugins.ENV_VAR, raising=False)
    monkeypatch.delenv(plugins.NO_AUTOLOAD_VAR, raising=False)


def forget_plugins(monkeypatch) -> None:
    """As a later process that has not loaded the plugin."""
    for registry, name in ((GENERATORS, "linear-test"), (DISCRIMINATORS, "linear-test"), (LOSSES, "softplus-test"),
                           (DATASETS, "squares-test")):
        monkeypatch.delitem(registry._entries, name)
    monkeypatch.setattr(plugins, "_loaded", [])


def plugin_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_nets.py"
    path.write_text(PLUGIN)
    return path


def settings(folder: Path) -> list[str]:
    """tiny settings on the plugin's networks, loss and data set (`folder` is the data set they replace)"""
    extra = {"model.g": '"linear-test"', "model.d": '"linear-test"', "loss.name": '"softplus-test"',
             "data.name": '"squares-test"'}
    return [arg for item in tiny_overrides(folder, **extra) for arg in ("--set", item)]


def test_a_plugins_networks_loss_and_data_train_sample_and_resume(tmp_path, fresh_registries, monkeypatch, capsys):
    plugin = plugin_file(tmp_path)
    out = tmp_path / "runs"
    assert main(["--plugin", str(plugin), "train", "--preset", "default", "--out", str(out),
                 *settings(tmp_path)]) == 0
    run = next(out.iterdir())
    assert "(device cpu, 16 images, " in capsys.readouterr().out  # the plugin's data set
    assert f"ganforge --plugin {plugin} train --resume {run}" in (run / "report.html").read_text()
    assert (run / "checkpoints").is_dir() and (run / "final.png").is_file()
    forget_plugins(monkeypatch)
    capsys.readouterr()

    # a later process without the plugin: one line that names it, nothing written
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "grid.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: unknown generator 'linear-test'; valid choices: dcgan, mlp, resnet; the run was trained "
                   f"with --plugin {plugin}: pass it again (ganforge --plugin {plugin} COMMAND ...)")
    assert not (tmp_path / "grid.png").exists()
    for argv in (["train", "--resume", str(run), "--set", "train.kimg=0.128"], ["summary", str(run)],
                 ["eval", str(run), "--n", "8", "--metrics", "classes"]):
        assert main(argv) == 2
        assert f"the run was trained with --plugin {plugin}: pass it again" in capsys.readouterr().err, argv

    # with it, given after the command this time
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "grid.png"), "--plugin", str(plugin)]) == 0
    assert (tmp_path / "grid.png").is_file()
    assert main(["train", "--resume", str(run), "--set", "train.kimg=0.128", "--plugin", str(plugin)]) == 0
    assert "resuming" in capsys.readouterr().out

    # an exported generator names the plugin's file alone: it may be shared, the author's folders stay home
    exported = tmp_path / "G.safetensors"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    forget_plugins(monkeypatch)
    capsys.readouterr()
    assert main(["sample", str(exported), "--n", "4", "--out", str(tmp_path / "shared.png")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "the run was trained with --plugin my_nets.py: pass it again (ganforge --plugin my_nets.py COMMAND ...)")
    assert main(["sample", str(exported), "--n", "4", "--out", str(tmp_path / "shared.png"), "--plugin",
                 str(plugin)]) == 0


def test_train_seed_repeats_a_plugins_draws_from_pythons_and_numpys_generators(tmp_path, fresh_registries):
    plugin = plugin_file(tmp_path)
    args = [*settings(tmp_path), "--set", 'loss.name="jitter-test"', "--set", "train.seed=5"]
    weights = []
    for out in ("a", "b"):
        assert main(["--plugin", str(plugin), "train", "--preset", "default", "--out", str(tmp_path / out),
                     *args]) == 0
        G = ganforge.load_generator(next((tmp_path / out).iterdir()), ema=False)
        weights.append(torch.cat([p.detach().flatten() for p in G.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_a_plugin_from_the_environment_is_loaded_by_every_command(tmp_path, fresh_registries, monkeypatch):
    plugin = plugin_file(tmp_path)
    monkeypatch.setenv(plugins.ENV_VAR, str(plugin))
    assert main(["summary", "--preset", "default", "--set", "model.g=linear-test", "--set",
                 "model.d=linear-test"]) == 0
    assert plugins.loaded_plugins() == [str(plugin)]


def test_conditional_batch_norm_on_a_plugin_generator_without_batch_norm_is_refused(tmp_path, fresh_registries,
                                                                                    capsys):
    plugin = plugin_file(tmp_path)
    assert main(["--plugin", str(plugin), "train", "--preset", "mnist-acgan", "--set", "model.g=linear-test",
                 "--set", "model.g_cond=cbn", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == ("error: model.g_cond=cbn makes G's batch norms take the label, and the "
                                               "linear-test generator has none; use model.g_cond=concat")


def test_dropout_on_a_plugin_discriminator_without_dropout_is_refused(tmp_path, fresh_registries, capsys):
    plugin = plugin_file(tmp_path)
    assert main(["--plugin", str(plugin), "train", "--preset", "default", "--set", "model.d=linear-test",
                 "--set", "model.d_dropout=0.3", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: model.d_dropout=0.3 adds dropout to D, and the linear-test discriminator has no dropout layer; build "
        "its activations with ganforge.models.layers.d_activation(cfg), or leave model.d_dropout at 0")


def test_a_network_of_no_loaded_plugin_is_refused_with_where_to_register_it(fresh_registries, capsys):
    assert main(["train", "--preset", "default", "--set", "model.g=linear-test", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: unknown generator 'linear-test'; valid choices: dcgan, mlp, resnet (one of your own is known once "
        "the file that registers it is loaded: ganforge --plugin FILE ...)")


@pytest.mark.parametrize(("source", "name", "message"), [
    (None, "missing.py", "plugin {path} not found; give the path of the .py file that registers your networks, "
                         "losses or data sets"),
    ("raise ValueError('no weights here')\n", "bad.py",
     "plugin {path} failed to load: ValueError: no weights here (--debug shows where)"),
    ("def broken(:\n", "syntax.py", "plugin {path} failed to load: SyntaxError: "),
    ("import not_a_module_anywhere\n", "imports.py",
     "plugin {path} failed to load: ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
])
def test_a_plugin_that_cannot_load_is_one_line(tmp_path, fresh_registries, capsys, source, name, message):
    path = tmp_path / name
    if source is not None:
        path.write_text(source)
    assert main(["--plugin", str(path), "presets"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: " + message.format(path=path)) and captured.err.count("\n") == 1
    assert captured.out == ""  # the command did not run
    assert plugins.loaded_plugins() == []


def test_a_module_plugin_that_is_not_installed_is_named(fresh_registries, capsys):
    assert main(["--plugin", "no_such_plugin_module", "presets"]) == 2
    assert capsys.readouterr().err.strip() == ("error: plugin no_such_plugin_module not found: no such module on the "
                                               "Python path (a file is given by its path, e.g. --plugin ./my_nets.py)")


def test_a_plugin_imports_the_modules_beside_it(tmp_path, fresh_registries, monkeypatch):
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    (tmp_path / "plugin_helpers_beside.py").write_text("WIDTH = 3\n")
    plugin = tmp_path / "uses_helper.py"
    plugin.write_text("from plugin_helpers_beside import WIDTH\nassert WIDTH == 3\n")
    assert plugins.load_plugin(str(plugin)) == str(plugin)


def test_a_plugin_named_in_another_encoding_loads(tmp_path, fresh_registries):
    import os

    plugin = tmp_path / os.fsdecode(b"r\xe9seaux.py")
    try:
        plugin.write_text("from ganforge.losses import LOSSES\nLOSSES.register('latin1-test')(lambda: None)\n")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system takes only UTF-8 names")
    assert plugins.load_plugin(str(plugin)) == str(plugin)
    assert "latin1-test" in LOSSES


def test_loading_a_plugin_twice_runs_it_once(tmp_path, fresh_registries):
    plugin = tmp_path / "count.py"
    plugin.write_text("import builtins\n"
                      "builtins.ganforge_test_loads = getattr(builtins, 'ganforge_test_loads', 0) + 1\n")
    import builtins

    try:
        plugins.load_plugins([str(plugin), str(plugin)])
        plugins.load_plugin(str(tmp_path / "." / "count.py"))
        assert builtins.ganforge_test_loads == 1
    finally:
        del builtins.ganforge_test_loads


def test_a_definition_registered_again_replaces_itself_but_not_another():
    registry = Registry("network")

    def make():  # a notebook cell that defines and registers `make`, run twice
        return 1

    registry.register("mine")(make)

    def make():  # noqa: F811  (the same definition, run again)
        return 2

    registry.register("mine")(make)
    assert registry.get("mine")() == 2

    def other():
        return 3

    with pytest.raises(ValueError, match="network 'mine' is registered twice"):
        registry.register("mine")(other)
    with pytest.raises(UserError, match=r"unknown network 'mien' \(did you mean mine\?\); valid choices: mine$"):
        registry.get("mien")  # a typo gets its spelling, not the plugin hint


def test_a_command_printed_to_go_on_loads_the_plugins_again(tmp_path, fresh_registries, monkeypatch, capsys):
    import shlex

    from ganforge import trainer
    from ganforge.trainer import TrainingInterrupted

    plugin = plugin_file(tmp_path)
    run_dir = tmp_path / "runs" / "0000-default"

    def stopped(*args, **kwargs):
        raise TrainingInterrupted(run_dir, 0.5)

    monkeypatch.setattr(trainer, "train", stopped)
    assert main(["train", "--plugin", str(plugin), "--preset", "default", "--set", "model.g=linear-test"]) == 130
    command = capsys.readouterr().err.strip().split("continue with: ", 1)[1]
    assert shlex.split(command) == ["ganforge", "--plugin", str(plugin), "train", "--resume", str(run_dir)]


def install_package(root: Path, monkeypatch, source: str = PLUGIN) -> str:
    """A package as pip would leave it on the Python path: its module and a dist-info whose entry point
    offers the module to ganforge. Returns the module's name."""
    module = "gf_installed_nets"
    (root / f"{module}.py").write_text(source)
    info = root / "gf_installed_nets-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gf-installed-nets\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[ganforge.plugins]\nnets = {module}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(sys.modules, module, raising=False)
    return module


def test_an_installed_packages_plugin_needs_no_flag(tmp_path, fresh_registries, monkeypatch, capsys):
    (tmp_path / "site").mkdir()
    module = install_package(tmp_path / "site", monkeypatch)
    out = tmp_path / "runs"
    assert main(["train", "--preset", "default", "--out", str(out), *settings(tmp_path)]) == 0
    run = next(out.iterdir())
    assert "(device cpu, 16 images, " in capsys.readouterr().out  # the installed plugin's data set
    assert module in plugins.loaded_plugins()
    # the Python API finds it too, on the first lookup of a name it registers
    forget_plugins(monkeypatch)
    monkeypatch.setattr(plugins, "_installed_loaded", False)
    monkeypatch.delitem(sys.modules, module)
    G = ganforge.load_generator(run)
    assert module in sys.modules and G.sample(2, seed=0).shape == (2, 1, 16, 16)
    assert "linear-test" in GENERATORS.names()


def test_installed_plugins_can_be_switched_off_and_a_broken_one_is_one_line(tmp_path, fresh_registries,
                                                                             monkeypatch, capsys):
    install_package(tmp_path, monkeypatch, source="raise RuntimeError('broken on import')\n")
    assert main(["summary", "--preset", "default"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: plugin gf_installed_nets, which gf-installed-nets installs, failed to load: RuntimeError: "
                   "broken on import (--debug shows where; GANFORGE_DISABLE_PLUGIN_AUTOLOAD=1 skips installed "
                   "plugins)")
    monkeypatch.setattr(plugins, "_installed_loaded", False)
    monkeypatch.setenv(plugins.NO_AUTOLOAD_VAR, "1")
    assert main(["summary", "--preset", "default"]) == 0
    assert "linear-test" not in GENERATORS.names()
