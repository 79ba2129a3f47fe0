"""Command line: parse, call the library, turn a UserError into one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a named preset (see `ganforge presets`)")
    p.add_argument("--config", type=Path, help="a TOML file; its settings apply on top of --preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.kimg=50 (repeatable)")


def _config_from_args(args: argparse.Namespace):  # -> Config
    from .config import load_config

    overrides = list(args.overrides)
    if getattr(args, "seed", None) is not None:
        overrides.append(f"train.seed={args.seed}")
    if getattr(args, "device", None) is not None:
        overrides.append(f"train.device={args.device}")
    return load_config(preset=args.preset, path=args.config, overrides=overrides)


def cmd_presets(args: argparse.Namespace) -> int:
    from .config import preset_dict, preset_names

    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {preset_dict(name).get('description', '')}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import TrainingInterrupted, resume, train

    try:
        if args.resume is not None:
            if args.preset or args.config:
                raise UserError("--resume takes its config from the checkpoint; use --set to change settings")
            overrides = list(args.overrides)
            if args.device is not None:
                overrides.append(f"train.device={args.device}")
            resume(args.resume, overrides)
            return 0
        cfg = _config_from_args(args)
        if args.dry_run:
            print(cfg.to_toml(), end="")
            return 0
        train(cfg, out=args.out)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}; continue with: ganforge train --resume {e.run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from . import report
    from .trainer import load_generator

    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    out = Path(args.out)
    G = load_generator(args.run, ckpt=args.ckpt, device=args.device or "auto", ema=not args.no_ema)
    if out.suffix.lower() == ".png":
        if out.exists() and not args.force:
            raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        report.save_grid(G.sample(args.n, seed=args.seed), out, nrow=args.nrow)
        print(f"wrote a grid of {args.n} samples to {out}")
        return 0
    if out.suffix:
        raise UserError(f"--out {out}: give a .png file for a grid or a directory for one PNG per image")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} exists and is not empty; choose another --out or pass --force to add to it")
    images = G.sample(args.n, seed=args.seed, batch_size=args.batch_size)
    report.save_images(images, out)
    print(f"wrote {args.n} samples to {out}/")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import torch

    from .models import build_discriminator, build_generator
    from .report import model_summary

    cfg = _config_from_args(args)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.zeros(2, cfg.model.z_dim)
    x = torch.zeros(2, cfg.data.channels, cfg.data.img_size, cfg.data.img_size)
    print(model_summary(G, z, f"G: {cfg.model.g} (input z [B, {cfg.model.z_dim}])"))
    print()
    print(model_summary(D, x, f"D: {cfg.model.d} (input [B, {cfg.data.channels}, {cfg.data.img_size}, "
                              f"{cfg.data.img_size}])"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganforge", description="Train, resume, sample and evaluate GANs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("train", help="train a GAN (or resume a run)")
    _add_config_args(p)
    p.add_argument("--out", type=Path, default=Path("runs"), help="parent of the new run directory")
    p.add_argument("--resume", type=Path, help="a run directory or checkpoint to continue")
    p.add_argument("--seed", type=int, help="shorthand for --set train.seed=N")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (shorthand for --set train.device=...)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a run or checkpoint")
    p.add_argument("run", type=Path, help="run directory or checkpoint file")
    p.add_argument("--n", type=int, default=64, help="number of images")
    p.add_argument("--out", required=True, help="a .png for one grid, or a directory for one PNG per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", default="latest", help="latest, best or a checkpoint path")
    p.add_argument("--nrow", type=int, help="images per grid row")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-ema", action="store_true", help="use G rather than G_ema")
    p.add_argument("--force", action="store_true", help="replace an existing grid / add to a non-empty folder")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("summary", help="layer, output shape and parameter count of G and D")
    _add_config_args(p)
    p.set_defaults(func=cmd_summary, seed=None, device=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
