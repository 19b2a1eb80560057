"""The message catalog: every text an operator reads, in Simplified Chinese and English.

The catalog is the union of the TOML files in ``revopt/locale``. Each file contains tables whose
leaves are ``{en = "...", "zh-CN" = "..."}``; a message id is the dotted path to such a leaf, for
example ``cli.analyze.done``. Messages are ``str.format`` templates with named fields.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from importlib import resources

__all__ = ["LANGUAGES", "DEFAULT_LANGUAGE", "detect_language", "message", "catalog", "Translator"]

LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "en"


def _flatten(table: dict, prefix: str, into: dict[str, dict[str, str]], source: str) -> None:
    if set(table) == set(LANGUAGES) and all(isinstance(v, str) for v in table.values()):
        if prefix in into:
            raise KeyError(f"message id {prefix!r} is defined twice (second time in {source})")
        into[prefix] = table
        return
    for key, value in table.items():
        if not isinstance(value, dict):
            raise KeyError(
                f"message {prefix}.{key} in {source} must be a table with exactly the keys {', '.join(LANGUAGES)}"
            )
        _flatten(value, f"{prefix}.{key}" if prefix else key, into, source)


@cache
def catalog() -> dict[str, dict[str, str]]:
    """Load and merge every catalog file; the result maps message id to ``{language: template}``."""
    merged: dict[str, dict[str, str]] = {}
    folder = resources.files("revopt") / "locale"
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".toml"):
            _flatten(tomllib.loads(entry.read_text(encoding="utf-8")), "", merged, entry.name)
    return merged


def detect_language(requested: str | None = None) -> str:
    """Return ``requested`` if given, else zh-CN when the locale environment is Chinese, else English."""
    if requested is not None:
        if requested not in LANGUAGES:
            from revopt.errors import ConfigError

            raise ConfigError(f"language {requested!r} is not supported; use one of: {', '.join(LANGUAGES)}")
        return requested
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable, "")
        if value:
            return "zh-CN" if value.lower().startswith("zh") else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def message(message_id: str, language: str, /, **fields) -> str:
    """Return the message ``message_id`` in ``language``, formatted with ``fields``.

    Raises
    ------
    KeyError
        If the id is not in the catalog (a programming error, so it is not caught).
    """
    template = catalog()[message_id][language]
    return template.format(**fields) if fields else template


class Translator:
    """A message lookup bound to one language, for templates and report code: ``t("report.title")``."""

    def __init__(self, language: str) -> None:
        self.language = detect_language(language)

    def __call__(self, message_id: str, /, **fields) -> str:
        return message(message_id, self.language, **fields)
