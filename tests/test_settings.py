"""`.env.example` documents every setting with its default (regenerate: scripts/write_env_example.py)."""

from __future__ import annotations

import re
from pathlib import Path

from scripts.write_env_example import render
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_and_is_current() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    assert names == {name.upper() for name in Settings.model_fields}
    assert text == render(), "run scripts/write_env_example.py after changing settings.py"
