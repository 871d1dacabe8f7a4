"""A partitioned TIDL model: accelerated subgraphs (one net.bin + io.bin each) and host ops
(docs/partition.md).

``emit_partitioned`` writes, as one commit (``tidlc.fileio.commit_files``)::

    OUTDIR/model.tdp                 the manifest (below)
    OUTDIR/model.tir, model.weights  the float graph: the host ops run from it
    OUTDIR/subgraph_N/net.bin, io.bin  one quantized subgraph each

Each subgraph is quantized on its own, calibrated on its boundary tensors as the float graph
(host ops included) computes them from the whole model's calibration frames.

``model.tdp``: a line ``tidlc-tdp 1``, a line ``crc32 XXXXXXXX SIZE`` (the CRC32 and byte size of
the payload), then the payload: JSON with sorted keys (schema in docs/format.md). Any change to a
byte is found by the magic, the header, the size or the CRC, and is a one-line error.

``PartitionedExecutable`` runs it: the host ops on the float interpreter, each subgraph on the
fixed-point executor (float in, float out: the subgraph's own data_convert ops quantize and
dequantize with its io.bin scales), in the manifest's schedule.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib

import numpy as np

from tidlc.diagnostics import TidlcError, warn

MANIFEST = "model.tdp"
MAGIC = b"tidlc-tdp 1\n"
FORMAT = 1
RECOMPILE = "recompile the model with `tidlc compile MODEL -o DIR`"
_HEAD = re.compile(rb"crc32 ([0-9a-f]{8}) ([0-9]{1,12})\n")


# --- the manifest -----------------------------------------------------------------------------
def encode_manifest(doc: dict) -> bytes:
    payload = (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode("ascii")
    return MAGIC + b"crc32 %08x %d\n" % (zlib.crc32(payload), len(payload)) + payload


def _corrupt(path: str, message: str) -> TidlcError:
    return TidlcError(f"corrupt {os.path.basename(path)}: {message}", path, hint=RECOMPILE, code="corrupt")


_SCHEMA = {"format": int, "device": str, "ir": str, "weights": str, "ir_sha256": str, "inputs": list,
           "outputs": list, "subgraphs": list, "host_ops": list, "boundary": dict, "schedule": list}
_SUBGRAPH = {"index": int, "dir": str, "inputs": list, "outputs": list, "ops": list, "cost": (int, float),
             "net_sha256": str}


def decode_manifest(data: bytes, path: str = MANIFEST) -> dict:
    if not data.startswith(MAGIC):
        raise TidlcError("not a tidlc partition manifest (model.tdp): wrong magic line", path,
                         hint=RECOMPILE, code="corrupt")
    head = _HEAD.match(data, len(MAGIC))
    if head is None:
        raise _corrupt(path, f"bad header line at byte {len(MAGIC)}")
    crc, size = int(head.group(1), 16), int(head.group(2))
    payload = data[head.end():]
    if len(payload) != size:
        raise _corrupt(path, f"the payload has {len(payload)} bytes, the header says {size}")
    if zlib.crc32(payload) != crc:
        raise _corrupt(path, f"CRC32 mismatch in the payload (bytes {head.end()}..{len(data)})")
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise _corrupt(path, "the payload is not JSON") from None
    problem = _schema_problem(doc)
    if problem:
        raise _corrupt(path, problem)
    return doc


def _schema_problem(doc) -> str | None:
    if not isinstance(doc, dict):
        return "the payload is not an object"
    for key, kind in _SCHEMA.items():
        if not isinstance(doc.get(key), kind):
            return f"'{key}' missing or of the wrong type"
    if doc["format"] != FORMAT:
        return f"format {doc['format']} (this tidlc reads {FORMAT})"
    for k, sub in enumerate(doc["subgraphs"]):
        if not isinstance(sub, dict):
            return f"subgraph {k} is not an object"
        for key, kind in _SUBGRAPH.items():
            if not isinstance(sub.get(key), kind):
                return f"subgraph {k}: '{key}' missing or of the wrong type"
        if not re.fullmatch(r"subgraph_[0-9]+", sub["dir"]):
            return f"subgraph {k}: bad folder name {sub['dir']!r}"
    for k, entry in enumerate(doc["inputs"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("dims"), list)):
            return f"input {k} is not an object with a name and dims"
        if "preprocess" in entry:  # older manifests have none (their inputs take the subgraphs' io.bin)
            from tidlc.backends.tidl.binfmt.net import preprocess_problem
            problem = preprocess_problem(entry["preprocess"]) if isinstance(entry["preprocess"], dict) \
                else "preprocess is not an object"
            if problem:
                return f"input {k}: {problem}"
    for entry in doc["schedule"]:
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in ("host", "subgraph")):
            return "bad schedule entry"
        if entry[0] == "subgraph" and not (isinstance(entry[1], int) and 0 <= entry[1] < len(doc["subgraphs"])):
            return "schedule names a subgraph that does not exist"
    return None


def read_manifest(location: str) -> tuple[dict, str]:
    """(manifest, folder) of OUTDIR, OUTDIR/model.tdp or an import config compiled partitioned."""
    from tidlc.fileio import read_bytes
    path = _config_manifest(location) or (os.path.join(location, MANIFEST) if os.path.isdir(location) else location)
    if not os.path.isfile(path):
        raise TidlcError("no model.tdp in this folder", location, hint=RECOMPILE, code="file")
    return decode_manifest(read_bytes(path, "model.tdp"), path), os.path.dirname(os.path.abspath(path))


def is_partitioned(location) -> bool:
    if not isinstance(location, str):
        return False
    if os.path.isdir(location):
        return os.path.isfile(os.path.join(location, MANIFEST))
    if location.endswith(".tdp"):
        return os.path.isfile(location)
    return _config_manifest(location) is not None


def _config_manifest(location: str) -> str | None:
    """The model.tdp a TIDL import config's compile wrote (a partitioned model has no
    outputNetFile: its manifest sits in that file's folder), or None."""
    from tidlc.import_config import load_import_config, looks_like_import_config
    if location.endswith((".tdp", ".bin")) or os.path.isdir(location) or not looks_like_import_config(location):
        return None
    try:
        target = load_import_config(location, quiet=True).compile_options().target
    except TidlcError:
        return None  # a broken config: its own error comes from whoever reads it next
    path = os.path.join(target.outdir, MANIFEST)
    return path if os.path.isfile(path) and not os.path.isfile(os.path.join(target.outdir, target.net_name)) else None


