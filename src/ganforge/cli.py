"""Command line: parse, call the library, turn a UserError into one line and exit code 2."""

from __future__ import annotations

import argparse
import errno
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import UserError
from .interrupts import HangUpProof, raise_interrupt, send_to_devnull

if TYPE_CHECKING:
    from .config import Config

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_PEER_STOPPED = 1


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a named preset (see `ganforge presets`)")
    p.add_argument("--config", type=_path, help="a TOML file; its settings apply on top of --preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set train.kimg=50 (repeatable)")


# --kimg N is --set train.kimg=N, and so on
SHORTHANDS = {"data": "data.name", "kimg": "train.kimg", "minutes": "train.minutes", "seed": "train.seed",
              "device": "train.device"}


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set's overrides, then those of the shorthand flags the command has and was given."""
    return list(args.overrides) + [f"{key}={getattr(args, flag)}" for flag, key in SHORTHANDS.items()
                                   if getattr(args, flag, None) is not None]


def _config_from_args(args: argparse.Namespace):  # -> Config
    from .config import load_config

    return load_config(preset=args.preset, path=args.config, overrides=_overrides(args))


def cmd_presets(args: argparse.Namespace) -> int:
    from .config import preset_dict, preset_names

    names = preset_names()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {preset_dict(name).get('description', '')}")
    return 0


def _is_run(path: str) -> bool:
    """Whether a command-line word names a run directory or a checkpoint file rather than a word to look up."""
    p = Path(path).expanduser()
    return (p.is_dir() and (p / "config.toml").is_file()) or (p.is_file() and p.suffix in (".pt", ".safetensors"))


def _looks_like_path(word: str) -> bool:
    """A word that can only be meant as a run or checkpoint: setting names have no slash or file suffix (a bare
    folder name may be a word to look up, such as data)."""
    return "/" in word or os.sep in word or word.endswith((".pt", ".safetensors"))


def cmd_settings(args: argparse.Namespace) -> int:
    from .config import describe

    words = list(args.words)
    run = words.pop(0) if words and _is_run(words[0]) else None
    if run is None and words and _looks_like_path(words[0]):  # else "no setting mentions 'runs/0003'"
        where = Path(words[0]).expanduser()
        raise UserError(f"{words[0]} is not a run directory (no config.toml in it) or a checkpoint file; give one "
                        "made by `ganforge train`" if where.exists() else
                        f"{words[0]} does not exist; give a run directory or checkpoint made by `ganforge train`")
    if len(words) > 1:
        raise UserError(f"settings takes a run (or checkpoint) and one word to look up, got {' '.join(args.words)}"
                        + ("" if run else f"; {words[0]} is no run directory (with a config.toml) or checkpoint"))
    if run is not None:
        if args.preset or args.config or args.overrides:
            raise UserError("give a run (or checkpoint), or --preset/--config/--set, not both: a run's settings are "
                            "those it trained with")
        cfg = _run_config(Path(run).expanduser())
    else:
        cfg = _config_from_args(args)
    print(describe(cfg, words[0] if words else "", args.changed), end="")
    return 0


def _dry_run_checks(cfg: Config) -> None:
    """What a run checks before it trains, short of loading its data, so that a printed config is one the run
    would take; and the notes it would give when it starts."""
    from .data import (
        check_at_hand,
        check_batch_fits,
        check_class_count,
        known_class_count,
        known_size,
        source_format,
    )
    from .device import bf16_note, pick_device
    from .losses import get_loss
    from .models import inert_settings
    from .step import check_amp_device, check_batch_and_order, check_cuda_graph, cuda_graph_note
    from .tensorboard_log import check_available
    from .trainer import check_eval_memory, check_networks, source_notes

    nets = check_networks(cfg)
    get_loss(cfg.loss.name, cfg.loss.label_smoothing)
    device = pick_device(cfg.train.device)
    check_amp_device(cfg.train.amp, device)
    check_cuda_graph(cfg.train.cuda_graph, device)
    check_batch_and_order(cfg)
    check_eval_memory(cfg)
    check_at_hand(cfg.data)
    if (size := known_size(cfg.data)) is not None:
        check_batch_fits(cfg.train.batch_size, size)
    if (classes := known_class_count(cfg.data)) is not None:
        check_class_count(cfg.model.n_classes, cfg.data.name, classes, [])
    check_available(cfg.train.tensorboard)
    for line in [*source_notes(cfg, *source_format(cfg.data.name, cfg.data.fit)), *inert_settings(cfg)]:
        _tell(f"note: {line}")
    for note in (cuda_graph_note(cfg, device), bf16_note(cfg, device, nets)):
        if note:
            _tell(f"note: {note}")


def _tell(message: str) -> None:
    """A line on stderr. A closed stderr (`2>&1 | head`, a tee ended by the same Ctrl-C, a terminal that
    hung up) makes it go nowhere, rather than an OSError from inside an error's handler with a wrong exit
    code."""
    try:
        print(message, file=sys.stderr)
    except OSError:
        send_to_devnull(sys.stderr.fileno())


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .config import describe_changes
    from .trainer import (
        DEFAULT_OUT,
        TrainingInterrupted,
        anchored_paths,
        check_config_file,
        check_out_of_data,
        check_resume_target,
        check_run_name,
        later_checkpoints,
        resume,
        resume_changes,
        resume_config,
        train,
    )

    if args.resume is not None:
        if args.preset or args.config:
            raise UserError("--resume takes its config from the checkpoint; use --set to change settings")
        overrides = _overrides(args)
        if args.dry_run:
            path, ckpt, cfg = resume_config(args.resume, overrides)
            if check_resume_target(path, ckpt, cfg, args.out, args.name, args.rewind):
                later_checkpoints(path, int(ckpt["nimg"]), args.rewind)
                check_config_file(path, ckpt, overrides)
            else:
                out = args.out if args.out is not None else DEFAULT_OUT
                _tell(f"note: {path} lies in no run directory, so the resume would go on in a new one under {out}, "
                      "from a copy of it")
            _dry_run_checks(cfg)
            changes = resume_changes(ckpt, cfg)
            if changes:  # stderr: stdout stays the TOML to pass to --config
                _tell(f"note: this resume would change {path.name}'s settings: {describe_changes(changes)}")
            print(cfg.to_toml(), end="")
            return 0
    else:
        if args.rewind:
            raise UserError("--rewind goes with --resume RUN/checkpoints/ckpt-N.pt: the checkpoint to go back to")
        check_run_name(args.name)
        cfg = _config_from_args(args)
        out = args.out if args.out is not None else DEFAULT_OUT
        if args.dry_run:
            check_out_of_data(cfg, out)  # before the notes: a refused run is one line
            _dry_run_checks(cfg)
            print(anchored_paths(cfg).to_toml(), end="")  # as the run's config.toml will hold it
            return 0
    distributed.init_from_env(args.device or "auto")
    try:
        if args.resume is not None:
            resume(args.resume, overrides, rewind=args.rewind, out=args.out, name=args.name)
            return 0
        train(cfg, out=out, name=args.name)
    except TrainingInterrupted as e:
        if distributed.info().is_main:
            from .plugins import plugin_args

            again = shlex.join([*plugin_args(), "train", "--resume", str(e.run_dir)])
            _tell(f"interrupted: {e}; continue with: {distributed.launch_command()} {again}")
        return EXIT_INTERRUPTED
    finally:
        distributed.shutdown()
    return 0


