"""TensorFlow tensor names with their output index (``input:0``) wherever tidlc takes a name.

TensorFlow names tensors ``op:0``; tidlc names a graph's inputs and first outputs
after their node (``op``). ``--input-shape input:0=...``, outputs ``y:0``, the
import config's ``inDataNamesList``/``outDataNamesList`` and ``apply_input_shapes``
accept both spellings (tidlc/names.py); unknown names get an error naming the
nearest name.
"""
from __future__ import annotations

import numpy as np
import pytest
from tidlc.frontends.tensorflow.graphdef import parse_graphdef
from tidlc.frontends.tensorflow.importer import import_graphdef

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.names import nearest_names, resolve_mapping, resolve_or_error, resolve_tensor_name

tf = pytest.importorskip("tensorflow")
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2


def _frozen(tmp_path=None, batch=None):
    """A frozen graph with Placeholder 'input' of shape (batch, 8, 8, 3) and outputs 'out' and 'aux'
    (which tf.function copies to its sinks 'Identity' and 'Identity_1')."""
    w = np.random.default_rng(0).standard_normal((3, 3, 3, 4)).astype(np.float32)

    def fn(x):
        y = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        return tf.identity(y, name="out"), tf.identity(tf.reduce_mean(y, axis=[1, 2]), name="aux")

    concrete = tf.function(fn, autograph=False).get_concrete_function(
        tf.TensorSpec((batch, 8, 8, 3), tf.float32, name="input"))
    frozen = convert_variables_to_constants_v2(concrete)
    data = frozen.graph.as_graph_def().SerializeToString()
    outputs = ["out:0", "aux:0"]  # as TensorFlow names the tensors (frozen.outputs: their Identity copies)
    if tmp_path is not None:
        (tmp_path / "model.pb").write_bytes(data)
    return data, outputs, frozen


@pytest.fixture(scope="module")
def model():
    return _frozen()


def _import(data, outputs=None, **options):
    return import_graphdef(parse_graphdef(data), CompileOptions.of(**options), "model.pb", outputs)


# ------------------------------------------------------------------------------ tidlc.names
def test_resolve_tensor_name():
    assert resolve_tensor_name("x", ["x", "y"]) == "x"
    assert resolve_tensor_name("x:0", ["x", "y"]) == "x"
    assert resolve_tensor_name("x", ["x:0", "y"]) == "x:0"
    assert resolve_tensor_name("x:0", ["x:0", "x"]) == "x:0"  # an exact match wins
    assert resolve_tensor_name("x", ["x:0", "x"]) == "x"
    assert resolve_tensor_name("x:1", ["x", "x:0"]) is None  # another output of x
    assert resolve_tensor_name("z", ["x", "y"]) is None
    assert resolve_tensor_name(":0", [""]) is None
    assert nearest_names("inptu:0", ["input", "mask"]) == ["input"]
    with pytest.raises(TidlcError, match=r"--input names unknown input 'inptu:0' \(hint: did you mean 'input'\?"):
        resolve_or_error("inptu:0", ["input", "mask"], "input", "--input")


def test_resolve_mapping_rejects_two_spellings_of_one_name():
    assert resolve_mapping({"x:0": 1, "y": 2}, ["x", "y"]) == {"x": 1, "y": 2}
    with pytest.raises(TidlcError, match=r"'x' and 'x:0' both name input 'x'"):
        resolve_mapping({"x": 1, "x:0": 2}, ["x"], "input", "--input-shape")
    assert resolve_mapping({"x": 1, "x:0": 2}, ["x"], last_wins=True) == {"x": 2}
    assert resolve_mapping({"q": 1}, ["x"], strict=False) == {"q": 1}


# ------------------------------------------------------------------------------ the TF frontend
@pytest.mark.parametrize("key", ["input:0", "input"])
def test_input_shape_with_output_index(model, key):
    data, outputs, frozen = model
    graph = _import(data, outputs, input_shapes={key: (2, 8, 8, 3)})
    assert graph.input_names() == ["input"]
    assert graph.inputs[0].type.shape == (2, 8, 8, 3)
    assert graph.output_names == ["out", "aux"]  # outputs named as given, less ':0'
    x = np.random.default_rng(1).standard_normal((2, 8, 8, 3)).astype(np.float32)
    from tidlc.interp import run_graph
    got = run_graph(graph, {"input": x})
    refs = [np.asarray(r) for r in frozen(tf.constant(x))]
    for (name, value), ref in zip(got.items(), refs):
        np.testing.assert_allclose(value, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max(), err_msg=name)


