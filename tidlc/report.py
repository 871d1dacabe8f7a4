"""`tidlc report`: one self-contained HTML page (graph, per-layer table, summary) built from
the performance model's JSON (schema tidlc.perf/1) and, when given, `tidlc compare` rows.

The page's data is embedded once as ``<script type="application/json" id="report-data">``:
``{"schema": "tidlc.report/1", "perf": ..., "compare": ..., "graph": {"nodes", "edges", "layout"}}``.
The graph is laid out here (longest-path layering + barycentre ordering); the page only draws it.
Core code: the perf model is reached through the backend object, never imported.
"""
from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

SCHEMA = "tidlc.report/1"
BOX_W, BOX_H, GAP_X, GAP_Y = 168, 36, 24, 30


def graph_structure(graph, host_ops=(), regions=None) -> tuple[list[dict], list[list[int]]]:
    """(nodes, edges) of a graph: one node per input and compute op, edges producer -> user."""
    from tidlc.ir.ops.quant import QDQ_KINDS
    from tidlc.partition import op_names
    names = op_names(graph)
    region_of = {}
    for r in regions or ():
        for n in r.op_names:
            region_of[n] = r.index
    host = set(host_ops)
    nodes: list[dict] = []
    index: dict[int, int] = {}
    producer: dict[int, int] = {}
    edges: list[list[int]] = []
    for op in graph.ops:
        if op.kind == "const":
            continue
        if op.kind in QDQ_KINDS and op.operands and len(op.results) == 1:
            # a pre-quantized model's quantize/dequantize: a range, not a layer (check and perf count
            # them so too); edges go through it, a dequantized weight is drawn as no node
            if id(op.operands[0]) in producer:
                producer[id(op.results[0])] = producer[id(op.operands[0])]
            continue
        if op.kind == "input":
            name = op.attrs.get("name") or op.name or "input"
        elif id(op) in names:
            name = names[id(op)]
        else:
            continue
        i = len(nodes)
        index[id(op)] = i
        shape = [list(v.shape) if v.shape is not None else None for v in op.results]
        attrs = {}
        for k, v in (op.attrs or {}).items():
            try:
                json.dumps(v)
                attrs[k] = v
            except (TypeError, ValueError):
                attrs[k] = repr(v)[:200]
        scales = []
        for v in op.results:
            q = getattr(v.type, "quant", None)
            if q is not None:
                scales.append({"bits": getattr(q, "bits", None), "scale": _jsonable(getattr(q, "scale", None))})
        node = {"id": i, "name": name, "op": op.kind, "shapes": shape, "attrs": attrs,
                "in_shapes": [list(v.shape) if v.shape is not None else None for v in op.operands
                              if id(v) in producer], "scales": scales,
                "host": name in host, "region": region_of.get(name)}
        nodes.append(node)
        for v in op.operands:
            src = producer.get(id(v))
            if src is not None and [src, i] not in edges:
                edges.append([src, i])
        for v in op.results:
            producer[id(v)] = i
    return nodes, edges


def _jsonable(v):
    try:
        import numpy as np
        if isinstance(v, np.ndarray):
            return [float(x) for x in v.reshape(-1)[:16]]
        if isinstance(v, (np.floating, np.integer)):
            return float(v)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, (int, float, str)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v[:16]]
    return repr(v)[:80]


