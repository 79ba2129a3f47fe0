"""report.html: one page per run to open in a browser: samples and how they changed, losses, collapse
signals, every metric with its protocol, the networks, the config, and the commands that go on from here.
It is built from the run directory's own files, so `ganforge report RUN` rebuilds it at any time; training
writes it at its end (or when stopped) and `ganforge eval RUN` refreshes it."""

from __future__ import annotations

import datetime
import html
import shlex
import tomllib
from pathlib import Path
from typing import Any

from .compare import RunView, base_metric, load_run, run_directory
from .errors import UserError
from .report import fixed_noise_grids, grid_nimg
from .tensorboard_log import LOG_DIR as TENSORBOARD_DIR

REPORT_NAME = "report.html"
MAX_TICK_ROWS = 60  # a long run's ticks are thinned evenly to this many rows, first and last kept

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 2px 10px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; } tr.flag td { background: #fff1e6; }
.muted { color: #777; } .warn { background: #fff1e6; border-left: 4px solid #e8590c; padding: 0.5em 1em; }
.ok { background: #ebfbee; border-left: 4px solid #2f9e44; padding: 0.5em 1em; }
figure { display: inline-block; margin: 0 1.5em 1em 0; vertical-align: top; }
figure img { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; } pre { background: #f8f8f8; padding: 0.8em; overflow-x: auto; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _e(value)


def _value(value: Any) -> str:
    """A metric's value: a number, or a per-class list / mapping of numbers written out."""
    if isinstance(value, dict):
        return ", ".join(f"{_e(k)}: {_num(v, 3)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_num(v, 3) for v in value)
    return _num(value)


def _figure(run_dir: Path, name: str, caption: str, width: int | None = None) -> str:
    if not (run_dir / name).is_file():
        return ""
    style = f' style="width:{width}px"' if width else ""
    return (f'<figure><a href="{_e(name)}"><img src="{_e(name)}"{style} alt="{_e(caption)}"></a>'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _at_ticks(ticks: list[dict[str, Any]]) -> str:
    first, last = ticks[0]["kimg"], ticks[-1]["kimg"]
    return f"at the tick at {first:g} kimg" if len(ticks) == 1 else f"at {len(ticks)} ticks, {first:g} to {last:g} kimg"


def _signals(view: RunView, cfg: Any) -> tuple[list[str], set[float]]:
    """The warnings the training loop gives (collapse, D winning, a jump), read back from each tick's logged
    values with the run's own thresholds, and the kimg of the ticks they flag."""
    from .checkpoint import kept_checkpoints
    from .config import Config
    from .health import COLLAPSE_CHECK_FROM_KIMG, DUPLICATE_CHECK_FROM_KIMG, d_wins, jump_minimum
    from .step import grid_count

    cfg = cfg or Config()  # a config.toml that no longer builds: the default thresholds
    t = cfg.train

    def ticks(key: str, since: float, flagged: Any) -> list[dict[str, Any]]:
        return [s for s in view.stats if s["kimg"] >= since and isinstance(s.get(key), int | float) and flagged(s)]

    saturated = ticks("d_fake", COLLAPSE_CHECK_FROM_KIMG, lambda s: isinstance(s.get("d_real"), int | float)
                      and d_wins(cfg, s["d_real"], s["d_fake"]))
    low = ticks("diversity", COLLAPSE_CHECK_FROM_KIMG, lambda s: s["diversity"] < t.collapse_warn)
    copies = ticks("duplicates", DUPLICATE_CHECK_FROM_KIMG,
                   lambda s: t.duplicate_warn > 0 and s["duplicates"] > t.duplicate_warn)
    fewest = jump_minimum(grid_count(cfg))
    jumps = ticks("jumped", COLLAPSE_CHECK_FROM_KIMG, lambda s: s["jumped"] >= fewest)

    def cleared(flagged: list[dict[str, Any]], key: str) -> str:
        # an early collapse can pass; a reader should not take a signal long gone for the run's state
        later = ticks(key, flagged[-1]["kimg"], lambda s: s["kimg"] > flagged[-1]["kimg"])
        return f"; clear from {later[0]['kimg']:g} kimg to the last tick ({later[-1]['kimg']:g})" if later else ""

    found = []
    if saturated:
        found.append(f"D told real from fake almost perfectly (mean D(real) above {t.d_win_warn:g}, D(fake) below "
                     f"{1 - t.d_win_warn:.2g}) {_at_ticks(saturated)}: G had little to learn from"
                     + cleared(saturated, "d_fake"))
    if low:
        found.append(f"sample spread under {t.collapse_warn:g} of the real images' {_at_ticks(low)} (lowest "
                     f"{min(s['diversity'] for s in low):.2f}): G's samples look alike, a collapse"
                     + cleared(low, "diversity"))
    if copies:
        found.append(f"more than {t.duplicate_warn:.0%} of the grid's samples had a near-copy {_at_ticks(copies)}: "
                     "G looks partly collapsed, drawing a few modes" + cleared(copies, "duplicates"))
    if jumps:
        kept = [p.name for p in kept_checkpoints(view.path)]
        found.append(f"part of the grid jumped (moved more than {t.jump_warn:g}x as far as over the ticks before) "
                     f"{_at_ticks(jumps)}: G changed abruptly, as when a run breaks late; compare those grids with "
                     "the ones before" + (f" ({', '.join(kept)} set aside from before)" if kept else ""))
    return found, {s["kimg"] for s in low + copies + saturated + jumps}


def _thinned(stats: list[dict[str, Any]], rows: int = MAX_TICK_ROWS) -> list[dict[str, Any]]:
    if len(stats) <= rows:
        return stats
    step = (len(stats) - 1) / (rows - 1)
    return [stats[round(i * step)] for i in range(rows)]


def _tick_table(view: RunView, flagged: set[float]) -> str:
    columns = [("kimg", "kimg"), ("epoch", "epoch"), ("sec_per_kimg", "sec/kimg"), ("d_loss", "d_loss"),
               ("g_loss", "g_loss"), ("d_real", "D(real)"), ("d_fake", "D(fake)"), ("diversity", "spread"),
               ("duplicates", "near-copy share"), ("change", "move"), ("jumped", "jumped")]
    shown = _thinned(view.stats)
    if any("augment_p" in s for s in shown):  # train.ada_target: the adaptive augment probability
        columns.append(("augment_p", "augment p"))
    metric_names: list[str] = []
    for s in shown:
        metric_names += [m for m in (s.get("metrics") or {}) if m not in metric_names]
    head = "".join(f"<th>{_e(label)}</th>" for _, label in columns)
    head += "".join(f"<th>{_e(m)}</th>" for m in metric_names)
    body = []
    for s in shown:
        cells = "".join(f"<td>{_num(s.get(key))}</td>" for key, _ in columns)
        cells += "".join(f"<td>{_value((s.get('metrics') or {}).get(m))}</td>" for m in metric_names)
        body.append(f'<tr{" class=flag" if s["kimg"] in flagged else ""}>{cells}</tr>')
    note = (f'<p class="muted">{len(shown)} of {len(view.stats)} ticks, evenly spaced; every tick is in '
            "stats.jsonl.</p>" if len(shown) < len(view.stats) else "")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>{note}"


_PROTOCOL_COLUMNS = (("n_fake", "n fake"), ("n_real", "n real"), ("reference", "reference"),
                     ("extractor", "extractor"), ("seed", "seed"))


def _metric_table(view: RunView) -> str:
    from .metrics.core import BEST_DIRECTION, metric_notes, reference_label

    if not view.latest:
        return ('<p class="muted">No evaluation recorded. <code>ganforge eval RUN</code> measures this run, or '
                "train with <code>--set eval.every_kimg=N</code> to evaluate at ticks.</p>")
    head = "<th class=l>metric</th><th>value</th><th>at kimg</th><th>best along the run</th>"
    head += "".join(f"<th class=l>{_e(label)}</th>" for _, label in _PROTOCOL_COLUMNS)
    rows = []
    for name, record in view.latest.items():
        curve = view.curves.get(name, [])
        best = ""
        direction = BEST_DIRECTION.get(base_metric(name))
        if direction is not None and len(curve) > 1:
            pick = min if direction == "min" else max
            kimg, value = pick(curve, key=lambda point: point[1])
            best = f"{_num(value)} @ {_num(kimg)}"
        cells = (f"<td class=l>{_e(name)}</td><td>{_value(record.get('value'))}</td>"
                 f"<td>{_num(record.get('kimg'))}</td><td>{best}</td>")
        shown = {**record, "reference": reference_label(record.get("reference"))}
        cells += "".join(f"<td class=l>{_num(shown.get(key))}</td>" for key, _ in _PROTOCOL_COLUMNS)
        rows.append(f"<tr>{cells}</tr>")
    resize = sorted({str(r.get("resize")) for r in view.latest.values() if r.get("resize")})
    notes = "".join(f'<p class="muted">resize: {_e(text)}</p>' for text in resize)
    notes += "".join(f'<p class="muted">{_e(note)}</p>' for note in metric_notes(list(view.latest.values())))
    return (f"<table><tr>{head}</tr>{''.join(rows)}</table>{notes}<p class=muted>The newest value of each "
            "metric; every evaluation, with its full protocol (extractor hash, ganforge version, checkpoint), "
            "is in metrics.json.</p>")


def plot_metrics(view: RunView, path: Path) -> list[str]:
    """Each metric measured at two or more points (alike), against kimg, one panel each, four to a row; the
    metrics drawn (none when no metric was)."""
    curves = {name: points for name, points in view.curves.items() if len(points) > 1}
    if not curves:
        path.unlink(missing_ok=True)  # an old figure would no longer match the metrics
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .report import save_figure

    names = list(curves)
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        kimg, values = zip(*curves[name], strict=True)
        ax.plot(kimg, values, "o-", markersize=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("kimg")
        if all(float(v).is_integer() for v in values):  # a count (classes_covered, modes): no 9.8 on its axis
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            if min(values) == max(values):
                ax.set_ylim(values[0] - 1, values[0] + 1)
    save_figure(fig, path, dpi=90)
    return names


def _config(config_text: str) -> tuple[Any, str]:
    """The run's Config from its config.toml text, or None and why it no longer builds one."""
    from .config import from_dict

    try:
        return from_dict(tomllib.loads(config_text), stored=True), ""
    except (UserError, KeyError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
        return None, str(e)


def _networks(cfg: Any, why_not: str) -> str:
    from .report import network_summary

    if cfg is None:
        return f"(the networks could not be built from config.toml: {why_not})"
    try:
        return network_summary(cfg)
    except (UserError, ValueError, RuntimeError) as e:
        return f"(the networks could not be built from config.toml: {e})"


def _status(view: RunView, problems: list[str], signals: list[str]) -> str:
    target, kimg = view.settings.get("train.kimg"), view.kimg or 0.0
    if not view.stats:
        status = "<p class=warn>No tick has been logged yet: the run stopped before its first tick.</p>"
    elif view.ended_by == "train.kimg":
        status = f"<p class=ok>Finished: {_num(kimg)} kimg of {_num(target)}.</p>"
    elif view.ended_by == "eval.patience_kimg":
        stop = view.last_tick["early_stop"]
        status = (f"<p class=ok>Ended early at {_num(kimg)} kimg of {_num(target)}: {_e(str(stop.get('metric')))} "
                  f"had not improved on {_num(stop.get('best'))} (at {_num(stop.get('best_kimg'))} kimg) for "
                  f"{_num(stop.get('patience_kimg'))} kimg (eval.patience_kimg); the best checkpoint is "
                  "checkpoints/best.pt.</p>")
    elif view.ended_by == "train.minutes":
        from .report import format_duration

        status = (f"<p class=ok>Finished at its time limit: {_num(kimg)} kimg of {_num(target)} in "
                  f"{_e(format_duration(view.time_s))} (train.minutes = {_num(view.settings['train.minutes'])}). "
                  "Train on with "
                  f"<code>{_e(_ganforge())} train --resume {_e(shlex.quote(str(view.path)))} --set "
                  "train.minutes=N</code> (0: no limit).</p>")
    else:
        status = (f"<p class=warn>Stopped at {_num(kimg)} kimg of {_num(target)}. Continue it with "
                  f"<code>{_e(_ganforge())} train --resume {_e(shlex.quote(str(view.path)))}</code>.</p>")
    status += "".join(f"<p class=warn>{_e(text)}.</p>" for text in problems)
    if signals:
        status += "".join(f"<p class=warn>Warning: {_e(text)}.</p>" for text in signals)
    elif len(view.stats) > 1:
        status += "<p class=ok>No collapse signal: sample spread and near-copy share stayed within limits.</p>"
    return status


def _stabilisers(settings: dict[str, Any], last: dict[str, Any]) -> str:
    """The stabilisers a run trained with, in words ("none" for a plain GAN)."""
    def get(key: str, default: Any = 0) -> Any:
        value = settings.get(key)
        return default if value is None else value

    on = []
    if get("train.ema_kimg"):
        on.append(f"EMA of G (half-life {_num(get('train.ema_kimg'))} kimg)")
    policy = get("train.diffaugment", "")
    if policy and get("train.ada_target"):
        p = f", p {_num(last['augment_p'])} at the last tick" if isinstance(last.get("augment_p"), int | float) else ""
        on.append(f"DiffAugment {policy}, adaptive (target {_num(get('train.ada_target'))}{p})")
    elif policy:
        on.append(f"DiffAugment {policy} on every image")
    if get("loss.n_critic", 1) > 1:
        on.append(f"{get('loss.n_critic')} D steps per G step")
    if get("loss.critic_burst"):
        when = [f"the first {get('loss.critic_burst_first')}"] if get("loss.critic_burst_first") else []
        when += [f"every {_ordinal(get('loss.critic_burst_every'))}"] if get("loss.critic_burst_every") else []
        on.append(f"{get('loss.critic_burst')} D steps in {' and '.join(when)} G steps")
    every = f", every {get('loss.r1_every')} D steps" if get("loss.r1_every", 1) > 1 else ""
    for key, penalty in (("loss.r1_gamma", "R1"), ("loss.r2_gamma", "R2")):
        if get(key):
            on.append(f"{penalty} (gamma {_num(get(key))}{every})")
    if get("model.d_spectral_norm", False):
        on.append("spectral norm on D")
    if get("loss.label_smoothing"):
        on.append(f"label smoothing {_num(get('loss.label_smoothing'))}")
    if get("loss.instance_noise"):
        on.append(f"instance noise {_num(get('loss.instance_noise'))} to 0 over "
                  f"{_num(get('loss.instance_noise_kimg'))} kimg")
    if get("loss.lecam"):
        on.append(f"LeCam (weight {_num(get('loss.lecam'))})")
    if get("loss.topk", 1) < 1:
        ramp = f", from all over {_num(get('loss.topk_kimg'))} kimg" if get("loss.topk_kimg") else ""
        on.append(f"top-k training (G learns from the {_num(100 * get('loss.topk'))}% of fakes D rates best{ramp})")
    if get("model.d_dropout"):
        on.append(f"dropout in D ({_num(get('model.d_dropout'))})")
    if get("model.d_mbstd", False):
        on.append("minibatch stddev")
    if get("model.d_mbdisc"):
        on.append(f"minibatch discrimination ({get('model.d_mbdisc')} kernels)")
    if get("model.pac", 1) > 1:
        on.append(f"PacGAN (pac {get('model.pac')})")
    return "; ".join(on) or "none"


def _conditioning(settings: dict[str, Any]) -> str:
    """How a conditional run's networks take the label ("" for an unconditional one)."""
    if not settings.get("model.n_classes"):
        return ""
    return (f"; conditional on {settings['model.n_classes']} classes (G {settings.get('model.g_cond')}, "
            f"D {settings.get('model.d_cond')})")


def _glance(view: RunView) -> str:
    from . import checkpoint as ckpt_io
    from .config import describe_resumes
    from .report import format_duration

    settings, last = view.settings, view.last_tick
    ckpts = ckpt_io.list_checkpoints(view.path)
    has_best = (view.path / ckpt_io.CKPT_DIR / "best.pt").is_file()
    epochs = f" ({last['epoch']:g} epochs)" if isinstance(last.get("epoch"), int | float) else ""
    losses = (("d_loss", "d_loss"), ("g_loss", "g_loss"), ("d_real", "D(real)"), ("d_fake", "D(fake)"))
    rows = [
        ("preset", settings.get("preset")),
        ("data", f"{settings.get('data.name')}, {settings.get('data.img_size')} px, {settings.get('data.channels')} "
                 "channel(s)" + (", and each image mirrored" if settings.get("data.mirror") else "")),
        ("networks", f"G {settings.get('model.g')}, D {settings.get('model.d')}, z_dim {settings.get('model.z_dim')}"
                     + _conditioning(settings)),
        ("loss", settings.get("loss.name")),
        ("stabilisers", _stabilisers(settings, last or {})),
        ("batch size", settings.get("train.batch_size")),
        ("images seen", f"{_num(view.kimg or 0.0)} kimg{epochs}"),
        ("training time", format_duration(view.time_s) if view.time_s is not None else "-"),
        ("speed", f"{view.sec_per_kimg:.3g} sec/kimg (median over ticks)" if view.sec_per_kimg else "-"),
        ("trained on", " + ".join(view.platforms) or "-"),
        *([("changed at a resume", describe_resumes(view.resumes_changed))] if view.resumes_changed else []),
        ("last tick", "  ".join(f"{label} {_num(last.get(key))}" for key, label in losses) if last else "-"),
        ("checkpoints", (f"{len(ckpts)}, latest {ckpts[-1].name}" if ckpts else "none") + (", best.pt" * has_best)),
        ("seed", settings.get("train.seed")),
    ]
    body = "".join(f"<tr><th class=l>{_e(k)}</th><td class=l>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _samples(view: RunView) -> str:
    run_dir = view.path
    grids = fixed_noise_grids(run_dir / "samples")
    which = "G_ema" if (view.settings.get("train.ema_kimg") or 0) > 0 else "G"
    samples = _figure(run_dir, "final.png", f"final samples of {which} (the fixed noise of every grid)")
    if not samples and grids:
        latest = grids[-1].relative_to(run_dir).as_posix()
        samples = _figure(run_dir, latest, f"latest fixed-noise grid, {grid_nimg(grids[-1]) / 1000:g} kimg")
    samples += _figure(run_dir, "samples/reals.png", "real images")
    samples += _figure(run_dir, "progress.gif", "the fixed-noise grid through training")
    if len(grids) > 1:  # a few grids along the way, for when the GIF is not playing
        picks = sorted({grids[round(i * (len(grids) - 1) / 3)] for i in range(4)}, key=grid_nimg)
        samples += "<br>" + "".join(_figure(run_dir, p.relative_to(run_dir).as_posix(),
                                            f"{grid_nimg(p) / 1000:g} kimg", width=180) for p in picks)
    return samples or "<p class=muted>No sample grid yet.</p>"


def _ganforge() -> str:
    """`ganforge` with the --plugin flags of the plugins this process loaded: a run of a plugin's networks
    needs them in every command that goes on from it."""
    from .plugins import plugin_args

    return shlex.join(["ganforge", *plugin_args()])


def _commands(run_dir: Path) -> str:
    run, config = shlex.quote(str(run_dir)), shlex.quote(str(run_dir / "config.toml"))
    ganforge = _ganforge()
    return "\n".join([
        f"{ganforge} sample {run} --n 64 --out grid.png --seed 1",
        f"{ganforge} eval {run}",
        f"{ganforge} eval {run} --ckpt all --n 2000   # every kept checkpoint: the curve and the best one",
        f"{ganforge} eval {run} --metrics copies      # does G copy its training images?",
        f"{ganforge} sample {run} --n 8 --nearest 5 --out nn.png   # each sample beside its 5 nearest training images",
        f"{ganforge} export {run} --out G.safetensors   # G alone, to share: sample and eval take it",
        f"{ganforge} export {run} --out G.pt2           # G as a torch.export program, for PyTorch without ganforge",
        f"{ganforge} train --resume {run} --set train.kimg=N",
        f"{ganforge} train --config {config}     # a new run with the same settings",
        f"{ganforge} compare {run} OTHER_RUN",
        f"{ganforge} report {run}                # rebuild this page",
    ] + ([f"tensorboard --logdir {shlex.quote(str(run_dir / TENSORBOARD_DIR))}   # the ticks in TensorBoard"]
         if (run_dir / TENSORBOARD_DIR).is_dir() else []))


def _changed_settings(cfg: Any) -> str:
    """What the run sets beyond the built-in defaults, each with its meaning: the config at a glance."""
    from .config import describe

    if cfg is None:
        return ""
    try:
        text = describe(cfg, changed=True)
    except UserError:  # every setting at its built-in default
        return ""
    return (f"<p class=muted>What this run sets beyond ganforge's built-in defaults, and what each means:</p>"
            f"<pre>{_e(text)}</pre>")


def build_html(run_dir: Path) -> str:
    """The report page of a run directory, as one HTML string (images linked by relative path). Draws the
    run's losses.png and metrics.png on the way."""
    from . import __version__
    from .losses import registered_loss
    from .report import plot_losses

    problems: list[str] = []
    view = load_run(run_dir, problems)
    config_text = (run_dir / "config.toml").read_text(encoding="utf-8-sig")
    cfg, why_not = _config(config_text)
    if view.stats:
        loss = registered_loss(cfg.loss.name) if cfg is not None else None
        plot_losses(view.stats, run_dir / "losses.png", loss is not None and loss.relativistic)
    has_metric_plot = plot_metrics(view, run_dir / "metrics.png")
    signals, flagged_kimg = _signals(view, cfg)
    description = view.settings.get("description") or ""
    written = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(run_dir.name)}: ganforge run report</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(run_dir.name)}</h1>",
        f"<p class=muted>{_e(description)}</p>" if description else "",
        _status(view, problems, signals),
        f"<h2>At a glance</h2>{_glance(view)}",
        f"<h2>Samples</h2>{_samples(view)}",
        "<h2>Training curves</h2>",
        _figure(run_dir, "losses.png", "D and G loss per tick; mean D(real) and D(fake), sample spread and "
                                       "near-copy share") or "<p class=muted>No tick logged yet.</p>",
        "<h2>Metrics</h2>", _metric_table(view),
        _figure(run_dir, "metrics.png", "each metric against kimg (values measured alike)") if has_metric_plot else "",
        "<h2>Ticks</h2>", _tick_table(view, flagged_kimg) if view.stats else "<p class=muted>None yet.</p>",
        f"<h2>Networks</h2><pre>{_e(_networks(cfg, why_not))}</pre>",
        f"<h2>Config</h2>{_changed_settings(cfg)}<p class=muted>config.toml, fully resolved:</p>"
        f"<pre>{_e(config_text)}</pre>",
        f"<h2>From here</h2><pre>{_e(_commands(run_dir))}</pre>",
        f"<p class=muted>Written by ganforge {_e(__version__)} at {written}.</p>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def write_html_report(run: Path | str) -> Path:
    """Write (or rebuild) report.html in a run directory, with its losses.png and metrics.png; returns its
    path. `run` is a run directory or a checkpoint inside one."""
    from .checkpoint import atomic_write_text

    run_dir = run_directory(run)
    path = run_dir / REPORT_NAME
    atomic_write_text(build_html(run_dir), path)
    return path
