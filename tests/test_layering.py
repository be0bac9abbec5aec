"""The direction of imports (issue 14): the CEO and the role agents share services/protocol/, which imports
neither; no lower layer imports a higher one; the client and the evaluation tools do not import each other.

Walks every module's imports with ast (function-level imports included), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (importing package, imported package): each pair is a direction that must not exist.
FORBIDDEN = [
    # Nothing below the CEO reaches up into it.
    ("services", "ceo"),
    ("trainer", "ceo"),
    # The CEO talks to the roles over the bus only; what both need lives in services.protocol.
    ("ceo", "services.agents"),
    # The protocol layer is shared: it imports neither side, nor the tools built on top.
    ("services.protocol", "services.agents"),
    ("services.protocol", "services.evaluation"),
    ("services.protocol", "services.client"),
    ("services.protocol", "services.bus"),
    ("services.protocol", "services.runtime"),
    # The bus and the runtime are below every service.
    ("services.bus", "services.agents"),
    ("services.bus", "services.runtime"),
    ("services.runtime", "services.agents"),
    # The LLM client belongs to the inference service it calls, not to the roles.
    ("services.inference", "services.agents"),
    # Evaluation runs problems through the client; the client knows nothing of benchmarks.
    ("services.client", "services.evaluation"),
    ("services.evaluation", "services.agents"),
]


def _module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _all_imports() -> dict[str, set[str]]:
    out = {}
    for top in ("ceo", "services", "trainer"):
        for path in sorted((ROOT / top).rglob("*.py")):
            out[_module_of(path)] = _imports(path)
    return out


IMPORTS = _all_imports()


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN, ids=[f"{a}->{b}" for a, b in FORBIDDEN])
def test_no_import_in_a_forbidden_direction(importer: str, imported: str) -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in IMPORTS.items() if _inside(module, importer)
        for name in names if _inside(name, imported)
    )
    assert not offenders, "\n".join(offenders)


def test_the_walk_sees_the_modules_it_guards() -> None:
    # A walk that found nothing would pass every check above.
    assert "services.protocol.parsing" in IMPORTS
    assert "ceo.loop" in IMPORTS
    assert "services.protocol.parsing" in IMPORTS["ceo.decide"]
