"""net.bin and io.bin: a quantized graph as tidlc's own binary (docs/format.md).

net.bin sections: ``META`` (graph name, attributes, outputs), ``TENS`` (tensor
table), ``LAYR`` (layer table), ``PARM`` (64-byte aligned constants), ``PERF``
(the perf model's report). io.bin sections: ``IODS`` (inputs and outputs with
their pre-processing). Reading rebuilds the very graph that was written, so the
fixed-point executor run on it gives the compiler's results bit for bit.
"""
from __future__ import annotations

import json
import math
from typing import Any

import attrs
import numpy as np

import tidlc
from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import DTYPES, LAYOUTS, QuantInfo, TensorType, numpy_dtype

from .container import ALIGN, Container, Cursor, Writer, align_up, pack

NET_MAGIC = b"TIDLCNET"
IO_MAGIC = b"TIDLCIO\0"
DTYPE_CODES = {name: i for i, name in enumerate(DTYPES)}  # DTYPES order is fixed: the codes are format
LAYOUT_CODES = {None: 0, **{name: i + 1 for i, name in enumerate(LAYOUTS)}}
NO_PARAM = 0xFFFFFFFFFFFFFFFF


# ----------------------------------------------------------------------------- canonical JSON
def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return {"$float": repr(v)}
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TidlcError(f"cannot store attribute value {v!r} in net.bin")


def _from_json(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_from_json(x) for x in v)
    if isinstance(v, dict):
        if set(v) == {"$float"}:
            return float(v["$float"])
        return {k: _from_json(x) for k, x in v.items()}
    return v


