"""Suite-wide checks only; fixtures belong in the conftest of the folder that uses them.

Double-import guard (DESIGN.md, "Layout"): the source folders ``plugins/``,
``frontends/`` and ``backends/`` install as ``tidlc.plugins`` etc. If one is
ever imported as a top-level package, its module-level state (op and pass
registrations) exists twice and the two copies silently disagree.
"""
import sys

import pytest

SOURCE_FOLDERS = ("plugins", "frontends", "backends")


def top_level_source_imports() -> list[str]:
    """Source folders that are in sys.modules as top-level packages."""
    return [name for name in SOURCE_FOLDERS if name in sys.modules]


@pytest.fixture(autouse=True)
def _no_top_level_source_packages():
    before = set(top_level_source_imports())
    yield
    bad = [name for name in top_level_source_imports() if name not in before]  # blame one test only
    if bad:
        pytest.fail(f"imported as top-level module(s): {', '.join(bad)}; "
                    "import them as tidlc.plugins / tidlc.frontends / tidlc.backends", pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    bad = top_level_source_imports()
    if bad:
        sys.stderr.write(f"\nERROR: top-level module(s) {', '.join(bad)} were imported during the "
                         "test session (use tidlc.plugins / tidlc.frontends / tidlc.backends)\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


SMALL_CAFFE_NET = '''name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


@pytest.fixture
def small_caffe_net() -> str:
    """A tiny Caffe net (conv, relu, avg pool, fc, softmax) as prototxt text, for CLI tests."""
    return SMALL_CAFFE_NET


@pytest.fixture
def cli():
    """``cli(*argv, quiet=True) -> (exit code, stdout, stderr)``: the ``tidlc`` command in this
    process; ``quiet`` ignores warnings (synthetic calibration frames and the like)."""
    import contextlib
    import io
    import warnings

    from tidlc.cli import main

    def run(*argv, quiet: bool = True) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            code = main([str(a) for a in argv])
        return code, out.getvalue(), err.getvalue()
    return run


@pytest.fixture
def no_hang():
    """Fail a test that blocks or crawls (a reader stuck on a FIFO, a loop): 20 s means a hang."""
    import signal

    def expire(signum, frame):
        raise TimeoutError("the test hung (20 s): a reader blocked or looped")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def _default_limits():
    """Tests that set resource limits through the API (tidlc.limits.set_limits) leave the
    defaults to the next test."""
    yield
    from tidlc import limits
    limits.set_limits(limits.Limits())
