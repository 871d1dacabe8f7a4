"""The ONNX QDQ backend (``--target onnx-qdq``): tidlc's quantization as a pre-quantized ONNX model.

TI's tools cannot load tidlc's net.bin; what they do accept from outside is a
pre-quantized ONNX model (QuantizeLinear/DequantizeLinear pairs, edgeai-tidl-tools
``advanced_options:prequantized_model=1``) and a quantization-parameters prototxt.
This backend quantizes exactly as the TIDL backend does (the same ``quantize``
pass) and writes the result in those forms (docs/ti-flow.md):

* ``model.qdq.onnx``: the optimised graph with tidlc's scales (export.py);
* ``qdq.json``: what the folder holds (so ``recognizes`` is a file check, not a
  guess) and which IR value every activation QDQ pair carries;
* ``quant_params.prototxt`` when asked for (``options.target.quant_params``): TIDL's
  ``TIDLNetQuantParams`` (quant_params.py).

``load`` runs the QDQ model with onnxruntime (a test extra, imported when used).

Importing this module is cheap; every method imports what it uses.
"""
from __future__ import annotations

import json
import os

from tidlc.backend import Verdict
from tidlc.diagnostics import TidlcError

MODEL_NAME = "model.qdq.onnx"
META_NAME = "qdq.json"
QUANT_PARAMS_NAME = "quant_params.prototxt"
FORMAT = "tidlc-onnx-qdq"
FORMAT_VERSION = 1


class QdqExecutable:
    """A compiled QDQ model on onnxruntime."""

    def __init__(self, model_path: str, meta: dict):
        self.model_path = model_path
        self.meta = meta
        self._session = None

    @property
    def session(self):
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError:
                raise TidlcError("running an onnx-qdq model needs onnxruntime", self.model_path,
                                 hint="pip install onnxruntime", code="unsupported") from None
            opts = ort.SessionOptions()
            # the model's meaning is float math between exact QDQ pairs; ORT's fused integer
            # kernels (QLinearConv, ...) may saturate u8 x s8 products on AVX2, so keep them out
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            opts.intra_op_num_threads = 1
            self._session = ort.InferenceSession(self.model_path, opts, providers=["CPUExecutionProvider"])
        return self._session

    def input_info(self) -> list[tuple[str, tuple[int, ...], str]]:
        """(name, shape, numpy dtype) of every input, from qdq.json."""
        return [(i["name"], tuple(i["shape"]), i["dtype"]) for i in self.meta["inputs"]]

    def run(self, feeds: dict, **kw) -> dict:
        import numpy as np
        info = self.input_info()
        names = [name for name, _, _ in info]
        if len(info) == 1 and len(feeds) == 1:
            feeds = {names[0]: next(iter(feeds.values()))}
        unknown = sorted(set(feeds) - set(names))
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            raise TidlcError(f"unknown input(s) {', '.join(unknown)}" if unknown else
                             f"missing input(s) {', '.join(missing)}", self.model_path,
                             hint=f"the model's inputs are: {', '.join(names)}", code="input")
        arrays = {}
        for name, shape, dtype in info:
            arr = np.asarray(feeds[name])
            if tuple(arr.shape) != shape:
                raise TidlcError(f"input '{name}' has shape {tuple(arr.shape)}, the model expects {shape}",
                                 self.model_path, hint="the shape the model was compiled for", code="input")
            arrays[name] = np.asarray(arr.astype(dtype, copy=False), order="C")
        results = self.session.run(None, arrays)
        return {o.name: r for o, r in zip(self.session.get_outputs(), results)}