def test_outputs_by_either_name(model):
    data, _, _ = model
    for outputs in (["out:0"], ["out"]):
        graph = _import(data, outputs, input_shapes={"input:0": (1, 8, 8, 3)})
        assert graph.output_names == ["out"]


def test_unknown_names_say_the_nearest(model):
    data, _, _ = model
    with pytest.raises(TidlcError, match=r"--input-shape names unknown input 'inputs:0' "
                                         r"\(hint: did you mean 'input'\? the model's inputs are: input\)"):
        _import(data, ["out:0"], input_shapes={"inputs:0": (1, 8, 8, 3)})
    with pytest.raises(TidlcError, match=r"output 'outt:0' names no node of the graph \(hint: did you mean 'out'\?"):
        _import(data, ["outt:0"], input_shapes={"input": (1, 8, 8, 3)})


def test_two_spellings_of_one_input_are_an_error(model):
    data, _, _ = model
    with pytest.raises(TidlcError, match=r"'input' and 'input:0' both name input 'input'"):
        _import(data, None, input_shapes={"input": (1, 8, 8, 3), "input:0": (2, 8, 8, 3)})


def test_an_unknown_batch_is_one_under_the_inputs_own_name(model):
    data, _, _ = model
    with pytest.warns(UserWarning, match=r"dynamic batch dimension taken as 1 \(input=1,8,8,3\)"):
        graph = _import(data)
    assert graph.inputs[0].type.shape == (1, 8, 8, 3)


# ------------------------------------------------------------------------------ loading a file
def test_compiler_load_and_apply_input_shapes(tmp_path):
    from tidlc.compiler import load
    from tidlc.shapes import apply_input_shapes
    _frozen(tmp_path)
    graph = load(str(tmp_path / "model.pb"), CompileOptions.of(input_shapes={"input:0": (1, 8, 8, 3)}))
    assert graph.inputs[0].type.shape == (1, 8, 8, 3)
    apply_input_shapes(graph, {"input:0": (3, 8, 8, 3)})  # a name given the TF way, the graph's is 'input'
    assert graph.inputs[0].type.shape == (3, 8, 8, 3)
    assert graph.outputs[0].type.shape == (3, 8, 8, 4)
    with pytest.raises(TidlcError, match=r"--input-shape names unknown input 'imput' \(hint: did you mean 'input'"):
        apply_input_shapes(graph, {"imput": (1, 8, 8, 3)})


@pytest.mark.parametrize("lists, problem", [
    ('inDataNamesList = "input:0"\noutDataNamesList = "Identity:0 Identity_1:0"\n', None),
    ('inDataNamesList = input\noutDataNamesList = "Identity, Identity_1"\n', None),
    ('outDataNamesList = "Identity:0"\n', "outDataNamesList = Identity:0 is not supported"),  # a cut
    ('outDataNamesList = "out:0 aux:0"\n', "'out:0' is not an output of the model"),  # not the sinks: a cut
    ('outDataNamesList = "Identity_1 Identity"\n', "only the whole list, in this order"),
    ('inDataNamesList = "inptu:0"\n', r"'inptu:0' is not an input of the model \(did you mean 'input'\?\)"),
])
def test_import_config_name_lists(tmp_path, lists, problem):
    from tidlc.import_config import load_import_config
    _frozen(tmp_path, batch=1)  # (the config's inWidth/inHeight/inNumChannels leave the batch as it is)
    config = tmp_path / "import.txt"
    config.write_text("modelType = 1\ninputNetFile = model.pb\ninWidth = 8\ninHeight = 8\ninNumChannels = 3\n"
                      + lists)
    if problem is None:
        imported = load_import_config(str(config), quiet=True)
        assert imported.model == str(tmp_path / "model.pb")
    else:
        with pytest.raises(TidlcError, match=problem) as info:
            load_import_config(str(config), quiet=True)
        assert "cut the model first" in str(info.value)