def _checked_class(G: Any, class_: str) -> int:
    """--class as a class name of the run's data set (a folder's subfolder name) or a number 0..K-1."""
    k = getattr(G, "n_classes", 0)
    if not k:
        raise UserError("--class needs a class-conditional run (model.n_classes > 0); this generator is "
                        "unconditional")
    names = list(getattr(G, "classes", []))
    if class_ in names:
        return names.index(class_)
    folded = [n for n in names if n.casefold() == class_.casefold()]
    if len(folded) == 1:  # --class trouser for Trouser
        return names.index(folded[0])
    try:
        number = int(class_)
    except ValueError:
        listed = f"its classes: {', '.join(names)}, or" if 0 < len(names) <= 20 else "give"
        raise UserError(f"--class {class_!r} is not a class of this run; {listed} a number from 0 to {k - 1}") from None
    if not 0 <= number < k:
        raise UserError(f"--class must be between 0 and {k - 1}, got {class_}")
    return number


def _sample_labels(G: Any, args: argparse.Namespace, grid: bool) -> tuple[Any, int | None]:
    """Labels for a conditional G and the grid's row length: --class for all samples, else one row per
    class for a grid and balanced classes otherwise."""
    import torch

    from .models import balanced_labels

    k = getattr(G, "n_classes", 0)
    if args.class_ is not None:
        return torch.full((args.n,), _checked_class(G, args.class_), dtype=torch.long), args.nrow
    if not k:
        return None, args.nrow
    if grid:
        from .report import class_grid_nrow

        per_class = -(-args.n // k)
        return torch.arange(k).repeat_interleave(per_class)[: args.n], args.nrow or class_grid_nrow(per_class, k)
    return balanced_labels(args.n, k), args.nrow


def _check_interpolation(args: argparse.Namespace, out: Path) -> None:
    from . import report

    if args.interpolate < 2:
        raise UserError(f"--interpolate takes the images per walk, at least 2, got {args.interpolate}")
    if args.n < args.interpolate:
        raise UserError(f"--n {args.n} is fewer images than one walk of --interpolate {args.interpolate}; "
                        f"give --n {args.interpolate} or more (--n images make --n // --interpolate walks)")
    if out.suffix.lower() not in (*report.GRID_FORMATS, ".gif"):
        raise UserError(f"--out {out}: an interpolation is a grid, one walk per row (a .png, .jpg or .webp), or a "
                        ".gif whose frames walk all rows at once")
    if args.n // args.interpolate * args.interpolate > MAX_GRID_IMAGES:
        raise UserError(f"--n {args.n} is more images than one picture or animation shows (at most "
                        f"{MAX_GRID_IMAGES:,}); lower --n or --interpolate")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")


def _check_nearest(args: argparse.Namespace, out: Path) -> None:
    from . import report

    if args.nearest < 1:
        raise UserError(f"--nearest takes the training images shown beside each sample, at least 1, got {args.nearest}")
    if args.interpolate is not None:
        raise UserError("--nearest and --interpolate each draw a grid of their own; give one of them")
    if out.suffix.lower() not in report.GRID_FORMATS:
        raise UserError(f"--out {out}: nearest neighbours are a grid, one sample per row; give a .png (or .jpg, "
                        ".webp)")
    if args.n * (args.nearest + 1) > MAX_GRID_IMAGES:
        raise UserError(f"--n {args.n} samples with {args.nearest} neighbours each is more than one picture shows "
                        f"(at most {MAX_GRID_IMAGES:,} images); draw fewer")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; choose another --out or pass --force to replace it")


def _sample_nearest(args: argparse.Namespace, out: Path) -> int:
    """--n samples, one per row, each followed by its --nearest training images by pixel distance."""
    from . import checkpoint as ckpt_io
    from . import report
    from .data import image_count, missing_folder
    from .errors import DatasetMissing
    from .generators import generator_from_checkpoint
    from .metrics.core import COPIES_MAX_SHIFT, real_image_set
    from .plugins import stored_config

    path, state = ckpt_io.load_resolved(args.run, args.ckpt)  # once: G and the config that says where its images are
    G = generator_from_checkpoint(state, path, args.device or "auto", ema=not args.no_ema)
    cfg = stored_config(state)
    missing = missing_folder(cfg.data.name)
    if missing:
        raise UserError(f"{missing}; --nearest compares the samples with them")
    try:
        train = real_image_set(cfg.data).images
    except DatasetMissing as e:
        raise UserError(f"{e.what}; --nearest compares the samples with the run's training images") from e
    if args.nearest > len(train):
        raise UserError(f"--nearest {args.nearest} is more than the run's {image_count(len(train), 'training image')}")
    labels, _ = _sample_labels(G, args, grid=True)
    samples = G.sample(args.n, seed=args.seed, labels=labels, truncation=args.truncation)
    mirror = cfg.data.mirror
    images, dists = report.nearest_training_grid(samples, train, args.nearest, mirror=mirror)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.save_grid(images, out, nrow=args.nearest + 1)
    print(f"wrote {args.n} sample{'s' * (args.n > 1)} to {out}, one per row, each followed by its {args.nearest} "
          f"nearest of the run's {image_count(len(train), 'training image')}"
          f"{' and their mirror images (data.mirror; shown as they matched)' if mirror else ''} (pixel distance, "
          f"the smallest over shifts of up to {COPIES_MAX_SHIFT} px; nearest "
          f"{dists[:, 0].min():.2f} to {dists[:, 0].max():.2f}, median {dists[:, 0].median():.2f})")
    return 0


def _sample_interpolation(G: Any, args: argparse.Namespace, out: Path) -> int:
    """--n // --interpolate walks between random latent points, one per row; a conditional G keeps one class
    per row (--class, else the classes in turn)."""
    import torch

    from . import report

    rows = args.n // args.interpolate
    labels = None  # a conditional G's walks take the classes in turn
    if args.class_ is not None:
        labels = torch.full((rows,), _checked_class(G, args.class_), dtype=torch.long)
    images = G.interpolate(rows, args.interpolate, seed=args.seed, labels=labels, truncation=args.truncation)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".gif":
        frames = report.save_walk_gif(images, args.interpolate, out, nrow=args.nrow)
        print(f"wrote {rows} latent walk{'s' * (rows > 1)} of {args.interpolate} images to {out}, all at once: "
              f"{frames} frames, there and back")
        return 0
    report.save_grid(images, out, nrow=args.interpolate)
    print(f"wrote {rows} latent walk{'s' * (rows > 1)} of {args.interpolate} images to {out}, one per row")
    return 0


MAX_GRID_IMAGES = 10_000  # 100 x 100 cells; 20,000 28x28 samples already took 1.2 GB to draw as one grid


def _more_samples_command(args: argparse.Namespace, n: int) -> str:
    """The `ganforge sample` command that adds n samples to args.out as this one would have gone on."""
    from .plugins import plugin_args

    words = ["ganforge", *plugin_args(), "sample", str(args.run), "--n", str(n), "--out", str(args.out), "--force"]
    for flag, value, default in (("--seed", args.seed, 0), ("--ckpt", args.ckpt, "latest"),
                                 ("--class", args.class_, None), ("--batch-size", args.batch_size, 1000),
                                 ("--device", args.device, None), ("--truncation", args.truncation, None)):
        if value != default:
            words += [flag, str(value)]
    return shlex.join(words + ["--no-ema"] * args.no_ema)


def cmd_sample(args: argparse.Namespace) -> int:
    import time

    from . import checkpoint as ckpt_io
    from . import report
    from .generators import load_generator

    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size), ("--nrow", args.nrow)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    out = Path(args.out)
    if not out.suffix and Path("x" + out.name).suffix.lower() in (*report.GRID_FORMATS, ".npz", ".gif"):
        # Path(".png") has no suffix: it would become a hidden folder of PNGs
        raise UserError(f"--out {out} is an extension without a name; give a file such as samples{out.name}")
    if out.suffix.lower() in report.GRID_FORMATS and args.n > MAX_GRID_IMAGES:
        raise UserError(f"a grid of {args.n:,} samples is more than one picture shows (at most {MAX_GRID_IMAGES:,}); "
                        "write many samples with --out DIR/ (one PNG each) or --out FILE.npz")
    if out.suffix.lower() == ".gif" and args.interpolate is None and args.nearest is None:
        raise UserError(f"--out {out}: a .gif animates latent walks; add --interpolate STEPS (the frames per walk)")
    if args.nearest is not None:
        _check_nearest(args, out)
    if args.interpolate is not None:
        _check_interpolation(args, out)
    if args.nearest is not None:
        return _sample_nearest(args, out)
    G = load_generator(args.run, ckpt=args.ckpt, device=args.device or "auto", ema=not args.no_ema)
    if args.interpolate is not None:
        return _sample_interpolation(G, args, out)
    labels, nrow = _sample_labels(G, args, grid=out.suffix.lower() in report.GRID_FORMATS)

    if out.suffix.lower() == ".npz":
        if out.exists() and not args.force:
            raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        ckpt_io.remove_orphan_temps_of(out)  # a killed earlier try's partial file, before the disk check
        start = time.perf_counter()
        report.save_npz_stream(G, args.n, out, seed=args.seed, batch_size=args.batch_size, labels=labels,
                               truncation=args.truncation)
        seconds = time.perf_counter() - start
        print(f"wrote {_samples(args.n)} to {out} (uint8 [N, H, W, C] as arr_0) in {seconds:.1f}s, "
              f"{args.n / seconds:,.0f} images/s")
        return 0
    if out.suffix.lower() in report.GRID_FORMATS:
        if out.exists() and not args.force:
            raise UserError(f"{out} exists; choose another --out or pass --force to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        report.save_grid(G.sample(args.n, seed=args.seed, labels=labels, truncation=args.truncation), out, nrow=nrow)
        print(f"wrote a grid of {_samples(args.n)} to {out}")
        return 0
    if out.suffix:
        raise UserError(f"--out {out}: give a .png (or .jpg, .webp) for a grid, a .npz for an array, or a directory "
                        "for PNGs")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} exists and is not empty; choose another --out or pass --force to add to it")
    names = None
    if labels is not None and args.class_ is None:  # a conditional G's classes in subfolders, as data folders
        names = report.class_folder_names(list(getattr(G, "classes", [])), G.n_classes)
    # --force adds after each folder's last image, overwriting none, and goes on in the seed's noise (and
    # classes) from there: adding n to n samples gives the 2n samples of one call, not n repeated
    first = report.images_in_sample_folder(out, names)
    if names is not None:
        labels = (labels + first) % G.n_classes
    started = time.perf_counter()
    try:
        paths = report.save_sample_folder(G, args.n, out, seed=args.seed, batch_size=args.batch_size,
                                          labels=labels, names=names, first=first, truncation=args.truncation)
    except KeyboardInterrupt:
        if args.debug:
            raise
        done = report.images_in_sample_folder(out, names) - first
        _tell(f"interrupted after writing {done} of {args.n} samples to {out}/; write the rest with: "
             f"{_more_samples_command(args, args.n - done)}")
        return EXIT_INTERRUPTED
    seconds = time.perf_counter() - started
    rate = f"in {seconds:.1f}s, {args.n / seconds:,.0f} images/s"
    if names is not None:
        used = [names[c] for c in labels.unique().tolist()]
        print(f"wrote {_samples(args.n)} to {out}/ in {len(used)} class folder{'s' * (len(used) > 1)} "
              f"({used[0]}/" + (f" to {used[-1]}/)" if len(used) > 1 else ")") + f" {rate}")
        return 0
    where = f"{paths[0].name} to {paths[-1].name}" if len(paths) > 1 else paths[0].name
    print(f"wrote {_samples(args.n)} to {out}/ ({where}) {rate}")
    return 0


