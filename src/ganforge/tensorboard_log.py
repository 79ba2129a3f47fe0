"""TensorBoard event files for a run (`train.tensorboard = true`): each tick's stats and fixed-noise grid,
and the results `ganforge eval` later gives for the run's checkpoints.

The x-axis is images shown to D, as in stats.jsonl. A resumed run hides what the interrupted one logged after
the checkpoint it resumes from, as stats.jsonl drops those lines.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

LOG_DIR = "tensorboard"

# stats.jsonl key -> TensorBoard tag; the tags' prefixes group the charts
SCALAR_TAGS = {
    "d_loss": "loss/D",
    "g_loss": "loss/G",
    "d_real": "D/real",
    "d_fake": "D/fake",
    "diversity": "samples/diversity",
    "duplicates": "samples/duplicates",
    "change": "samples/change",
    "jumped": "samples/jumped",
    "augment_p": "augment/p",
    "lr_scale": "optim/lr_scale",
    "sec_per_kimg": "speed/sec_per_kimg",
    "epoch": "progress/epoch",
}


def check_available(enabled: bool) -> None:
    """Refuse train.tensorboard = true before any file is written when the tensorboard package is missing."""
    if not enabled:
        return
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        raise UserError("train.tensorboard=true needs the tensorboard package, which is not installed: "
                        "pip install tensorboard (or pip install -e '.[tensorboard]' in a ganforge checkout), "
                        "or drop the setting") from None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scalars(stats: dict[str, Any]) -> dict[str, float]:
    """The tags and values a tick's stats line gives: finite numbers only (a one-image grid has no spread)."""
    out = {tag: stats[key] for key, tag in SCALAR_TAGS.items() if key in stats}
    for name, value in (stats.get("metrics") or {}).items():
        out[f"metrics/{name}"] = value
    return {tag: float(v) for tag, v in out.items() if _finite(v)}


def eval_scalars(records: list[dict[str, Any]], reference: str | None = None) -> dict[str, float]:
    """The tags and values of `ganforge eval` results: one chart group per protocol, named by what makes
    numbers incomparable (the count of generated images, G rather than G_ema, truncated noise, another
    reference set), so a curve over checkpoints never mixes them; a tick's metrics (train-time n) stay under
    metrics/."""
    out = {}
    for r in records:
        if not _finite(r.get("value")):
            continue
        group = f"eval n={r.get('n_fake')}"
        if r.get("generator"):
            group += " G"
        if r.get("truncation") is not None:
            group += f" trunc {r['truncation']:g}"
        if reference:
            group += f" vs {reference}"
        out[f"{group}/{r['metric']}"] = float(r["value"])
    return out


def log_eval(run_dir: Path, records: list[dict[str, Any]], nimg: int, reference: str | None = None) -> bool:
    """Add `ganforge eval`'s results to a run that trained with TensorBoard (it has RUN/tensorboard), at the
    checkpoint's images; False, writing nothing, for a run without the folder."""
    if not (Path(run_dir) / LOG_DIR).is_dir():
        return False
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(Path(run_dir) / LOG_DIR)) as writer:
        for tag, value in eval_scalars(records, reference).items():
            writer.add_scalar(tag, value, nimg)
    return True


class TensorBoardLog:
    """A SummaryWriter on RUN/tensorboard. `resumed_nimg`: the images seen at the checkpoint a resume starts
    from; events the interrupted run wrote past it are purged from TensorBoard's view."""

    def __init__(self, run_dir: Path, resumed_nimg: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events at or past it; the checkpoint's own tick stays
        purge = None if resumed_nimg is None else resumed_nimg + 1
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / LOG_DIR), purge_step=purge)

    def start(self, config_toml: str, nimg: int, reals: torch.Tensor | None) -> None:
        """The config the run trains with from `nimg` on (a resume may change it), and the real grid once."""
        self.writer.add_text("config", "```toml\n" + config_toml + "```", nimg)  # fenced: TOML as written
        if reals is not None:
            self.writer.add_image("reals", reals, 0)
        self.writer.flush()

    def tick(self, stats: dict[str, Any], grid: torch.Tensor, nimg: int) -> None:
        """`grid`: the uint8 [C, H, W] image written to samples/ at this tick."""
        for tag, value in scalars(stats).items():
            self.writer.add_scalar(tag, value, nimg)
        self.writer.add_image("fakes", grid, nimg)
        self.writer.flush()  # TensorBoard shows each tick as it comes

    def close(self) -> None:
        self.writer.close()
