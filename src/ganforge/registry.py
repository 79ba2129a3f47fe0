"""Name -> factory registries, so the CLI can list valid names and tests can run over every entry."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from .errors import UserError


def did_you_mean(guesses: list[str]) -> str:
    """' (did you mean a or b?)' to follow a refused name; '' without guesses."""
    return f" (did you mean {' or '.join(guesses)}?)" if guesses else ""


def close_spelling(name: str, choices: Any) -> list[str]:
    """The valid name closest in spelling to `name`, if any is close; case aside first (FD_DIGITS, Default)."""
    choices = list(choices)
    same = [c for c in choices if isinstance(c, str) and c.lower() == str(name).lower()]
    return same[:1] or difflib.get_close_matches(name, choices, n=1)


def unknown_name(kind: str, name: str, choices: list[str]) -> str:
    """The one-line refusal of a name: the close spelling first when there is one, then every valid name."""
    return f"unknown {kind} {name!r}{did_you_mean(close_spelling(name, choices))}; valid choices: {', '.join(choices)}"


# Appended to the refusal of a name with no close spelling: it may be one of the user's own, not loaded.
PLUGIN_HINT = " (one of your own is known once the file that registers it is loaded: ganforge --plugin FILE ...)"


def _same_definition(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == \
        (getattr(b, "__module__", None), getattr(b, "__qualname__", None))


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: `factory` under `name`. The same definition again (a notebook cell run twice) replaces
        the entry; another one under a taken name is refused."""
        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and not _same_definition(self._entries[name], factory):
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self:
            close = close_spelling(name, self.names())
            raise UserError(unknown_name(self.kind, name, self.names()) + ("" if close else PLUGIN_HINT))
        return self._entries[name]

    def names(self) -> list[str]:
        _load_installed_plugins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        if name not in self._entries:
            _load_installed_plugins()  # a name an installed package registers, asked for before it was imported
        return name in self._entries


def _load_installed_plugins() -> None:
    from .plugins import load_installed

    load_installed()