def _print_records(records: list[dict], notes: bool = True) -> None:
    from .metrics.core import metric_notes, reference_label

    print(f"{'metric':<20} {'value':>12}  {'n_fake':>7} {'n_real':>7}  reference / extractor")
    for r in records:
        value = r["value"]
        shown = f"{value:12.5g}" if isinstance(value, float) else f"{value!s:>12}"
        print(f"{r['metric']:<20} {shown}  {r['n_fake']:>7} {r['n_real']:>7}  {reference_label(r['reference'])} / "
              f"{r['extractor']}")
    for note in metric_notes(records) if notes else ():
        print(f"note: {note}")
    truncation = next((r["truncation"] for r in records if r.get("truncation") is not None), None)
    if truncation is not None and notes:
        print(f"note: samples drawn with z truncated to [-{truncation:g}, {truncation:g}]: a measure of that "
              "distribution, not of G's own, recorded apart from the run's untruncated results")


def _check_metrics_out(path: Path) -> None:
    """Refuse an --out that cannot take the results before spending time on the evaluation."""
    from .metrics.core import read_metrics_history

    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a file such as {path / 'metrics.json'}")
    read_metrics_history(path)  # the file append_metrics_json would refuse at the end
    path.parent.mkdir(parents=True, exist_ok=True)


