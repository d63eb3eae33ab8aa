"""Which way imports go (STYLE.md): no inference path reaches `hellogpt.train`, and checkpoints form no circle.

Read from the source with `ast`, every import counted (also those inside functions, which a fresh interpreter's
`sys.modules` would not show until the function runs), followed through every hellogpt module they reach.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

import hellogpt

PACKAGE_ROOT = Path(hellogpt.__file__).parent
INFERENCE_PATHS = (
    "hellogpt.chat",
    "hellogpt.generate",
    "hellogpt.evaluate",
    "hellogpt.export",
    "hellogpt.gguf_export",
    "hellogpt.model_source",
    "hellogpt.serve",
    "hellogpt.decode",
    "hellogpt.checkpoints",
)


def _source_file(module: str) -> Path | None:
    relative = Path(*module.split(".")[1:])
    if relative == Path():
        return PACKAGE_ROOT / "__init__.py"
    for candidate in (PACKAGE_ROOT / relative.with_suffix(".py"), PACKAGE_ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _submodules(package: str) -> list[str]:
    """`package` itself, or every module under it when it is a folder."""
    folder = PACKAGE_ROOT / Path(*package.split(".")[1:])
    if not folder.is_dir():
        return [package] if _source_file(package) else []
    return [
        ".".join(("hellogpt", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)).removesuffix(".__init__")
        for path in sorted(folder.rglob("*.py"))
    ]


@cache
def _direct_imports(module: str) -> frozenset[str]:
    """The hellogpt modules `module` imports anywhere in its source (`from a import b` counts a.b when b is one)."""
    path = _source_file(module)
    if path is None:
        return frozenset()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if _source_file(f"{node.module}.{alias.name}"))
    return frozenset(name for name in found if name.split(".")[0] == "hellogpt" and _source_file(name))


def _reachable(module: str) -> dict[str, str]:
    """Every hellogpt module reachable from `module`, each with the module that first imported it."""
    seen = {module: ""}
    pending = [module]
    while pending:
        current = pending.pop()
        for imported in sorted(_direct_imports(current)):
            if imported not in seen:
                seen[imported] = current
                pending.append(imported)
    return seen


def _chain(reached: dict[str, str], module: str) -> str:
    steps = [module]
    while reached[steps[-1]]:
        steps.append(reached[steps[-1]])
    return " <- ".join(steps)


@pytest.mark.parametrize("module", [name for package in INFERENCE_PATHS for name in _submodules(package)])
def test_no_inference_path_imports_training(module: str) -> None:
    reached = _reachable(module)
    training = sorted(name for name in reached if name == "hellogpt.train" or name.startswith("hellogpt.train."))
    assert not training, f"{module} reaches training: {_chain(reached, training[0])}"


def test_checkpoint_modules_form_no_circle() -> None:
    for module in _submodules("hellogpt.checkpoints"):
        reached = _reachable(module)
        circle = [name for name in _direct_imports(module) if module in _reachable(name)]
        assert not circle, f"{module} and {circle[0]} import each other: {_chain(_reachable(circle[0]), module)}"
        assert module in reached


def test_the_wire_format_does_not_import_the_scheduler() -> None:
    reached = _reachable("hellogpt.serve.protocol")
    assert "hellogpt.serve.batching" not in reached, _chain(reached, "hellogpt.serve.batching")