# --- emission ---------------------------------------------------------------------------------
def schedule(graph, partition) -> list[list]:
    """A topological order of the units (host ops and subgraphs) of the contracted graph."""
    from tidlc.partition import op_names
    names = op_names(graph)
    unit_of = {}
    for r in partition.regions:
        for n in r.op_names:
            unit_of[n] = ("subgraph", r.index)
    host = set(partition.host_ops)
    ops = list(graph.compute_ops())
    deps: dict[tuple, set] = {}
    order_key: dict[tuple, int] = {}
    for i, op in enumerate(ops):
        name = names[id(op)]
        unit = ("host", name) if name in host else unit_of[name]
        order_key.setdefault(unit, i)
        d = deps.setdefault(unit, set())
        for v in op.operands:
            p = v.producer
            if p is not None and id(p) in names:
                pn = names[id(p)]
                pu = ("host", pn) if pn in host else unit_of[pn]
                if pu != unit:
                    d.add(pu)
    done: set = set()
    out: list[list] = []
    pending = sorted(deps, key=order_key.get)
    while pending:
        ready = [u for u in pending if deps[u] <= done]
        if not ready:  # plan_partition never makes a cycle
            raise TidlcError("the partition has a cycle between subgraphs and host ops", code="internal")
        for u in ready:
            out.append(list(u))
            done.add(u)
        pending = [u for u in pending if u not in done]
    return out


