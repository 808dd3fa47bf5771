"""Dependencies follow the data: the mock sits on top, shared astronomy at the bottom.

Read with ``ast`` from every module file (imports inside functions count, relative imports are resolved, and
``importlib.import_module("...")`` with a literal name counts too).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "survey_mass"

#: modules on the real path (store -> training -> inference -> catalog) that must not need the mock
REAL_PATH = ("selection.py", "models/", "training/", "inference/", "store/", "catalog/", "attribution.py")
#: the only modules outside survey_mass/mock/ allowed to import it
MAY_IMPORT_MOCK = {"cli.py", "api.py", "__init__.py", "testing.py", "validate.py"}


def _module_name(path: Path) -> tuple[str, str]:
    """(module name, package its relative imports resolve against)."""
    parts = ("survey_mass", *path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imports_of(path: Path, source: str | None = None) -> set[str]:
    """Every module name a file imports (``from a import b`` gives both a and a.b)."""
    _, package = _module_name(path)
    found: set[str] = set()
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def _files() -> list[tuple[str, Path]]:
    return [(p.relative_to(PKG).as_posix(), p) for p in sorted(PKG.rglob("*.py"))]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_resolves_relative_imports():
    src = "from ..mock.populations import x\nfrom .. import mock\nimport survey_mass.mock.physics\n"
    found = imports_of(PKG / "models" / "probe.py", src)
    assert {"survey_mass.mock.populations", "survey_mass.mock", "survey_mass.mock.physics"} <= found


def test_the_real_path_does_not_import_the_mock():
    bad = {
        rel: sorted(m for m in imports_of(p) if _within(m, "survey_mass.mock"))
        for rel, p in _files()
        if rel.startswith(REAL_PATH)
    }
    assert not {k: v for k, v in bad.items() if v}


def test_only_the_entry_points_import_the_mock():
    bad = {
        rel: sorted(m for m in imports_of(p) if _within(m, "survey_mass.mock"))
        for rel, p in _files()
        if not rel.startswith("mock/") and rel not in MAY_IMPORT_MOCK
    }
    assert not {k: v for k, v in bad.items() if v}


def test_the_mock_does_not_import_inference():
    bad = {
        rel: sorted(m for m in imports_of(p) if _within(m, "survey_mass.inference"))
        for rel, p in _files()
        if rel.startswith("mock/")
    }
    assert not {k: v for k, v in bad.items() if v}


def _leaf_violations(rel: str, allowed: tuple[str, ...]) -> list[str]:
    own = [m for m in imports_of(PKG / rel) if _within(m, "survey_mass") and m != "survey_mass"]
    return sorted(m for m in own if not any(_within(m, a) for a in allowed))


def test_shared_astronomy_is_a_leaf():
    assert _leaf_violations("astro.py", ("survey_mass.photometry",)) == []
    assert _leaf_violations("galaxies.py", ("survey_mass.photometry", "survey_mass.candidates")) == []


def test_storage_is_a_leaf():
    """Where data lives (local or an object store) is decided in one leaf module that every stage uses."""
    assert _leaf_violations("storage.py", ("survey_mass.errors",)) == []
