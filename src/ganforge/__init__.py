"""ganforge: train, resume, sample, evaluate and compare GANs on image data.

Public API (nothing heavy runs at import time):
    ganforge.load_config(preset=..., path=..., overrides=[...]) -> Config
    ganforge.train(config, out="runs") -> run directory
    ganforge.resume(run_dir, overrides=[...]) -> run directory
    ganforge.load_generator(run_or_ckpt) -> G, with G.sample(n)
    ganforge.export_generator(run_or_ckpt, "G.safetensors") -> G alone in a file that load_generator takes
    ganforge.evaluate_run(run_or_ckpt, ["fd_digits", ...]) -> results with their protocol (also in metrics.json)
    ganforge.compare_runs([run_dir, ...]) -> one RunView per run (settings, speed, latest metrics)
    ganforge.write_html_report(run_dir) -> the run's report.html, rebuilt
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Config", "UserError", "load_config", "train", "resume", "load_generator", "export_generator",
           "evaluate_run", "compare_runs", "write_html_report", "__version__"]

if TYPE_CHECKING:
    from .compare import compare_runs
    from .config import Config, load_config
    from .errors import UserError
    from .generators import export_generator, load_generator
    from .html_report import write_html_report
    from .metrics.core import evaluate_run
    from .trainer import resume, train

_LAZY = {
    "Config": "config",
    "load_config": "config",
    "UserError": "errors",
    "train": "trainer",
    "resume": "trainer",
    "load_generator": "generators",
    "export_generator": "generators",
    "evaluate_run": "metrics.core",
    "compare_runs": "compare",
    "write_html_report": "html_report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ganforge' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the lazy names too, so tab completion in a notebook offers the API
    return sorted(set(globals()) | set(__all__))