def cmd_download(args: argparse.Namespace) -> int:
    from .metrics.inception import INCEPTION_URL, download_inception_weights

    path, fetched = download_inception_weights(args.out, args.url or INCEPTION_URL, progress=sys.stderr.isatty())
    if fetched:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, checked); the Inception metrics find it "
              + ("there" if args.out is None else f"with --inception-weights {shlex.quote(str(path))}"))
    else:
        print(f"{path} is already there and checked; nothing downloaded")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .compare import expand_runs

    runs = expand_runs(args.runs)
    if len(runs) <= 1:
        args.run = runs[0] if runs else None
        return _evaluate_one(args)
    if args.fake:
        raise UserError("give either run directories / checkpoints, or --real and --fake, not both")
    if os.sep in args.ckpt or Path(args.ckpt).is_file():
        raise UserError(f"--ckpt {args.ckpt} is one checkpoint and {len(runs)} runs are given; with several runs use "
                        "latest, best, all or a checkpoint's name (ckpt-000042000)")

    def evaluate(run: Path) -> None:
        print(f"== {run}")
        _evaluate_one(argparse.Namespace(**{**vars(args), "run": run}))

    failed = _each_run(runs, evaluate)  # one run's refusal (still training, a missing plugin) stops no other
    print(f"evaluated {len(runs) - len(failed)} of {len(runs)} runs; `ganforge compare "
          f"{' '.join(map(str, args.runs))}` puts them side by side")
    _refuse_failed(failed, runs, "runs not evaluated")
    return 0


def _each_run(runs: list[Path], action: Callable[[Path], Any]) -> list[Path]:
    """action(run) for every run; a run's UserError is printed and the others go on. Returns the runs that
    failed."""
    failed = []
    for run in runs:
        try:
            action(run)
        except UserError as e:
            _tell(f"{_error_prefix()}: {e}")
            failed.append(run)
    return failed


def _refuse_failed(failed: list[Path], runs: list[Path], what: str) -> None:
    if failed:
        raise UserError(f"{len(failed)} of {len(runs)} {what} ({', '.join(map(str, failed))}): see the errors above")


def _evaluate_one(args: argparse.Namespace) -> int:
    from .errors import DatasetMissing

    try:
        return _evaluate(args)
    except DatasetMissing as e:  # train's cure (--set data.root) is not eval's
        raise UserError(f"{e.what}; tell eval where it is with --data-root DIR, its parent (a training run with "
                        f"--set data.name={e.name} --set data.download=true fetches it)") from e


def _evaluate(args: argparse.Namespace) -> int:
    import time

    import torch

    from .metrics import evaluate, evaluate_run
    from .metrics.core import metric_list

    start = time.perf_counter()
    if args.n is not None and args.n < 2:
        raise UserError(f"--n must be at least 2 images to evaluate, got {args.n}")
    metrics = metric_list(args.metrics) if args.metrics is not None else None
    if metrics == []:
        raise UserError(f"--metrics {args.metrics!r} names no metric; give one or more, comma-separated (such as "
                        "fd_digits,kid_digits), or leave --metrics out for the defaults")
    if args.out and args.run is None:
        _check_metrics_out(Path(args.out))
    if args.run is not None:
        if args.fake:
            raise UserError("give either a run directory / checkpoint, or --real and --fake, not both (with a run, "
                            "--real alone names another reference set)")
        if args.out:
            raise UserError("--out is for --real/--fake; a run's results are appended to its own metrics.json")
        if args.img_size is not None or args.channels is not None:
            raise UserError("--img-size and --channels are for --real/--fake; a run's images are compared at its "
                            "own data.img_size and data.channels")
        if args.mirror:
            raise UserError("--mirror is for --real/--fake; a run's copies take its mirror images when it trained "
                            "with data.mirror")
        from . import checkpoint as ckpt_io
        from .metrics.core import metrics_path_for

        if args.ckpt == "all":
            return _eval_every_checkpoint(args, metrics, start)
        # looked up here to name where the results go; evaluate_run looks again, as a run training meanwhile
        # moves its latest checkpoint on
        path = ckpt_io.resolve_checkpoint(args.run, args.ckpt)
        notes: list[str] = []  # said once the results are saved and shown: `| head -1` cuts the saying short
        records = evaluate_run(args.run, metrics, ckpt=args.ckpt, n=args.n or 10_000, seed=args.seed,
                               device=args.device or "cpu", inception_weights=args.inception_weights,
                               log=notes.append, reference=args.real, reference_root=args.data_root,
                               ema=not args.no_ema, truncation=args.truncation)
        saved = f"with their protocol appended to {metrics_path_for(path)}"
        if (metrics_path_for(path).parent / "config.toml").is_file():  # a run's: its report shows them too
            saved += f"; {_rewrite_report(metrics_path_for(path).parent)}"
        for note in notes:
            print(note)
        _modes_count_note(args, metrics)
    else:
        if not (args.real and args.fake):
            raise UserError("give a run directory or checkpoint, or both --real and --fake (e.g. folder:PATH)")
        if args.no_ema:
            raise UserError("--no-ema picks a run's G over its G_ema; --fake images are evaluated as they are")
        if args.truncation is not None:
            raise UserError("--truncation changes how a run's generator samples; --fake images are evaluated as "
                            "they are")
        from .config import DataConfig
        from .data import STACKED_SETS, check_dataset_name, check_folder, load_dataset
        from .metrics.core import (
            EvalContext,
            ImageSet,
            append_metrics_json,
            log_digit_metrics_note,
            offline_default,
            real_image_set,
        )

        for name in (args.real, args.fake):
            check_dataset_name(name)
            check_folder(name)
        notes: list[str] = []  # said with the results, so that no note comes before an error (an unreadable image)
        if metrics:  # a name that does not exist is refused before anything else is said
            log_digit_metrics_note(args.real, metrics, notes.append)
        img_size, channels = _comparison_format(args, notes)
        if not metrics:
            metrics = offline_default(args.real, img_size)
            log_digit_metrics_note(args.real, metrics, notes.append)
        stacked = next((name for name in (args.real, args.fake) if name in STACKED_SETS), None)
        if channels != 3 and stacked:
            raise UserError(f"{stacked} has three channels, a digit in each, and --channels {channels} asks "
                            "for grey; compare in colour: --channels 3, or leave --channels out")
        root = args.data_root or DataConfig.root
        real_cfg = DataConfig(name=args.real, img_size=img_size, channels=channels, root=root, mirror=args.mirror)
        fake_cfg = DataConfig(name=args.fake, img_size=img_size, channels=channels, root=root)
        fake_data, real_data = load_dataset(fake_cfg), load_dataset(real_cfg)
        notes += [f"note: {data.cache_note}" for data in (fake_data, real_data) if data.cache_note]
        index, split = torch.arange(len(fake_data)), "all"
        if args.n is not None and args.n < len(fake_data):
            index = torch.randperm(len(fake_data), generator=torch.Generator().manual_seed(args.seed))[: args.n]
            split = f"random {args.n} (seed {args.seed})"
        labelled = len(fake_data.classes) > 1  # class subfolders, or an .npz with labels
        fake = ImageSet(fake_data.batch(index), args.fake, split, labels=fake_data.labels[index] if labelled else None,
                        classes=fake_data.classes if labelled else None)
        ctx = EvalContext(fake, real_image_set(real_cfg, real_data), device=args.device or "cpu", seed=args.seed,
                          inception_weights=args.inception_weights)
        records = evaluate(ctx, metrics)
        saved = "not saved (pass --out FILE to keep them with their protocol)"
        if args.out:  # kept before anything is said: `| head -1` cuts the saying short
            append_metrics_json(records, Path(args.out), {"real": args.real, "fake": args.fake,
                                                          "img_size": img_size, "channels": channels})
            saved = f"with their protocol written to {args.out}"
        for note in notes:
            print(note)
    _print_records(records)
    print(f"evaluated in {time.perf_counter() - start:.1f}s; results {saved}")
    return 0


