"""The double-import guard of tests/conftest.py really fails a session (run in a subprocess)."""
import pathlib
import shutil
import subprocess
import sys

CONFTEST = pathlib.Path(__file__).resolve().parents[1] / "conftest.py"

BAD_TEST = '''
import sys, types

def test_clean():
    pass

def test_imports_the_source_folder():
    sys.modules["plugins"] = types.ModuleType("plugins")  # what `import plugins` from the repo root does

def test_after():
    pass
'''


def run_pytest(tmp_path, source):
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


def test_guard_fails_the_test_that_imported_and_the_session(tmp_path):
    result = run_pytest(tmp_path, BAD_TEST)
    assert result.returncode == 1, result.stdout + result.stderr
    # the fixture fails the teardown of the one test that did it, not every later test
    assert "ERROR test_x.py::test_imports_the_source_folder" in result.stdout
    assert ("imported as top-level module(s): plugins; import them as tidlc.plugins / "
            "tidlc.frontends / tidlc.backends") in result.stdout
    assert result.stdout.count("ERROR test_x.py") == 1 and "3 passed, 1 error" in result.stdout
    assert "top-level module(s) plugins were imported during the test session" in result.stderr


def test_guard_is_quiet_when_nothing_is_wrong(tmp_path):
    result = run_pytest(tmp_path, "def test_ok():\n    import tidlc.plugins.cleanup\n")
    assert result.returncode == 0, result.stdout + result.stderr
