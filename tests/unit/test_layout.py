"""The shape of the tree: module sizes, and the layering the README states."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    big = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "clawhq").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"split these (one module, one job): {big}"


def layering() -> str:
    """The import-linter layers contract of pyproject.toml, as the README writes it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    layers = []
    for layer in contract["layers"]:
        # "a | b": siblings that may not import each other; "a : b": siblings that may.
        sep = " : " if ":" in layer else " | "
        names = [f"`{name.strip().removeprefix('clawhq.')}`" for name in layer.split(sep.strip())]
        layers.append(sep.join(names))
    return " → ".join(layers)


def test_the_readme_states_the_layering_lint_imports_checks() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert layering() in readme, f"the README should say: {layering()}"