def _modes_count_note(args: argparse.Namespace, metrics: list[str] | None) -> None:
    """Said once modes has scored a run, so that no note comes before an error (a run modes cannot score)."""
    from .metrics.core import MODES_N

    if args.n is not None and args.n != MODES_N and "modes" in (metrics or []):
        # a generator is sampled to the protocol's count; a fixed --fake set takes --n
        print(f"note: modes always scores the protocol's {MODES_N:,} samples of a generator; --n {args.n} sets the "
              "count of the other metrics only")


def _eval_every_checkpoint(args: argparse.Namespace, metrics: list[str] | None, start: float) -> int:
    """eval --ckpt all: the table of each checkpoint as it is scored, then the best checkpoint of each metric."""
    import time

    from .metrics.core import best_checkpoints, evaluate_checkpoints

    results = []
    for path, records in evaluate_checkpoints(
            args.run, metrics, log=print, n=args.n or 10_000, seed=args.seed, device=args.device or "cpu",
            inception_weights=args.inception_weights, reference=args.real, reference_root=args.data_root,
            ema=not args.no_ema, truncation=args.truncation):
        run_dir = path.parent.parent  # the same for every checkpoint; there is at least one
        if records is None:
            print(f"{path.name} was removed by the training run since it was listed; skipped")
            continue
        if not results:
            _modes_count_note(args, metrics)
        print(f"{path.name}:")
        _print_records(records, notes=not results)  # the note once: every checkpoint is scored at the same n
        results.append((path, records))
    best = best_checkpoints(results)
    if len(results) > 1 and best:
        print("best checkpoint per metric:")
        for metric, (value, path) in best.items():
            print(f"  {metric:<20} {value:12.5g}  {path.name}")
    done = len(results)
    print(f"evaluated {done} checkpoint{'s' * (done != 1)} in {time.perf_counter() - start:.1f}s; results with "
          f"their protocol appended to {run_dir / 'metrics.json'}; {_rewrite_report(run_dir)}")
    return 0


def _rewrite_report(run_dir: Path) -> str:
    """Rebuild a run's report.html after an evaluation; one that cannot be (a hand-edited config.toml, say)
    is said, without taking the recorded results with it."""
    from .html_report import write_html_report

    try:
        return f"report {write_html_report(run_dir)}"
    except UserError as e:
        return f"report.html not rewritten: {e}"


INFERRED_SIDE_MAX = 299  # Inception's input: a larger inferred size only costs memory


def _comparison_format(args: argparse.Namespace, notes: list[str]) -> tuple[int, int]:
    """--img-size and --channels of eval --real/--fake, each when not given taken from the images: the
    --fake set's side (at most INFERRED_SIDE_MAX), and colour when either set is in colour, so FID of
    colour images is never measured on grey ones. Adds to `notes` what it chose."""
    from .data import source_format

    if args.channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, got {args.channels}")
    if args.img_size is not None and not 8 <= args.img_size <= 1024:
        raise UserError(f"--img-size must be between 8 and 1024, got {args.img_size}")
    if args.img_size is not None and args.channels is not None:
        return args.img_size, args.channels
    fake_colour, fake_side = source_format(args.fake)
    real_colour, real_side = source_format(args.real)
    img_size = args.img_size or min(fake_side or real_side or 28, INFERRED_SIDE_MAX)
    channels = args.channels or (3 if fake_colour or real_colour else 1)
    told = [f"at {img_size}x{img_size}" if args.img_size is None else "",
            ("in colour" if channels == 3 else "in grey") if args.channels is None else ""]
    notes.append(f"comparing {' '.join(t for t in told if t)}, as the images are (choose with --img-size and "
                 "--channels)")
    return img_size, channels


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import check_metric, compare_runs, format_comparison, format_seed_comparison, plot_comparison

    plot = Path(args.plot) if args.plot else None
    if plot is not None:
        if plot.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise UserError(f"--plot takes a .png, .pdf or .svg file, got {plot}")
        if plot.exists() and not args.force:
            raise UserError(f"{plot} exists; choose another --plot or pass --force to replace it")
        if not plot.parent.is_dir():
            raise UserError(f"the folder {plot.parent} does not exist; create it or choose another --plot")
    if args.metric and plot is None:
        raise UserError("--metric picks what --plot draws; add --plot FILE.png")
    # one run's refusal (a config.toml broken by hand) leaves the others' table
    refusals: list[tuple[Path, UserError]] = []
    views = compare_runs(args.runs, on_error=lambda run, error: refusals.append((run, error)))
    if len(refusals) == 1 and not views:  # the one run given: its error alone
        raise refusals[0][1]
    for _, error in refusals:
        _tell(f"{_error_prefix()}: {error}")
    failed = [run for run, _ in refusals]
    runs = failed + [view.path for view in views]
    if not views:
        _refuse_failed(failed, runs, "runs not compared")
    if args.metric:
        check_metric(views, args.metric)  # before the table, so a bad --metric prints one line only
    print(format_seed_comparison(views) if args.seeds else format_comparison(views))
    if plot is not None:
        metric = plot_comparison(views, plot, metric=args.metric)
        print(f"plot of {metric + ' and ' if metric else ''}the losses against kimg written to {plot}")
    _refuse_failed(failed, runs, "runs not compared")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .compare import expand_runs
    from .html_report import write_html_report

    runs = expand_runs(args.runs)
    if len(runs) == 1:
        print(f"wrote {write_html_report(runs[0])}")
        return 0
    # one run's refusal (a config.toml broken by hand) stops no other
    failed = _each_run(runs, lambda run: print(f"wrote {write_html_report(run)}"))
    _refuse_failed(failed, runs, "reports not written")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .report import network_summary

    if args.run is None:
        print(network_summary(_config_from_args(args)))
        return 0
    if args.preset or args.config or args.overrides:
        raise UserError("give a run (or checkpoint), or --preset/--config/--set, not both: a run's networks are "
                        "those its config built")
    print(network_summary(_run_config(Path(args.run))))
    from .checkpoint import is_generator_file

    if Path(args.run).is_file() and is_generator_file(args.run):
        print(f"note: {args.run} holds G alone; D is the one its config builds, as the run trained it")
    return 0


