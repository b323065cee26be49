"""Every hookspec is documented with its exact signature and has a test named for it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from nydusify_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = [name for name in vars(hookspecs) if name.startswith("nydusify_")]


def signature_line(name: str) -> str:
    """`def name(a: T, b: U) -> R` with annotations exactly as written in hookspecs.py."""
    fn = getattr(hookspecs, name)
    annotations = fn.__annotations__
    params = ", ".join(
        f"{p}: {annotations[p]}".replace('"', "") if p in annotations else p for p in inspect.signature(fn).parameters
    )
    ret = str(annotations.get("return", "None")).replace('"', "")
    return f"def {name}({params}) -> {ret}"


def test_there_are_hookspecs() -> None:
    assert len(HOOKS) >= 15


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_signature(name: str) -> None:
    doc = (ROOT / "docs" / "plugins" / "hooks.md").read_text()
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    assert f"## `{name}({params})`" in doc
    assert signature_line(name) in doc


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_test(name: str) -> None:
    tests = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_"):
                tests.add(node.name)
    assert f"test_hook_{name}" in tests


@pytest.mark.parametrize("name", HOOKS)
def test_hook_has_a_docstring_with_params(name: str) -> None:
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 80
    for param in inspect.signature(fn).parameters:
        assert f":param {param}:" in doc
