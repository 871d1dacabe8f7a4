"""net.bin and io.bin: a quantized graph as tidlc's own binary (docs/format.md).

net.bin sections: ``META`` (graph name, attributes, outputs), ``TENS`` (tensor
table), ``LAYR`` (layer table), ``PARM`` (64-byte aligned constants), ``PERF``
(the perf model's report). io.bin sections: ``IODS`` (inputs and outputs with
their pre-processing). Reading rebuilds the very graph that was written, so the
fixed-point executor run on it gives the compiler's results bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import attrs
import numpy as np

import tidlc
from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import DTYPES, LAYOUTS, QuantInfo, TensorType, numpy_dtype

from .container import ALIGN, RECOMPILE, Container, Cursor, Writer, align_up, at, load_json, pack

NET_MAGIC = b"TIDLCNET"
IO_MAGIC = b"TIDLCIO\0"
DTYPE_CODES = {name: i for i, name in enumerate(DTYPES)}  # DTYPES order is fixed: the codes are format
LAYOUT_CODES = {None: 0, **{name: i + 1 for i, name in enumerate(LAYOUTS)}}
DTYPE_NAMES, LAYOUT_NAMES = list(DTYPES), [None, *LAYOUTS]
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


NON_FINITE = ("inf", "-inf", "nan")  # how canonical_json writes non-finite floats


def _from_json(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_from_json(x) for x in v)
    if isinstance(v, dict):
        if set(v) == {"$float"} and v["$float"] in NON_FINITE:
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


TENSOR_MIN_BYTES = 22  # id, empty name, codes, rank 0, padding, no quantization


def _get_tensor(c: Cursor, index: int) -> Value:
    tid = c.u32()
    if tid != index:  # the writer numbers tensors in order: anything else is damage
        c.fail(f"corrupt net.bin: tensor {index} of the table has id {tid}", back=4)
    name = c.string()
    dcode, lcode, has_shape = c.unpack("BBB")
    if dcode >= len(DTYPE_NAMES) or lcode >= len(LAYOUT_NAMES) or has_shape > 1:
        c.fail(f"corrupt net.bin: tensor {tid} has element type code {dcode}, layout code {lcode}, "
               f"shape flag {has_shape}", back=3)
    rank = c.count(8, "dimensions")
    from tidlc import limits
    limits.check("rank", rank, f"tensor {tid} rank", at(c.path, c.base + c.pos - 4))
    dims = c.unpack(f"{rank}q")
    if min(dims, default=0) < 0 or not has_shape:  # a compiled net is static: the kernels are planned on it
        c.fail(f"corrupt net.bin: tensor {tid} has dimensions {list(dims) if has_shape else 'unknown'} "
               "(a compiled net has static shapes)", back=8 * rank)
    limits.check_shape(dims, numpy_dtype(DTYPE_NAMES[dcode]).itemsize, f"tensor {tid}",
                       at(c.path, c.base + c.pos - 8 * rank))
    c.unpack("4H")
    quant = _get_quant(c, tid) if c.u8() else None
    if quant is not None and quant.storage != DTYPE_NAMES[dcode]:  # the fast kernels size buffers by dtype
        c.fail(f"corrupt net.bin: tensor {tid} holds {quant.bits}-bit {'' if quant.signed else 'un'}signed "
               f"values in {DTYPE_NAMES[dcode]} (expected {quant.storage})")
    shape = tuple(None if d < 0 else d for d in dims) if has_shape else None
    return Value(TensorType(shape, DTYPE_NAMES[dcode], LAYOUT_NAMES[lcode], quant), name=name)


def _get_quant(c: Cursor, tid: int) -> QuantInfo:
    bits, signed, zp, has_shift, shift, has_axis, axis = c.unpack("BBiBiBi")
    scales = c.unpack(f"{c.count(8, 'scales')}d")
    try:
        return QuantInfo(bits, bool(signed), scales, zp, shift if has_shift else None, axis if has_axis else None)
    except ValueError as exc:  # QuantInfo's validators: bits, scales
        c.fail(f"corrupt net.bin: tensor {tid}: {str(exc)[:160]}", back=8 * len(scales) + 4)


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


def encode_net(graph: Graph, perf: dict | None = None, device: str = "", io_file: str | None = None,
               settings: dict | None = None) -> bytes:
    """net.bin's bytes; ``io_file`` (the io descriptor's path relative to the net file) is
    recorded in META when it is not the default ``io.bin`` beside it, ``settings`` (SETTINGS:
    the deployment options given to the compile) when there are any."""
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
    if settings:
        meta["settings"] = settings
    meta = canonical_json(meta)
    sections = {"META": meta, "TENS": tensors.bytes(), "LAYR": layers.bytes(), "PARM": bytes(params),
                "PERF": canonical_json(perf or {})}
    return pack(NET_MAGIC, sections, tidlc.__version__, device)


def _dtype_name(data: np.ndarray) -> str:
    from tidlc.ir.types import dtype_of
    return dtype_of(data)


LAYER_MIN_BYTES = 35  # kind, name, operand and result counts, act, blob length, parameter reference


def decode_net(data: bytes, path: str = "net.bin") -> tuple[Graph, Container]:
    """The graph a net.bin holds, checked like the IR verifier checks a pass's output: a
    damaged or hostile file is a one-line TidlcError with the byte offset, never a crash later."""
    box = Container(data, NET_MAGIC, "net.bin", path)
    meta = _meta(box)
    c = box.cursor("TENS")
    values = [_get_tensor(c, i) for i in range(c.count(TENSOR_MIN_BYTES, "tensors"))]
    ops = _layers(box, values)
    for k, tid in enumerate(meta["outputs"]):
        if not 0 <= tid < len(values) or values[tid].producer is None:
            box.fail(f"corrupt net.bin: output {k} names tensor {tid}, which no layer writes", box.offsets["META"])
    graph = Graph(name=meta["name"], ops=ops, outputs=[values[t] for t in meta["outputs"]],
                  output_names=list(meta["output_names"]), attrs=meta["attrs"])
    _verify(graph, box)
    return graph, box


def _meta(box: Container) -> dict:
    """META, its schema checked (docs/format.md)."""
    meta = box.json("META")
    schema = {"name": str, "attrs": dict, "outputs": list, "output_names": list}
    problem = _schema_problem(meta, schema, {"io_file": str, "settings": dict})
    if problem is None and not all(isinstance(t, int) and not isinstance(t, bool) for t in meta["outputs"]):
        problem = "outputs must be tensor ids"
    if problem is None and not all(isinstance(n, str) for n in meta["output_names"]):
        problem = "output_names must be strings"
    if problem is None and "settings" in meta:
        problem = settings_problem(meta["settings"])
    if problem:
        box.fail(f"corrupt net.bin: META {problem}", box.offsets["META"])
    meta["attrs"] = {key: _from_json(value) for key, value in meta["attrs"].items()}
    for key, value in meta["attrs"].items():
        if not _is_attr_value(value):  # what a graph attribute can be (the IR text form prints it)
            box.fail(f"corrupt net.bin: META graph attribute '{key[:64]}' has the value {str(value)[:64]}, "
                     "not a number, string, boolean or list of them", box.offsets["META"])
    return meta


def _is_attr_value(v: Any) -> bool:
    if isinstance(v, tuple):
        return all(_is_attr_value(x) for x in v)  # as deep as the JSON nesting limit allows
    return isinstance(v, (bool, int, float, str))


def _schema_problem(obj: Any, required: dict, optional: dict | None = None) -> str | None:
    """What is wrong with a JSON object's keys and value types, or None."""
    if not isinstance(obj, dict):
        return "is not a JSON object"
    for key, kind in {**required, **(optional or {})}.items():
        if key not in obj:
            if key in required:
                return f"has no '{key}'"
        elif not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            names = [k.__name__.replace("NoneType", "null") for k in (kind if isinstance(kind, tuple) else (kind,))]
            return f"'{key}' must be {' or '.join(names)}"
    return None


