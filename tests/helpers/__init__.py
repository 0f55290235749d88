"""Helpers shared by the tests (no tests here): tiny configs, local corpora and tokenizers, training recipes,
model folders for the zero-shot and Hub tests.

Importable as ``helpers.<module>`` because pytest (prepend import mode, tests/ without an ``__init__.py``) puts
tests/ on sys.path; the 2-process workers under tests/dist/ get it through PYTHONPATH from their launcher.
"""