def canonical_json(v: Any) -> bytes:
    """Sorted keys, no spaces: identical data gives identical bytes."""
    return json.dumps(_jsonable(v), sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


# ----------------------------------------------------------------------------- tensors
def _put_tensor(w: Writer, tid: int, v: Value) -> None:
    t = v.type
    w.put("I", tid)
    w.string(v.name)
    w.put("BBB", DTYPE_CODES[t.dtype], LAYOUT_CODES[t.layout], 0 if t.shape is None else 1)
    dims = t.shape or ()
    w.put("I", len(dims))
    w.put(f"{len(dims)}q", *[-1 if d is None else d for d in dims])
    w.put("4H", 0, 0, 0, 0)  # padding top/left/bottom/right: tidlc keeps tensors unpadded (reserved)
    q = t.quant
    w.put("B", q is not None)
    if q is not None:
        w.put("BBiBiBi", q.bits, q.signed, q.zero_point, q.shift is not None, q.shift or 0,
              q.axis is not None, q.axis or 0)
        w.put("I", len(q.scale))
        w.put(f"{len(q.scale)}d", *q.scale)


def _get_tensor(c: Cursor) -> tuple[int, Value]:
    tid = c.u32()
    name = c.string()
    dcode, lcode, has_shape = c.unpack("BBB")
    dtypes, layouts = list(DTYPES), [None, *LAYOUTS]
    if dcode >= len(dtypes) or lcode >= len(layouts):
        raise TidlcError(f"corrupt net.bin: tensor {tid} has element type code {dcode}, layout code {lcode}", c.path)
    rank = c.count(8)
    dims = c.unpack(f"{rank}q")
    c.unpack("4H")
    quant = None
    if c.u8():
        bits, signed, zp, has_shift, shift, has_axis, axis = c.unpack("BBiBiBi")
        n = c.count(8)
        scales = c.unpack(f"{n}d")
        try:
            quant = QuantInfo(bits, bool(signed), scales, zp, shift if has_shift else None, axis if has_axis else None)
        except ValueError as exc:
            raise TidlcError(f"corrupt net.bin: tensor {tid}: {exc}", c.path) from None
    shape = tuple(None if d < 0 else d for d in dims) if has_shape else None
    return tid, Value(TensorType(shape, dtypes[dcode], layouts[lcode], quant), name=name)


# ----------------------------------------------------------------------------- layers
def _fixed_params(op: Op) -> dict:
    """The integer parameters the executor derives from the types (stored for inspection)."""
    from tidlc.backends.tidl.fixed import executor as fx
    try:
        if op.kind in fx.MAC_OPS and fx.is_fixed(op.results[0].type):
            p = fx.mac_params(op)
            return {"mult": p["mult"], "shift": p["shift"], "acc_bits": p["acc_width"], "clamp": [p["lo"], p["hi"]]}
        if op.kind in ("add", "sub", "mul", "max", "min") and fx.is_fixed(op.results[0].type):
            return fx.eltwise_params(op)
    except TidlcError:
        pass
    return {}


def encode_net(graph: Graph, perf: dict | None = None, device: str = "", io_file: str | None = None) -> bytes:
    """net.bin's bytes; ``io_file`` (the io descriptor's path relative to the net file) is
    recorded in META when it is not the default ``io.bin`` beside it."""
    ids: dict[int, int] = {}
    for op in graph.ops:
        for r in op.results:
            ids[id(r)] = len(ids)
    tensors = Writer()
    tensors.put("I", len(ids))
    values = [r for op in graph.ops for r in op.results]
    for v in values:
        _put_tensor(tensors, ids[id(v)], v)
    layers, params = Writer(), bytearray()
    layers.put("I", len(graph.ops))
    for op in graph.ops:
        layers.string(op.kind)
        layers.string(op.name)
        for group in (op.operands, op.results):
            layers.put("I", len(group))
            try:
                layers.put(f"{len(group)}I", *[ids[id(v)] for v in group])
            except KeyError:
                raise TidlcError(f"{op.kind} reads a value no op produces", op.where()) from None
        act = op.attrs.get("act", "none") if isinstance(op.attrs.get("act"), str) else "none"
        layers.string(act)
        layers.blob(canonical_json({"attrs": op.attrs, "fixed": _fixed_params(op)}))
        if op.kind == "const" and op.data is not None:
            data = np.ascontiguousarray(op.data)
            start = align_up(len(params))
            params.extend(b"\0" * (start - len(params)))
            params.extend(data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())
            layers.put("QQB", start, data.nbytes, DTYPE_CODES[str(_dtype_name(data))])
        else:
            layers.put("QQB", NO_PARAM, 0, 0)
    outputs = [ids[id(v)] for v in graph.outputs]
    meta = {"name": graph.name, "attrs": graph.attrs, "outputs": outputs, "output_names": list(graph.output_names)}
    if io_file:
        meta["io_file"] = io_file
    meta = canonical_json(meta)
    sections = {"META": meta, "TENS": tensors.bytes(), "LAYR": layers.bytes(), "PARM": bytes(params),
                "PERF": canonical_json(perf or {})}
    return pack(NET_MAGIC, sections, tidlc.__version__, device)


def _dtype_name(data: np.ndarray) -> str:
    from tidlc.ir.types import dtype_of
    return dtype_of(data)


def decode_net(data: bytes, path: str = "net.bin") -> tuple[Graph, Container]:
    box = Container(data, NET_MAGIC, "net.bin", path)
    try:
        meta = _from_json(json.loads(bytes(box.section("META"))))
        c = Cursor(box.section("TENS"), "TENS", path)
        values: dict[int, Value] = {}
        for _ in range(c.count(20)):
            tid, v = _get_tensor(c)
            values[tid] = v
        params = box.section("PARM")
        c = Cursor(box.section("LAYR"), "LAYR", path)
        ops = []
        for _ in range(c.count(16)):
            kind, name = c.string(), c.string()
            groups = []
            for _g in range(2):
                n = c.count(4)
                tids = c.unpack(f"{n}I")
                missing = [t for t in tids if t not in values]
                if missing:
                    raise TidlcError(f"corrupt net.bin: layer '{name or kind}' names unknown tensor {missing[0]}", path)
                groups.append([values[t] for t in tids])
            c.string()  # fused activation, duplicated in attrs for readers of the table
            body = _from_json(json.loads(c.blob()))
            offset, nbytes, dcode = c.unpack("QQB")
            op = Op(kind, groups[0], groups[1], dict(body["attrs"]), name=name)
            if offset != NO_PARAM:
                if offset % ALIGN or offset > len(params) or nbytes > len(params) - offset or dcode >= len(DTYPES):
                    raise TidlcError(f"corrupt net.bin: parameters of '{name or kind}' lie outside the section", path)
                dtype = numpy_dtype(list(DTYPES)[dcode]).newbyteorder("<")
                shape = groups[1][0].type.shape
                if shape is None or None in shape or int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != nbytes:
                    raise TidlcError(f"corrupt net.bin: parameters of '{name or kind}' do not match its shape", path)
                arr = np.frombuffer(params[offset: offset + nbytes], dtype=dtype).reshape(shape)
                op.data = arr.astype(dtype.newbyteorder("="), copy=False)
            for i, r in enumerate(op.results):
                r.producer, r.index = op, i
            ops.append(op)
        outputs = [values[t] for t in meta["outputs"]]
    except TidlcError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise TidlcError(f"corrupt net.bin: {exc}", path) from None
    graph = Graph(name=meta["name"], ops=ops, outputs=outputs, output_names=list(meta["output_names"]),
                  attrs=dict(meta["attrs"]))
    return graph, box


def perf_of(box: Container) -> dict:
    return json.loads(bytes(box.section("PERF")))


# ----------------------------------------------------------------------------- io.bin
def io_descriptor(graph: Graph) -> dict:
    from tidlc.preprocess import Preprocess
    pre = {k.split(".", 1)[1]: v for k, v in graph.attrs.items() if k.startswith("preprocess.")}
    pre = attrs.asdict(Preprocess(**pre)) if pre else attrs.asdict(Preprocess())

    def entry(name: str, v: Value) -> dict:
        t = v.type
        fixed = v
        if v.producer is not None and v.producer.kind == "data_convert" and v.producer.operands[0].type.quant:
            fixed = v.producer.operands[0]  # the integer tensor the device hands out
        q = fixed.type.quant
        return {"name": name, "dims": list(t.shape or ()), "element_type": t.dtype, "layout": t.layout,
                "device_element_type": fixed.type.dtype, "scale": list(q.scale) if q else None,
                "zero_point": q.zero_point if q else 0}
    inputs = []
    for op in graph.input_ops:
        e = entry(op.attrs["name"], op.results[0])
        users = [u for u in graph.ops if op.results[0] in u.operands and u.kind == "data_convert"]
        if users and users[0].results[0].type.quant:
            q = users[0].results[0].type.quant
            e.update(device_element_type=users[0].results[0].type.dtype, scale=list(q.scale), zero_point=q.zero_point)
        e["preprocess"] = pre
        inputs.append(e)
    names = graph.output_names or [v.name or f"output{k}" for k, v in enumerate(graph.outputs)]
    outputs = [entry(n, v) for n, v in zip(names, graph.outputs)]
    return {"inputs": inputs, "outputs": outputs}


def encode_io(graph: Graph, device: str = "") -> bytes:
    return pack(IO_MAGIC, {"IODS": canonical_json(io_descriptor(graph))}, tidlc.__version__, device)


def decode_io(data: bytes, path: str = "io.bin") -> dict:
    box = Container(data, IO_MAGIC, "io.bin", path)
    try:
        desc = json.loads(bytes(box.section("IODS")))
        if not isinstance(desc, dict) or not isinstance(desc.get("inputs"), list):
            raise TypeError("no input list")
        return desc
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise TidlcError(f"corrupt io.bin: {exc}", path) from None