def _boundary_frames(graph, partition, options):
    """Per calibration frame of the whole model: boundary tensor name -> array (the float graph
    run on it, host ops included); and whether the frames are synthetic."""
    from tidlc.backends.tidl.quantize.api import (
        CALIB_HOW,
        CALIB_WARNING,
        QuantSettings,
        calibration_frames,
    )

    from tidlc.interp import Interpreter
    from tidlc.partition import tensor_names
    settings = QuantSettings.from_options(options)
    frames, total, synthetic = calibration_frames(graph, settings)
    if synthetic and settings.calib_source != "random":
        warn(CALIB_WARNING.format(n=total, how=CALIB_HOW.get(settings.calib_source, "--calib DATA")),
             code="calibration")
    tnames = tensor_names(graph)
    wanted = {name for r in partition.regions for name in r.inputs}
    by_id = {vid: name for vid, name in tnames.items() if name in wanted}
    interp = Interpreter(graph)
    out = []
    got: dict = {}

    def observe(op, results):
        for v, r in zip(op.results, results):
            if id(v) in by_id:
                got[by_id[id(v)]] = np.array(r, copy=True)
    for feeds in frames:
        got = {}
        interp.run(feeds, observer=observe)
        for op in graph.input_ops:
            vid = id(op.results[0])
            if vid in by_id:
                got[by_id[vid]] = np.asarray(feeds[op.attrs["name"]])
        out.append(got)
    return out, synthetic


def _weights_bytes(weights) -> bytes:
    """The bytes ``tidlc.ir.weights.write_weights`` writes (for one commit with the other files)."""
    from tidlc.ir import weights as w
    head, arrays = w._index(weights)
    parts = [w.MAGIC, struct.pack("<Q", len(head)), head]
    for arr in arrays:
        parts.append(w._bytes(arr).tobytes())
        parts.append(b"\0" * w._pad(arr.nbytes))
    return b"".join(parts)


def _ir_files(graph, stem: str = "model") -> tuple[bytes, bytes]:
    """model.tir text and model.weights bytes (as tidlc.compiler.write_ir writes them)."""
    from tidlc.ir.printer import print_graph
    from tidlc.ir.weights import weights_digest
    graph.attrs["weights"] = f"{stem}.weights"
    graph.attrs.pop("weights_digest", None)
    text, weights = print_graph(graph)
    if weights:
        graph.attrs["weights_digest"] = weights_digest(weights)
        text, weights = print_graph(graph)
    return text.encode("utf-8"), _weights_bytes(weights)


def quantize_region(graph, region, frames, options, synthetic: bool = False):
    """``(fixed-point graph of one region, note)``: calibrated on ``frames`` (its input tensors);
    the note is its output SNR against the region's float graph on them, as the compile of a whole
    model reports it ("" on the boundary tensors of synthetic frames)."""
    from tidlc.backends.tidl.quantize.api import quantize_graph, snr_note

    from tidlc.partition import extract_region
    sub = extract_region(graph, region)
    known = {op.name for op in sub.compute_ops()}
    region_options = options.replace(layers_16bit=tuple(n for n in options.quant.layers_16bit if n in known))
    feeds = [{name: f[name] for name in region.inputs} for f in frames]
    q = quantize_graph(sub, region_options, frames=feeds, warn_synthetic=False)
    what = f"subgraph {region.index}"
    note = "" if synthetic else snr_note(q, options.pipeline.opt_level, frames=feeds, what=what)
    return q, f"{what}: {note}" if note else ""


def _check_outdir(outdir: str) -> None:
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise TidlcError("the output path is a file, not a folder", outdir, code="output")


def _preprocess(options) -> dict:
    """The inputs' pre-processing as io.bin records it (``tidlc run OUTDIR --input image.png``)."""
    p = getattr(options, "preprocess", None)
    if p is None:
        return {"mean": [], "scale": [], "resize": None, "crop": None, "channel_order": "rgb"}
    return {"mean": list(p.mean), "scale": list(p.scale), "resize": list(p.resize) if p.resize else None,
            "crop": list(p.crop) if p.crop else None, "channel_order": p.channel_order}