def layout(n: int, edges: list[list[int]]) -> dict[str, Any]:
    """Layered DAG layout, top to bottom: longest-path layers, then barycentre ordering sweeps."""
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    layer = [0] * n
    for i in range(n):  # nodes are in topological (graph) order
        layer[i] = max((layer[p] + 1 for p in preds[i]), default=0)
    depth = max(layer, default=-1) + 1
    rows: list[list[int]] = [[] for _ in range(depth)]
    for i in range(n):
        rows[layer[i]].append(i)
    pos = {}
    for row in rows:
        for k, i in enumerate(row):
            pos[i] = float(k)
    for sweep in range(4):
        order = range(1, depth) if sweep % 2 == 0 else range(depth - 2, -1, -1)
        for d in order:
            row = rows[d]
            def bary(i, nb=(preds if sweep % 2 == 0 else succs)):
                ns = nb[i]
                return sum(pos[j] for j in ns) / len(ns) if ns else pos[i]
            row.sort(key=lambda i: (bary(i), pos[i]))
            for k, i in enumerate(row):
                pos[i] = float(k)
    width = max((len(r) for r in rows), default=1)
    xy = [[0, 0]] * n
    for d, row in enumerate(rows):
        off = (width - len(row)) * (BOX_W + GAP_X) / 2
        for k, i in enumerate(row):
            xy[i] = [round(off + k * (BOX_W + GAP_X)), d * (BOX_H + GAP_Y)]
    return {"xy": xy, "box": [BOX_W, BOX_H], "width": width * (BOX_W + GAP_X),
            "height": max(depth, 1) * (BOX_H + GAP_Y)}


def build_document(perf: dict, graph, *, layer_reports: list[dict] | None = None, host_ops=(), regions=None,
                   compare: dict | None = None, fps: float | None = None) -> dict:
    """The page's data. ``perf`` is the `tidlc perf --json` document; a partitioned model also
    gives each subgraph's whole-model report (``layer_reports``, in region order)."""
    nodes, edges = graph_structure(graph, host_ops, regions)
    by_name: dict[str, list] = {}
    if layer_reports is None:
        for k, lay in enumerate(perf.get("layers", [])):
            by_name.setdefault(lay["name"], [None, k])
    else:
        for r, rep in enumerate(layer_reports):
            for k, lay in enumerate(rep.get("layers", [])):
                by_name.setdefault(lay["name"], [r, k])
    host_by_name = {h["name"]: h for h in perf.get("host_ops", [])}
    for node in nodes:  # a graph input, or a host op, has no C7x layer of its own (the data_convert layer
        # of a graph or subgraph input may share its name)
        node["layer"] = None if node["op"] == "input" or node["host"] else by_name.get(node["name"])
        if node["name"] in host_by_name:
            node["host_index"] = list(host_by_name).index(node["name"])
    doc_perf = dict(perf)
    if layer_reports is not None:
        doc_perf["subgraph_reports"] = layer_reports
    return {"schema": SCHEMA, "fps_budget": fps, "perf": doc_perf, "compare": compare,
            "graph": {"nodes": nodes, "edges": edges, "layout": layout(len(nodes), edges)}}


def _finite(v):
    """NaN and infinities (an attribute, an SNR of an exact layer) as null: the page's JSON is strict."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _asset(name: str) -> str:
    return resources.files("tidlc.report_assets").joinpath(name).read_text(encoding="utf-8")


def render_html(doc: dict, title: str = "tidlc report") -> str:
    """One self-contained page: inline style, inline script, the data once as JSON."""
    data = json.dumps(_finite(doc), separators=(",", ":"), allow_nan=False, default=str)
    data = data.replace("</", "<\\/")  # never closes the script element
    t = html.escape(title)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title>"
            f"<link rel=\"icon\" href=\"data:,\"><style>{_asset('report.css')}</style></head><body>"
            f"<header><h1>{t}</h1><nav><a href=\"#summary\">Summary</a> <a href=\"#graph-view\">Graph</a> "
            "<a href=\"#table-view\">Layers</a></nav></header>"
            "<section id=\"summary\"></section>"
            "<section id=\"graph-view\"><div class=\"toolbar\"><label>Colour by <select id=\"measure\"></select>"
            "</label> <button id=\"fit\" type=\"button\">Fit</button> <span id=\"legend\"></span></div>"
            "<div class=\"graph-wrap\"><svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\"></svg>"
            "<aside id=\"panel\" hidden></aside></div></section>"
            "<section id=\"table-view\"><h2>Layers</h2><input id=\"filter\" type=\"search\" "
            "placeholder=\"filter layers (name, op, unit...)\"><table id=\"layers\"><thead></thead><tbody></tbody>"
            "</table></section>"
            f"<script type=\"application/json\" id=\"report-data\">{data}</script>"
            f"<script>{_asset('report.js')}</script></body></html>\n")
