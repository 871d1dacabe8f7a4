"""The pass instruments end to end through the `tidlc` command, on a hand-written .tir file."""
import pytest

from tidlc.cli import main

DEMO = """tidlc.graph @demo {
  %x = input "x" : tensor<1x2x4x4xf32, NCHW>
  %w = const dense<[1.0, 2.0, 0.5, -1.0]> : tensor<2x2x1x1xf32>
  %conv = conv2d(%x, %w) : tensor<1x2x4x4xf32, NCHW> loc("conv")
  %g = const dense<[1.0, 2.0]> : tensor<2xf32>
  %b = const dense<[0.5, -0.5]> : tensor<2xf32>
  %m = const dense<0.0> : tensor<2xf32>
  %v = const dense<1.0> : tensor<2xf32>
  %bn = batchnorm(%conv, %g, %b, %m, %v) : tensor<1x2x4x4xf32, NCHW> loc("bn")
  %r = clip(%bn) {min = 0.0, max = 6.0} : tensor<1x2x4x4xf32, NCHW>
  output(%r) {names = ["y"]}
}
"""
O2 = "shape-inference,remove-identity,fold-constants,cse,dce,fuse-patterns,layout,fuse-patterns,fuse-batchnorm,fuse-activation,remove-identity,dce"


@pytest.fixture
def demo(tmp_path):
    path = tmp_path / "demo.tir"
    path.write_text(DEMO)
    return str(path)


def test_print_pipeline_time_passes_and_verify_each(demo, capsys):
    assert main(["opt", demo, "-O2", "--print-pipeline", "--time-passes", "--verify-each"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == O2
    assert '%2 = conv2d(%x, %0, %1) {act = "relu6"} : tensor<1x2x4x4xf32, NCHW> loc("conv")' in out
    rows = [line.split()[0] for line in err.splitlines()[1:]]
    assert rows == O2.split(",") + ["total"]


def test_explicit_pipeline(demo, capsys):
    assert main(["-p", "fuse-batchnorm,dce", "opt", demo, "--print-pipeline"]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0] == "fuse-batchnorm,dce"
    assert "clip(" in out and "batchnorm(" not in out


@pytest.mark.parametrize("pipeline, message", [
    ("fold-constant", "error: unknown pass 'fold-constant' (hint: did you mean 'fold-constants'?"),
    ("fold-constants{iters=1}", "error: pass 'fold-constants' has no option 'iters'"),
    ("fold-constants{max-iters=x}", "error: pass 'fold-constants': option max-iters='x' is not an integer"),
])
def test_pipeline_mistakes_are_one_line_errors(demo, capsys, pipeline, message):
    assert main(["-p", pipeline, "opt", demo]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