def emit_partitioned(graph, partition, outdir: str, options) -> list[str]:
    """Write a partitioned model (module doc); returns the paths, model.tdp last."""
    from tidlc.backends.tidl.binfmt import encode_io, encode_net

    import tidlc
    from tidlc.config import CompileOptions
    from tidlc.fileio import commit_files, remove_stale
    from tidlc.interp import output_names
    from tidlc.partition import tensor_names
    _check_outdir(outdir)
    device = options.target.device
    frames, synthetic = _boundary_frames(graph, partition, options)
    files: dict[str, bytes] = {}
    subgraphs = []
    notes = []
    for region in partition.regions:
        q, note = quantize_region(graph, region, frames, options, synthetic)
        if note:
            notes.append(note)
        if synthetic:  # the boundary tensors of the synthetic frames the whole model ran on
            q.graph.attrs["quant.calib_source"] = "synthetic"
        try:
            from tidlc.backends.tidl.perf import estimate
            perf = json.loads(estimate(q.graph, device, options).to_json())
        except TidlcError:
            perf = {}
        from tidlc.backends.tidl.perf.model import compile_settings
        settings = compile_settings(options) if isinstance(options, CompileOptions) else {}
        net = encode_net(q.graph, perf, device, io_file=None, settings=settings)
        folder = f"subgraph_{region.index}"
        files[os.path.join(outdir, folder, "net.bin")] = net
        files[os.path.join(outdir, folder, "io.bin")] = encode_io(q.graph, device, net)
        subgraphs.append({"index": region.index, "dir": folder, "inputs": list(region.inputs),
                          "outputs": list(region.outputs), "ops": list(region.op_names), "cost": region.cost,
                          "net_sha256": hashlib.sha256(net).hexdigest()})
    tir, weights = _ir_files(graph)
    files[os.path.join(outdir, "model.weights")] = weights
    files[os.path.join(outdir, "model.tir")] = tir
    tnames = tensor_names(graph)
    doc = {"format": FORMAT, "tidlc_version": tidlc.__version__, "device": device,
           "ir": "model.tir", "weights": "model.weights", "ir_sha256": hashlib.sha256(tir).hexdigest(),
           "inputs": [{"name": op.attrs["name"], "dims": list(op.results[0].type.shape or ()),
                       "dtype": op.results[0].type.dtype, "layout": op.results[0].type.layout,
                       "preprocess": _preprocess(options)} for op in graph.input_ops],
           "outputs": [{"name": n, "tensor": tnames[id(v)]} for n, v in zip(output_names(graph), graph.outputs)],
           "subgraphs": subgraphs, "host_ops": list(partition.host_ops),
           "boundary": {k: int(v) for k, v in sorted(partition.boundary.items())},
           "schedule": schedule(graph, partition)}
    manifest = os.path.join(outdir, MANIFEST)
    files[manifest] = encode_manifest(doc)
    commit_files(files)
    graph.attrs["quant.subgraph_snr"] = notes  # (after model.tir: for `tidlc compile` to print)
    # a whole-model compile's pair (an import config's outputNetFile too) would be taken for this model
    target = options.target
    named = [n for n in (target.net_name, target.io_name) if os.path.basename(n) == n]
    remove_stale(outdir, ("net.bin", "io.bin", *named))
    return list(files)