# compile options the perf estimate used (numBatches, msmcSizeKB, weight persistence)
SETTINGS = ("batches", "msmc_kb", "persist_weights")


def settings_problem(settings: dict) -> str | None:
    """What is wrong with stored deployment settings ({"batches": 1..1024, "msmc_kb": >= 0,
    "persist_weights": true/false}), or None."""
    for key, value in settings.items():
        if key not in SETTINGS:
            return f"unknown setting '{key}'"
        if key == "persist_weights":
            if not isinstance(value, bool):
                return f"setting '{key}' must be true or false ({value!r})"
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "batches" else 0) \
                or value > (1024 if key == "batches" else 1 << 30):
            return f"setting '{key}' is out of range ({value!r})"
    return None


def _layers(box: Container, values: list[Value]) -> list[Op]:
    from tidlc import limits
    c, params = box.cursor("LAYR"), box.section("PARM")
    n = c.count(LAYER_MIN_BYTES, "layers")
    limits.check("ops", n, "layers", at(c.path, c.base))
    ops = []
    for _ in range(n):
        op = _get_layer(c, values)
        _attach_params(op, c, params)
        ops.append(op)
    return ops


def _tensor_ids(c: Cursor, values: list[Value], what: str) -> list[int]:
    tids = c.unpack(f"{c.count(4, what)}I")
    bad = [t for t in tids if t >= len(values)]
    if bad:
        c.fail(f"corrupt net.bin: layer {what} name tensor {bad[0]}; the table has {len(values)}",
               back=4 * len(tids))
    return list(tids)


