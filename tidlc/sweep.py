"""``tidlc sweep CONFIG.toml``: models x a grid of options -> one table (docs/sweep.md).

Each cell (a model with one combination of the grid) is optimised and
quantized through the backend and measured as ``tidlc tune`` measures a
configuration: predicted ms/FPS on the cell's device, SNR of the outputs
against float on the first calibration frame, weight size, and the time the
optimise + quantize step took. A cell that fails is reported with its error
and the sweep goes on. Results are kept in ``OUTDIR/sweep.json`` keyed by
the model's content hash and the cell's options, so a rerun only computes
the cells it has not done.

```toml
models = ["examples/ultraface/ultraface-rfb320.onnx",
          {path = "lenet.prototxt", weights = "lenet.caffemodel", scale = [0.00390625]}]

[options]              # for every cell (option names as in tidlc.config)
calib_frames = 8

[grid]                 # every combination
bits = [8, 16]
calib_method = ["minmax", "histogram"]
opt_level = [2, 3]
device = ["tda4vm", "am68a"]
```
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
from collections.abc import Callable

from tidlc.config import FIELD_GROUP, CompileOptions
from tidlc.diagnostics import TidlcError

SCHEMA = "tidlc.sweep/1"
GRID_KEYS = ("bits", "calib_method", "calib_frames", "opt_level", "device", "quant_style", "percentile",
             "per_channel_depthwise", "mixed_precision_factor")
COLUMNS = ("model", "bits", "calib_method", "opt_level", "device", "ms", "fps", "snr_db", "weight_kb",
           "seconds", "error")


def _toml(path: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from tidlc.fileio import read_bytes
    try:
        return tomllib.loads(read_bytes(path, "sweep config").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TidlcError(f"not a valid TOML file: {exc}", path, code="config") from None


def _option_values(values: dict, where: str, path: str) -> dict:
    out = {}
    for key, value in values.items():
        if key not in FIELD_GROUP:
            import difflib
            close = difflib.get_close_matches(key, list(FIELD_GROUP), n=1)
            raise TidlcError(f"[{where}] {key}: not a tidlc option", path, code="config",
                             hint=f"did you mean '{close[0]}'?" if close else "option names as in docs/sweep.md")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def load_config(path: str) -> tuple[list[dict], dict, list[dict]]:
    """(models as option dicts with 'path', common options, grid cells as option dicts)."""
    doc = _toml(path)
    base = os.path.dirname(os.path.abspath(path))
    unknown = set(doc) - {"models", "options", "grid"}
    if unknown:
        raise TidlcError(f"unknown table(s) {', '.join(sorted(unknown))}", path, code="config",
                         hint="a sweep config has models, [options] and [grid]")
    models = []
    for entry in doc.get("models") or []:
        entry = {"path": entry} if isinstance(entry, str) else dict(entry)
        if "path" not in entry:
            raise TidlcError("a model entry has no path", path, code="config", hint='{path = "model.onnx"}')
        model_path = entry.pop("path")
        for key in ("weights", "calib"):
            if isinstance(entry.get(key), str) and not os.path.isabs(entry[key]):
                entry[key] = os.path.join(base, entry[key])
        models.append({"path": model_path if os.path.isabs(model_path) else os.path.join(base, model_path),
                       **_option_values(entry, "models", path)})
    if not models:
        raise TidlcError("no models", path, code="config", hint='models = ["model.onnx", ...]')
    common = _option_values(doc.get("options") or {}, "options", path)
    grid = doc.get("grid") or {}
    bad = [k for k in grid if k not in GRID_KEYS]
    if bad:
        raise TidlcError(f"[grid] {', '.join(bad)}: not a grid option", path, code="config",
                         hint=f"grid options: {', '.join(GRID_KEYS)}")
    keys = sorted(grid)
    cells = [dict(zip(keys, combo)) for combo in itertools.product(*(list(grid[k]) for k in keys))] or [{}]
    return models, common, cells


def _model_hash(model: dict) -> str:
    h = hashlib.sha256()
    for key in ("path", "weights"):
        if model.get(key) and os.path.isfile(model[key]):
            with open(model[key], "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def cell_key(model: dict, values: dict) -> str:
    canon = json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(values.items())},
                       sort_keys=True)
    return f"{_model_hash(model)}:{hashlib.sha256(canon.encode()).hexdigest()[:16]}"


def sweep(config: str, outdir: str, options: CompileOptions, plugins=None,
          progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Run every cell not in ``OUTDIR/sweep.json`` yet; returns the whole document. With the
    options' ``--workers N`` / ``--ray`` the cells run side by side (tidlc.parallel; each cell's
    own calibration in one process); the rows and their order are those of a serial run."""
    from tidlc.compiler import backend_for, plugins_for
    from tidlc.parallel import Executor
    from tidlc.tune import check_backend
    models, common, cells = load_config(config)
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)
    check_backend(backend)
    executor = Executor.from_options(options).connect()
    cell_options = options.replace(workers=1, ray=None)  # a cell is one job: no workers of its own
    store = os.path.join(outdir, "sweep.json")
    done = {}
    if os.path.isfile(store):
        with open(store) as fh:
            previous = json.load(fh)
        if previous.get("schema") == SCHEMA:
            # a failed cell runs again (what failed may be fixed outside its key: a calib file made)
            done = {r["key"]: r for r in previous.get("rows", []) if not r.get("error")}
    rows, todo, total = [], [], len(models) * len(cells)
    for model in models:
        graphs: dict = {}  # the float graph per -O level: the other grid options do not change it
        base = {k: v for k, v in model.items() if k != "path"}
        for cell in cells:
            values = {**common, **base, **cell}
            key = cell_key(model, values)
            label = f"{os.path.basename(model['path'])} {json.dumps(cell, sort_keys=True)}"
            if key in done:
                if progress and not executor.parallel:
                    progress(len(rows) + 1, total, label)
                rows.append(done[key])
                continue
            row = {"key": key, "model": model["path"], **{k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in cell.items()}}
            # forked workers and this process share the backend, plugins and float-graph cache;
            # a Ray task (or a spawned worker) makes its own
            shared = (backend, plugins, graphs) if executor.shares_memory else None
            job = (model["path"], cell_options, values, shared)
            todo.append((len(rows), label, job))
            rows.append(row)
            if not executor.parallel:
                if progress:
                    progress(len(rows), total, label)
                row.update(_measure_cell(job))
    if executor.parallel and todo:
        finished = []

        def report(i: int, _result) -> None:
            finished.append(i)
            if progress:
                progress(len(finished), len(todo), todo[i][1])

        for (at, _, _), measured in zip(todo, executor.map(_measure_cell, [job for _, _, job in todo], report)):
            rows[at].update(measured)
    doc = {"schema": SCHEMA, "config": os.path.abspath(config), "computed": len(todo),
           "reused": len(rows) - len(todo), "rows": rows}
    _write(outdir, doc)
    return doc


