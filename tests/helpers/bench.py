"""The bench/ scripts as modules, and the tiny size their tests run them on."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from helpers.configs import TINY_SIZE

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
# The benches' tests share one vocabulary: big enough that the LM heads are a real part of the step.
BENCH_SIZE: dict[str, Any] = {**TINY_SIZE, "vocab_size": 256}


def load_script(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module, by path: the scripts import only nt_llm, so nothing goes on sys.path."""
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