# --- running ----------------------------------------------------------------------------------
class PartitionedExecutable:
    """A partitioned model loaded from OUTDIR (model.tdp): ``run(feeds)``, ``input_info()``."""

    def __init__(self, location: str, kernels: str = "numpy", threads: int | None = None):
        from tidlc.backends.tidl.backend import TidlExecutable
        from tidlc.backends.tidl.binfmt import read_compiled

        from tidlc.fileio import read_bytes
        from tidlc.partition import op_names, tensor_names
        self.manifest, self.folder = read_manifest(location)
        m = self.manifest
        tir = os.path.join(self.folder, m["ir"])
        if os.path.basename(m["ir"]) != m["ir"] or os.path.basename(m["weights"]) != m["weights"]:
            raise _corrupt(os.path.join(self.folder, MANIFEST), "file names must stay inside the folder")
        if hashlib.sha256(read_bytes(tir, "model.tir")).hexdigest() != m["ir_sha256"]:
            raise TidlcError("model.tir was not written with this model.tdp (the files come from different "
                             "compiles)", tir, hint=RECOMPILE, code="mismatch")
        self.graph = _load_tir(tir)
        self.subgraphs = []
        for sub in m["subgraphs"]:
            net = os.path.join(self.folder, sub["dir"], "net.bin")
            model = read_compiled(net)  # a corrupt net.bin / io.bin: its own error, at the byte
            if hashlib.sha256(read_bytes(net, "net.bin")).hexdigest() != sub["net_sha256"]:
                raise TidlcError(f"{sub['dir']}/net.bin was not written with this model.tdp (the files come "
                                 "from different compiles)", net, hint=RECOMPILE, code="mismatch")
            self.subgraphs.append((sub, model, TidlExecutable(model.graph, model, kernels, threads)))
        self.names = op_names(self.graph)
        self.by_name = {n: op for op in self.graph.compute_ops() for n in (self.names[id(op)],)}
        tnames = tensor_names(self.graph)
        self.values = {name: vid for vid, name in tnames.items()}
        self.index = {id(op): i for i, op in enumerate(self.graph.ops)}
        needed = {t for sub in m["subgraphs"] for t in (*sub["inputs"], *sub["outputs"])}
        needed |= {o["tensor"] for o in m["outputs"]}
        missing = sorted(needed - set(self.values)) + sorted(set(m["host_ops"]) - set(self.by_name))
        if missing:
            raise TidlcError(f"model.tdp names {missing[0]!r}, which model.tir does not have", tir,
                             hint=RECOMPILE, code="mismatch")
        self._interp = None

    @property
    def interp(self):
        if self._interp is None:
            from tidlc.interp import Interpreter
            self._interp = Interpreter(self.graph)
        return self._interp

    def input_info(self) -> list[tuple[str, tuple, str]]:
        from tidlc.ir.types import numpy_dtype
        return [(e["name"], tuple(e["dims"]), np.dtype(numpy_dtype(e["dtype"])).name) for e in self.manifest["inputs"]]

    def input_entries(self) -> list[dict]:
        """The model inputs as io.bin describes them (name, dims, layout, preprocess): what
        ``tidlc run`` needs to feed an image. The pre-processing is the manifest's, else (a manifest
        written before it kept one) the io.bin entry of the subgraph the input feeds, else none."""
        default = _preprocess(None)
        seen = {e["name"]: e for _, model, _ in self.subgraphs for e in (model.io or {}).get("inputs", ())}
        layouts = {op.attrs["name"]: op.results[0].type.layout for op in self.graph.input_ops}
        out = []
        for e in self.manifest["inputs"]:
            pre = e.get("preprocess") or seen.get(e["name"], {}).get("preprocess") or default
            out.append({"name": e["name"], "dims": list(e["dims"]), "layout": e.get("layout", layouts.get(e["name"])),
                        "preprocess": pre})
        return out

    def fixed_graphs(self) -> list:
        """The subgraphs' fixed-point graphs."""
        return [model.graph for _, model, _ in self.subgraphs]

    def run(self, feeds: dict, observer=None, raw: bool = False, **kw) -> dict:
        """Outputs by name; ``observer(op, results)`` sees every host op and every subgraph layer."""
        from tidlc.interp import check_feeds
        interp = self.interp
        feeds = check_feeds(self.graph, feeds)
        env: dict[int, np.ndarray] = dict(interp.consts)
        for op in self.graph.input_ops:
            env[id(op.results[0])] = feeds[op.attrs["name"]]
        values = self.values
        for kind, what in self.manifest["schedule"]:
            if kind == "host":
                op = self.by_name[what]
                args = [env[id(v)] for v in op.operands]
                results = interp.compute(self.index[id(op)], op, args)
                for v, r in zip(op.results, results):
                    env[id(v)] = r
                if observer is not None:
                    observer(op, results)
            else:
                sub, _, executable = self.subgraphs[what]
                outs = executable.run({t: env[values[t]] for t in sub["inputs"]}, observer=observer)
                for t in sub["outputs"]:
                    env[values[t]] = outs[t]
        return {o["name"]: env[values[o["tensor"]]] for o in self.manifest["outputs"]}


def _load_tir(path: str):
    from tidlc.compiler import load
    from tidlc.config import CompileOptions
    return load(path, CompileOptions.of(format="tir"))
