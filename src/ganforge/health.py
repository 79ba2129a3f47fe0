"""Signs that a run is failing, read at each tick from the fixed-noise grid and D's mean outputs: samples
nearly alike or in near-copies (collapse), and a D that tells real from fake almost perfectly; each warning
says what to change."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import losses
from .config import Config
from .data import image_count

# At or below this many training images, collapse and D-wins warnings point to DiffAugment (README, Small data)
# and, for an AC-GAN D, a stronger R2, for a projection D without batch norm, batch norm (README, Conditional GANs).
SMALL_DATA_IMAGES = 1000
# G starts from near-constant output (and G_ema lags it): the collapse check waits until G has had time to spread
COLLAPSE_CHECK_FROM_KIMG = 5.0


def d_wins(cfg: Config, d_real: float, d_fake: float) -> bool:
    """Whether a tick's mean D(real) and D(fake) say D separates them almost perfectly: above train.d_win_warn
    and below 1 - it. Only for the losses whose stats are D's probabilities: the BCE ones (sigmoid of D's
    logit) and the relativistic ones (sigmoid of a real's logit less its paired fake's, and the reverse)."""
    limit = cfg.train.d_win_warn
    loss = losses.registered_loss(cfg.loss.name)
    return loss is not None and loss.logistic and limit > 0 and d_real > limit and d_fake < 1 - limit


def sample_spread(images: torch.Tensor) -> float:
    """Mean L2 distance between two different images of the batch (flattened pixels)."""
    x = images.detach().flatten(1).float()
    n = x.shape[0]
    if n < 2:
        return float("nan")
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


# Fewer grid images than this make the near-copy share too coarse to judge.
DUPLICATE_CHECK_MIN_GRID = 16
# Healthy runs pass through a few-blobs phase (LSGAN on the default nets: 75% near-copies at 6 kimg, 0 from 10)
DUPLICATE_CHECK_FROM_KIMG = 10.0


def nearest_distances(images: torch.Tensor) -> torch.Tensor:
    """Each image's L2 distance (flattened pixels) to the nearest other image of the batch."""
    x = images.detach().flatten(1).float()
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values


def near_copy_share(images: torch.Tensor, real_nearest: torch.Tensor) -> float:
    """Share of the images whose nearest other image is closer than half the median nearest-neighbour
    distance of as many real images: near 0 for a G with variety, near 1 when its samples come in near-copies
    (a G that draws a few modes, each with some variety, which the mean spread does not show)."""
    if images.shape[0] < 2 or real_nearest.numel() < 2:
        return float("nan")
    return float((nearest_distances(images) < 0.5 * real_nearest.median()).float().mean())


# A grid image jumps at a tick when it moves more than train.jump_warn times its median move over the last
# JUMP_HISTORY ticks; a jump warning needs at least JUMP_SHARE of the grid, and JUMP_MIN_IMAGES, to jump at
# once. Calibrated on fourteen runs (README, A run that breaks late): healthy ones had at most 3% of the grid
# past 2.5x at any tick, a projection cGAN whose 1s broke into dots 9% and 13% at its two last ticks.
JUMP_HISTORY = 5
JUMP_SHARE = 0.05
JUMP_MIN_IMAGES = 3
JUMP_CLASSES_NAMED = 3


def jump_minimum(grid_size: int) -> int:
    """How many of a grid's images must jump at once for a warning."""
    return max(JUMP_MIN_IMAGES, math.ceil(JUMP_SHARE * grid_size))