def _get_layer(c: Cursor, values: list[Value]) -> Op:
    kind, name = c.string(), c.string()
    label = name or kind
    operands, results = _tensor_ids(c, values, "operands"), _tensor_ids(c, values, "results")
    for t in operands:
        if values[t].producer is None:  # layers are stored in execution order
            c.fail(f"corrupt net.bin: layer '{label}' reads tensor {t} before any layer writes it")
    for t in results:
        if values[t].producer is not None or results.count(t) > 1:
            c.fail(f"corrupt net.bin: tensor {t} is written by two layers ('{label}' and "
                   f"'{values[t].producer.name if values[t].producer else label}')")
    c.string()  # fused activation, duplicated in attrs for readers of the table
    raw = c.blob()
    body = load_json(raw, f"layer '{label}' attributes", c.path, c.base + c.pos - len(raw))
    if _schema_problem(body, {"attrs": dict}, {"fixed": dict}):
        c.fail(f"corrupt net.bin: layer '{label}' attributes {_schema_problem(body, {'attrs': dict})}",
               back=len(raw))
    op = Op(kind, [values[t] for t in operands], [values[t] for t in results],
            _attrs(kind, body["attrs"], c, label, len(raw)), name=name)
    for i, t in enumerate(results):
        values[t].producer, values[t].index = op, i
    return op


def _attrs(kind: str, stored: dict, c: Cursor, label: str, back: int) -> dict:
    """A layer's attributes checked and normalised by its op definition (as the IR parser does)."""
    from tidlc.ir.opdef import get_opdef
    given = {key: _from_json(value) for key, value in stored.items()}  # the object itself stays a dict
    try:
        opdef = get_opdef(kind)
    except KeyError:
        c.fail(f"corrupt net.bin: layer '{label}' has unknown kind '{kind[:64]}'", code="unsupported", back=back)
    try:
        return opdef.normalize_attrs(given)
    except ValueError as exc:
        c.fail(f"corrupt net.bin: layer '{label}': {str(exc)[:200]}", back=back)


def _attach_params(op: Op, c: Cursor, params: memoryview) -> None:
    """A const layer's array from PARM: the reference checked against the section and the tensor type."""
    offset, nbytes, dcode = c.unpack("QQB")
    label = op.name or op.kind
    if (offset == NO_PARAM) != (op.kind != "const"):
        c.fail(f"corrupt net.bin: layer '{label}' ({op.kind}) " +
               ("has no parameters" if op.kind == "const" else "has parameters"), back=17)
    if offset == NO_PARAM:
        return
    if offset % ALIGN or offset > len(params) or nbytes > len(params) - offset or dcode >= len(DTYPE_NAMES):
        c.fail(f"corrupt net.bin: parameters of '{label}' lie outside the PARM section", back=17)
    t = op.results[0].type if len(op.results) == 1 else None
    dtype = numpy_dtype(DTYPE_NAMES[dcode]).newbyteorder("<")
    if t is None or not t.is_static or t.dtype != DTYPE_NAMES[dcode] or t.size * dtype.itemsize != nbytes:
        c.fail(f"corrupt net.bin: parameters of '{label}' ({nbytes} bytes of {DTYPE_NAMES[dcode]}) do not "
               f"match its tensor {t}", back=17)
    arr = np.frombuffer(params[offset: offset + nbytes], dtype=dtype).reshape(t.shape)
    op.data = arr.astype(dtype.newbyteorder("="), copy=False)


def _verify(graph: Graph, box: Container) -> None:
    """The IR verifier's structural and type checks, as one line (the first problem)."""
    from tidlc.ir.verifier import verify
    try:
        verify(graph)
    except TidlcError as exc:
        first = exc.problems[0].strip() if exc.problems else exc.message
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        box.fail(f"corrupt net.bin: inconsistent graph: {first}{more}", box.offsets["LAYR"])


def perf_of(box: Container) -> dict:
    perf = box.json("PERF")
    if not isinstance(perf, dict):
        box.fail("corrupt net.bin: the PERF section is not a JSON object", box.offsets["PERF"])
    return perf


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


BIND_BYTES = 32  # io.bin's BIND section: the SHA-256 of the net.bin it was written with


def net_digest(net: bytes) -> bytes:
    return hashlib.sha256(net).digest()


def encode_io(graph: Graph, device: str = "", net: bytes = b"") -> bytes:
    """io.bin's bytes, bound to ``net`` (the net.bin written with it) by its SHA-256."""
    sections = {"IODS": canonical_json(io_descriptor(graph)), "BIND": net_digest(net)}
    return pack(IO_MAGIC, sections, tidlc.__version__, device)