def _run_config(run: Path) -> Config:
    """The config a run directory (its config.toml) or checkpoint trained with."""
    from . import checkpoint as ckpt_io
    from .config import load_config
    from .plugins import stored_config

    if run.is_dir() and (run / "config.toml").is_file():
        try:
            return load_config(path=run / "config.toml", stored=True)
        except UserError as e:
            saved = ckpt_io.list_checkpoints(run)
            if not (str(e).startswith("unknown ") and saved):
                raise
            return stored_config(ckpt_io.load_checkpoint(saved[-1]))  # its refusal names the plugins the run loaded
    return stored_config(ckpt_io.load_resolved(run)[1])


def cmd_export(args: argparse.Namespace) -> int:
    from .generators import PROGRAM_META, PROGRAM_SUFFIX, export_generator

    done = export_generator(args.run, args.out, ckpt=args.ckpt, ema=not args.no_ema, force=args.force)
    size = done.path.stat().st_size
    try:
        against = f" against the checkpoint's {done.source.stat().st_size / 2**20:.1f} MiB"
    except FileNotFoundError:  # a run that trains meanwhile has removed it, its keep_ckpts passed
        against = ""
    if done.path.suffix.lower() == PROGRAM_SUFFIX:
        use = (f"run it in PyTorch, without ganforge, as torch.export.load({str(done.path)!r}).module()(z) "
               f"(its extra file {PROGRAM_META} says what it takes and gives)")
    else:
        use = f"sample it with {shlex.join(['ganforge', 'sample', str(done.path), '--n', '64', '--out', 'grid.png'])}"
    print(f"wrote {done.weights} of {done.source.name} ({done.kimg:g} kimg) to {done.path}: {size / 2**20:.1f} MiB"
          f"{against}; {use}")
    return 0


