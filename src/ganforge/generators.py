"""A run's generator on its own: loaded from a run or checkpoint to sample and evaluate, or exported to a
small safetensors file that needs neither D, the optimizers nor pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch

from . import checkpoint as ckpt_io
from .device import has_conv, pick_device
from .errors import UserError
from .models import Generator, build_generator
from .plugins import stored_config


def load_generator(run_or_ckpt: Path | str, ckpt: str = "latest", device: str | torch.device = "cpu",
                   ema: bool = True) -> Generator:
    """The generator of a run or checkpoint (G_ema when the run kept one), in eval mode on `device`."""
    path, state = ckpt_io.load_resolved(run_or_ckpt, ckpt)
    return generator_from_checkpoint(state, path, device, ema)


def generator_from_checkpoint(state: dict[str, Any], path: Path, device: str | torch.device = "cpu",
                              ema: bool = True) -> Generator:
    """load_generator for a checkpoint already loaded from `path` (named in errors)."""
    exported = state.get("exported")
    if exported is not None and not ema and exported["weights"] == "G_ema":
        raise UserError(f"{path} holds the run's G_ema alone (what `ganforge export` writes by default); for G "
                        "itself export the run again with --no-ema")
    cfg = stored_config(state)
    G = build_generator(cfg)
    weights = state["G_ema"] if ema and state.get("G_ema") is not None else state["G"]
    ckpt_io.load_state_dict_checked(G, weights, "generator", path)
    classes = state.get("classes")
    if G.n_classes and isinstance(classes, list) and len(classes) == G.n_classes:
        G.classes = [str(c) for c in classes]
    G = G.to(pick_device(str(device))).eval()
    if cfg.train.channels_last and has_conv(G):  # as in training: a conv G samples ~35% faster on a CPU
        G = G.to(memory_format=torch.channels_last)
    return G


class Exported(NamedTuple):
    path: Path  # the generator file written
    source: Path  # the checkpoint it came from
    weights: str  # "G_ema" or "G"
    kimg: float


def export_generator(run_or_ckpt: Path | str, out: Path | str, ckpt: str = "latest", ema: bool = True,
                     force: bool = False) -> Exported:
    """Write a run's generator alone (G_ema when the run kept one, else G; G with `ema=False`) and the config
    that builds it to a .safetensors file: a fraction of a checkpoint's size, loaded without pickle, and taken
    by load_generator, `ganforge sample` and `ganforge eval` in place of a run. It cannot resume training."""
    out = Path(out)
    if not ckpt_io.is_generator_file(out):
        suffix = ckpt_io.GENERATOR_SUFFIX
        raise UserError(f"{out} is not a generator file name: one ends in {suffix}, as G{suffix}")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name ending in {ckpt_io.GENERATOR_SUFFIX}")
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
    source = ckpt_io.resolve_checkpoint(run_or_ckpt, ckpt)
    if ckpt_io.is_generator_file(source):  # refused before it is read
        raise UserError(f"{source} is already a generator file; copy it to export it elsewhere")
    source, state = ckpt_io.load_resolved(run_or_ckpt, ckpt)
    generator_from_checkpoint(state, source, "cpu", ema)  # the weights build the config's G: the file will load
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = ckpt_io.save_generator_file(state, source, out, ema=ema)
    return Exported(out, source, weights, int(state["nimg"]) / 1000)
