"""Host runtimes: run a ``host`` op (an op tidlc keeps opaque, docs/host-ops.md) on its framework's
own runtime -- onnxruntime for ONNX ops, the TFLite interpreter for TFLite ops.

``run_host_op(op, inputs)`` decodes the op's one-op model (its ``payload``), keeps one session or
interpreter per payload, feeds the operands in order and returns the results in order, cast to the
op's result types. A missing runtime is a TidlcError naming the op, the framework and
``pip install tidlc[host]``.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from tidlc import limits
from tidlc.diagnostics import TidlcError
from tidlc.ir.types import numpy_dtype

INSTALL_HINT = "pip install tidlc[host]"
# the TFLite interpreters tried in order: (module, what to call it in messages)
TFLITE_RUNTIMES = (("ai_edge_litert.interpreter", "Interpreter", "ai-edge-litert"),
                   ("tflite_runtime.interpreter", "Interpreter", "tflite-runtime"),
                   ("tensorflow", "lite.Interpreter", "tensorflow"))
TFLITE_SCHEMAS = ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated")

_SESSIONS: dict[str, object] = {}  # payload text -> onnxruntime.InferenceSession
_INTERPRETERS: dict[str, object] = {}  # payload text -> TFLite interpreter
_CACHE_LIMIT = 256
_INTERPRETER_CLASS = None  # (class, runtime name) once looked up; () when there is none

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
              "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(uint32)": np.uint32,
              "tensor(int64)": np.int64, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_}


def _label(op) -> str:
    return f"host op '{op.name or op.kind}' ({op.attrs.get('framework')} {op.attrs.get('op_type')})"


def missing_runtime(what: str, framework: str, loc=None) -> TidlcError:
    runtime = "onnxruntime" if framework == "onnx" else \
        "a TFLite interpreter (ai-edge-litert, tflite-runtime or tensorflow)"
    return TidlcError(f"{what} runs on {runtime}, which is not installed", loc, hint=INSTALL_HINT,
                      code="unsupported")


def _remember(cache: dict, key: str, value) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.pop(next(iter(cache)))
    cache[key] = value


# ----------------------------------------------------------------------------- ONNX
def onnx_session(model_bytes: bytes, what: str = "ONNX host op", loc=None):
    """An onnxruntime session of a serialized ModelProto (CPU, quiet)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise missing_runtime(what, "onnx", loc) from None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = min(4, os.cpu_count() or 1)
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def run_session(session, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Feed ``inputs`` to the session's inputs in order (cast to their element types)."""
    feeds = {}
    for info, arr in zip(session.get_inputs(), inputs):
        arr = np.asarray(arr)
        want = _ORT_TYPES.get(info.type)
        if want is not None and arr.dtype != want:
            arr = arr.astype(want)
        feeds[info.name] = np.asarray(arr, order="C")  # (ascontiguousarray makes a 0-d feed 1-d)
    return [np.asarray(r) for r in session.run(None, feeds)]


# ----------------------------------------------------------------------------- TFLite
def tflite_interpreter_class():
    """``(Interpreter class, runtime name)`` of the first TFLite runtime installed, else None."""
    import importlib
    global _INTERPRETER_CLASS
    if _INTERPRETER_CLASS is not None:
        return _INTERPRETER_CLASS or None
    _INTERPRETER_CLASS = ()
    for module, attr, name in TFLITE_RUNTIMES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = importlib.import_module(module)
                for part in attr.split("."):
                    found = getattr(found, part)
        except Exception:  # noqa: BLE001, S112  (ImportError; a broken install raises anything)
            continue
        _INTERPRETER_CLASS = (found, name)
        break
    return _INTERPRETER_CLASS or None


def tflite_schema():
    """The flatbuffer object API of the TFLite schema (from the installed runtime), else None."""
    import importlib
    for module in TFLITE_SCHEMAS:
        try:
            mod = importlib.import_module(module)
            import flatbuffers  # noqa: F401
            return mod
        except ImportError:
            continue
    return None


def tflite_interpreter(model_bytes: bytes, what: str = "TFLite host op", loc=None):
    """An interpreter of ``model_bytes`` with its tensors allocated (exceptions of the runtime pass)."""
    found = tflite_interpreter_class()
    if found is None:
        raise missing_runtime(what, "tflite", loc)
    cls, _ = found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = cls(model_content=bytes(model_bytes))
    it.allocate_tensors()
    return it


def probe_tflite(model_bytes: bytes) -> str | None:
    """Why no installed TFLite runtime can run ``model_bytes`` (None: one can)."""
    found = tflite_interpreter_class()
    if found is None:
        return "no TFLite runtime is installed"
    try:
        tflite_interpreter(model_bytes)
    except Exception as exc:  # noqa: BLE001  (the runtimes raise RuntimeError/ValueError)
        return f"{found[1]} cannot run it: {_one_line(exc)}"
    return None


def run_interpreter(it, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    details = it.get_input_details()
    resized = False
    for d, arr in zip(details, inputs):
        if tuple(d["shape"]) != tuple(np.shape(arr)):
            it.resize_tensor_input(d["index"], list(np.shape(arr)))
            resized = True
    if resized:
        it.allocate_tensors()
    if hasattr(it, "reset_all_variables"):
        it.reset_all_variables()  # LSTM/RNN states start from their initial values on every run
    for d, arr in zip(it.get_input_details(), inputs):
        it.set_tensor(d["index"], np.asarray(np.asarray(arr).astype(d["dtype"], copy=False), order="C"))
    it.invoke()
    return [np.array(it.get_tensor(d["index"])) for d in it.get_output_details()]


def _run_cached(op, inputs: list[np.ndarray], cache: dict, load, run, runtime: str) -> list[np.ndarray]:
    """Run ``op`` on the runtime handle ``load(payload, what, loc)`` made once per payload (kept in
    ``cache``); the runtime's own exceptions become one-line errors naming the op."""
    key = op.attrs["payload"]
    handle = cache.get(key)
    if handle is None:
        from tidlc.ir.ops.host import payload_bytes
        try:
            handle = load(payload_bytes(op), _label(op), op.where())
        except TidlcError:
            raise
        except Exception as exc:  # noqa: BLE001  (each runtime raises its own types)
            raise TidlcError(f"{_label(op)}: {runtime} cannot load it: {_one_line(exc)}", op.where(),
                             code="unsupported") from None
        _remember(cache, key, handle)
    try:
        return run(handle, inputs)
    except Exception as exc:  # noqa: BLE001
        raise TidlcError(f"{_label(op)} failed in {runtime}: {_one_line(exc)}", op.where()) from None


# ----------------------------------------------------------------------------- dispatch
def run_host_op(op, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The results of ``host`` op ``op`` on ``inputs`` (one array per operand, in order)."""
    framework = op.attrs.get("framework")
    if framework == "onnx":
        results = _run_cached(op, inputs, _SESSIONS, onnx_session, run_session, "onnxruntime")
    elif framework == "tflite":
        results = _run_cached(op, inputs, _INTERPRETERS, tflite_interpreter, run_interpreter,
                              "the TFLite interpreter")
    else:
        raise TidlcError(f"{_label(op)}: unknown host framework '{framework}'", op.where(), code="unsupported")
    if len(results) != len(op.results):
        raise TidlcError(f"{_label(op)} returned {len(results)} results, the op declares {len(op.results)}",
                         op.where())
    out = []
    for arr, value in zip(results, op.results):
        want = numpy_dtype(value.type.dtype)
        out.append(arr if arr.dtype == want else arr.astype(want))
    return out


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


__all__ = ["INSTALL_HINT", "onnx_session", "probe_tflite", "run_host_op", "run_interpreter", "run_session",
           "tflite_interpreter", "tflite_interpreter_class", "tflite_schema"]


# ----------------------------------------------------------------------------- folding
# ONNX ops whose result is not a function of their inputs (random draws), and control flow (a loop's
# trip count is data: the reference evaluator could run for long)
_NOT_FOLDED = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                         "Multinomial", "Bernoulli", "If", "Loop", "Scan", "SequenceMap"})


def foldable_host_op(op) -> bool:
    """Whether constant folding may evaluate host op ``op`` once its operands are constants: an ONNX
    op (folded with onnx's reference evaluator, which every install has, so the compiled graph does
    not depend on whether onnxruntime is installed) that reads something, is a function of what it
    reads. Result dims the import could not know are taken from the evaluation (torchvision's Swin
    builds its shifted-window mask with ``Range`` of constants: ``?xi64`` until evaluated); the
    known ones are checked before evaluating, the rest after."""
    return (op.attrs.get("framework") == "onnx" and bool(op.operands)
            and op.attrs.get("op_type") not in _NOT_FOLDED)


def fold_host_op(op, inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    """The results of ONNX host op ``op`` on constant ``inputs``, from onnx's reference evaluator
    (exact numpy), cast to the op's result types; None when the evaluator cannot run it or its
    results do not match the declared types where they are known (the op then stays a host op). PyTorch's legacy
    exporter writes ``cls_token.expand(B, -1, -1)`` as ``Equal -> Where -> Expand`` of constants."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from tidlc.ir.ops.host import payload_bytes
    try:
        model = onnx.load_from_string(payload_bytes(op))
        names = [i.name for i in model.graph.input]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = ReferenceEvaluator(model).run(None, {n: np.asarray(a) for n, a in zip(names, inputs)})
    except Exception:  # noqa: BLE001  (the evaluator lacks some ops and raises its own types)
        return None
    out = []
    for arr, value in zip(results, op.results):
        arr = np.asarray(arr)
        shape = value.type.shape
        if shape is not None and (len(shape) != arr.ndim or any(d is not None and d != a
                                                                 for d, a in zip(shape, arr.shape))):
            return None
        limits.check_shape(arr.shape, arr.dtype.itemsize, f"folding {op.attrs.get('op_type')}", op.where())
        out.append(arr.astype(numpy_dtype(value.type.dtype), copy=False))
    return out if len(out) == len(op.results) else None
