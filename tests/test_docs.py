"""Documentation stays complete: every setting is in the README's configuration table."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghacache.cli.buildkit import BUILDKIT_SETTINGS
from ghacache.cli.cache import CLIENT_SETTINGS
from ghacache.cli.caches import CACHES_SETTINGS
from ghacache.cli.main import TOKEN_SETTINGS
from ghacache.server.config import SETTINGS, Setting

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize(
    "setting",
    SETTINGS + TOKEN_SETTINGS + CACHES_SETTINGS + CLIENT_SETTINGS + BUILDKIT_SETTINGS,
    ids=lambda s: s.name,
)
def test_every_setting_is_documented(setting: Setting) -> None:
    # A flag may appear twice (`token --scope`, `buildkit --scope`): the row is flag + variable.
    prefix = f"| `{setting.flag}` | `{setting.env}` |"
    row = next((line for line in README.splitlines() if line.startswith(prefix)), None)
    assert row is not None, f"{setting.flag} ({setting.env}) is missing from the README table"
    default = f"`{setting.default}`" if setting.default else "| |"
    assert default in row, f"README shows a different default for {setting.flag}"
