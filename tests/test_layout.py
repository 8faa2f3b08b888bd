"""The package layout and import rules of ARCHITECTURE.md, checked on the source itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ingest", "simulator", "features", "models", "scoring", "motorwatch")
# Who may import whom (ARCHITECTURE.md). A package may always import itself.
ALLOWED: dict[str, set[str]] = {
    "ingest": set(),
    "simulator": {"ingest"},
    "features": {"ingest"},
    "models": {"features", "ingest"},
    "scoring": {"models", "features", "ingest"},
    "motorwatch": {"ingest", "simulator", "features", "models", "scoring"},
}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages imported anywhere in a module (including inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_architecture_allows(package: str) -> None:
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = project_imports(path) - ALLOWED[package] - {package}
        if bad:
            violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not violations, "\n".join(violations)


def test_nothing_imports_the_cli_package() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in PACKAGES
        if pkg != "motorwatch"
        for p in (ROOT / pkg).rglob("*.py")
        if "motorwatch" in project_imports(p)
    ]
    assert not offenders


def test_top_level_layout_is_the_one_the_user_fixed() -> None:
    for name in ("ingest", "features", "models", "scoring", "simulator", "tests", "deploy"):
        assert (ROOT / name).is_dir(), name
    assert (ROOT / "pyproject.toml").is_file()
    assert (ROOT / "ARCHITECTURE.md").is_file()


def test_cli_help_lists_every_stage_without_loading_heavy_libraries() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from motorwatch.cli import main;"
        "r = CliRunner().invoke(main, ['--help']); print(r.output);"
        "print('HEAVY' if {'tensorflow', 'sklearn', 'onnxruntime'} & set(sys.modules) else 'LIGHT')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for stage in ("simulate", "replay", "features", "score", "train", "evaluate", "demo", "bench", "kafka"):
        assert f"  {stage} " in out, stage
    assert out.strip().endswith("LIGHT")
