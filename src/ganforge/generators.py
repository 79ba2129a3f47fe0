"""A run's generator on its own: loaded from a run or checkpoint to sample and evaluate, or exported to a
small safetensors file that needs neither D, the optimizers nor pickle, or to a torch.export program that
PyTorch runs without ganforge."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
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
    ckpt_io.load_state_dict_checked(G, state[ckpt_io.generator_weights(state, ema)], "generator", path)
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


PROGRAM_SUFFIX = ".pt2"  # torch.export's own suffix
PROGRAM_META = "ganforge.json"  # the program's extra file that says what its inputs and outputs are


def export_generator(run_or_ckpt: Path | str, out: Path | str, ckpt: str = "latest", ema: bool = True,
                     force: bool = False) -> Exported:
    """Write a run's generator alone (G_ema when the run kept one, else G; G with `ema=False`) to `out`:
    - `.safetensors`: the weights and the config that builds them, a fraction of a checkpoint's size, loaded
      without pickle, and taken by load_generator, `ganforge sample` and `ganforge eval` in place of a run;
    - `.pt2`: a torch.export program of G (z, and y for a conditional G, to images in [-1, 1]; any batch
      size), which `torch.export.load(out).module()` runs in PyTorch code without ganforge (see
      save_generator_program). A generator file may be the source of this one.
    Neither can resume training."""
    out = Path(out)
    program = out.suffix.lower() == PROGRAM_SUFFIX
    if not (program or ckpt_io.is_generator_file(out)):
        suffix = ckpt_io.GENERATOR_SUFFIX
        raise UserError(f"{out} is not a generator file name: one ends in {suffix}, as G{suffix} (for ganforge), "
                        f"or {PROGRAM_SUFFIX}, as G{PROGRAM_SUFFIX} (a torch.export program, for PyTorch without "
                        "ganforge)")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a file name ending in {ckpt_io.GENERATOR_SUFFIX} or "
                        f"{PROGRAM_SUFFIX}")
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
    source = ckpt_io.resolve_checkpoint(run_or_ckpt, ckpt)
    if ckpt_io.is_generator_file(source) and not program:  # refused before it is read
        raise UserError(f"{source} is already a generator file; copy it to export it elsewhere")
    source, state = ckpt_io.load_resolved(run_or_ckpt, ckpt)
    G = generator_from_checkpoint(state, source, "cpu", ema)  # the weights build the config's G: the file will load
    out.parent.mkdir(parents=True, exist_ok=True)
    if program:
        # a generator file holds one of the run's generators, and says which
        weights = state["exported"]["weights"] if state.get("exported") else ckpt_io.generator_weights(state, ema)
        save_generator_program(G, out, _program_meta(G, state, source, weights))
    else:
        weights = ckpt_io.save_generator_file(state, source, out, ema=ema)
    return Exported(out, source, weights, int(state["nimg"]) / 1000)


def _program_meta(G: Generator, state: dict[str, Any], source: Path, weights: str) -> dict[str, Any]:
    from . import __version__

    cfg = stored_config(state)
    standard_z = type(G).make_z is Generator.make_z
    inputs = {"z": f"float32 [batch, {G.z_dim}]" + (", drawn from the standard normal" if standard_z else
                                                    f", drawn as {type(G).__qualname__}.make_z draws it")}
    if G.n_classes:
        inputs["y"] = f"int64 [batch], the class of each image, 0 to {G.n_classes - 1}"
        if cfg.model.label_dropout > 0:
            inputs["y"] += f", or {G.n_classes} for none (G trained with model.label_dropout)"
    return {
        "format": "ganforge-generator-program",
        "format_version": 1,
        "inputs": inputs,
        "output": f"float32 [batch, {G.channels}, {G.img_size}, {G.img_size}], pixels in [-1, 1]: (x + 1) / 2 "
                  "for [0, 1]",
        "z_dim": G.z_dim,
        "n_classes": G.n_classes,
        "classes": list(G.classes) if G.n_classes else [],
        "channels": G.channels,
        "img_size": G.img_size,
        "weights": weights,
        "kimg": int(state["nimg"]) / 1000,
        "preset": cfg.preset,
        "source": ckpt_io.source_name(source),
        "versions": {"ganforge": str(__version__), "torch": str(torch.__version__)},
    }


def save_generator_program(G: Generator, out: Path, meta: dict[str, Any]) -> None:
    """G (moved to the CPU, in eval mode) as a torch.export program with a free batch size, written atomically
    to `out` with `meta` as its extra file PROGRAM_META, once the program has drawn what G draws from the same z
    (to 1e-4) at batch sizes it was not traced at."""
    G = G.cpu().eval().to(memory_format=torch.contiguous_format)  # plain NCHW tensors for any program
    traced = (torch.zeros(2, G.z_dim),) + ((torch.zeros(2, dtype=torch.long),) if G.n_classes else ())
    batch = torch.export.Dim("batch", min=1)
    try:
        # a net torch.export cannot trace has its graph printed and logged (twice) before the error: the one
        # line below says what failed
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            program = torch.export.export(G, traced, dynamic_shapes=tuple({0: batch} for _ in traced))
    except Exception as e:  # noqa: BLE001  (a plugin's net may do anything torch.export cannot trace)
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UserError(f"{type(G).__name__} cannot be exported as a torch.export program ({first[:200]}); export "
                        f"it as {ckpt_io.GENERATOR_SUFFIX}, which ganforge loads") from e
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={PROGRAM_META: json.dumps(meta, indent=1)})
    buffer.seek(0)
    with warnings.catch_warnings():  # torch 2.4's load warns of its own torch.load defaults
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.export.load(buffer).module()
    for n in (1, 5):  # a batch size other than the traced one, and one image
        args = _program_inputs(G, n, torch.Generator().manual_seed(n))
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
            torch.manual_seed(0)
            want = G(*args)
            torch.manual_seed(0)  # a G that draws noise inside its forward draws the same in both
            got = loaded(*args)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=0, atol=1e-4):
            raise UserError(f"{type(G).__name__}'s torch.export program draws other images than G itself (at batch "
                            f"size {n}); export it as {ckpt_io.GENERATOR_SUFFIX}, which ganforge loads")
    with ckpt_io.replace_atomically(out, "wb") as f:
        f.write(buffer.getvalue())


def _program_inputs(G: Generator, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """z for n images (and their classes, in turn, for a conditional G)."""
    z = G.make_z(n, generator)
    return (z,) if not G.n_classes else (z, torch.arange(n) % G.n_classes)
