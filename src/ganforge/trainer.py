"""The training loop: it owns the order of D and G steps, counts progress in images seen, and does its
logging, grids and checkpoints at ticks, never inside the inner math."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import checkpoint as ckpt_io
from . import distributed, report, tensorboard_log
from .config import (
    Config,
    DataConfig,
    Overrides,
    apply_overrides,
    check_attributes,
    describe_changes,
    flatten,
    from_dict,
    load_config,
    override_items,
    parse_override,
    preset_names,
    settings_changes,
    toml_value,
)
from .data import (
    TORCHVISION_SETS,
    EpochSampler,
    ImageData,
    check_class_count,
    image_count,
    load_dataset,
    mirror_note,
    missing_folder,
    split_subfolders_note,
)
from .device import (
    bf16_note,
    cpu_has_bf16_matmul,
    has_conv,
    pick_device,
    prepare_deterministic,
    threads_note,
    threads_restored,
    training_kernels,
    use_channels_last,
)
from .errors import UserError
from .health import HealthCheck
from .html_report import write_html_report
from .interrupts import importing, raise_interrupt, retry_signal, send_to_devnull, silence_hung_up_terminal
from .losses import get_loss
from .models import build_discriminator, build_generator, inert_settings
from .plugins import naming_plugins, stored_config
from .step import (
    Stepper,
    build_state,
    check_batch_and_order,
    compute_platform,
    cuda_graph_note,
    grid_labels,
    platform_change,
    restore_state,
)

_RUN_DIR = re.compile(r"^(\d{4,})-")
DEFAULT_OUT = Path("runs")  # where new run directories go when no --out is given


def run_slug(name: str) -> str:
    """A run's name as it stands in its directory's: letters, digits, '_', '.' and '-', others made '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")


def check_run_name(name: str | None) -> None:
    if name is not None and not run_slug(name):
        raise UserError(f"run name {name!r} has no letter or digit to name a directory with; give one such as "
                        "lr-1e-3")


def check_out_of_data(cfg: Config, run_home: Path | str, resuming: bool = False) -> None:
    """Refuses run directories under cfg's image folder (run_home: --out, or the run directory a resume goes on
    in): the folder is read again at each start, so a run's sample grids would become training images."""
    if not cfg.data.name.startswith("folder:"):
        return
    root = Path(os.path.realpath(os.path.expanduser(cfg.data.name[len("folder:"):])))
    home = Path(os.path.realpath(run_home))
    if not root.is_dir() or not home.is_relative_to(root):
        return
    if resuming:
        raise UserError(f"run directory {run_home} lies inside its image folder {root}, so the resumed run would "
                        "train on its own sample grids; move the run directory out of that folder and resume it "
                        "there")
    raise UserError(f"--out {run_home} is inside the image folder {root}, so the run's sample grids would become "
                    f"training images when it is resumed or the next run starts; give an --out outside it, such "
                    f"as --out {root.parent / 'runs'}")


def new_run_dir(out: Path | str, preset: str) -> Path:
    """out/NNNN-<preset> (or another name), numbered after the highest existing run; never an existing
    directory."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory for run directories")
    out.mkdir(parents=True, exist_ok=True)
    slug = run_slug(preset) or "run"
    with ckpt_io.folder_lock(out):  # runs started together (a sweep) take a number each, not all the same one
        numbers = [int(m.group(1)) for p in out.iterdir() if (m := _RUN_DIR.match(p.name))]
        n = max(numbers, default=-1) + 1
        while True:
            run_dir = out / f"{n:04d}-{slug}"
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                n += 1


UPSCALE_NOTE = 2  # a note when the data set's images are upscaled by this factor or more
WIDE_EMBEDDING = 128  # embed_dim=0 means n_classes: above this many classes, a note on G's size


class EvaluationStopped(BaseException):
    """Raised by a stop request inside a tick's evaluation, which the stop's checkpoint does not wait for. A
    BaseException, as KeyboardInterrupt is, so that no metric's `except Exception` takes it for a failure."""


