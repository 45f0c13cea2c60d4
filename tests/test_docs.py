"""The documentation's promises that a test can hold it to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = [
        target
        for target in LINK.findall(page.read_text())
        if not (page.parent / target).resolve().exists()
    ]
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_readme_first_screen_gives_setup_and_test_commands() -> None:
    first_screen = "\n".join(ROOT.joinpath("README.md").read_text().splitlines()[:15])
    assert "bash scripts/setup.sh && .venv/bin/agentkit demo" in first_screen
    assert ".venv/bin/python -m pytest" in first_screen
    ci = ROOT.joinpath(".ci", "run").read_text()
    assert ".venv/bin/python -m pytest" in ci  # CI runs the README's test command


def test_every_cli_command_is_in_the_readme() -> None:
    from agentkit.cli.main import build_parser

    parser = build_parser()
    commands = next(
        a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"
    ).choices
    readme = ROOT.joinpath("README.md").read_text()
    missing = [name for name in commands if f"`agentkit {name}" not in readme]
    assert not missing, f"document these commands in the README: {missing}"
