"""The suite's own rules, checked on its source: no test module imports another (what tests share lives in
tests/helpers/), and processes are started by the one launcher of the 2-process tests, helpers.dist.torchrun_two."""

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LAUNCHER = TESTS / "helpers" / "dist.py"


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_no_test_module_imports_another() -> None:
    found = {
        f"{path.relative_to(TESTS)}: {module}"
        for path in TESTS.rglob("*.py")
        for module in imports(path)
        if module.rpartition(".")[2].startswith("test_") or module.startswith("tests.")
    }
    assert not found


def test_no_process_pool_beside_the_launcher() -> None:
    spawners = ("multiprocessing", "torch.multiprocessing", "torch.distributed.run", "torch.distributed.launch")
    found = {
        f"{path.relative_to(TESTS)}: {module}"
        for path in TESTS.rglob("*.py")
        if path != LAUNCHER
        for module in imports(path)
        if module in spawners
    }
    assert not found
