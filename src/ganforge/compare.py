"""Runs side by side: the settings that differ, training length and speed, and each run's latest metrics,
with a note wherever two numbers were measured under different protocols (and so do not compare)."""

from __future__ import annotations

import json
import math
import statistics
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import describe_resumes, flatten, resumes_changed
from .errors import UserError

# Protocol fields that must agree for two values of one metric to compare (FD and KID move with n); a note
# names the first that differs, so what the values were measured against comes before how many. The reference
# fingerprint (a digest of the reference pixels at the run's size and channels) tells apart references that
# share a name: one data set at 28 and 32 px, or a folder whose images changed.
PROTOCOL_FIELDS = ("reference", "reference_fingerprint", "extractor_sha256", "resize", "n_fake", "n_real")
# Fields that results recorded by an earlier ganforge lack: unknown there, so they differ only among the
# records that have them.
LATER_FIELDS = {"reference_fingerprint"}
NOT_EMA = " (G, not G_ema)"  # marks the results of `ganforge eval --no-ema`: another quantity than G_ema's
IGNORED_SETTINGS = {"description"}


@dataclass
class RunView:
    """What one run directory says about itself."""

    name: str
    path: Path
    settings: dict[str, Any]  # the resolved config, flattened to dotted keys
    stats: list[dict[str, Any]]  # stats.jsonl, one record per tick
    unread: set[str] = field(default_factory=set)  # settings its model does not read (shown as "-")
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> its newest record
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # metric -> [(kimg, value)]

    @property
    def last_tick(self) -> dict[str, Any]:
        return self.stats[-1] if self.stats else {}

    @property
    def kimg(self) -> float | None:
        """Images seen at the last tick."""
        return self.last_tick.get("kimg")

    @property
    def time_s(self) -> float | None:
        return self.last_tick.get("time_s")

    @property
    def ended_by(self) -> str | None:
        """The setting that ended the run at its last tick (train.kimg, eval.patience_kimg or train.minutes);
        None for a run that was stopped or is still training."""
        target, minutes = self.settings.get("train.kimg"), self.settings.get("train.minutes")
        if not self.stats:
            return None
        if isinstance(target, int | float) and (self.kimg or 0.0) >= target - 1e-9:
            return "train.kimg"
        if isinstance(self.last_tick.get("early_stop"), dict):
            return "eval.patience_kimg"
        # stats.jsonl keeps time_s to 0.01 s: a run that stopped at its limit may read up to 0.005 s short of it
        if isinstance(minutes, int | float) and minutes > 0 and (self.time_s or 0.0) >= minutes * 60 - 0.005:
            return "train.minutes"
        return None

    @property
    def platforms(self) -> list[str]:
        """Where the run trained, in order, one entry per machine setup its processes ran on."""
        seen = [describe_platform(s["platform"]) for s in self.stats if isinstance(s.get("platform"), dict)]
        return list(dict.fromkeys(seen))

    @property
    def resumes_changed(self) -> list[tuple[float, dict[str, list[Any]]]]:
        """Each resume that changed settings: (kimg it resumed at, {key: [was, now]}); the settings above are
        those the run ended with."""
        return resumes_changed(self.stats)

    @property
    def sec_per_kimg(self) -> float | None:
        """Median over the ticks after the first (the first holds the warm-up)."""
        speeds = [s["sec_per_kimg"] for s in self.stats[1:] or self.stats
                  if isinstance(s.get("sec_per_kimg"), int | float)]
        return statistics.median(speeds) if speeds else None


def describe_platform(where: dict[str, Any]) -> str:
    """A stats line's platform in a few words: "cpu, Intel Xeon Processor (AMX), 2 threads, AVX512",
    "cuda, NVIDIA H200, 4 processes"."""
    parts = [str(where.get("device", "?"))]
    if where.get("device") == "cpu":
        if where.get("cpu"):  # recorded since 2026-12-06
            parts.append(str(where["cpu"]))
        parts += [f"{where.get('cpu_threads')} thread" + "s" * (where.get("cpu_threads") != 1),
                  str(where.get("cpu_kernels"))]
    elif where.get("gpu"):
        parts.append(str(where["gpu"]))
    if isinstance(where.get("processes"), int) and where["processes"] > 1:
        parts.append(f"{where['processes']} processes")
    return ", ".join(parts)