def image_moves(fake: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """Each grid image's L2 distance (flattened pixels) to its own image of the grid before."""
    return (fake.detach().flatten(1).float() - before.detach().flatten(1).float()).norm(dim=1).cpu()


class HealthCheck:
    """A run's tick-time checks, measured against a grid of real images (the run's reals.png, read once)."""

    def __init__(self, cfg: Config, real_grid: Callable[[], torch.Tensor], n_images: int) -> None:
        self.cfg = cfg
        self._real_grid = real_grid
        self.n_images = n_images  # the training set's size: small ones get DiffAugment advice
        self._reference: tuple[float, torch.Tensor, float] | None = None
        self._advised: set[str] = set()  # kinds of warning whose advice this process has given
        self._open: dict[str, float] = {}  # kinds warned of and not yet found gone: the kimg of the first
        loss = losses.registered_loss(cfg.loss.name)
        self._loss_takes_label_smoothing = loss is not None and loss.takes_label_smoothing
        self._last_grid: torch.Tensor | None = None  # the grid of the tick before
        self._moves: list[torch.Tensor] = []  # each image's move at the last JUMP_HISTORY ticks, oldest first
        self.jumped = torch.zeros(0, dtype=torch.bool)  # which of this tick's grid images jumped

    def reference(self) -> tuple[float, torch.Tensor, float]:
        """The real grid's sample spread, nearest-neighbour distances and own near-copy share."""
        if self._reference is None:
            real = self._real_grid()
            nearest = nearest_distances(real)
            self._reference = (sample_spread(real), nearest, near_copy_share(real, nearest))
        return self._reference

    def diversity(self, fake: torch.Tensor) -> float:
        """Mean pairwise distance of the grid's samples over that of as many real images: near 1 for a
        G that covers the data, near 0 when its samples are all alike."""
        real_spread = self.reference()[0]
        return sample_spread(fake) / real_spread if real_spread > 0 else float("nan")

    def duplicates(self, fake: torch.Tensor) -> float:
        """Share of the grid's samples with a near-copy in the grid (see near_copy_share); nan for a grid too
        small to judge."""
        if fake.shape[0] < DUPLICATE_CHECK_MIN_GRID:
            return float("nan")
        return near_copy_share(fake, self.reference()[1])

    def change(self, fake: torch.Tensor) -> float:
        """How far the grid's images moved since the tick before, on average, over the real images' spread: the
        pace at which G's fixed-noise samples still change (nan at a run's first tick). Marks the images that
        jumped (see JUMP_HISTORY) in self.jumped."""
        before, self._last_grid = self._last_grid, fake.detach()
        self.jumped = torch.zeros(fake.shape[0], dtype=torch.bool)
        if before is None or before.shape != fake.shape:
            return float("nan")
        moves = image_moves(fake, before)
        limit = self.cfg.train.jump_warn
        if len(self._moves) == JUMP_HISTORY and limit > 0:
            usual = torch.stack(self._moves).median(dim=0).values
            self.jumped = moves > limit * usual
        self._moves = [*self._moves, moves][-JUMP_HISTORY:]
        real_spread = self.reference()[0]
        return float(moves.mean()) / real_spread if real_spread > 0 else float("nan")

    def jump_found(self, kimg: float) -> bool:
        """Whether enough of this tick's grid jumped for a warning."""
        return (kimg >= COLLAPSE_CHECK_FROM_KIMG and self.jumped.numel() > 0
                and int(self.jumped.sum()) >= jump_minimum(self.jumped.numel()))

    def jump_starts(self, kimg: float) -> bool:
        """A jump at this tick after a tick without one: a new event, whose checkpoint before is worth keeping."""
        return self.jump_found(kimg) and "jump" not in self._open

    def forget_moves(self) -> None:
        """A resume that changed settings (a learning rate, the tick's length) changes the usual pace too."""
        self._moves = []

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        """What a checkpoint keeps so that a resumed run judges jumps as an uninterrupted one (the grid before
        is the checkpoint's own G's, drawn again)."""
        return {"moves": torch.stack(self._moves) if self._moves else None}

    def load_state_dict(self, saved: object, grid: torch.Tensor) -> None:
        """`grid`: the fixed-noise grid of the checkpoint's G, the tick before the next. A checkpoint without
        the record, or with one of another grid size, starts the history afresh."""
        self._last_grid = grid.detach()
        moves = saved.get("moves") if isinstance(saved, dict) else None
        if isinstance(moves, torch.Tensor) and moves.dim() == 2 and moves.shape[1] == grid.shape[0]:
            self._moves = [m.float().cpu() for m in moves[-JUMP_HISTORY:]]

    def jumped_classes(self, labels: torch.Tensor | None, names: list[str] | None) -> str:
        """For a class grid, the classes most of whose images jumped, as " (class 1: 10 of 10)", or how many
        classes when they are more than JUMP_CLASSES_NAMED."""
        if labels is None or labels.numel() != self.jumped.numel():
            return ""
        labels = labels.cpu()
        classes = labels.unique().tolist()
        parts = []
        for k in classes:
            row = labels == k
            n, of = int(self.jumped[row].sum()), int(row.sum())
            if 2 * n > of:
                name = names[k] if names and k < len(names) else str(k)
                parts.append(f"class {name}: {n} of {of}")
        if len(parts) > JUMP_CLASSES_NAMED:
            return f" (most of the images of {len(parts)} of the {len(classes)} classes)"
        return f" ({'; '.join(parts)})" if parts else ""

    def small_data_advice(self) -> str:
        """On a few hundred images D can learn them by heart and G collapse; DiffAugment is the measured cure,
        and besides it label dropout for a concat D, a ten times stronger R2 for an AC-GAN D, batch norm for a
        projection D."""
        if self.n_images > SMALL_DATA_IMAGES:
            return ""
        cures = []
        projection = self.cfg.model.n_classes and self.cfg.model.d_cond == "projection"
        if not self.cfg.train.diffaugment:
            if projection:  # on 100 digits fd_digits 1.15 at target 0.5, 1.94 at 0.6 (0.4 and 0.3 level with 0.5)
                target, measured = 0.5, ("mnist-projgan (with batch norm in D) learning on 100 digits where it drew a "
                                         "few images a class without it (README, Conditional GANs)")
            elif self.cfg.model.n_classes:
                target, measured = 0.6, ("mnist-cgan learning on 100 digits where it collapsed without it (README, "
                                         "Conditional GANs)")
            else:
                target, measured = 0.6, ("the default nets learning on 100 digits where they collapsed without it "
                                         "(README, Small data)")
            cures.append(f"--set train.diffaugment=translation,cutout --set train.ada_target={target} (adaptive "
                         f"augmentation) kept {measured}")
        if self.cfg.model.n_classes and self.cfg.model.d_cond == "concat" and not self.cfg.model.label_dropout:
            cures.append("--set model.label_dropout=0.5 (half the labels made 'no label' in training) raised "
                         "mnist-cgan's recall on 100 digits from 0.32 to 0.50 (0.54 with augmentation's "
                         "train.ada_target=0.5), where on 500 that did not collapse it cost quality (README, "
                         "Conditional GANs)")
        if self.cfg.model.n_classes and self.cfg.model.d_cond == "acgan" and self.cfg.loss.r2_gamma < 1:
            cures.append("--set loss.r2_gamma=1 (R2 on the fakes, ten times the presets') kept mnist-acgan learning "
                         "on 100 digits where it drew a few images a class at 0.1 (README, Conditional GANs)")
        if projection and self.cfg.model.d_norm == "none":
            cures.append("--set model.d_norm=bn (batch norm in D's layers) with adaptive "
                         "augmentation kept mnist-projgan learning on 100 digits where either alone drew a few "
                         "images a class (README, Conditional GANs)")
        if not cures:
            return ""
        count = image_count(self.n_images, "training image")
        them = "it" if self.n_images == 1 else "them"
        return f"With {count} D may be learning {them} by heart: {'; '.join(cures)}. "

    def jump_advice(self) -> str:
        """D learning the training images by heart breaks a run late; adaptive augmentation is the measured
        cure, and lower learning rates broke it sooner (README, A run that breaks late)."""
        t = self.cfg.train
        if t.ada_target == 0:
            policy = "" if t.diffaugment else "--set train.diffaugment=translation,cutout "
            return (f"resume the checkpoint from before it with --rewind {policy}--set train.ada_target=0.6 "
                    "(adaptive augmentation kept a projection cGAN learning past the tick where it broke; lower "
                    "learning rates broke it sooner), or take that checkpoint as the result (--ckpt PATH to sample "
                    "and eval)")
        return ("take the checkpoint from before it as the result (--ckpt PATH to sample and eval), or set "
                "eval.every_kimg to keep the best checkpoint by a metric")

    def collapse_advice(self) -> str:
        c = self.cfg
        tries = [f"loss.name={name}" for name in ("ns", "hinge") if name != c.loss.name]
        tries.append("lower optim.g_lr / optim.d_lr")
        if not c.model.d_mbdisc:  # cured R5's collapse where d_mbstd and label smoothing did not (README)
            tries.append("model.d_mbdisc=50")
        if not c.model.d_mbstd:
            tries.append("model.d_mbstd=true")
        return f"{self.small_data_advice()}Try {', '.join(tries)}, or resume from an earlier checkpoint"

    def check(self, kimg: float, diversity: float, duplicates: float, d_real: float,
              d_fake: float, classes: str = "", kept: str = "") -> tuple[list[str], list[str]]:
        """What looks wrong at a tick of `kimg` (from the grid's diversity and duplicates, the images that
        jumped since the tick before, and the tick's mean D(real), D(fake)), each a line, the first of its kind
        with advice; none before COLLAPSE_CHECK_FROM_KIMG. A jump's line names `classes` (jumped_classes) and
        `kept`, a checkpoint from before it set aside from the rotation. Second, a line for each warning of this
        process that this tick finds gone: an early collapse can pass (the 64-px runs on emoji in the README's
        Data), and whoever saw the warning should see that too before stopping the run."""
        t = self.cfg.train
        if kimg < COLLAPSE_CHECK_FROM_KIMG:
            return [], []
        found: list[str] = []
        passed: list[str] = []

        def warn(kind: str, finding: str, advice: str) -> None:
            # the advice once per process; a warning that recurs at later ticks says what it finds there
            found.append(f"{finding}. {advice}" if kind not in self._advised else f"{finding} (advice above)")
            self._advised.add(kind)
            self._open.setdefault(kind, kimg)

        if diversity < t.collapse_warn:
            warn("collapse", f"the grid's samples at {kimg:.2f} kimg are nearly alike (spread {diversity:.2f} of the "
                             "real images'): G looks collapsed", self.collapse_advice())
        elif t.duplicate_warn > 0 and duplicates > t.duplicate_warn and kimg >= DUPLICATE_CHECK_FROM_KIMG:
            warn("collapse", f"{duplicates:.0%} of the grid's samples at {kimg:.2f} kimg have a near-copy in the grid "
                             f"(real images: {self.reference()[2]:.0%}): G looks partly collapsed, drawing a few modes",
                 self.collapse_advice())
        elif "collapse" in self._open and self._spread_out(diversity, duplicates):
            copies = f", near-copy share {duplicates:.0%}" if math.isfinite(duplicates) else ""
            passed.append(f"the collapse warned of at {self._open.pop('collapse'):.2f} kimg has passed: the grid's "
                          f"samples at {kimg:.2f} kimg differ again (spread {diversity:.2f} of the real images'"
                          f"{copies})")
        if d_wins(self.cfg, d_real, d_fake):
            warn("d_wins", f"D tells real from fake almost perfectly at {kimg:.2f} kimg (mean D(real) {d_real:.3f}, "
                           f"D(fake) {d_fake:.3f}): G gets little to learn from",
                 f"{self.small_data_advice()}Try a lower optim.d_lr or a higher optim.g_lr, "
                 + "loss.label_smoothing=0.1, " * self._loss_takes_label_smoothing + "loss.instance_noise=0.1 "
                 f"loss.instance_noise_kimg={max(10, round(2 * kimg)):g} (it fades from the run's start), "
                 "loss.r1_gamma=0.1 or model.d_spectral_norm=true, or resume from an earlier checkpoint")
        elif "d_wins" in self._open and math.isfinite(d_real) and math.isfinite(d_fake):
            passed.append(f"D no longer tells real from fake almost perfectly at {kimg:.2f} kimg (mean D(real) "
                          f"{d_real:.3f}, D(fake) {d_fake:.3f}), as it did from {self._open.pop('d_wins'):.2f} kimg")
        if self.jump_found(kimg):
            n, of = int(self.jumped.sum()), self.jumped.numel()
            set_aside = f"; {kept} keeps the run from before it, out of the checkpoints' rotation" if kept else ""
            warn("jump", f"{n} of the grid's {of} samples at {kimg:.2f} kimg moved more than {t.jump_warn:g}x as far "
                         f"since the tick before as they did at the ticks before that{classes}: G changed abruptly, "
                         f"as when a run breaks late{set_aside}",
                 f"Compare the last grids in samples/. If they got worse, {self.jump_advice()}")
        else:
            self._open.pop("jump", None)  # an event, not a state: the next jump is a new one
        return found, passed

    def _spread_out(self, diversity: float, duplicates: float) -> bool:
        """Both collapse signals clear: a spread measured at or above its limit, and a near-copy share at or
        below its own where the grid is large enough to tell (also before DUPLICATE_CHECK_FROM_KIMG, so that a
        collapse is not called over while G still draws a few blobs)."""
        t = self.cfg.train
        spread_clear = math.isfinite(diversity) and diversity >= t.collapse_warn
        copies_clear = not math.isfinite(duplicates) or t.duplicate_warn == 0 or duplicates <= t.duplicate_warn
        return spread_clear and copies_clear