def _measure_cell(job: tuple) -> dict:
    """One cell's measurements, or its error (a failing cell does not stop the sweep)."""
    from tidlc.tune import measure
    model, options, values, shared = job
    failed = {"ms": None, "fps": None, "snr_db": None, "weight_kb": None, "seconds": None}
    try:
        opts = options.replace(**{"emit": "bin", **values})
        if shared is None:
            from tidlc.compiler import backend_for, plugins_for
            plugins = plugins_for(opts)
            backend, graphs = backend_for(opts, plugins), {}
        else:
            backend, plugins, graphs = shared
        m = measure(model, opts, backend, plugins, graphs)
        return {"ms": round(m["ms"], 4), "fps": round(1000.0 / m["ms"], 2) if m["ms"] else None,
                "snr_db": round(m["snr_db"], 2), "weight_kb": round(m["weight_bytes"] / 1024, 1),
                "seconds": round(m["seconds"], 3), "error": None}
    except TidlcError as exc:
        return {**failed, "error": str(exc).strip()}
    except TypeError as exc:  # an option name the grid/options gave that tidlc does not have
        return {**failed, "error": str(exc)}


def to_csv(doc: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in doc["rows"]:
        writer.writerow([os.path.basename(r["model"]) if c == "model" else r.get(c, "") for c in COLUMNS])
    return buf.getvalue()


def _chart(doc: dict) -> bytes | None:
    """predicted ms against SNR, one marker per cell (None without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for model in sorted({r["model"] for r in doc["rows"]}):
        pts = [(r["ms"], r["snr_db"]) for r in doc["rows"] if r["model"] == model and r.get("ms") is not None]
        if pts:
            ax.scatter(*zip(*pts), label=os.path.basename(model))
    ax.set_xlabel("predicted ms / frame")
    ax.set_ylabel("SNR vs float (dB)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _write(outdir: str, doc: dict) -> None:
    from tidlc.fileio import commit_files
    files = {os.path.join(outdir, "sweep.json"): (json.dumps(doc, indent=2) + "\n").encode(),
             os.path.join(outdir, "sweep.csv"): to_csv(doc).encode()}
    chart = _chart(doc)
    if chart is not None:
        files[os.path.join(outdir, "sweep.png")] = chart
    commit_files(files)


def render_text(doc: dict) -> str:
    head = (f"{'model':<28} {'bits':>4} {'calib':<10} {'-O':>2} {'device':<8} {'ms':>8} {'fps':>8} "
            f"{'SNR dB':>7} {'KB':>8} {'s':>6}")
    lines = [f"{doc['config']}: {len(doc['rows'])} cells ({doc['computed']} computed, {doc['reused']} reused)",
             "", head, "-" * len(head)]
    for r in doc["rows"]:
        name = os.path.basename(r["model"])[:28]
        cfg = (f"{name:<28} {r.get('bits', ''):>4} {r.get('calib_method', ''):<10} {r.get('opt_level', ''):>2} "
               f"{r.get('device', ''):<8}")
        if r.get("error"):
            text = r["error"]  # a TidlcError's own line says "error:" already (after its location)
            lines.append(f"{cfg} {text if 'error: ' in text.split(chr(10))[0] else 'error: ' + text}")
        else:
            lines.append(f"{cfg} {r['ms']:8.3f} {r['fps']:8.1f} {r['snr_db']:7.1f} {r['weight_kb']:8.1f} "
                         f"{r['seconds']:6.2f}")
    return "\n".join(lines) + "\n"
