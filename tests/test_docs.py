"""Documentation keeps up with the code: every setting and CLI command appears in README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from reel.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented(name: str) -> None:
    assert f"`REEL_{name.upper()}`" in README


def test_the_two_commands_come_first() -> None:
    first_block = README.split("```", 2)[1]
    assert "make serve" in first_block and "make test" in first_block
