"""``tidlc run OUTDIR``: run a compiled model from its net.bin + io.bin only (docs/run.md).

The compiled model is named by a folder (``net.bin``, or its one net under a
TIDL-style name), a net file, or the TIDL import config that wrote it.
"""
from __future__ import annotations

import contextlib
import io
import os
import statistics
import time

import numpy as np

from tidlc.diagnostics import TidlcError, warn


def _backend(target: str = "tidl", plugins=None):
    from tidlc.compiler import backend_for
    return backend_for(target or "tidl", plugins)


def compiled_paths(path: str, target: str = "tidl", plugins=None) -> tuple[str, str | None] | None:
    """(net file, io file or None: found beside it) of a compiled model, or None if ``path`` is not one."""
    from tidlc.import_config import load_import_config, looks_like_import_config
    if looks_like_import_config(path):
        config = load_import_config(path, quiet=True)
        out = config.compile_options().target
        net = os.path.join(out.outdir, out.net_name)
        if not os.path.lexists(net):
            raise TidlcError(f"the import config's outputNetFile {net} does not exist: not compiled yet", path,
                             hint=f"tidlc compile {path}", code="file")
        return (net, os.path.join(out.outdir, out.io_name))
    find = getattr(_backend(target, plugins), "find_artifact", None)
    if find is None:  # a backend with the contract only: not a net.bin-style artifact
        backend = _backend(target, plugins)
        if backend.recognizes(path):
            raise TidlcError(f"tidlc run/perf of a compiled '{backend.name}' model is not supported yet", path,
                             hint="use the Python API: backend.load(location).run(feeds)", code="option")
        return None
    net = find(path)
    return (net, None) if net else None


def is_compiled_location(path: str, target: str = "tidl", plugins=None) -> bool:
    return compiled_paths(path, target, plugins) is not None


def read_model(path: str, target: str = "tidl", plugins=None):
    """The CompiledModel at ``path`` (a folder, a net file or an import config)."""
    net, io = compiled_paths(path, target, plugins) or (path, None)
    return _backend(target, plugins).read(net, io)


def compiled_ir(path: str) -> str | None:
    """The IR text of the graph a compiled model holds (`tidlc ir OUTDIR|net.bin`), or None when
    ``path`` is not a compiled model (a model file: imported as usual)."""
    from tidlc.ir.printer import print_graph
    if _backend().is_partitioned(path):
        return _partitioned_ir(path)
    if not os.path.isdir(path) and not _backend().is_artifact_file(path):
        return None  # a model file, also when it is called *.bin (a renamed frozen graph)
    if not is_compiled_location(path):
        return None
    return print_graph(read_model(path).graph)[0]


def _partitioned_ir(path: str) -> str:
    """A partitioned model's IR: its run order as comments, each subgraph's fixed-point graph, then
    the float graph (model.tir) its host ops run from."""
    from tidlc.ir.printer import print_graph
    executable = _backend().load(path)
    m = executable.manifest
    manifest = os.path.relpath(os.path.join(executable.folder, "model.tdp"))
    head = f"// partitioned model ({manifest}): {len(m['subgraphs'])} subgraph(s), {len(m['host_ops'])} host op(s)"
    lines = [head + "; run order:"]
    for kind, what in m["schedule"]:
        if kind == "subgraph":
            sub = m["subgraphs"][what]
            lines.append(f"//   {sub['dir']}: {len(sub['ops'])} op(s), {', '.join(sub['inputs'])} -> "
                         f"{', '.join(sub['outputs'])}")
        else:
            lines.append(f"//   host: {what}")
    parts = ["\n".join(lines) + "\n"]
    for sub, model, _ in executable.subgraphs:
        parts.append(f"\n// {sub['dir']}/net.bin\n" + print_graph(model.graph)[0])
    parts.append(f"\n// {m['ir']}: the float graph the host ops run from\n" + print_graph(executable.graph)[0])
    return "".join(parts)


def split_input_spec(spec: str, names: list[str], file_hint: str) -> tuple[str, str]:
    """``--input NAME=FILE`` (or just ``FILE`` for a one-input model, also when FILE holds a ``=``)
    -> (name, path). NAME may carry a TensorFlow output index (``input:0`` for ``input``, and
    the reverse); a name that matches no input is an error naming the nearest."""
    from tidlc.names import resolve_or_error, resolve_tensor_name
    name, sep, path = spec.partition("=")
    if not sep or (os.path.exists(spec) and resolve_tensor_name(name, names) is None):
        name, path = "", spec
    if not name:
        if len(names) != 1:
            raise TidlcError(f"--input {spec}: the model has {len(names)} inputs, name one",
                             hint=f"--input NAME={file_hint} with NAME in {', '.join(names)}")
        return names[0], path
    return resolve_or_error(name, names, "input", "--input"), path