class _StopFlag:
    """Ctrl-C / SIGTERM / SIGHUP ask the loop to stop after the current iteration; a second Ctrl-C aborts.
    SIGHUP (its terminal closed, an SSH connection dropped) is left alone where it is ignored (nohup). Inside
    `evaluation()`, a stop request ends the evaluation at once (EvaluationStopped)."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce  # rank 0 says so; the other ranks stay quiet
        self._previous: dict[int, Any] = {}
        self._evaluating = False
        self._retried = False  # a signal sent again after an import (see _handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self._evaluating:
            if not self.requested:
                self._say("\nstopping: the evaluation under way is dropped, then a checkpoint is saved\n")
            self.requested = True
            if importing(frame):  # an exception inside an import can leave its module half-made
                self._retried = True
                retry_signal(signum)
                return
            self._evaluating = self._retried = False
            raise EvaluationStopped
        if self._retried:  # the retry of a stop already taken, which came after the evaluation ended
            self._retried = False
            return
        if self.requested and signum == signal.SIGINT:
            raise_interrupt(signum, frame)
            return
        self.requested = True
        # the step under way can take seconds (a WGAN critic burst)
        self._say("\nstopping: the current step finishes, then a checkpoint is saved"
                  + (" (Ctrl-C again aborts without one)\n" if signum == signal.SIGINT else "\n"))

    def _say(self, message: str) -> None:
        if not self.announce:
            return
        try:
            sys.stderr.write(message)
            sys.stderr.flush()
        except OSError:  # `train 2>&1 | tee log`: Ctrl-C ended tee too, and the stop goes on unannounced
            pass

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """The block (a tick's evaluation) ends at a stop request rather than running on, as a scheduler's
        SIGTERM leaves seconds, not the minute an evaluation can take; at once if a stop is already asked."""
        if self.requested:
            raise EvaluationStopped
        self._evaluating = True
        try:
            yield
        finally:
            self._evaluating = False

    def __enter__(self) -> _StopFlag:
        if hasattr(signal, "SIGTERM") and _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
            if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
                self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after a stop request once the checkpoint is safely on disk."""

    def __init__(self, run_dir: Path, kimg: float, why: str = "") -> None:
        super().__init__(f"stopped at {kimg:.3f} kimg{' ' + why if why else ''}; checkpoint saved in {run_dir}")
        self.run_dir = run_dir
        self.kimg = kimg


OUTPUT_GONE = "because the program reading its output exited (a pipe into head, say)"
FINISHING = "with its training done, while writing the final grid, progress.gif and report.html, which a resume writes"


def _unless_hung_up(call: Any, *args: Any, **kwargs: Any) -> None:
    """A call that writes to the terminal (the progress bar's, the log's): one that has hung up silences it."""
    try:
        call(*args, **kwargs)
    except OSError as e:
        if not silence_hung_up_terminal(e):
            raise


def grid_name(nimg: int, tick_kimg: float) -> str:
    k, r = divmod(nimg, 1000)
    return f"fakes{k:06d}.png" if tick_kimg >= 1 else f"fakes{k:06d}.{r:03d}.png"



class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, resume_from: Path | None = None,
                 log: Any = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.output_gone = False  # stdout was a pipe whose reader exited: the run stops as on Ctrl-C
        self.log = log or self._to_stdout
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.dist = distributed.info()
        self.device = pick_device(cfg.train.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        prepare_deterministic(cfg.train.deterministic)
        self.data: ImageData = load_dataset(cfg.data)
        self.state = build_state(cfg, self.device)
        self.state.classes = list(self.data.classes) if cfg.model.n_classes else None
        fmt = torch.channels_last if use_channels_last(cfg, self.device) and has_conv(self.state.D) else None
        self.data.to(self.device, fmt)
        self._check_labels()
        tensorboard_log.check_available(cfg.train.tensorboard)
        self.tb: tensorboard_log.TensorBoardLog | None = None  # opened by run(), on rank 0
        saved_health = None
        if resume_from is not None:
            ckpt = ckpt_io.load_checkpoint(resume_from, self.device)
            restore_state(self.state, ckpt, resume_from)
            saved_health = ckpt.get("health")
            del ckpt
        self.sampler = EpochSampler(len(self.data), cfg.train.batch_size, cfg.train.seed, self.device,
                                    copies=2 if cfg.data.mirror else 1)
        self.stepper = Stepper(self.state, get_loss(cfg.loss.name, cfg.loss.label_smoothing))
        for line in inert_settings(cfg):
            self.log(f"note: {line}")
        if graph_note := cuda_graph_note(cfg, self.device):
            self.log(f"note: {graph_note}")
        crowded = threads_note(cfg.train.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if crowded:
            self.log(f"note: {crowded}")
        if cfg.data.max_images >= len(self.data) and self.data.split == "train":
            self.log(f"note: data.max_images = {cfg.data.max_images} but {cfg.data.name} has {len(self.data)} "
                     "images: training on all of them")
        for line in source_notes(cfg, self.data.colour_source, self.data.source_side):
            self.log(f"note: {line}")
        if cfg.data.download and cfg.data.name not in TORCHVISION_SETS:
            self.log(f"note: data.download has no effect on {cfg.data.name}: it fetches only "
                     f"{', '.join(TORCHVISION_SETS)}")
        if self.data.cache_note:
            self.log(f"note: {self.data.cache_note}")
        splits = split_subfolders_note(cfg.data.name, self.data.classes)
        if splits:
            self.log(f"note: {splits}")
        if leaning := mirror_note(cfg.data.mirror, self.data.images):
            self.log(f"note: {leaning}")
        m = cfg.model
        if m.g_cond == "concat" and m.embed_dim == 0 and m.n_classes > WIDE_EMBEDDING and resume_from is None:
            # measured on stacked-dcgan-fast with 1,000 classes: 15-20 s/kimg against 5.1 with model.embed_dim=50
            params = sum(p.numel() for p in self.state.G.parameters())
            self.log(f"note: model.embed_dim=0 joins a label embedding as wide as model.n_classes ({m.n_classes}) to "
                     f"z, so G has {params:,} parameters, most of them in the embedding and G's first layer; "
                     f"--set model.embed_dim={WIDE_EMBEDDING} (or less) trains a smaller, faster G")
        if cfg.train.minutes and cfg.optim.lr_decay != "none":
            self.log(f"note: optim.lr_decay is planned in kimg (the learning rates reach 0 at "
                     f"{cfg.optim.lr_decay_end_kimg or cfg.train.kimg:g} kimg); if train.minutes={cfg.train.minutes:g} "
                     "ends the run sooner, they stop short of 0")
        self._inception_weights: str | None = None
        if cfg.eval.every_kimg > 0:
            from .metrics.core import (
                INCEPTION_METRICS,
                class_digits,
                log_digit_metrics_note,
                not_digit_classes,
                read_metrics_history,
            )

            if "class_acc" in cfg.eval.metrics and class_digits(self.data.classes) is None:  # a folder's names
                raise UserError(f"eval.metrics: {not_digit_classes(self.data.classes)}; drop class_acc")
            read_metrics_history(self.run_dir / "metrics.json")  # a resumed run's: refused now, not at its first tick
            log_digit_metrics_note(cfg.data.name, cfg.eval.metrics, self.log)
            if set(INCEPTION_METRICS) & set(cfg.eval.metrics):  # found and checked now, not at the first evaluation
                from .metrics.inception import inception_weights

                weights = inception_weights(cfg.eval.inception_weights or None, "eval.inception_weights")
                self._inception_weights = str(weights)
        if cfg.train.sync_bn and not self.dist.enabled:
            self.log("note: train.sync_bn has no effect in a single process (it syncs batch norm across torchrun "
                     "processes)")
        if note := bf16_note(cfg, self.device, (self.state.G, self.state.D)):
            self.log(f"note: {note}")
        if cfg.train.matmul_precision == "medium" and self.device.type == "cpu" and not cpu_has_bf16_matmul():
            self.log("note: train.matmul_precision=medium needs a CPU with a bfloat16 matmul path (AVX-512 or "
                     "AMX); this one has none, so matmuls stay float32")
        if cfg.train.amp == "bf16" and self.device.type == "cpu" and not cpu_has_bf16_matmul():
            # measured: bfloat16 matmuls at 0.3 GFLOP/s on such a CPU, against 150-190 in float32
            self.log("warning: train.amp=bf16 on a CPU without a bfloat16 path (AVX512_BF16 or AMX) runs far "
                     "slower than float32; set train.amp=none here")
        if cfg.train.compile and self.device.type == "cpu":
            import logging

            # inductor looks for a CUDA toolkit even for CPU kernels, and logs its absence as a warning
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            self.log("note: train.compile=true on a CPU spends the first steps compiling (about 30 s) and was "
                     "measured no faster than without on 2-core CPUs (README, Speed)")
        self.samples_dir = self.run_dir / "samples"
        self.stats_path = self.run_dir / "stats.jsonl"
        self._real_set = None
        self._stop: _StopFlag | None = None  # the training loop's: a stop request ends its evaluations
        self.patience_out = False  # set at a tick whose evaluation finds no progress for eval.patience_kimg
        self.health = HealthCheck(cfg, self._real_grid, len(self.data))
        self._jumps: list[tuple[float, str]] = []  # this process's jump warnings: kimg, the checkpoint set aside
        if resume_from is not None and self.dist.is_main:
            self.health.load_state_dict(saved_health, self._sample_grid())
        self._last_eval_nimg = self.state.nimg
        self._resumed_nimg = self.state.nimg if resume_from is not None else None
        self._platform_logged = False  # the first tick of each process records where it trains
        # a resume's changed settings, {key: [was, now]}: its first tick records them with where the resume began
        self.resume_changes: dict[str, list[Any]] = {}

    def _to_stdout(self, msg: str) -> None:
        if self.output_gone:
            return
        try:
            _unless_hung_up(tqdm.write, msg, file=sys.stdout)
        except BrokenPipeError:  # training on unseen, with no way to say how it goes, helps no one
            self.output_gone = True
            send_to_devnull(sys.stdout.fileno())

    def _check_labels(self) -> None:
        labels = self.data.labels
        top = 0 if labels is None or labels.numel() == 0 else int(labels.max()) + 1
        check_class_count(self.cfg.model.n_classes, self.cfg.data.name, top, list(self.data.classes))

    def real_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = distributed.rank_slice(self.sampler.indices(iteration))
        mirrored = None
        if self.sampler.copies > 1:  # data.mirror: indices N and up are the images flipped left-right
            mirrored = idx >= len(self.data)
            idx = idx.remainder(len(self.data))
        labels = self.data.labels.index_select(0, idx) if self.cfg.model.n_classes else None
        real = self.data.batch(idx)
        if mirrored is not None:
            real = torch.where(mirrored.view(-1, 1, 1, 1), real.flip(-1), real)
        return real, labels

    # ---- outputs at ticks

    def _sample_grid(self) -> torch.Tensor:
        G = self.state.G_ema if self.state.G_ema is not None else self.state.G
        was_training = G.training
        G.eval()
        z = self.state.fixed_z.to(self.device)
        with torch.no_grad():
            fake = G(z) if self.state.fixed_y is None else G(z, self.state.fixed_y.to(self.device))
        G.train(was_training)
        return fake

    def _grid_nrow(self) -> int | None:
        k = self.cfg.model.n_classes
        return grid_labels(k, self.cfg.train.grid_size)[1] if k else None

    def _real_grid(self) -> torch.Tensor:
        n = min(self.cfg.train.grid_size, len(self.data))
        idx = torch.randperm(len(self.data), generator=torch.Generator().manual_seed(self.cfg.train.seed))[:n]
        return self.data.batch(idx.to(self.device))

    def _write_reals(self) -> None:
        path = self.samples_dir / "reals.png"
        if not path.exists():
            report.save_grid(self._real_grid(), path)

    def _open_tensorboard(self) -> None:
        events = self.run_dir / tensorboard_log.LOG_DIR
        first = not any(events.glob("events.out.tfevents.*"))  # a run that turns it on at a resume gets reals too
        self.tb = tensorboard_log.TensorBoardLog(self.run_dir, self._resumed_nimg)
        self.tb.start(self.cfg.to_toml(), self.state.nimg, report.grid_image(self._real_grid()) if first else None)

    def _save_checkpoint(self) -> Path:
        # the training set's size and fingerprint too, so a resume can say when the data changed under the run
        state = {**self.state.to_checkpoint(), "n_images": len(self.data), "data_fingerprint": self.data.fingerprint,
                 "health": self.health.state_dict()}
        return ckpt_io.save_checkpoint(state, self.run_dir, self.cfg.train.keep_ckpts)

    def _keep_checkpoint_before(self) -> str:
        """Copy the latest checkpoint on disk (from before this tick) to checkpoints/kept-<nimg>.pt, out of the
        rotation that keeps the last train.keep_ckpts: the run before a jump, to go back to. Its path relative
        to the run directory, or "" when there is none."""
        last = ckpt_io.list_checkpoints(self.run_dir)
        if not last:
            return ""
        kept = last[-1].with_name(ckpt_io.kept_name(ckpt_io.checkpoint_nimg(last[-1])))
        try:
            if not kept.exists():
                ckpt_io.atomic_copy(last[-1], kept)
        except OSError as e:  # a full disk: the warning goes without it, and training on
            self.log(f"  note: could not set {last[-1].name} aside as {kept.name}: {e.strerror or e}")
            return ""
        return str(kept.relative_to(self.run_dir))

    def _tick(self, sums: torch.Tensor, iters: int, tick_start: float, nimg_start: int, final: bool,
              stopping: bool = False) -> None:
        """`final`: the last tick of this process, checkpointed; `stopping`: it ends on a stop request, so the
        checkpoint comes without a tick evaluation (a scheduler's SIGTERM leaves seconds, not minutes)."""
        s, t = self.state, self.cfg.train
        values = distributed.all_reduce_mean(sums / max(iters, 1)).tolist()  # the one sync per tick
        now = time.perf_counter()
        kimg = s.nimg / 1000
        sec_per_kimg = (now - tick_start) / max((s.nimg - nimg_start) / 1000, 1e-9)
        s.tick += 1
        stats = {
            "tick": s.tick,
            "kimg": round(kimg, 3),
            "epoch": round(self.sampler.epochs(s.nimg // t.batch_size), 3),
            "d_loss": values[0],
            "g_loss": values[1],
            "d_real": values[2],
            "d_fake": values[3],
            "sec_per_kimg": round(sec_per_kimg, 4),
            "lr_scale": self.stepper.lr_scale,
            "time_s": round(s.time_s, 2),
        }
        if s.ada is not None:
            stats["augment_p"] = round(float(s.ada[0]), 4)
        if not self._platform_logged:  # so that compare can tell speeds of other machines apart
            stats["platform"] = compute_platform(self.device)
            self._platform_logged = True
        if self.resume_changes:  # config.toml holds the settings of now; this keeps what the run trained with before
            stats["resumed"] = {"kimg": round(self._resumed_nimg / 1000, 3), "changed": self.resume_changes}
            self.resume_changes = {}
            self.health.forget_moves()
        if not all(math.isfinite(v) for v in values[:2]):
            last = ckpt_io.list_checkpoints(self.run_dir)
            where = f"; the last good checkpoint is {last[-1]}" if last else ""
            raise UserError(
                f"training diverged at {kimg:.2f} kimg (d_loss {values[0]}, g_loss {values[1]}){where}; "
                "lower optim.g_lr / optim.d_lr or change the loss"
            )
        if not self.dist.is_main:
            return
        self.log(
            f"tick {s.tick:<4d} kimg {kimg:<8.2f} epoch {stats['epoch']:<7.2f} sec/kimg {sec_per_kimg:<7.2f} "
            f"d_loss {values[0]:<7.4f} g_loss {values[1]:<7.4f} D(real) {values[2]:.3f} D(fake) {values[3]:.3f} "
            f"time {report.format_duration(s.time_s)}"
            + (f" augment p {stats['augment_p']:.3f}" if s.ada is not None else "")
        )
        grid = self._sample_grid()
        diversity, duplicates = self.health.diversity(grid), self.health.duplicates(grid)  # nan: grid too small
        stats["diversity"] = round(diversity, 4) if math.isfinite(diversity) else None
        stats["duplicates"] = round(duplicates, 4) if math.isfinite(duplicates) else None
        change = self.health.change(grid)
        stats["change"] = round(change, 4) if math.isfinite(change) else None
        stats["jumped"] = int(self.health.jumped.sum())
        kept = ""
        if self.health.jump_starts(kimg):
            kept = self._keep_checkpoint_before()
            self._jumps.append((kimg, kept))
        classes = self.health.jumped_classes(self.state.fixed_y, self.state.classes)
        warnings, passed = self.health.check(kimg, diversity, duplicates, values[2], values[3], classes, kept)
        for warning in warnings:
            self.log(f"  warning: {warning}")
        for note in passed:
            self.log(f"  note: {note}")
        try:
            if not stopping and self._eval_due(final):
                with self._rng_untouched():  # a run that evaluates elsewhere, or resumes, trains the same
                    records = self._evaluate()
            else:
                records = []
        except EvaluationStopped:
            records = []
            self.log(f"  evaluation at {kimg:.2f} kimg dropped: a stop was asked for, and its checkpoint does not "
                     "wait for it")
        except Exception as e:
            path = self._save_checkpoint()  # the training before this evaluation is kept
            if isinstance(e, UserError):
                raise UserError(f"{e} (at the evaluation of {kimg:.2f} kimg; the training up to it is saved in "
                                f"{path.name}, to resume once that is fixed)") from e
            raise
        if records:
            stats["metrics"] = {r["metric"]: r["value"] for r in records}
            self.log("  " + "  ".join(f"{r['metric']} {r['value']:.4g}" for r in records
                                      if isinstance(r["value"], int | float)))
        improved = self._update_best(records)
        patience = self.cfg.eval.patience_kimg
        if patience and records and not final and s.best is not None and kimg - s.best["kimg"] >= patience - 1e-9:
            self.patience_out = True  # early stopping: the loop ends the run after this tick
            stats["early_stop"] = {"metric": s.best["metric"], "best": s.best["value"], "best_kimg": s.best["kimg"],
                                   "patience_kimg": patience}
        with open(self.stats_path, "a") as f:
            f.write(json.dumps(stats) + "\n")
        if stopping:  # samples/ holds the grids at tick boundaries: a stop between two must not replace one
            pixels = report.grid_image(grid, self._grid_nrow())
        else:
            pixels = report.save_grid(grid, self.samples_dir / grid_name(s.nimg, t.tick_kimg), nrow=self._grid_nrow())
        if self.tb is not None:
            self.tb.tick(stats, pixels, s.nimg)
        if final or improved or self.patience_out or s.tick % t.ckpt_ticks == 0:
            path = self._save_checkpoint()
            if improved:
                ckpt_io.atomic_copy(path, path.parent / "best.pt")

    # ---- evaluation at ticks

    def _eval_due(self, final: bool) -> bool:
        every = self.cfg.eval.every_kimg
        if every <= 0:
            return False
        every_nimg = max(1, int(round(every * 1000)))
        due = final or self.state.nimg // every_nimg > self._last_eval_nimg // every_nimg
        if due:
            self._last_eval_nimg = self.state.nimg
        return due

    @contextlib.contextmanager
    def _rng_untouched(self):
        """Leaves the random state as it was: building a feature extractor draws from the global generator
        that d_dropout's masks come from, and only a process's first evaluation builds it, so a resumed run
        would otherwise part from an uninterrupted one."""
        saved = ckpt_io.rng_state(self.state.z_gen)
        try:
            yield
        finally:
            ckpt_io.set_rng_state(saved, self.state.z_gen)

    def _evaluate(self) -> list[dict[str, Any]]:
        from .metrics.core import (
            EvalContext,
            ImageSet,
            append_metrics_json,
            evaluate,
            generated_labels,
            quantize,
            real_image_set,
        )

        e, s = self.cfg.eval, self.state
        G = s.G_ema if s.G_ema is not None else s.G

        def draw(count: int) -> torch.Tensor:
            return quantize(G.sample(count, seed=self.cfg.train.seed)).cpu()

        def fake() -> ImageSet:
            return ImageSet(draw(e.n), "generated", f"kimg{s.nimg / 1000:.3f}", labels=generated_labels(G, e.n),
                            classes=s.classes)

        def real() -> ImageSet:  # made once, and only for a metric that reads it (modes does not)
            if self._real_set is None:
                self._real_set = real_image_set(self.cfg.data, self.data)
            return self._real_set

        ctx = EvalContext(fake, real, device=self.device, seed=self.cfg.train.seed, fake_fn=draw,
                          inception_weights=self._inception_weights)
        with self._stop.evaluation() if self._stop is not None else contextlib.nullcontext():
            records = evaluate(ctx, e.metrics, kimg=s.nimg / 1000)
        append_metrics_json(records, self.run_dir / "metrics.json", {"checkpoint": None, "kimg": s.nimg / 1000})
        return records

    def _update_best(self, records: list[dict[str, Any]]) -> bool:
        from .metrics.core import BEST_DIRECTION

        if not records:
            return False
        name = self.cfg.eval.best_metric or records[0]["metric"]
        value = next((r["value"] for r in records if r["metric"] == name), None)
        if value is None or name not in BEST_DIRECTION:
            return False
        best = self.state.best
        better = best is None or (value < best["value"] if BEST_DIRECTION[name] == "min" else value > best["value"])
        if better:
            self.state.best = {"metric": name, "value": float(value), "kimg": self.state.nimg / 1000}
        return better

    def _finish(self) -> None:
        grids = report.fixed_noise_grids(self.samples_dir)
        report.make_gif(grids, self.run_dir / "progress.gif")
        report.save_grid(self._sample_grid(), self.run_dir / "final.png", nrow=self._grid_nrow())
        self._write_report()

    def _write_report(self) -> None:
        """report.html (with losses.png), for runs made by train() / resume(), which write config.toml."""
        if (self.run_dir / "config.toml").is_file():
            try:
                write_html_report(self.run_dir)
            except UserError as e:  # a hand-edited config.toml, say: the trained run stands without its page
                self.log(f"  note: report.html not written: {e}")
        else:
            stats = report.read_stats(self.stats_path)
            if stats:
                report.plot_losses(stats, self.run_dir / "losses.png", self.stepper.loss.relativistic)

    # ---- the loop

    def run(self) -> Path:
        s, t = self.state, self.cfg.train
        if self.dist.is_main:
            self.samples_dir.mkdir(parents=True, exist_ok=True)
            self._write_reals()
            if t.tensorboard and s.nimg < int(round(t.kimg * 1000)):
                self._open_tensorboard()
        try:
            with training_kernels(t.deterministic, self.device):
                return self._train_loop()
        finally:
            if self.tb is not None:
                self.tb.close()
                self.tb = None

    def _train_loop(self) -> Path:
        s, t = self.state, self.cfg.train
        main = self.dist.is_main
        total_nimg = int(round(t.kimg * 1000))
        tick_nimg = max(1, int(round(t.tick_kimg * 1000)))
        next_tick = (s.nimg // tick_nimg + 1) * tick_nimg
        sums = torch.zeros(4, device=self.device)
        iters = 0
        tick_start, nimg_start = time.perf_counter(), s.nimg
        last_time = tick_start
        bar = tqdm(total=total_nimg, initial=min(s.nimg, total_nimg), unit="img", unit_scale=True,
                   dynamic_ncols=True, disable=None if main else True, leave=False, file=sys.stderr)
        budget_s = t.minutes * 60
        spent = bool(budget_s) and s.time_s >= budget_s  # a resumed run that used up its time trains nothing
        timed_out = patience_out = False
        with _StopFlag(announce=main) as stop:
            self._stop = stop
            while s.nimg < total_nimg and not spent:
                iteration = s.nimg // t.batch_size  # counts D steps: each takes one real batch
                self.stepper.set_progress(s.nimg)
                n_d = self.stepper.d_steps_for(s.g_steps)
                # each real batch drawn when its D step comes: a burst of 100 does not hold 100 batches at once
                sums += self.stepper(self.real_batch(iteration + k) for k in range(n_d))
                iters += 1
                s.nimg += t.batch_size * n_d
                s.g_steps += 1
                now = time.perf_counter()
                s.time_s += now - last_time
                last_time = now
                _unless_hung_up(bar.update, t.batch_size * n_d)
                if iters % 25 == 0 and not bar.disable:
                    d_loss, g_loss, d_real, d_fake = (sums / iters).tolist()
                    _unless_hung_up(bar.set_postfix, d_loss=f"{d_loss:.3f}", g_loss=f"{g_loss:.3f}",
                                    D_real=f"{d_real:.2f}", D_fake=f"{d_fake:.2f}")
                # each rank's clock differs a little: any rank past the budget ends the run on all of them
                stopping, timed_out = distributed.any_ranks(
                    (stop.requested or self.output_gone, bool(budget_s) and s.nimg < total_nimg
                     and s.time_s >= budget_s), self.device)
                done = s.nimg >= total_nimg or timed_out
                if s.nimg >= next_tick or done or stopping:
                    self._tick(sums, iters, tick_start, nimg_start, final=done or stopping,
                               stopping=stopping and not done)
                    if self.cfg.eval.patience_kimg and not (done or stopping):
                        # rank 0 alone evaluates; every rank ticks at this step, so all take its word here
                        patience_out = distributed.any_rank(self.patience_out, self.device)
                    sums.zero_()
                    iters = 0
                    next_tick = (s.nimg // tick_nimg + 1) * tick_nimg
                    tick_start, nimg_start = time.perf_counter(), s.nimg
                    last_time = tick_start
                if stopping:
                    _unless_hung_up(bar.close)
                    if main:
                        self._write_report()
                    raise TrainingInterrupted(self.run_dir, s.nimg / 1000,
                                              OUTPUT_GONE if self.output_gone and not stop.requested else "")
                if timed_out or patience_out:
                    break
        _unless_hung_up(bar.close)
        if not main:
            return self.run_dir
        try:
            self._finish()
        except KeyboardInterrupt:  # the last checkpoint is on disk; a resume finds nothing to train and writes these
            raise TrainingInterrupted(self.run_dir, s.nimg / 1000, FINISHING) from None
        if patience_out:
            best = s.best
            self.log(f"eval.patience_kimg={self.cfg.eval.patience_kimg:g}: {best['metric']} has not improved on "
                     f"{best['value']:.4g} (at {best['kimg']:g} kimg) since, so the run ends at {s.nimg / 1000:.2f} "
                     f"of {t.kimg:g} kimg; its best checkpoint is {self.run_dir / 'checkpoints' / 'best.pt'}. A "
                     "resume trains to the next evaluation, and on from there only if the metric improved "
                     "(--set eval.patience_kimg=0: to train.kimg)")
        if timed_out:
            self.log(f"train.minutes={t.minutes:g} reached at {s.nimg / 1000:.2f} of {t.kimg:g} kimg; to go on, "
                     f"ganforge train --resume {shlex.quote(str(self.run_dir))} --set train.minutes=N (N > "
                     f"{s.time_s / 60:.1f}, or 0 for no limit)")
        if self._jumps:  # the warning may have scrolled away, and sample and eval take the last checkpoint
            kept = [name for _, name in self._jumps if name]
            self.log(f"note: part of the grid jumped at {', '.join(f'{k:.2f}' for k, _ in self._jumps)} kimg (the "
                     "warning above): sample and eval take the last checkpoint unless given --ckpt"
                     + (f"; --ckpt {Path(kept[0]).name} is the run from before the first jump" if kept else ""))
        self.log(f"done: {s.nimg / 1000:.2f} kimg in {report.format_duration(s.time_s)}; run directory "
                 f"{self.run_dir} (open {self.run_dir / 'report.html'} in a browser)")
        return self.run_dir


# ------------------------------------------------------------------------------------------- public API


def _prepare_stats_for_resume(stats_path: Path, nimg: int) -> None:
    """Drop stats lines written after the checkpoint being resumed; they will be produced again."""
    if not stats_path.is_file():
        return
    keep = [record for record in report.read_stats(stats_path) if record["kimg"] <= nimg / 1000 + 1e-9]
    ckpt_io.atomic_write_text("".join(json.dumps(record) + "\n" for record in keep), stats_path)


def later_checkpoints(path: Path, nimg: int, rewind: bool) -> list[Path]:
    """The checkpoints of path's run after path (at nimg); refused unless `rewind` discards them."""
    run_dir = path.parent.parent
    later = [p for p in ckpt_io.list_checkpoints(run_dir) if ckpt_io.checkpoint_nimg(p) > nimg]
    if later and not rewind:
        names = ckpt_io.last_names([p.name for p in later], ckpt_io.CHECKPOINTS_NAMED)
        raise UserError(f"{path.name} is not the run's latest checkpoint ({later[-1].name} is): training on from it "
                        f"would write over {names} and drop the stats and evaluations after {nimg / 1000:g} kimg; "
                        f"resume {run_dir} to go on from the latest, or pass --rewind to go back to {path.name} and "
                        "discard what came after it (copy the run directory first to keep both)")
    if rewind:  # the checkpoints set aside after it go too: they are of the stretch a rewind discards
        later += [p for p in ckpt_io.kept_checkpoints(run_dir) if ckpt_io.checkpoint_nimg(p) > nimg]
    return later


def _drop_records_after(run_dir: Path, nimg: int) -> None:
    """Drop what a run recorded after the checkpoint it resumes from (a kill between a tick's evaluation and its
    checkpoint, or a rewind): the evaluations in metrics.json and the fixed-noise grids, which it makes again."""
    from .metrics.core import read_metrics_history

    path = run_dir / "metrics.json"
    if path.is_file():
        with ckpt_io.file_lock(path):
            try:
                history = read_metrics_history(path)
            except UserError:  # one it cannot read is left as it is (a run that evaluates was refused already)
                history = []
            keep = [entry for entry in history if not isinstance(entry, dict)
                    or not isinstance(entry.get("kimg"), int | float) or entry["kimg"] <= nimg / 1000 + 1e-9]
            if len(keep) < len(history):
                ckpt_io.atomic_write_text(json.dumps(keep, indent=1) + "\n", path)
    for grid in report.fixed_noise_grids(run_dir / "samples"):
        if report.grid_nimg(grid) > nimg:
            grid.unlink(missing_ok=True)


def _rewind(run_dir: Path, later: list[Path], nimg: int) -> str:
    """Remove the checkpoints after nimg (and best.pt when it is one of theirs); returns what was done."""
    best = run_dir / ckpt_io.CKPT_DIR / "best.pt"
    removed = [p.name for p in later]
    if best.is_file() and int(ckpt_io.load_checkpoint(best).get("nimg", 0)) > nimg:
        removed.append(best.name)
        best.unlink()
    for p in later:
        p.unlink(missing_ok=True)
    return (f"rewound to {nimg / 1000:g} kimg: removed {ckpt_io.last_names(removed, ckpt_io.CHECKPOINTS_NAMED)}, "
            "and the stats, evaluations and grids after it")


def _remove_unstarted_run(run_dir: Path, made: list[Path], started_from: Path | None = None) -> None:
    """Remove a run directory that holds no checkpoint, or none but `started_from` (the copy a resume into a new
    run directory began with), so nothing to resume (what it holds was written since it was made), and the
    folders above it that were made for it (`made`, deepest first) where they are left empty."""
    if run_dir.is_dir() and [p for p in (run_dir / ckpt_io.CKPT_DIR).glob("*.pt") if p != started_from] == []:
        shutil.rmtree(run_dir, ignore_errors=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            break


def _missing_folders(path: Path) -> list[Path]:
    """path and its ancestors that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def train(cfg: Config, out: Path | str = DEFAULT_OUT, log: Any = None, name: str | None = None) -> Path:
    """Train a fresh run under out/NNNN-<preset> (out/NNNN-<name> with a name); returns the run directory.
    Under torchrun, rank 0 makes the directory and writes every file; the other ranks train their share of
    each batch."""
    if not isinstance(cfg, Config):
        raise TypeError(f"train() takes a Config, got {type(cfg).__name__}; build one with "
                        "ganforge.load_config(preset=..., overrides=[...])")
    check_run_name(name)
    check_attributes(cfg)
    cfg = anchored_paths(from_dict(cfg.to_dict()))  # a Config edited after load_config is checked as a loaded one
    check_batch_and_order(cfg)  # on every rank, before any file
    check_eval_memory(cfg)
    check_out_of_data(cfg, out)
    main = distributed.info().is_main
    made = _missing_folders(Path(out).absolute())
    made_run_dir = new_run_dir(out, name or cfg.preset) if main else None
    try:
        return _train_in(cfg, made_run_dir, log)
    except BaseException:
        # a run stopped before its first checkpoint (a bad data path, device or net size; an early Ctrl-C)
        # leaves no run directory behind: it holds nothing to resume
        if made_run_dir is not None:
            _remove_unstarted_run(made_run_dir, made)
        raise


def _train_in(cfg: Config, made_run_dir: Path | None, log: Any) -> Path:
    """train() in the run directory that rank 0 made."""
    main = made_run_dir is not None
    run_dir = Path(distributed.broadcast_object(str(made_run_dir) if main else None))
    if main:
        ckpt_io.atomic_write_text(cfg.to_toml(), run_dir / "config.toml")
    with threads_restored():  # train.threads sets torch's process-wide count: the caller gets its own back
        trainer = Trainer(cfg, run_dir, log=log if main else (lambda msg: None))
        if cfg.preset not in preset_names():  # a config file that names no preset, or its own label
            trainer.log("note: this config builds on no preset, so the settings it leaves out take ganforge's built-in "
                        f"defaults rather than the default preset's (this run: {cfg.data.img_size}x{cfg.data.img_size} "
                        f"{cfg.model.g}/{cfg.model.d}, lr {cfg.optim.g_lr:g}, batch {cfg.train.batch_size}); add "
                        "preset = \"default\" at the top of the file to build on that preset")
        world = distributed.info().world_size
        trainer.log(f"run directory {run_dir} (device {trainer.device}, {data_summary(trainer.data, cfg.data)}"
                    + (f", {world} processes)" if world > 1 else ")"))
        with ckpt_io.run_lock(run_dir) if main else contextlib.nullcontext():
            return trainer.run()


def anchored_paths(cfg: Config) -> Config:
    """cfg with its data folder (and data.root, Inception weights) made absolute, so the run it starts is
    evaluated and resumed from any working directory."""

    def absolute(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path))

    data = cfg.data
    if data.name.startswith("folder:"):
        data = dataclasses.replace(data, name="folder:" + absolute(data.name[len("folder:"):]))
    if data.name in TORCHVISION_SETS:
        data = dataclasses.replace(data, root=absolute(data.root))
    evaluation = cfg.eval
    if evaluation.inception_weights:
        evaluation = dataclasses.replace(evaluation, inception_weights=absolute(evaluation.inception_weights))
    return dataclasses.replace(cfg, data=data, eval=evaluation)


def resume_config(run_or_ckpt: Path | str, overrides: Overrides | None = None) -> tuple[Path, dict[str, Any], Config]:
    """The checkpoint a resume would continue (latest of a run, or the one given), its contents, and the
    config it would train with: the checkpoint's own plus `overrides`."""
    path, ckpt = ckpt_io.load_resolved(run_or_ckpt, "latest")
    if ckpt.get("exported") is not None:
        source = f" ({ckpt['exported']['source']})" if ckpt["exported"]["source"] else ""
        raise UserError(f"{path} is a generator file (G's weights alone, for sample and eval): it holds no D or "
                        f"optimizer state to resume; resume the run it was exported from{source} instead")
    try:
        cfg = anchored_paths(from_dict(apply_overrides(ckpt["config"], overrides)))
    except UserError as e:
        named = naming_plugins(e, ckpt.get("plugins"))
        if named is not e:  # a network, loss or data set of a plugin the run loaded and this process has not
            raise named from e
        try:
            from_dict(ckpt["config"])
        except UserError as own:
            if str(own) == str(e):  # the run's own setting, saved by a ganforge that did not yet refuse it
                raise UserError(f"{e} (a setting of the run's saved config, which this ganforge checks more "
                                "strictly than the one that wrote it; resume with --set to change it)") from e
        raise
    missing = missing_folder(cfg.data.name)
    if missing:
        raise UserError(f"{missing}; resume with --set data.name=folder:PATH where they are now")
    saved = stored_config(ckpt)
    if cfg.train.seed != saved.train.seed:
        # the random streams continue from the checkpoint's saved states, so a new seed would only mislabel them
        raise UserError(f"a resumed run continues the random streams of its checkpoint (train.seed = "
                        f"{saved.train.seed}); drop the seed override, or start a new run to use another seed")
    if cfg.optim.name != saved.optim.name:
        # the saved moments belong to the checkpoint's optimizer; another one would start from none
        raise UserError(f"a resumed run continues its optimizer's state (optim.name = {saved.optim.name}); drop "
                        f"the override, or start a new run (--config {path.parent.parent / 'config.toml'} with "
                        f"--set optim.name={cfg.optim.name}) to train with {cfg.optim.name}")
    changed = architecture_changes(saved, cfg)
    if changed:
        was = ", ".join(f"{key} = {toml_value(value)}" for key, value in changed)
        those = "that override" if len(changed) == 1 else "those overrides"
        raise UserError(f"a resumed run keeps the networks of its checkpoint, built with {was}; drop {those}, "
                        f"or start a new run (--config {path.parent.parent / 'config.toml'} with --set) "
                        "to train another architecture")
    return path, ckpt, cfg


def resume_changes(ckpt: dict[str, Any], cfg: Config) -> dict[str, list[Any]]:
    """The settings a resume with `cfg` changes from the checkpoint's, {key: [was, now]}, beyond the run's length."""
    return settings_changes(anchored_paths(stored_config(ckpt)), cfg)


CHANGES_NAMED = 4


def _set_flag(key: str, value: Any) -> str:
    """`--set key=value` as a shell takes it, the value spelled so that --set reads it back the same."""
    spelled = value if isinstance(value, str) and parse_override(f"{key}={value}")[1] == value else toml_value(value)
    return "--set " + shlex.quote(f"{key}={spelled}")


def check_config_file(path: Path, ckpt: dict[str, Any], overrides: Overrides | None) -> None:
    """Refuse a resume that would write over hand edits to the run's config.toml: a resume trains with its
    checkpoint's settings and --set, and then rewrites config.toml, so a setting changed in the file alone
    would be neither trained nor kept. Checked when `path` is the latest checkpoint, which holds the settings
    that config.toml was last written with (a rewind goes back to settings it may not hold), and not while
    another process trains the run (it wrote config.toml before its first checkpoint; the lock refuses)."""
    run_dir = path.parent.parent
    config_file = run_dir / "config.toml"
    latest = ckpt_io.list_checkpoints(run_dir)[-1:]
    if not config_file.is_file() or [p.name for p in latest] != [path.name] or ckpt_io.being_trained(run_dir):
        return
    try:
        in_file = anchored_paths(load_config(path=config_file, stored=True))
    except UserError as e:
        raise UserError(f"{e}; a resume writes {config_file} anew from {path.name}'s settings, so mend the file first, "
                        f"or put the checkpoint's settings back with `ganforge settings {shlex.quote(str(path))} > "
                        f"{shlex.quote(str(config_file))}`") from None
    saved = flatten(anchored_paths(stored_config(ckpt)).to_dict())
    edited = flatten(in_file.to_dict())
    given = {".".join(key) for _, key, _ in override_items(overrides)}
    changed = [key for key in saved if "." in key and key not in given and edited.get(key) != saved[key]]
    if not changed:
        return
    shown = "; ".join(f"{key} = {toml_value(edited[key])} there, {toml_value(saved[key])} in the checkpoint"
                      for key in changed[:CHANGES_NAMED])
    more = f" (and {len(changed) - CHANGES_NAMED} more)" if len(changed) > CHANGES_NAMED else ""
    keep = " ".join(_set_flag(key, edited[key]) for key in changed)
    drop = " ".join(_set_flag(key, saved[key]) for key in changed)
    raise UserError(f"{config_file} differs from the settings {path.name} was written with (edited by hand, or by a "
                    f"resume that stopped before its first checkpoint): {shown}{more}; a resume trains with the "
                    f"checkpoint's settings and --set, then writes config.toml anew, so resume with {keep} to train "
                    f"with the change, or with {drop} to drop it")


def _meta_nets(cfg: Config) -> dict[str, torch.nn.Module]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation work
        return {"G": build_generator(cfg), "D": build_discriminator(cfg)}


def _weight_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    return {f"{net}.{key}": tuple(t.shape) for net, module in _meta_nets(cfg).items()
            for key, t in module.state_dict().items()}


def data_summary(data: ImageData, cfg: DataConfig) -> str:
    """The images a run trains on as its start line gives them: how many, at what size and colour, and the
    side they were resized from (a folder's is the median of a few headers, so "about")."""
    size = cfg.img_size
    text = f"{image_count(len(data))}, {size}x{size} {'colour' if cfg.channels == 3 else 'grey'}"
    if data.source_side and data.source_side != size:
        about = "about " if cfg.name.startswith("folder:") and not cfg.name.lower().endswith(".npz") else ""
        text += f", resized from {about}{data.source_side} px"
    return text


def source_notes(cfg: Config, colour: bool, side: int) -> list[str]:
    """What a run says of its data's stored format: images upscaled to data.img_size, colour trained as grey.
    `colour` and `side` (the square's side before resizing; 0: unknown) are the data set's or
    data.source_format's."""
    notes = []
    if 0 < side * UPSCALE_NOTE <= cfg.data.img_size:
        size = cfg.data.img_size
        kept = "long" if cfg.data.fit == "pad" else "short"  # the side that becomes the square's
        notes.append(f"{cfg.data.name}'s images are about {side} px on their {kept} side, upscaled {size / side:.3g}x "
                     f"to data.img_size={size}: that adds no detail, only time; a smaller data.img_size trains "
                     "faster on the same information")
    if colour and cfg.data.channels == 1:
        notes.append(f"{cfg.data.name} is in colour and data.channels is 1, so G learns grey images; "
                     "--set data.channels=3 trains in colour")
    return notes


def check_eval_memory(cfg: Config) -> None:
    """A run that evaluates at ticks holds eval.n samples then: one that cannot is refused before it trains."""
    from .metrics.core import check_sample_memory

    if cfg.eval.every_kimg > 0 and cfg.eval.metrics:
        check_sample_memory(cfg.eval.n, cfg.data.channels, cfg.data.img_size, "lower eval.n")


def check_networks(cfg: Config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Build G and D for `cfg` as shapes only, so that settings the nets cannot take (an image size the
    DCGAN stack cannot reach, say) raise their UserError without data, device or training; returns them."""
    nets = _meta_nets(cfg)
    return nets["G"], nets["D"]


def architecture_changes(saved: Config, cfg: Config) -> list[tuple[str, Any]]:
    """The settings of `cfg` that differ from `saved` and change G's or D's weights (names or shapes), each
    with its value in `saved`; empty when the saved weights still fit."""
    old, new = flatten(saved.to_dict()), flatten(cfg.to_dict())
    differ = [key for key in old if key.split(".")[0] in ("model", "data") and old[key] != new.get(key)]
    if not differ:
        return []
    shapes = _weight_shapes(saved)
    if _weight_shapes(cfg) == shapes:
        return []

    def alone_changes_shapes(key: str) -> bool:
        try:
            return _weight_shapes(from_dict(apply_overrides(saved.to_dict(), {key: new[key]}))) != shapes
        except UserError:  # a setting valid only with the others changed too
            return True

    return [(key, old[key]) for key in [k for k in differ if alone_changes_shapes(k)] or differ]


def in_run_directory(ckpt_path: Path) -> bool:
    """Whether a checkpoint file lies in its run's checkpoints folder, beside the run's config.toml."""
    return ckpt_path.parent.name == ckpt_io.CKPT_DIR and (ckpt_path.parent.parent / "config.toml").is_file()


def check_resume_target(ckpt_path: Path, ckpt: dict[str, Any], cfg: Config, out: Path | str | None,
                        name: str | None, rewind: bool) -> bool:
    """Whether a resume of ckpt_path with cfg goes on in its own run directory (True) or in a new one under `out`
    (False: a checkpoint outside a run directory); refuses the settings that do not fit the one it is, a run
    directory inside its image folder, and a new run directory that would train nothing (it would hold only a
    copy)."""
    if in_run_directory(ckpt_path):
        if out is not None or name is not None:
            flag = "--out" if out is not None else "--name"
            raise UserError(f"--resume continues in the run's own directory; drop {flag}")
        check_out_of_data(cfg, ckpt_path.parent.parent, resuming=True)
        return True
    if rewind:
        raise UserError(f"--rewind goes back within a run, and {ckpt_path} is not in a run directory (no "
                        f"{ckpt_io.CKPT_DIR}/ folder beside a config.toml); drop --rewind")
    check_run_name(name)
    idle = nothing_to_train(ckpt, cfg)
    if idle:
        raise UserError(f"{ckpt_path}: {idle}")
    check_out_of_data(cfg, DEFAULT_OUT if out is None else Path(out))
    return False


def nothing_to_train(ckpt: dict[str, Any], cfg: Config) -> str | None:
    """Why a resume of ckpt with cfg would train nothing (its length or time already reached), or None."""
    nimg, spent_s = int(ckpt["nimg"]), float(ckpt.get("time_s", 0.0))
    if nimg >= int(round(cfg.train.kimg * 1000)):
        return (f"the run already reached train.kimg={cfg.train.kimg:g}, so there is nothing to train; to go on, "
                f"resume with --set train.kimg=N (N > {nimg / 1000:g})")
    if cfg.train.minutes and spent_s >= cfg.train.minutes * 60:
        return (f"the run already trained for train.minutes={cfg.train.minutes:g} ({spent_s / 60:.1f} minutes), so "
                f"there is nothing to train; to go on, resume with --set train.minutes=N (N > {spent_s / 60:.1f}, "
                "or 0 for no limit)")
    return None


def resume(run_or_ckpt: Path | str, overrides: Overrides | None = None, log: Any = None,
           rewind: bool = False, out: Path | str | None = None, name: str | None = None) -> Path:
    """Continue a run from its latest checkpoint (or a given one) in the same run directory. A checkpoint with
    later ones after it is refused unless `rewind`, which discards what came after it. A checkpoint outside a
    run directory (copied from another machine, its run gone) goes on in a new run directory, out/NNNN-<preset>
    (or out/NNNN-<name>; out defaults to runs), which starts from a copy of it; returns the run directory."""
    path, ckpt, cfg = resume_config(run_or_ckpt, overrides)
    check_batch_and_order(cfg)
    check_eval_memory(cfg)
    if not check_resume_target(path, ckpt, cfg, out, name, rewind):
        return _resume_in_new_run(path, ckpt, cfg, overrides, log, DEFAULT_OUT if out is None else Path(out), name)
    return _resume_in(path, ckpt, cfg, overrides, log, rewind)


def _resume_in_new_run(path: Path, ckpt: dict[str, Any], cfg: Config, overrides: Overrides | None, log: Any,
                       out: Path, name: str | None) -> Path:
    """resume() of a checkpoint outside a run directory: rank 0 makes the run directory, writes the
    checkpoint's config there and copies the checkpoint in; a resume that fails before it trains leaves none."""
    main = distributed.info().is_main
    made = _missing_folders(out.absolute())
    made_run_dir = new_run_dir(out, name or cfg.preset) if main else None
    name_in_run = Path(ckpt_io.CKPT_DIR, ckpt_io.ckpt_name(int(ckpt["nimg"])))
    try:
        if made_run_dir is not None:
            ckpt_io.atomic_write_text(anchored_paths(stored_config(ckpt)).to_toml(), made_run_dir / "config.toml")
            (made_run_dir / ckpt_io.CKPT_DIR).mkdir()
            ckpt_io.atomic_copy(path, made_run_dir / name_in_run)
        # the other ranks read the copy: they learn where it is once it is there
        run_dir = Path(distributed.broadcast_object(str(made_run_dir) if main else None))
        return _resume_in(run_dir / name_in_run, ckpt, cfg, overrides, log, False, source=path)
    except TrainingInterrupted:  # stopped once training began: its checkpoint is in the run to resume
        raise
    except BaseException:
        if made_run_dir is not None:
            _remove_unstarted_run(made_run_dir, made, started_from=made_run_dir / name_in_run)
        raise


def _resume_in(path: Path, ckpt: dict[str, Any], cfg: Config, overrides: Overrides | None, log: Any,
               rewind: bool, source: Path | None = None) -> Path:
    """resume() of `path`, a checkpoint in its run's directory (for a checkpoint from elsewhere, `source`, the
    copy that starts a new run directory)."""
    run_dir = path.parent.parent
    nimg = int(ckpt["nimg"])
    later = later_checkpoints(path, nimg, rewind)
    check_config_file(path, ckpt, overrides)
    main = distributed.info().is_main
    with threads_restored(), ckpt_io.run_lock(run_dir) if main else contextlib.nullcontext():
        # build (and so validate) everything first: a resume that fails leaves config.toml and stats.jsonl as
        # they were
        trainer = Trainer(cfg, run_dir, resume_from=path, log=log if main else (lambda msg: None))
        if source is None:
            trainer.log(f"resuming {run_dir} from {path.name} at {nimg / 1000:.3f} kimg")
        else:
            trainer.log(f"resuming {source} at {nimg / 1000:.3f} kimg in a new run directory, {run_dir}, from a copy "
                        "of it (it lies in no run directory; the stats and grids before it stay with the run that "
                        "wrote it)")
        freed = ckpt_io.remove_orphan_temp_files(run_dir) if main else 0
        if freed:
            trainer.log(f"note: removed the partial files ({freed / 2**20:.1f} MiB) of writes that a killed process "
                        "left unfinished")
        if ckpt.get("G_ema") is not None and cfg.train.ema_kimg == 0:
            trainer.log("note: train.ema_kimg=0 leaves the checkpoint's average of G behind: grids, samples and "
                        f"metrics now use G itself (the average stays in {path.name} until it is rotated out)")
        elif ckpt.get("G_ema") is None and cfg.train.ema_kimg > 0:
            trainer.log(f"note: the average of G (train.ema_kimg={cfg.train.ema_kimg:g}) starts here from G's "
                        "current weights")
        if cfg.model.init != ckpt["config"].get("model", {}).get("init", cfg.model.init):
            trainer.log(f"note: model.init={cfg.model.init} has no effect here: it sets a new run's first weights, "
                        "and a resumed run continues from its checkpoint's")
        written_by = ckpt.get("versions") or {}
        if written_by.get("torch") not in (None, str(torch.__version__)):
            trainer.log(f"note: {path.name} was written under torch {written_by['torch']} and this is torch "
                        f"{torch.__version__}: the run goes on, but need not repeat an uninterrupted run bit for bit")
        saved_platform, platform = ckpt.get("platform") or {}, compute_platform(trainer.device)
        change = platform_change(saved_platform, platform)
        if change:
            threads = saved_platform.get("cpu_threads")
            hint = f" (--set train.threads={threads} trains with its thread count)" if "cpu_threads" in saved_platform \
                and saved_platform.get("device") == platform["device"] and threads != platform["cpu_threads"] else ""
            trainer.log(f"note: {path.name} {change}: the run goes on, but need not repeat an uninterrupted run bit "
                        f"for bit{hint}")
        before = int(ckpt.get("n_images", 0))  # 0 in checkpoints written before it was recorded
        if before and before != len(trainer.data):
            now = image_count(len(trainer.data), "training image")
            trainer.log(f"note: {cfg.data.name} has {now} where the run had {before:,}; "
                        "training goes on over the images there now, in another order than the run would have "
                        "drawn")
        elif ckpt.get("data_fingerprint") not in (None, trainer.data.fingerprint):
            trainer.log(f"note: {cfg.data.name}'s images (or their labels) changed since {path.name} was written, "
                        f"though there are {len(trainer.data)} as before: training goes on over the images there "
                        "now, so the run no longer repeats an uninterrupted one")
        idle = nothing_to_train(ckpt, cfg)
        if idle:
            # not an error: a job script may resume until done; but say why nothing trains, and leave
            # config.toml as the checkpoints have it (overrides that train nothing are not recorded)
            trainer.log(idle)
        elif main:
            if later:
                trainer.log(_rewind(run_dir, later, nimg))
            changes = resume_changes(ckpt, cfg)
            if changes:
                trainer.log(f"note: resuming with settings changed from {path.name}'s: {describe_changes(changes)} "
                            "(stats.jsonl and report.html record the change and where it began)")
                trainer.resume_changes = changes
            ckpt_io.atomic_write_text(cfg.to_toml(), run_dir / "config.toml")
            _prepare_stats_for_resume(run_dir / "stats.jsonl", nimg)
            _drop_records_after(run_dir, nimg)
        return trainer.run()