def check_io(graph: Graph, io: dict, path: str) -> None:
    """io.bin describes the graph's own inputs and outputs (names and dims, in order): the
    executor is never fed tensors of another shape, even from a hand-made pair."""
    def shape(v: Value) -> list:
        return list(v.type.shape) if v.type.shape is not None else [None]
    expected = {"inputs": [(op.attrs.get("name"), shape(op.results[0])) for op in graph.input_ops],
                "outputs": [(None, shape(v)) for v in graph.outputs]}
    for group, want in expected.items():
        got = [(e["name"] if group == "inputs" else None, e["dims"]) for e in io[group]]
        if got != want:
            raise TidlcError(f"corrupt io.bin: its {group} ({_describe(got)}) are not the net's ({_describe(want)})",
                             path, hint=RECOMPILE, code="corrupt")


def _describe(entries: list) -> str:
    text = ", ".join(f"{name or ''}{dims}" for name, dims in entries[:4]) + (", ..." if len(entries) > 4 else "")
    return text or "none"


def decode_io(data: bytes, path: str = "io.bin") -> tuple[dict, bytes]:
    """(the io descriptor, its schema checked; the SHA-256 of the net.bin it belongs to)."""
    box = Container(data, IO_MAGIC, "io.bin", path)
    bind = bytes(box.section("BIND"))
    if len(bind) != BIND_BYTES:
        box.fail(f"corrupt io.bin: the BIND section has {len(bind)} bytes, not {BIND_BYTES}", box.offsets["BIND"])
    desc = box.json("IODS")
    problem = _descriptor_problem(desc, at(path, box.offsets["IODS"]))
    if problem:
        box.fail(f"corrupt io.bin: IODS {problem}", box.offsets["IODS"])
    return desc, bind


def _descriptor_problem(desc: Any, loc) -> str | None:
    problem = _schema_problem(desc, {"inputs": list, "outputs": list})
    if problem:
        return problem
    for group in ("inputs", "outputs"):
        for k, entry in enumerate(desc[group]):
            problem = _entry_problem(entry, group == "inputs", loc)
            if problem:
                return f"{group}[{k}] {problem}"
    return None


_ENTRY_SCHEMA = {"name": str, "dims": list, "element_type": str, "device_element_type": str,
                 "layout": (str, type(None)), "scale": (list, type(None)), "zero_point": int}


def _entry_problem(entry: Any, is_input: bool, loc) -> str | None:
    """What is wrong with one io descriptor entry (docs/format.md), or None."""
    from tidlc import limits
    problem = _schema_problem(entry, {**_ENTRY_SCHEMA, **({"preprocess": dict} if is_input else {})})
    if problem:
        return problem
    if not all(_is_int(d) and d >= 0 for d in entry["dims"]):
        return "dims must be non-negative integers"
    limits.check_shape(entry["dims"], 4, f"io.bin entry '{entry['name']}'", loc)
    if entry["element_type"] not in DTYPES or entry["device_element_type"] not in DTYPES:
        return "has an unknown element type"
    if entry["layout"] not in LAYOUT_NAMES:
        return f"has an unknown layout {entry['layout']!r}"
    if not all(_is_number(s) and 0 < s < math.inf for s in entry["scale"] or ()):
        return "scales must be positive finite numbers"
    return preprocess_problem(entry["preprocess"], loc) if is_input else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def preprocess_problem(pre: dict, loc=None) -> str | None:
    """What is wrong with an input's pre-processing (mean, scale, resize, crop, channel_order), or None."""
    from tidlc import limits
    from tidlc.preprocess import CHANNEL_ORDERS
    problem = _schema_problem(pre, {}, {"mean": list, "scale": list, "resize": (list, type(None)),
                                        "crop": (list, type(None)), "channel_order": str})
    if problem or set(pre) - {"mean", "scale", "resize", "crop", "channel_order"}:
        return f"preprocess {problem or 'has unknown keys'}"
    for key in ("mean", "scale"):
        if len(pre.get(key, ())) > 4 or not all(_is_number(v) and math.isfinite(v) for v in pre.get(key, ())):
            return f"preprocess {key} must be at most 4 finite numbers"
    for key in ("resize", "crop"):
        pair = pre.get(key)
        if pair is not None and (len(pair) != 2 or not all(_is_int(v) and 0 < v <= 1 << 16 for v in pair)):
            return f"preprocess {key} must be [W, H] (positive integers up to 65536)"
        if pair is not None:  # an image is resized to this size before anything else
            limits.check("image_pixels", pair[0] * pair[1], f"preprocess {key} {pair[0]}x{pair[1]}", loc)
    if pre.get("channel_order", "rgb") not in CHANNEL_ORDERS:
        return f"preprocess channel_order must be one of {', '.join(CHANNEL_ORDERS)}"
    return None