def _feeds(specs, model, random_seed) -> tuple[dict, dict]:
    """(every input's feed, the feeds ``--input`` gave): the others are seeded uniform [0, 1)."""
    from tidlc.fileio import load_array
    from tidlc.preprocess import IMAGE_SUFFIXES, Preprocess
    entries = {e["name"]: e for e in model.io["inputs"]}
    names = list(entries)
    feeds = {}
    for spec in specs:
        name, path = split_input_spec(spec, names, "FILE")
        entry = entries[name]
        if path.lower().endswith(IMAGE_SUFFIXES):  # io.bin's pre-processing, as TIDL applies it
            feeds[name] = _image_feed(path, entry, Preprocess(**entry["preprocess"]))
        else:
            feeds[name] = load_array(path)
    given = dict(feeds)
    if random_seed is not None:
        rng = np.random.default_rng(random_seed)
        for name, entry in entries.items():
            if name not in feeds:
                feeds[name] = rng.random(entry["dims"], dtype=np.float32)
    return feeds, given


def _image_feed(path: str, entry: dict, pre) -> np.ndarray:
    """An image through an input's pre-processing (io.bin's checks leave the shape to here)."""
    from tidlc.preprocess import read_image
    dims, layout = entry["dims"], entry["layout"]
    if len(dims) != 4 or 0 in dims:
        raise TidlcError(f"--input {path}: images need a 4-D input of non-zero size, '{entry['name']}' is {dims}",
                         hint="pass a pre-processed .npy tensor instead", code="input")
    if dims[0] > 1:
        from tidlc.shapes import shape_hint
        raise TidlcError(f"--input {path}: one image, but the input '{entry['name']}' {list(dims)} takes a batch of "
                         f"{dims[0]}", hint=f"pass a .npy of shape {tuple(dims)}, or compile with "
                         f"{shape_hint(entry['name'], (1, *dims[1:]))} (one frame per inference)", code="input")
    channels = dims[3] if layout == "NHWC" else dims[1]
    return pre.apply(read_image(path, channels), dims, layout)


class _Partitioned:
    """A partitioned model (model.tdp) as a compiled model to run: ``graph`` (model.tir, the float
    graph and its attributes: the post-processing), ``io`` (its inputs, with the pre-processing of
    the compile) and ``fixed_graphs`` (the subgraphs, whose inputs have calibrated ranges)."""

    def __init__(self, executable):
        self.graph = executable.graph
        self.io = {"inputs": executable.input_entries()}
        self.fixed_graphs = executable.fixed_graphs()


def _check_ranges(model, feeds: dict) -> None:
    """A ``range`` warning when given inputs do not fit what the model was calibrated for."""
    from tidlc.metrics import InputRangeCheck
    graphs = getattr(model, "fixed_graphs", None) or [getattr(model, "graph", None)]
    for graph in graphs:
        if feeds and hasattr(graph, "users") and graph.attrs.get("quantized"):
            check = InputRangeCheck(graph)
            check.add(feeds)
            if check.warn():
                return


def run_compiled(args, target: str = "tidl", plugins=None) -> int:
    if getattr(args, "labels", None):  # labels are scored by the classifier post-processing only
        if getattr(args, "post", None) not in (None, "classify"):
            raise TidlcError(f"--labels scores classifications; it does not go with --post {args.post}",
                             hint="drop --labels, or use --post classify", code="option")
        args.post = "classify"
    backend = _backend(target, plugins)
    partitioned = getattr(backend, "is_partitioned", None)
    executor = None
    if partitioned is not None and partitioned(args.model):  # model.tdp: subgraphs + host ops (docs/partition.md)
        if args.raw:
            raise TidlcError("--raw: a partitioned model's subgraphs hand their outputs to the host in float",
                             args.model, hint="drop --raw; --trace DIR writes every layer's output", code="option")
        executor = backend.load(args.model, kernels=args.kernels, threads=args.threads)
        model = _Partitioned(executor)
    else:
        model = read_model(args.model, target, plugins)
    stored = model.graph.attrs.get("post_process")  # TIDL postProcType, kept in net.bin by the compiler
    post = getattr(args, "post", None) or stored
    if post == "classify" and getattr(args, "labels", None) and not args.input:
        from tidlc.postprocess import read_labels
        args.input = [read_labels(args.labels)[0][0]]
    feeds, given = _feeds(args.input, model, args.random_input)
    executor = executor or backend.load(model, kernels=args.kernels, threads=args.threads)
    observer = None
    if args.trace:
        trace: dict[str, np.ndarray] = {}

        def observer(op, results):  # TIDL's layer trace: every layer's output, in order
            for k, r in enumerate(results):
                trace[f"{len(trace):04d}_{op.name or op.kind}" + (f"_{k}" if k else "")] = r
    repeat = max(1, args.repeat or 1)
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        outputs = executor.run(feeds, observer=observer if i == 0 else None, raw=args.raw)
        times.append(time.perf_counter() - start)
        if i == 0:  # the feeds fit the model (the run checked their shapes): do they fit its ranges?
            _check_ranges(model, given)
    if not getattr(args, "json", False):
        return _report(args, post, model, executor, outputs, times, trace if args.trace else None)
    from tidlc.cli_options import outputs_summary, print_json
    with contextlib.redirect_stdout(io.StringIO()) as text:  # the text report's lines go into "log"
        _report(args, post, model, executor, outputs, times, trace if args.trace else None)
    print_json({"schema": "tidlc.run/1", "model": args.model, "ms": round(statistics.median(times) * 1e3, 3),
                "repeat": repeat, "kernels": args.kernels, "outputs": outputs_summary(outputs),
                "wrote": args.output, "log": text.getvalue().splitlines()})
    return 0


