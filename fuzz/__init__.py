"""tidlc's fuzz campaigns (not installed with tidlc; run from the project root: python -m fuzz).

``python -m`` puts the project root first on sys.path, where the source tree's ``tidlc/`` would
shadow the installed package (which holds the compiled kernels and the plugin folders mapped
under ``tidlc.*``): the root is taken off the path so ``import tidlc`` finds the installed one.
"""
import os as _os
import sys as _sys

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if "tidlc" not in _sys.modules:
    _sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or _os.curdir) != _ROOT]
