"""Prompt text lives in the prompt files: every fragment the code asks for (profile.fragment("name")) is
found for every profile, so a renamed or deleted section fails here and not in a running team."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.protocol import profile as profiles

ROOT = Path(__file__).resolve().parent.parent
# A literal name, or an f-string whose variable part is one of the three ceo_* variants.
_CALL = re.compile(r"""fragment\(\s*f?["']([a-z_{}]+)["']""")
_VARIANTS = {"{with_solution}": ("with_solution", "without_solution", "contradicted")}


def _names_in_code() -> set[str]:
    names: set[str] = set()
    for top in ("ceo", "services"):
        for path in (ROOT / top).rglob("*.py"):
            for name in _CALL.findall(path.read_text(encoding="utf-8")):
                for hole, fills in _VARIANTS.items():
                    if hole in name:
                        names.update(name.replace(hole, fill) for fill in fills)
                        break
                else:
                    names.add(name)
    return names


NAMES = sorted(_names_in_code())


def test_the_code_asks_for_fragments() -> None:
    assert {"direction_note", "check_note", "ceo_stop_rule_without_solution"} <= set(NAMES)


@pytest.mark.parametrize("profile_name", profiles.available())
def test_every_fragment_the_code_uses_is_in_the_prompt_files(profile_name: str) -> None:
    profile = profiles.load(profile_name)
    for name in NAMES:
        assert profile.fragment(name, advice="A", direction="D"), name


def test_a_fragment_keeps_its_values_verbatim_and_an_unknown_one_is_a_profile_error() -> None:
    profile = profiles.load("math500")
    assert profile.fragment("tests_note", source="s", status="ok", failing=0, output="out\n").endswith("out\n")
    with pytest.raises(profiles.ProfileError, match="no prompt fragment"):
        profile.fragment("no_such_fragment")