def run_directory(path: Path | str) -> Path:
    """The run directory of a run directory or of a checkpoint inside one."""
    from . import checkpoint as ckpt_io

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; give a run directory made by `ganforge train`"
                        f"{ckpt_io.runs_beside(path)}")
    if path.is_file() and ckpt_io.is_generator_file(path):
        raise UserError(f"{path} is a generator file (`ganforge export`), which keeps G alone, not a run's "
                        "stats and samples; give the run directory it came from")
    if path.is_file():
        run = path.parent.parent if path.parent.name == ckpt_io.CKPT_DIR else path.parent
        if not (run / "config.toml").is_file():  # name the file given, not the folder it lies in
            raise UserError(f"{path} is neither a run directory nor a file inside one; give directories made by "
                            "`ganforge train`")
        path = run
    elif path.name == ckpt_io.CKPT_DIR and (path.parent / "config.toml").is_file():
        path = path.parent  # the run's checkpoints folder stands for the run, as everywhere else
    if not (path / "config.toml").is_file():
        raise UserError(f"{path} is not a run directory (it has no config.toml); give directories made by "
                        "`ganforge train`")
    return path if path.name else path.resolve()  # "." and ".." name no run: use the folder's own name


def _read_metrics(path: Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The evaluations in metrics.json. A malformed file raises UserError, or, given a `problems` list, is
    noted there and read as empty."""
    if not path.is_file():
        return []
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(history, list):
            raise ValueError("it does not hold a list of evaluations")
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        message = f"{path} is not a metrics.json ({e}); move it aside to read this run's metrics"
        if problems is None:
            raise UserError(message) from e
        problems.append(message)
        return []
    return [entry for entry in history if isinstance(entry, dict)]


def load_run(path: Path | str, problems: list[str] | None = None) -> RunView:
    """What a run directory says about itself. A malformed metrics.json raises UserError, or, given a
    `problems` list, is noted there and its metrics left out."""
    from .report import read_stats

    run_dir = run_directory(path)
    try:
        raw = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{run_dir / 'config.toml'} is not valid TOML ({e})") from e
    view = RunView(name=run_dir.name, path=run_dir, settings=flatten(raw), unread=_unread(raw),
                   stats=read_stats(run_dir / "stats.jsonl"))
    # metric -> protocol -> {kimg: value}; a later evaluation at the same kimg wins
    curves: dict[str, dict[str, dict[float, float]]] = {}
    for entry in _read_metrics(run_dir / "metrics.json", problems):
        results = entry.get("results")
        for record in results if isinstance(results, list) else []:
            if not isinstance(record, dict) or "metric" not in record:
                continue
            name = row_name(record)
            view.latest[name] = {**record, "kimg": record.get("kimg", entry.get("kimg"))}
            value, kimg = record.get("value"), view.latest[name]["kimg"]
            if isinstance(value, int | float) and isinstance(kimg, int | float):
                protocol = json.dumps([record.get(k) for k in PROTOCOL_FIELDS])
                curves.setdefault(name, {}).setdefault(protocol, {})[float(kimg)] = float(value)
    # A curve joins only values measured alike: the protocol with the most points (on a tie, the latest).
    view.curves = {name: sorted(max(reversed(groups.values()), key=len).items()) for name, groups in curves.items()}
    return view


def expand_runs(paths: list[Path | str]) -> list[Path]:
    """Run directories, checkpoints inside them, or a folder of runs (such as runs/), which stands for every
    run directory in it; a path named twice (runs/a and ./runs/a/, or runs/ and a run in it) comes once."""
    expanded: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "config.toml").is_file():
            runs = sorted(p for p in path.iterdir() if p.is_dir() and (p / "config.toml").is_file())
            if runs:
                expanded += runs
                continue
        expanded.append(path)
    unique: list[Path] = []
    for path in expanded:
        if all(path.resolve() != kept.resolve() for kept in unique):
            unique.append(path)
    return unique


def compare_runs(paths: list[Path | str] | Path | str,
                 on_error: Callable[[Path, UserError], None] | None = None) -> list[RunView]:
    """Load every run (see expand_runs); a missing or malformed one raises UserError naming it, or, given
    `on_error`, is passed to it and left out. One path may be given alone (a run, or a folder of runs)."""
    if isinstance(paths, str | Path):
        paths = [paths]
    if not paths:
        raise UserError("give at least one run directory to compare")
    views: list[RunView] = []
    for path in expand_runs(paths):
        try:
            view = load_run(path)
        except UserError as e:
            if on_error is None:
                raise
            on_error(path, e)
            continue
        if all(v.path.resolve() != view.path.resolve() for v in views):  # a run named twice is shown once
            views.append(view)
    for view, name in zip(views, distinct_names([v.path for v in views]), strict=True):
        view.name = name
    return views


def distinct_names(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name, with as many parent folders as it takes to tell runs of the same name apart
    (runs/a/0000-default and runs/b/0000-default become a/0000-default and b/0000-default)."""
    parts = [run_dir.resolve().parts for run_dir in run_dirs]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clashing = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not clashing:
            return names
        for i in clashing:
            depth[i] += 1


def _unread(raw: dict[str, Any]) -> set[str]:
    """The settings a run's networks and optimizer do not read; none when its config no longer builds."""
    from .config import from_dict
    from .models import unread_settings

    try:
        return set(unread_settings(from_dict(raw, stored=True)))
    except (UserError, KeyError, TypeError, ValueError):
        return set()


def settings_diff(views: list[RunView]) -> list[tuple[str, list[Any]]]:
    """(dotted key, value per run) for every setting not equal in all runs, in config order; a setting a
    run's model does not read counts as None there (dcgan's model.g_hidden does not differ from mlp's)."""
    keys: list[str] = []
    for view in views:
        keys += [k for k in view.settings if k not in keys and k not in IGNORED_SETTINGS]
    rows = []
    for key in keys:
        values = [None if key in view.unread else view.settings.get(key) for view in views]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def recorded_metrics(views: list[RunView]) -> list[str]:
    """The metrics any of the runs recorded, in the order first seen."""
    names: list[str] = []
    for view in views:
        names += [m for m in view.latest if m not in names]
    return names


def truncation_marker(threshold: float) -> str:
    """Marks the results of `ganforge eval --truncation T`: samples of another distribution than G's own."""
    return f" (truncation {threshold:g})"


def row_name(record: dict[str, Any]) -> str:
    """The name a recorded value goes by: its metric, marked where it measured something else than the
    run's own samples (G rather than G_ema, truncated noise), so that such values form rows of their own."""
    name = record["metric"] + (NOT_EMA if record.get("generator") else "")
    truncation = record.get("truncation")
    return name + (truncation_marker(truncation) if isinstance(truncation, int | float) else "")


def base_metric(name: str) -> str:
    """The metric a (possibly marked) row name measures: fd_digits for "fd_digits (G, not G_ema)"."""
    return name.split(" (", 1)[0]


def eval_flags(record: dict[str, Any]) -> str:
    """The `ganforge eval` flags that measure a recorded value again as it was: " --no-ema --truncation 0.5"."""
    truncation = record.get("truncation")
    return (" --no-ema" if record.get("generator") else "") + (
        f" --truncation {truncation:g}" if isinstance(truncation, int | float) else "")


def check_metric(views: list[RunView], metric: str) -> None:
    recorded = recorded_metrics(views)
    if metric not in recorded:
        raise UserError(f"no run recorded the metric {metric!r}; recorded: {', '.join(recorded) or 'none'}")


def _differing_field(records: list[dict[str, Any]]) -> str | None:
    """The first protocol field in which the records differ; None when they were measured alike."""
    for key in PROTOCOL_FIELDS:
        known = [r for r in records if key in r] if key in LATER_FIELDS else records
        if len({json.dumps(r.get(key), sort_keys=True) for r in known}) > 1:
            return key
    return None


def _reporting_metric(value_name: str) -> str:
    """The metric `ganforge eval --metrics` takes for a recorded value: pr for precision, dc for coverage."""
    from .metrics.core import METRIC_VALUES

    return next((metric for metric, values in METRIC_VALUES.items() if value_name in values), value_name)


def protocol_notes(views: list[RunView]) -> list[str]:
    """One line per protocol difference among the runs' newest values, naming the values it concerns and
    how to measure them alike."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for name in recorded_metrics(views):
        records = [(v.name, v.latest[name]) for v in views if name in v.latest]
        key = _differing_field([r for _, r in records])
        if key is not None:
            per_run = ", ".join(f"{run} {r.get(key)}" for run, r in records)
            # values marked alike (G, truncation) share a note, whose command measures them so again
            grouped.setdefault((key, per_run, eval_flags(records[0][1])), []).append(name)
    notes = []
    for (key, per_run, flags), names in grouped.items():
        metrics = list(dict.fromkeys(_reporting_metric(base_metric(n)) for n in names))
        formats = {(v.settings.get("data.img_size"), v.settings.get("data.channels")) for v in views
                   if names[0] in v.latest}  # of the runs the difference concerns
        if key == "reference_fingerprint" and len(formats) > 1:
            fix = ("the runs' reference images are the same data set at another size or channel count: to compare "
                   "them, sample each (`ganforge sample RUN --n 10000 --out DIR/`) and score the samples at one size,"
                   f" e.g. `ganforge eval --real NAME --fake folder:DIR --img-size 28 --metrics {','.join(metrics)}`")
        elif key == "reference_fingerprint":
            fix = (f"the reference images changed between the evaluations: score each run against them as they are "
                   f"now, `ganforge eval RUN --metrics {','.join(metrics)}{flags}` on each")
        elif key == "reference":
            fix = (f"the runs were scored against different images: compare runs trained on the same data, or "
                   f"score each against one set, e.g. `ganforge eval RUN --real NAME --metrics {','.join(metrics)}"
                   f"{flags}`")
        else:
            fix = (f"these values do not compare: evaluate the runs alike, e.g. `ganforge eval RUN --n N "
                   f"--metrics {','.join(metrics)}{flags}` on each")
        notes.append(f"{', '.join(names)}: {key} differs ({per_run}); {fix}")
    return notes


def resume_notes(views: list[RunView]) -> list[str]:
    """A note per run that changed settings when resumed: its column shows only those it ended with."""
    return [f"{v.name} was resumed with changed settings (its column shows those it ended with): "
            f"{describe_resumes(v.resumes_changed)}" for v in views if v.resumes_changed]


def platform_notes(views: list[RunView]) -> list[str]:
    """A note when the runs' speeds were measured on different setups (runs from before the record say nothing)."""
    records = [[s["platform"] for s in v.stats if isinstance(s.get("platform"), dict)] for v in views]
    if any(r.get("device") == "cpu" and "cpu" not in r for run in records for r in run):
        # a run from before the CPU's model was recorded: compare the rest rather than call it another machine
        records = [[{k: v for k, v in r.items() if k != "cpu"} for r in run] for run in records]
    setups = {tuple(dict.fromkeys(describe_platform(r) for r in run)) for run in records if run}
    if len(setups) < 2:
        return []
    return ["sec/kimg and train time: the runs trained on different machines, thread counts or process counts ("
            + "; ".join(" + ".join(s) for s in sorted(setups)) + "), so they compare those as much as the settings"]


def best_runs(views: list[RunView], name: str) -> set[int]:
    """Indices of the runs with the best value of a metric, where its direction is known and the values
    were measured alike; empty otherwise."""
    from .metrics.core import BEST_DIRECTION

    direction = BEST_DIRECTION.get(base_metric(name))
    if direction is None or len(views) < 2:
        return set()
    values = {i: v.latest[name].get("value") for i, v in enumerate(views) if name in v.latest}
    values = {i: x for i, x in values.items() if isinstance(x, int | float) and math.isfinite(x)}
    if len(values) < 2:
        return set()
    if _differing_field([views[i].latest[name] for i in values]) is not None:
        return set()
    return _best(values, direction)


def _best(values: dict[int, float], direction: str) -> set[int]:
    """The keys of the best values ("min" or "max"); none where all tie."""
    target = min(values.values()) if direction == "min" else max(values.values())
    best = {i for i, x in values.items() if x == target}
    return best if len(best) < len(values) else set()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def _table(header: tuple[str, list[str]], rows: list[tuple[str, list[str]]], notes: list[str],
           legend: str = "") -> str:
    """Labels down the left, one right-aligned column per entry of the header; a row without cells is a
    heading. The legend (what a cell's * means) and the notes follow after a blank line."""
    columns = len(header[1])
    label_width = max(len(label) for label, _ in [header, *rows])
    widths = [max(len(c[i]) if i < len(c) else 0 for _, c in [header, *rows]) for i in range(columns)]
    lines = []
    for label, cells in [header, *rows]:
        padded = [(cells[i] if i < len(cells) else "").rjust(widths[i]) for i in range(columns)]
        lines.append(f"{label:<{label_width}}  " + "  ".join(padded).rstrip() if cells else label)
    if legend:
        lines += ["", legend]
    if notes:
        lines.append("")
        lines += [f"note: {n}" for n in notes]
    return "\n".join(line.rstrip() for line in lines)


def format_comparison(views: list[RunView]) -> str:
    """A plain-text table, runs as columns: settings that differ, training, then metrics (value @ kimg;
    * marks the best where the metric has a direction and the runs measured it alike)."""
    from .report import format_duration

    rows: list[tuple[str, list[str]]] = []
    diff = settings_diff(views)
    if len(views) > 1:
        rows.append(("settings that differ", []))
        rows += [(f"  {key}", [_cell(v) for v in values]) for key, values in diff] or [("  (none)", [])]
    else:
        rows.append(("preset", [_cell(views[0].settings.get("preset"))]))
    rows.append(("training", []))
    rows.append(("  kimg", [_cell(v.kimg) for v in views]))
    rows.append(("  ended by", [v.ended_by or "-" for v in views]))
    rows.append(("  trained on", [" + ".join(v.platforms) or "-" for v in views]))
    rows.append(("  sec/kimg", [_cell(v.sec_per_kimg) for v in views]))
    rows.append(("  train time", ["-" if v.time_s is None else format_duration(v.time_s) for v in views]))
    for key, label in (("d_loss", "d_loss (last tick)"), ("g_loss", "g_loss (last tick)"),
                       ("diversity", "sample spread / real"), ("duplicates", "share with a near-copy")):
        rows.append((f"  {label}", [_cell(v.last_tick.get(key)) for v in views]))
    names = recorded_metrics(views)
    rows.append(("metrics (value @ kimg)", [] if names else ["none recorded" if i == 0 else "" for i in
                                                              range(len(views))]))
    marked = False
    for name in names:
        best = best_runs(views, name)
        marked = marked or bool(best)
        cells = []
        for i, view in enumerate(views):
            record = view.latest.get(name)
            if record is None:
                cells.append("-")
                continue
            mark = "*" if i in best else ""
            cells.append(f"{_cell(record.get('value'))}{mark} @{_cell(record.get('kimg'))}")
        rows.append((f"  {name}", cells))
    notes = protocol_notes(views) + platform_notes(views) + resume_notes(views)
    return _table(("run", [v.name for v in views]), rows, notes,
                  "* the best value of the metric among the runs" if marked else "")


SEED_SETTINGS = {"train.seed"}  # what runs of one setting over several seeds differ in


def seed_groups(views: list[RunView]) -> list[list[RunView]]:
    """The runs gathered into groups whose settings differ in train.seed alone, in the order first seen."""
    groups: list[list[RunView]] = []
    for view in views:
        for group in groups:
            if all(key in SEED_SETTINGS for key, _ in settings_diff([group[0], view])):
                group.append(view)
                break
        else:
            groups.append([view])
    return groups


def _mean_sd(values: list[float]) -> str:
    if len(values) < 2:
        return _cell(values[0]) if values else "-"
    return f"{statistics.mean(values):.4g} ({statistics.stdev(values):.2g})"


def format_seed_comparison(views: list[RunView]) -> str:
    """A plain-text table, one column per group of runs that differ in train.seed alone: the settings that set
    the groups apart, then each metric's mean (sample sd) over the group's newest values, and how many runs
    recorded it where not all did. * marks the best mean where the metric has a direction, every group holds
    at least two values of it, and all were measured alike: a difference to set beside the seed spread."""
    from .metrics.core import BEST_DIRECTION

    groups = seed_groups(views)
    heads = [g[0] for g in groups]
    rows: list[tuple[str, list[str]]] = [("runs", [str(len(g)) for g in groups]),
                                         ("seeds", [",".join(_cell(v.settings.get("train.seed")) for v in g)
                                                    for g in groups])]
    if len(groups) > 1:
        rows.append(("settings that differ", []))
        rows += [(f"  {key}", [_cell(v) for v in values]) for key, values in settings_diff(heads)
                 if key not in SEED_SETTINGS] or [("  (none)", [])]
    rows.append(("training (mean)", []))
    for label, get in (("kimg", lambda v: v.kimg), ("sec/kimg", lambda v: v.sec_per_kimg)):
        means = [[x for x in map(get, g) if isinstance(x, int | float)] for g in groups]
        rows.append((f"  {label}", [_cell(statistics.mean(m)) if m else "-" for m in means]))
    names = recorded_metrics(views)
    marked = False
    rows.append(("metrics: mean (sd)", [] if names else ["none recorded" if i == 0 else "" for i in
                                                          range(len(groups))]))
    for name in names:
        values = [[v.latest[name]["value"] for v in g if name in v.latest
                   and isinstance(v.latest[name].get("value"), int | float)
                   and math.isfinite(v.latest[name]["value"])] for g in groups]
        alike = _differing_field([v.latest[name] for v in views if name in v.latest]) is None
        best: set[int] = set()
        direction = BEST_DIRECTION.get(base_metric(name))
        if direction and alike and len(groups) > 1 and all(len(x) >= 2 for x in values):
            best = _best({i: statistics.mean(x) for i, x in enumerate(values)}, direction)
            marked = marked or bool(best)
        cells = []
        for i, (group, x) in enumerate(zip(groups, values, strict=True)):
            count = f" n={len(x)}" if x and len(x) != len(group) else ""
            cells.append(f"{_mean_sd(x)}{'*' if i in best else ''}{count}")
        rows.append((f"  {name}", cells))
    header = ("group", [g[0].name if len(g) == 1 else f"{g[0].name} +{len(g) - 1}" for g in groups])
    return _table(header, rows, protocol_notes(views) + platform_notes(views) + resume_notes(views),
                  "* the best mean of the metric among the groups" if marked else "")


def plot_comparison(views: list[RunView], path: Path | str, metric: str | None = None) -> str | None:
    """One figure: a metric against kimg for each run (the first metric the runs recorded, unless named),
    and D and G loss per tick. Returns the metric plotted, or None when no run recorded one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if metric is not None:
        check_metric(views, metric)
    metric = metric or next((n for n in recorded_metrics(views) if any(len(v.curves.get(n, [])) for v in views)), None)
    panels = 2 if metric else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax_loss = axes[0][-1]
    for view in views:
        kimg = [s["kimg"] for s in view.stats]
        dot = "." if len(kimg) < 2 else None  # a run of one tick is a point, which a bare line would not draw
        line = ax_loss.plot(kimg, [s["d_loss"] for s in view.stats], marker=dot, label=f"{view.name} D")[0]
        ax_loss.plot(kimg, [s["g_loss"] for s in view.stats], "--", marker=dot, color=line.get_color(),
                     label=f"{view.name} G")
        if metric and view.curves.get(metric):
            axes[0][0].plot(*zip(*view.curves[metric], strict=True), "o-", color=line.get_color(), label=view.name)
    ax_loss.set_xlabel("kimg")
    ax_loss.set_ylabel("loss (mean over tick; G dashed)")
    ax_loss.legend(fontsize="small")
    if metric:
        axes[0][0].set_xlabel("kimg")
        axes[0][0].set_ylabel(metric)
        axes[0][0].legend(fontsize="small")
    from .report import save_figure

    save_figure(fig, path)
    return metric