class OnnxQdqBackend:
    """An ONNX model with QuantizeLinear/DequantizeLinear pairs carrying tidlc's TIDL quantization."""

    name = "onnx-qdq"

    def devices(self) -> list[str]:
        """The devices TI's import of the model targets: the TIDL backend's."""
        from tidlc.backends.tidl.backend import TidlBackend
        return TidlBackend().devices()

    def supports(self, op) -> Verdict:
        """What TIDL does with the op once TI's tools import the model, if ONNX can carry it."""
        from tidlc.backends.onnx_qdq.export import exportable
        if not exportable(op):
            return Verdict("host", f"no ONNX mapping for '{op.kind}'",
                           hint="--target tidl compiles it; or replace it with ops ONNX has")
        from tidlc.backends.tidl.backend import TidlBackend
        verdict = TidlBackend().supports(op)
        if verdict.level == "penalty":  # TI's runtime leaves it to the ARM cores (onnxruntime)
            return Verdict("penalty", f"{verdict.reason}; TI's runtime runs it on the ARM cores", verdict.hint)
        return verdict

    def prepare_pipeline(self, level: int, passes: list[str]) -> list[str]:
        """TIDL's quantization scheme: the ``quantize`` pass ends the list (the driver drops it
        for float output)."""
        return [*(p for p in passes if p != "quantize"), "quantize"]

    def emit(self, graph, outdir: str, options) -> list[str]:
        from tidlc.backends.onnx_qdq.export import export

        from tidlc.fileio import commit_files
        if not graph.attrs.get("quantized"):
            exc = TidlcError("the compiled graph is not quantized, so the QDQ model cannot be written",
                             hint="an explicit -p pipeline must end with quantize ('...,quantize')")
            exc.about_model = True  # compile_model puts the model file as the location
            raise exc
        exported = export(graph)
        model = exported.model
        _check(model, outdir)
        files = {os.path.join(outdir, MODEL_NAME): model.SerializeToString()}
        meta = self.metadata(graph, exported, options)
        if options.target.quant_params:
            from tidlc.backends.onnx_qdq.quant_params import quant_params_text
            files[os.path.join(outdir, QUANT_PARAMS_NAME)] = quant_params_text(graph, exported).encode()
            meta["quant_params"] = QUANT_PARAMS_NAME
        # the metadata last: a folder that has it has the files it names
        files[os.path.join(outdir, META_NAME)] = (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode()
        commit_files(files)
        return list(files)

    def metadata(self, graph, exported, options) -> dict:
        import numpy as np

        from tidlc.ir.types import numpy_dtype
        inputs = [{"name": op.attrs["name"], "shape": list(op.results[0].type.shape or ()),
                   "dtype": np.dtype(numpy_dtype(op.results[0].type.dtype)).name} for op in graph.input_ops]
        attrs_ = {k: v for k, v in graph.attrs.items() if k.startswith(("preprocess.", "quant."))
                  and isinstance(v, (str, int, float, bool, list))}
        return {"format": FORMAT, "version": FORMAT_VERSION, "model": MODEL_NAME, "opset": exported.opset,
                "device": options.target.device, "inputs": inputs,
                "outputs": list(graph.output_names), "graph_attrs": attrs_, "quant_params": None,
                "activations": [{"tensor": a.tensor, "op": a.op, "layer": a.layer, "kind": a.kind,
                                 "result": a.result, "bits": a.bits, "signed": a.signed, "scale": a.scale}
                                for a in exported.activations]}

    def recognizes(self, location) -> bool:
        return isinstance(location, (str, os.PathLike)) and _meta_path(os.fspath(location)) is not None

    def load(self, location) -> QdqExecutable:
        """A folder written by ``emit``, its qdq.json or its model.qdq.onnx."""
        location = os.fspath(location)
        meta_path = _meta_path(location)
        if meta_path is None:
            raise TidlcError("not an onnx-qdq compiled folder (no qdq.json)", location,
                             hint="tidlc compile MODEL --target onnx-qdq -o OUTDIR writes one", code="file")
        meta = read_meta(meta_path)
        model = os.path.join(os.path.dirname(meta_path), meta["model"])
        if not os.path.isfile(model):
            raise TidlcError(f"{meta['model']} is missing beside {META_NAME}", meta_path,
                             hint="compile again into this folder", code="file")
        return QdqExecutable(model, meta)


def _meta_path(location: str) -> str | None:
    """qdq.json of a folder, of a model.qdq.onnx beside it, or the file itself; None if absent or foreign."""
    if os.path.isdir(location):
        candidate = os.path.join(location, META_NAME)
    elif os.path.basename(location) == META_NAME or location.endswith(".onnx"):
        candidate = os.path.join(os.path.dirname(location) or ".", META_NAME)
    else:
        return None
    if not os.path.isfile(candidate):
        return None
    try:
        with open(candidate, encoding="utf-8") as fh:
            head = json.load(fh)
    except (OSError, ValueError):
        return None
    return candidate if isinstance(head, dict) and head.get("format") == FORMAT else None


def read_meta(path: str) -> dict:
    from tidlc.fileio import read_text
    try:
        meta = json.loads(read_text(path, "onnx-qdq metadata"))
    except ValueError as exc:
        raise TidlcError(f"{META_NAME} does not parse: {exc}", path, code="corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TidlcError(f"{META_NAME} is not tidlc onnx-qdq metadata", path, code="format")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise TidlcError(f"{META_NAME} version {meta.get('version')} is newer than this tidlc reads "
                         f"({FORMAT_VERSION})", path, hint="upgrade tidlc", code="version")
    for key in ("model", "inputs", "outputs"):
        if key not in meta:
            raise TidlcError(f"{META_NAME} has no '{key}'", path, code="corrupt")
    return meta


def _check(model, outdir: str) -> None:
    """The ONNX checker's full check (with shape inference): a model TI's tools may reject is a
    tidlc bug, so it is reported before anything is written."""
    import onnx
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        raise TidlcError(f"the QDQ model fails the ONNX checker: {str(exc).splitlines()[0]}", outdir,
                         code="internal") from None
