"""The message catalog: every message id used in the code exists, in both languages, with the same fields."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from revopt.i18n import LANGUAGES, catalog

SOURCE = Path(__file__).resolve().parents[1] / "src" / "revopt"
MESSAGE_ID = re.compile(r"""message_id=["']([a-z_.]+)["']|message\(\s*["']([a-z_.]+)["']""")


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def used_ids() -> set[str]:
    found = set()
    for path in SOURCE.rglob("*.py"):
        for match in MESSAGE_ID.finditer(path.read_text(encoding="utf-8")):
            found.add(match.group(1) or match.group(2))
    return found


def test_used_ids_exist():
    missing = sorted(used_ids() - set(catalog()))
    assert missing == []


@pytest.mark.parametrize("message_id", sorted(catalog()))
def test_languages_share_fields(message_id):
    entry = catalog()[message_id]
    assert set(entry) == set(LANGUAGES)
    assert fields(entry["en"]) == fields(entry["zh-CN"])
    assert entry["zh-CN"].strip()
