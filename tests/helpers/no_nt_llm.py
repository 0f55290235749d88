"""Code prepended to a child process's script so that `import nt_llm` fails there, as on a machine where only
an exported folder exists."""

BLOCK_NT_LLM = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "nt_llm" or name.startswith("nt_llm."):
            raise ImportError("nt_llm is not available in this process")
        return None
sys.meta_path.insert(0, _Block())
"""