def _text(text: str) -> str:
    """A value that names something (a path, a checkpoint, a data set): an empty one is refused, where it
    would otherwise read as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value; give a name or path")
    return text


def _path(text: str) -> Path:
    return Path(_text(text))


def _seed(text: str) -> int:
    """--seed: a whole number in the range every random stream takes (numpy's is the narrowest)."""
    from .config import MAX_SEED

    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {text!r}") from None
    if not 0 <= seed < MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed is from 0 to {MAX_SEED - 1}, got {seed}")
    return seed


def _truncation(text: str) -> float:
    """--truncation: a threshold above 0 (z is truncated to [-T, T])."""
    from .models.layers import check_truncation

    try:
        return check_truncation(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a threshold above 0 such as 0.5 or 1 (z is truncated to [-T, T]), got "
                                         f"{text!r}") from None


def _count(text: str) -> int:
    """--n and other counts: a whole number, also written 10_000 or 1e4."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"a whole number, got {text!r}")
    return int(value)


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line, as every other error is, pointing to --help rather than printing usage."""

    def error(self, message: str) -> NoReturn:
        if message.endswith("required: command"):
            commands = next(a for a in self._actions if isinstance(a, argparse._SubParsersAction)).choices
            message = f"give a command: {', '.join(commands)}"
        self.exit(2, f"{_error_prefix()}: {self.prog}: {message} (see {self.prog} --help)\n")


def _version_line() -> str:
    """ganforge's version and torch's, read from the installed metadata (importing torch takes seconds), and
    the plugins installed packages offer: what a bug report needs."""
    from importlib import metadata

    from . import __version__

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    line = f"ganforge {__version__} (torch {torch_version}, Python {sys.version.split()[0]})"
    from .plugins import installed_plugins

    installed = [f"{e.module} ({e.dist.name} {e.dist.version})" if e.dist is not None else e.module
                 for e in installed_plugins()]
    return line + (f"\ninstalled plugins: {', '.join(installed)}" if installed else "")


class _VersionAction(argparse.Action):
    """--version, looked up only when asked for: reading the installed metadata costs every command ~20 ms."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(_version_line())
        parser.exit()


PLUGIN_HELP = ("a .py file (or module name) to import first, registering networks, losses or data sets of your "
               "own (repeatable; also $GANFORGE_PLUGINS)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="ganforge", description="Train, resume, sample, evaluate and compare GANs.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the versions and exit")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE",
                        help=PLUGIN_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("settings", help="every setting of a preset, config or run with its value and meaning, as "
                                        "TOML to edit and pass to --config",
                       usage="ganforge settings [RUN] [WORD] [--preset PRESET] [--config CONFIG] [--set KEY=VALUE] "
                             "[--changed] [--plugin FILE]")
    p.add_argument("words", nargs="*", metavar="RUN WORD",
                   help="a run directory or checkpoint: the settings it trained with (default: the preset's or "
                        "config's); WORD: only the settings whose name or meaning holds it (lr, ema, bn), or one "
                        "section's (data, model, loss, optim, train, eval)")
    _add_config_args(p)
    p.add_argument("--changed", action="store_true",
                   help="only the settings that differ from ganforge's built-in defaults: what the preset sets")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("train", help="train a GAN (or resume a run)")
    _add_config_args(p)
    p.add_argument("--out", type=_path, help="parent of the new run directory (default: runs)")
    p.add_argument("--name", help="the run directory's name after its number, in place of the preset's: "
                                  "runs/0007-NAME")
    p.add_argument("--resume", type=_path, help="a run directory or checkpoint to continue (in its run directory; "
                                                "a checkpoint from elsewhere, in a new one under --out)")
    p.add_argument("--rewind", action="store_true",
                   help="with --resume of a checkpoint that is not the run's latest: go back to it, removing the "
                        "later checkpoints and the stats, evaluations and grids after it")
    p.add_argument("--data", metavar="NAME",
                   help="shorthand for --set data.name=NAME: mnist5k, mnist, fashion-mnist, cifar10, celeba, "
                        "stacked-mnist5k, or folder:PATH for your own images (a folder, .zip or .npz)")
    p.add_argument("--kimg", type=float, help="shorthand for --set train.kimg=N: the run's length in thousands "
                                              "of real images")
    p.add_argument("--minutes", type=float, help="shorthand for --set train.minutes=M: end the run after M minutes "
                                                 "of training, if train.kimg does not end it first")
    p.add_argument("--seed", type=_seed, help="shorthand for --set train.seed=N")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (shorthand for --set train.device=...)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the resolved config as the run would before it trains (G and D build, the loss "
                        "takes its settings, the device is here, the data is where it points, holds a batch and, "
                        "for a built-in set, has model.n_classes classes); print it and stop")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="draw samples from a run or checkpoint")
    p.add_argument("run", type=_path, help="run directory or checkpoint file")
    p.add_argument("--n", type=_count, default=64, help="number of images")
    p.add_argument("--out", required=True, type=_text,
                   help="a .png (.jpg, .webp) for one grid, a .npz for a uint8 array "
                        "(streamed), or a directory for one PNG per image (a conditional "
                        "run's in one subfolder per class)")
    p.add_argument("--seed", type=_seed, default=0, help="noise seed: the same seed draws the same images "
                                                          "(default 0)")
    p.add_argument("--ckpt", default="latest", type=_text,
                   help="latest, best, one of the run's checkpoints by name (ckpt-000042000) or a checkpoint path")
    p.add_argument("--nrow", type=_count, help="images per grid row")
    p.add_argument("--class", dest="class_", help="conditional runs: draw only this class, by number or by name "
                                                   "(a folder's subfolder); default: a grid goes class by class")
    p.add_argument("--batch-size", type=_count, default=1000,
                   help="images generated at a time: bounds memory; each image keeps its noise (default 1000)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-ema", action="store_true", help="use G rather than G_ema")
    p.add_argument("--truncation", type=_truncation, metavar="T",
                   help="the truncation trick: z from the normal truncated to [-T, T], typical samples for less "
                        "variety (smaller T: more so); default: the full normal G trained on")
    p.add_argument("--interpolate", type=_count, metavar="STEPS",
                   help="latent walks: --n // STEPS walks, each STEPS images between two random z, one per row of a "
                        ".png, or all at once in the frames of a .gif")
    p.add_argument("--nearest", type=_count, metavar="K",
                   help="a .png with one sample per row, each followed by its K nearest training images by pixel "
                        "distance (the smallest over shifts of a pixel or two, as the copies metric measures it): "
                        "does G copy them?")
    p.add_argument("--force", action="store_true",
                   help="replace an existing grid or .npz / add to a non-empty folder after its last image, "
                        "going on in the seed's noise")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("eval", help="measure sample quality of a run, or of one image set against another")
    p.add_argument("runs", type=_path, nargs="*", metavar="run",
                   help="run directories or checkpoint files, or a folder of runs (runs/: every run in it)")
    p.add_argument("--ckpt", default="latest", type=_text,
                   help="latest, best, all (every checkpoint the run keeps, oldest "
                        "first), one of them by name (ckpt-000042000) or a checkpoint "
                        "path")
    p.add_argument("--n", type=_count, help="images to evaluate: generated from a run (default 10,000), or a seeded "
                                         "subset of --fake (default all)")
    p.add_argument("--metrics", help="comma-separated; default fd_digits,kid_digits,is_digits,pr,dc,classes "
                                     "(modes for Stacked MNIST runs; conditional runs add class_acc,"
                                     "fd_digits_per_class; images other than digits add swd, which compares "
                                     "patches of any images with no download); also copies (does G copy its "
                                     "training images?) and fid,kid,is,pr_inception")
    p.add_argument("--seed", type=_seed, default=0,
                   help="seed of the generated images and of the --n subset of --fake (default 0)")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps")
    p.add_argument("--inception-weights", type=_text,
                   help="path to the Inception weights file for fid/kid/is/pr_inception")
    p.add_argument("--no-ema", action="store_true", help="evaluate a run's G rather than its G_ema (the results "
                                                          "are marked generator \"G (not G_ema)\")")
    p.add_argument("--truncation", type=_truncation, metavar="T",
                   help="sample with z truncated to [-T, T] (see sample --truncation); the results are marked "
                        "with it, apart from the run's own")
    p.add_argument("--real", type=_text,
                   help="reference images: a dataset name or folder:PATH (a folder, .zip or .npz); "
                        "with a run, in place of its training set (e.g. all of it under data.max_images)")
    p.add_argument("--fake", type=_text,
                   help="images to evaluate without a run: folder:PATH (a folder, a .zip, or an .npz "
                        "such as ganforge sample --out writes) or a dataset name")
    p.add_argument("--img-size", type=int, help="with --real/--fake: resize both to this size (default: that of "
                   f"the --fake images, at most {INFERRED_SIDE_MAX})")
    p.add_argument("--channels", type=int, help="with --real/--fake: 1 or 3 (default: 3 when either set is in "
                   "colour)")
    p.add_argument("--data-root", type=_text,
                   help="root of the torchvision data set --real or --fake names, or a run's own "
                        "(default: data; with a run, the run's data.root)")
    p.add_argument("--out", type=_text, help="with --real/--fake: append the results to this metrics.json")
    p.add_argument("--mirror", action="store_true",
                   help="with --real/--fake: the --real images were trained on with their mirror images too "
                        "(data.mirror, StyleGAN2-ADA's --mirror), so copies counts a mirrored copy as a copy (a "
                        "run's own data.mirror says so for it)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="runs side by side: settings that differ, speed, latest metrics")
    p.add_argument("runs", type=_path, nargs="+",
                   help="run directories, checkpoints inside them, or a folder of runs such as runs/")
    p.add_argument("--plot", type=_text,
                   help="also draw a metric and the losses of every run against kimg into this .png")
    p.add_argument("--metric", help="with --plot: the metric to draw (default: the first one the runs recorded)")
    p.add_argument("--force", action="store_true", help="replace an existing --plot file")
    p.add_argument("--seeds", action="store_true",
                   help="one column per group of runs that differ in train.seed alone: each metric's mean (sd) "
                        "over the seeds, the best mean marked where the groups measured it alike")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="(re)write a run's report.html: samples, curves, collapse signals, metrics, "
                                      "networks, config")
    p.add_argument("runs", type=_path, nargs="+",
                   help="run directories, checkpoints inside them, or a folder of runs such as runs/")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("summary", help="layer, output shape and parameter count of G and D")
    p.add_argument("run", nargs="?", type=_text,
                   help="a run directory or checkpoint: its networks (else those of --preset, --config and --set)")
    _add_config_args(p)
    p.set_defaults(func=cmd_summary, seed=None, device=None)

    p = sub.add_parser("export", help="write a run's generator alone to a .safetensors file that sample, eval and "
                                      "load_generator take, or to a .pt2 program that PyTorch runs without ganforge")
    p.add_argument("run", type=_path, help="run directory, checkpoint file or (for a .pt2) exported .safetensors")
    p.add_argument("--out", required=True, type=_text,
                   help="the file to write: NAME.safetensors, G's weights and settings for ganforge, or NAME.pt2, a "
                        "torch.export program of G for PyTorch code without ganforge (torch.export.load)")
    p.add_argument("--ckpt", default="latest", type=_text,
                   help="latest, best, one of the run's checkpoints by name (ckpt-000042000) or a checkpoint path")
    p.add_argument("--no-ema", action="store_true", help="export G rather than G_ema")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("download", help="fetch the FID Inception weights that fid, kid, is and pr_inception need")
    p.add_argument("what", choices=["inception"], help="inception: torch-fidelity's port of the TensorFlow FID "
                   "Inception-v3 (data sets download with --set data.download=true)")
    p.add_argument("--out", default=None, type=_text,
                   help="file or folder (an existing one, or a path ending in /) to write "
                        "(default: torch's hub cache, where ganforge and torch-fidelity look)")
    p.add_argument("--url", default=None, help="a mirror of the file (http://, https:// or file://)")
    p.set_defaults(func=cmd_download)
    for command in sub.choices.values():  # after the command too: `ganforge train --plugin my_nets.py ...`
        command.add_argument("--plugin", dest="command_plugins", action="append", default=[], metavar="FILE",
                             help=PLUGIN_HELP)
    return parser


def _out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, torch's CPU allocator or a device out of memory."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return ("can't allocate memory" in text or "out of memory" in text.lower()
            or "Storage size calculation overflowed" in text)  # a shape whose byte count passes 2^63


# gloo's words for a collective whose peer process left, and the peer's address
PEER_GONE = re.compile(r"Connection (?:closed|reset) by peer(?: \[[^\]]*\]:\d+)?")


def _peer_stopped(e: BaseException) -> str | None:
    """gloo's words ('Connection closed by peer [127.0.0.1]:7907') where a collective failed because another
    process of the torchrun launch ended (a Ctrl-C that stopped it while this one was already training, its
    own error); None for any other failure."""
    distributed = sys.modules.get("ganforge.distributed")
    found = PEER_GONE.search(str(e)) if distributed is not None and distributed.joined_from_env() else None
    return found.group(0) if found else None


def _allocation_detail(e: BaseException) -> str:
    """What failed to allocate, in a few words: torch's CPU allocator names the bytes it tried for."""
    text = str(e)
    tried = re.search(r"tried to allocate (\d+) bytes", text)
    if tried:
        return f"tried to allocate {int(tried.group(1)) / 2**30:,.1f} GiB"
    overflowed = re.search(r"overflowed with sizes=\[([\d, ]*)\]", text)
    if overflowed:
        return f"a tensor of shape [{overflowed.group(1)}], too large to address"
    lines = [line for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _file_in_the_way(path: str) -> Path | None:
    """The file among path and its parents, where making path's folders failed because one is a file (or a
    device, as /dev/null)."""
    return next((p for p in (Path(path), *Path(path).parents) if p.exists() and not p.is_dir()), None)


def _samples(n: int) -> str:
    return f"{n:,} sample" + "s" * (n != 1)


def _error_prefix(word: str = "error") -> str:
    """'error', or 'error (rank N)' in the other processes of a torchrun launch, which all print their own."""
    rank = os.environ.get("RANK", "0")
    return word if rank == "0" or "WORLD_SIZE" not in os.environ else f"{word} (rank {rank})"


def main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading

    for stream in (sys.stdout, sys.stderr):
        utf8 = (getattr(stream, "encoding", None) or "").lower().replace("-", "") == "utf8"
        if hasattr(stream, "reconfigure") and (getattr(stream, "errors", None) == "strict" or not utf8):
            # a file name that is not UTF-8 (Python holds it as surrogates), or any accent on a terminal
            # that takes ASCII alone, is shown escaped rather than a crash
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = HangUpProof(sys.stdout), HangUpProof(sys.stderr)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # a scheduler's SIGTERM (a job's time limit) and a hang-up (SIGHUP: the terminal closed, an SSH
        # connection dropped) unwind like Ctrl-C: temp files are removed, training saves its checkpoint; none
        # interrupts an import half-way (see raise_interrupt). An ignored SIGHUP (nohup) stays ignored.
        stops = [(signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)]
        if hasattr(signal, "SIGHUP"):
            stops.append((signal.SIGHUP, signal.SIG_DFL))
        for sig, default in stops:
            if signal.getsignal(sig) is default:
                previous[sig] = signal.signal(sig, raise_interrupt)
    try:
        code = _dispatch(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stdout, sys.stderr = streams
    distributed = sys.modules.get("ganforge.distributed")  # imported by train only: keep other commands quick
    if distributed is not None and distributed.joined_from_env():
        # DistributedDataParallel's reducer keeps the gloo process group alive after destroy_process_group,
        # and its threads abort the interpreter's shutdown now and then (SIGABRT, "terminate called without
        # an active exception"); the run is complete and its files are closed, so a torchrun worker leaves
        # without that shutdown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _dispatch(args: argparse.Namespace) -> int:
    """Run the command; a UserError, interrupt, out-of-memory or unwritable path becomes one line and an exit
    code."""
    try:
        from .plugins import load_plugins

        load_plugins([*args.plugins, *args.command_plugins])  # before any config names what they register
        return args.func(args)
    except UserError as e:
        if args.debug:
            raise
        _tell(f"{_error_prefix()}: {e}")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        _tell(_error_prefix("interrupted"))
        return EXIT_INTERRUPTED
    except (MemoryError, RuntimeError) as e:
        peer_gone = None if args.debug else _peer_stopped(e)
        if peer_gone:
            _tell(f"{_error_prefix()}: another process of this torchrun launch stopped, so this one cannot go on "
                 f"(gloo: {peer_gone}); that process's own line says why")
            return EXIT_PEER_STOPPED
        if args.debug or not _out_of_memory(e):
            raise
        _tell(f"{_error_prefix()}: out of memory ({_allocation_detail(e)}); lower train.batch_size, the nets' widths "
             "(model.g_width, model.d_width, model.g_hidden, model.d_hidden), model.z_dim, train.grid_size or "
             "sample's --n / --batch-size")
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into `head` and the like
        send_to_devnull(sys.stdout.fileno())
        return 0
    except OSError as e:  # a path that cannot be made or written (read-only, missing parent, disk full)
        if args.debug or e.strerror is None:
            raise
        if e.filename and e.errno in (errno.ENOSPC, errno.EDQUOT):
            _tell(f"{_error_prefix()}: cannot write {e.filename}: {e.strerror}; free some space there or write "
                 "somewhere else (what was on disk before is kept)")
        elif e.filename and e.errno in (errno.EEXIST, errno.ENOTDIR) and _file_in_the_way(e.filename):
            _tell(f"{_error_prefix()}: {_file_in_the_way(e.filename)} is a file where a folder is needed; choose "
                 "another path or move the file")
        elif e.filename and e.errno == errno.ENAMETOOLONG:
            longest = max(Path(e.filename).parts, key=len)
            _tell(f"{_error_prefix()}: cannot use {e.filename}: {e.strerror} (its longest part has {len(longest)} "
                 "characters); give a shorter name (--name, --out)")
        elif e.filename:
            _tell(f"{_error_prefix()}: cannot use {e.filename}: {e.strerror}; check that its folder exists and is "
                 "writable, and that the disk has space")
        else:
            _tell(f"{_error_prefix()}: {e.strerror} while reading or writing a file (--debug shows which)")
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
