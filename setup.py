"""For tools that still call ``python setup.py``: the package's metadata and build settings are in pyproject.toml."""

from setuptools import setup

setup()
