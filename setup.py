"""Only the C part of the build; everything else is in pyproject.toml.

The processors' per-event fold in C (stream_processors/_fold.c) is optional:
without a C compiler the install still succeeds, and the same fold runs in
Python (stream_processors/windows.py: UserWindows._fold_py, _add_org_sums_py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("stream_processors._fold", ["stream_processors/_fold.c"], optional=True)])
