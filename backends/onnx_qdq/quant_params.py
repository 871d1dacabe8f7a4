"""TIDL's quantization-parameters prototxt (``TIDLNetQuantParams``) from tidlc's fixed-point graph.

TI's import tool reads this file (``quantParamsPrototxtFile``, or
``advanced_options:quant_params_proto_path`` in edgeai-tidl-tools) instead of
calibrating when every tensor of every layer has a finite min/max. The text
form, per TI's specification of the message:

* top level: ``num_layers``, ``quant_type`` (SYMMETRIC: TDA4VM has zero
  points of 0), ``calib_type`` (PERTENSOR, or PERCHANNEL when a layer's
  weights are per channel), then one ``layers { ... }`` per layer;
* a layer: ``layer_name`` (the name of its output tensor in the QDQ model,
  the original model's tensor name where there is one), ``layer_type``
  (``TIDL_<Layer>Layer``), ``bit_depth`` (bytes per element, 1 or 2, as the
  files TIDL writes have it), ``outputs``, ``weights``, ``bias`` and ``slope``
  tensors;
* a tensor: ``min``, ``max`` (the reals the codes span), ``size`` (the
  number of scales, or of values for a bias), ``element_type`` (TIDL's enum:
  0 u8, 1 s8, 2 u16, 3 s16, 4 u32, 5 s32, 8 s64), ``scale`` (tidlc's: codes
  per real, TIDL's ``tensorScale``), ``zero_point`` and, for a bias, every
  ``value``.

TIDL uses only min/max; scale is written so the file says what tidlc chose.
"""
from __future__ import annotations

import numpy as np

from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import QuantInfo

from .export import Exported, dequantized

ELEMENT_TYPES = {"u8": 0, "i8": 1, "u16": 2, "i16": 3, "u32": 4, "i32": 5, "f32": 6, "i64": 8}
LAYER_KINDS = {"input": "Data", "data_convert": "DataConvert"}


def tidl_layer_type(op: Op) -> str:
    """``TIDL_<Layer>Layer`` of an IR op (the TIDL backend's layer table, else the kind itself)."""
    name = LAYER_KINDS.get(op.kind)
    if name is None:
        from tidlc.backends.tidl.perf import layers
        for table in (layers._MMA, layers._VECTOR_OPS, layers._VIEWS, layers._FREE, layers._ON_INPUT):
            entry = table.get(op.kind)
            if entry is not None:
                name = entry[0] if isinstance(entry, tuple) else entry
                break
        else:
            name = "".join(part.capitalize() for part in op.kind.split("_"))
    return f"TIDL_{name}Layer"


def _range(q: QuantInfo) -> tuple[float, float]:
    """The symmetric range whose full-range scale is the tensor's: ``qmax / scale``, and its
    negative when signed (the widest channel when per channel)."""
    hi = (q.qmax - q.zero_point) / min(q.scale)
    return (-hi if q.signed else 0.0), hi


def _float(x: float) -> str:
    return repr(float(np.float32(x))) if np.isfinite(x) else ("3.4028234664e+38" if x > 0 else "-3.4028234664e+38")


def _tensor_lines(field: str, q: QuantInfo | None, lo: float, hi: float, values: np.ndarray | None = None,
                  indent: str = "  ") -> list[str]:
    """One tensor message; ``q`` None: a float parameter (a PReLU slope), element type f32, scale 1."""
    inner = indent + "  "
    scales = q.scale if q is not None else (1.0,)
    lines = [f"{indent}{field} {{", f"{inner}min: {_float(lo)}", f"{inner}max: {_float(hi)}",
             f"{inner}size: {len(scales) if values is None else values.size}",
             f"{inner}element_type: {ELEMENT_TYPES['f32'] if q is None else ELEMENT_TYPES.get(q.storage, 5)}"]
    lines += [f"{inner}scale: {float(s)!r}" for s in scales]
    lines += [f"{inner}zero_point: {0 if q is None else q.zero_point}"]
    if values is not None:
        lines += [f"{inner}value: {_float(v)}" for v in values.reshape(-1)]
    lines.append(f"{indent}}}")
    return lines


def _const_of(v: Value) -> np.ndarray | None:
    return np.asarray(v.producer.data) if v.producer is not None and v.producer.kind == "const" else None


def quant_params_text(graph: Graph, exported: Exported) -> str:
    """The prototxt for the layers of ``graph`` whose outputs are quantized."""
    layers: list[list[str]] = []
    per_channel = False
    quantized_input = {id(op.operands[0]) for op in graph.ops
                       if op.kind == "data_convert" and op.operands[0].producer is not None
                       and op.operands[0].producer.kind == "input" and op.results[0].type.quant is not None}
    for op in graph.ops:
        if op.kind == "const":
            continue
        if op.kind == "data_convert" and op.operands[0].producer is not None \
                and op.operands[0].producer.kind == "input":
            continue  # the input's quantization is its data layer's output (below)
        if op.kind == "input":
            if id(op.results[0]) not in quantized_input:
                continue
            convert = next(o for o in graph.ops if o.kind == "data_convert" and o.operands[0] is op.results[0])
            q = convert.results[0].type.quant
            name = op.attrs["name"]
        else:
            quants = [r.type.quant for r in op.results]
            if not quants or quants[0] is None:
                continue
            q = quants[0]
            name = exported.tensor_names.get(id(op.results[0]), op.name)
        lines = [f'  layer_name: "{_escape(name)}"', f'  layer_type: "{tidl_layer_type(op)}"',
                 f"  bit_depth: {(q.bits + 7) // 8}"]
        for r in op.results:
            if r.type.quant is not None or op.kind == "input":
                rq = r.type.quant or q
                lines += _tensor_lines("outputs", rq, *_range(rq))
        if _is_mac(op):
            w = op.operands[1]
            wq, wdata = w.type.quant, _const_of(w)
            if wq is not None and wdata is not None:
                real = dequantized(wdata, wq)
                per_channel = per_channel or len(wq.scale) > 1
                lines += _tensor_lines("weights", wq, float(real.min(initial=0.0)), float(real.max(initial=0.0)))
            if len(op.operands) > 2:
                b = op.operands[2]
                bq, bdata = b.type.quant, _const_of(b)
                if bq is not None and bdata is not None:
                    real = dequantized(bdata, bq).astype(np.float64)
                    lines += _tensor_lines("bias", bq, float(real.min(initial=0.0)), float(real.max(initial=0.0)),
                                           values=real)
        if op.kind == "prelu":
            slope = _const_of(op.operands[1])
            if slope is not None:
                s = np.asarray(slope, dtype=np.float64)
                lines += _tensor_lines("slope", op.operands[1].type.quant, float(s.min()), float(s.max()), values=s)
        layers.append(lines)
    out = [f"num_layers: {len(layers)}", "quant_type: SYMMETRIC",
           f"calib_type: {'PERCHANNEL' if per_channel else 'PERTENSOR'}"]
    for lines in layers:
        out += ["layers {", *lines, "}"]
    return "\n".join(out) + "\n"


def _is_mac(op: Op) -> bool:
    from tidlc.ir.opdef import Trait
    return op.opdef.has(Trait.MAC) and len(op.operands) > 1


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
