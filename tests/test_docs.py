"""The documents agree with the code they describe: the contract's check table is the
registry's, every rule a check cites is a section of the contract, and each check's file is
where the table says."""

from __future__ import annotations

import re
from pathlib import Path

from conformance.checks import CHECKS, markdown_table

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = (ROOT / "docs" / "contract.md").read_text()


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_contract_shows_the_registry():
    assert markdown_table() in CONTRACT


def test_every_rule_a_check_cites_is_a_section_of_the_contract():
    anchors = {_slug(h) for h in re.findall(r"^##+ (.+)$", CONTRACT, flags=re.M)}
    for check in CHECKS.values():
        assert check.rules, check.name
        for rule in check.rules:
            assert rule in anchors, (check.name, rule)
        assert (ROOT / "conformance" / "checks" / f"{check.name}.py").is_file()
        assert f"`{check.name}`" in CONTRACT
