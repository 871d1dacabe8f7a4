"""What the frontend test folders share: the helpers of ``checks.py`` (imported as
``tidlc_frontend_checks``) and the Keras models of the TensorFlow and TFLite tests."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

# importlib mode puts no test folder on sys.path: load the helpers by path, once, under a fixed name
_spec = importlib.util.spec_from_file_location("tidlc_frontend_checks", Path(__file__).with_name("checks.py"))
checks = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = checks
_spec.loader.exec_module(checks)


@pytest.fixture(scope="session")
def tf_models() -> Path:
    """The folder of Keras models frozen to .pb and converted to .tflite (make_models.py, cached)."""
    return checks.tf_models_folder()


@pytest.fixture(scope="module")
def tf_refs(tf_models) -> dict:
    """make_models.py's reference outputs (TensorFlow and the TFLite interpreter) and its input."""
    return dict(np.load(tf_models / "reference.npz"))
