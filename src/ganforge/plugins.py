"""Code of your own (networks, losses, data sets, metrics) registered by a Python file or module that the
command line loads before it reads a config: `ganforge --plugin my_nets.py train ...`.

An installed package can offer its registrations to every command without a flag, as an entry point in the
group `ganforge.plugins` (in its pyproject.toml: `[project.entry-points."ganforge.plugins"]` then
`my_nets = "my_package.nets"`); `GANFORGE_DISABLE_PLUGIN_AUTOLOAD=1` leaves those out.

A checkpoint keeps a run's config and weights, never its code, so a run trained with a plugin needs that
plugin again to be resumed, sampled or evaluated; the checkpoint records which ones were loaded, and the
error for a name it cannot build says which to pass."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from .errors import UserError
from .registry import PLUGIN_HINT

ENV_VAR = "GANFORGE_PLUGINS"  # plugins loaded by every command, separated by os.pathsep
ENTRY_POINT_GROUP = "ganforge.plugins"  # installed packages' plugins, loaded without a flag
NO_AUTOLOAD_VAR = "GANFORGE_DISABLE_PLUGIN_AUTOLOAD"

_loaded: list[str] = []  # what load_plugin loaded in this process, in order: absolute paths or module names
_installed_loaded = False


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)


def load_plugin(spec: str) -> str:
    """Import a plugin: a .py file (by path) or an importable module (by dotted name). Loading the same one
    twice does nothing. Returns what it is recorded as: the file's absolute path or the module's name."""
    spec = spec.strip()
    if not spec:
        raise UserError("--plugin needs a .py file or a module name")
    if _is_file(spec):
        path = Path(spec).expanduser().absolute()
        if not path.is_file():
            raise UserError(f"plugin {spec} not found{' (a directory)' if path.is_dir() else ''}; give the path of "
                            "the .py file that registers your networks, losses or data sets")
        key = str(path)
    else:
        key = spec
    if key in _loaded:
        return key
    try:
        if _is_file(spec):
            digest = hashlib.sha1(key.encode(errors="surrogateescape")).hexdigest()[:8]  # two files may share a name
            name = f"ganforge_plugin_{path.stem.replace('-', '_')}_{digest}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None:
                raise UserError(f"plugin {spec} cannot be imported as Python; give a .py file")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # dataclasses and pickling look modules up by name
            if str(path.parent) not in sys.path:  # its own helper modules import as beside a script
                sys.path.append(str(path.parent))
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        else:
            importlib.import_module(spec)
    except UserError:
        raise
    except ModuleNotFoundError as e:
        if e.name == spec or spec.startswith(f"{e.name}."):
            raise UserError(f"plugin {spec} not found: no such module on the Python path (a file is given by "
                            "its path, e.g. --plugin ./my_nets.py)") from e
        raise UserError(f"plugin {spec} failed to load: {type(e).__name__}: {e} (--debug shows where)") from e
    except Exception as e:  # the plugin's own code failed: name it, the traceback is behind --debug
        raise UserError(f"plugin {spec} failed to load: {type(e).__name__}: {e} (--debug shows where)") from e
    _loaded.append(key)
    return key


def installed_plugins() -> list[Any]:
    """The entry points installed packages declare in the group `ganforge.plugins`, by name; none imported."""
    from importlib import metadata

    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def load_installed() -> list[str]:
    """Import the plugins that installed packages declare as entry points in the group `ganforge.plugins`,
    once per process; returns their module names. A registry calls this before it refuses a name, so the
    Python API finds them as the command line does."""
    global _installed_loaded
    if _installed_loaded or os.environ.get(NO_AUTOLOAD_VAR, "").strip() not in ("", "0"):
        return []
    _installed_loaded = True  # first: a plugin that looks a name up while it loads must not recurse here
    names = []
    for entry in installed_plugins():
        package = entry.dist.name if entry.dist is not None else "an installed package"
        if entry.module in _loaded:  # recorded by module, so that --plugin MODULE loads it again
            continue
        try:
            entry.load()
        except Exception as e:
            raise UserError(f"plugin {entry.module}, which {package} installs, failed to load: {type(e).__name__}: "
                            f"{e} (--debug shows where; {NO_AUTOLOAD_VAR}=1 skips installed plugins)") from e
        _loaded.append(entry.module)
        names.append(entry.module)
    return names


def load_plugins(specs: list[str] | None = None) -> list[str]:
    """Load the installed packages' plugins, those named in $GANFORGE_PLUGINS, then `specs`; returns all
    loaded so far."""
    load_installed()
    from_env = [s for s in os.environ.get(ENV_VAR, "").split(os.pathsep) if s.strip()]
    for spec in [*from_env, *(specs or [])]:
        load_plugin(spec)
    return loaded_plugins()


def loaded_plugins() -> list[str]:
    return list(_loaded)


def plugin_args() -> list[str]:
    """--plugin FILE for each plugin loaded here: a command printed to go on from a run needs them too."""
    return [word for plugin in _loaded for word in ("--plugin", plugin)]


def plugin_hint(recorded: Any) -> str:
    """For a stored config that names something this process does not know: the plugins its run loaded that
    this process has not, as the words to add; '' when there are none."""
    if not isinstance(recorded, list):
        return ""
    missing = [str(p) for p in recorded if str(p) not in _loaded]
    if not missing:
        return ""
    flags = " ".join(f"--plugin {p}" for p in missing)
    return f"; the run was trained with {flags}: pass it again (ganforge {flags} COMMAND ...)"


def naming_plugins(error: UserError, recorded: Any) -> UserError:
    """`error` (a checkpoint's config refused) with the plugins its run loaded, when it refuses a name that
    this process does not know and they are not loaded here; else `error` as it is."""
    hint = plugin_hint(recorded) if str(error).startswith("unknown ") else ""
    return UserError(str(error).removesuffix(PLUGIN_HINT) + hint) if hint else error


def stored_config(state: dict[str, Any]):  # -> Config
    """The config a checkpoint holds, checked as a stored one; a network, loss or data set it names that no
    loaded code registers is refused with the plugins its run used."""
    from .config import from_dict

    try:
        return from_dict(state["config"], stored=True)
    except UserError as e:
        named = naming_plugins(e, state.get("plugins"))
        if named is e:
            raise
        raise named from e