def _report(args, post, model, executor, outputs, times, trace) -> int:
    """The text report of a run: outputs, time, post-processing, the files written."""
    from tidlc.fileio import save_npz
    repeat = len(times)
    for name, arr in outputs.items():
        flat = np.asarray(arr).reshape(-1)
        summary = f"min {flat.min():.6g} max {flat.max():.6g}" if flat.size and arr.dtype.kind in "fiu" else ""
        print(f"{name}: {arr.dtype} {list(arr.shape)} {summary}")
    median = statistics.median(times)
    if repeat > 1:
        print(f"median {median * 1e3:.2f} ms per frame over {repeat} runs ({args.kernels} kernels)")
    else:
        print(f"ran in {median * 1e3:.1f} ms ({args.kernels} kernels)")
    if getattr(args, "post", None):
        _post_process(post, args, model, executor, outputs)
    elif post:  # stored in the net: a model whose outputs do not fit still runs
        try:
            _post_process(post, args, model, executor, outputs)
        except TidlcError as exc:
            warn(f"post-processing '{post}' (postProcType kept in the net) skipped: {exc.message}", code="ignored")
    if args.trace:
        path = os.path.join(args.trace, "trace.npz")
        save_npz(path, trace)
        print(f"  wrote {path} ({len(trace)} layer outputs)")
    if args.output:
        save_npz(args.output, outputs)
        print(f"  wrote {args.output}")
    return 0


def _plugins_of(args):
    """The installed plugins (post-processors of plugins included)."""
    from tidlc.plugin_manager import default_plugins
    return default_plugins()


def _post_process(post: str, args, model, executor, outputs) -> None:
    """TIDL's postProcType on the outputs: top-5 classes (and accuracy over --labels), boxes or a colour
    map. ``post`` is a task (classify, detect, segment) or a post-processor's name (tidlc.decoders)."""
    from tidlc.decoders import task_of
    task = task_of(post, _plugins_of(args))  # a task, or a decoder's name with options: yolov5{iou=0.5}
    if task == "classify":
        from tidlc.postprocess import classify_accuracy, read_labels, top_k
        print("top-5 classes: " + " ".join(map(str, top_k(outputs))))
        if getattr(args, "labels", None):
            (name,) = [e["name"] for e in model.io["inputs"]][:1]

            def run_image(image):
                return executor.run(_feeds([f"{name}={image}"], model, None)[0])
            top1, top5 = classify_accuracy(run_image, read_labels(args.labels))
            print(f"accuracy over {args.labels}: top-1 {top1 * 100:.2f}%, top-5 {top5 * 100:.2f}%")
    elif task == "segment":
        from tidlc.postprocess import segment_png
        images = [spec.partition("=")[2] or spec for spec in args.input
                  if spec.lower().endswith((".png", ".jpg", ".jpeg", ".bmp"))]
        path = args.post_output or "segment.png"
        segment_png(outputs, images[0] if images else None, path)
        print(f"  wrote {path}")
    elif task == "detect":
        from tidlc.postprocess import detect_png
        images = [spec.partition("=")[2] or spec for spec in args.input
                  if spec.lower().endswith((".png", ".jpg", ".jpeg", ".bmp"))]
        dims = model.io["inputs"][0]["dims"]
        size = (dims[2], dims[1]) if model.io["inputs"][0]["layout"] == "NHWC" else (dims[3], dims[2])
        path = args.post_output or "detect.png"
        from tidlc.decoders import pick
        options = {"threshold": args.threshold, "input_size": size}
        decoder = pick(post, outputs, options, _plugins_of(args))
        boxes = decoder.decode(outputs, options)
        for _, label, score, x0, y0, x1, y1 in boxes[:20]:
            print(f"  box class {int(label)} score {score:.3f}: ({x0:.3f}, {y0:.3f}) - ({x1:.3f}, {y1:.3f})")
        if len(boxes) > 20:
            print(f"  ... and {len(boxes) - 20} more (all of them in the PNG)")
        count = detect_png(outputs, images[0] if images else None, size, path, args.threshold, boxes)
        print(f"  wrote {path} ({count} boxes with score >= {args.threshold})")
