"""Input-shape overrides and whole-graph type re-inference."""
from __future__ import annotations

from collections.abc import Mapping

import attrs

from tidlc.diagnostics import TidlcError
from tidlc.ir.builder import check_result_sizes, infer_types
from tidlc.ir.core import Graph
from tidlc.names import resolve_mapping


def shape_hint(name: str, shape, layout: str | None = None) -> str:
    """``--input-shape NAME=...`` with the dimensions the model knows and a placeholder for each
    dynamic one (N, C, H, W for a 4-D input in its layout; d<i> otherwise)."""
    shape = tuple(shape or ())
    letters = ("N", "H", "W", "C") if layout == "NHWC" else ("N", "C", "H", "W") if len(shape) == 4 else ()
    dims = [str(d) if isinstance(d, int) and d >= 0 else (letters[i] if letters else f"d{i}")
            for i, d in enumerate(shape)]
    return f"--input-shape {name}={','.join(dims) or 'd0,d1,...'}"


def batch_one(shape) -> tuple[int, ...] | None:
    """``shape`` with batch 1 when its batch (axis 0) is its only dynamic dimension (None or
    negative), else None: ``torch.onnx.export(dynamic_axes={0: ...})``, a Keras ``None`` batch.
    TIDL runs one frame per inference (more with numBatches)."""
    if shape is None or len(shape) < 2:
        return None
    dynamic = [i for i, d in enumerate(shape) if d is None or d < 0]
    return (1, *shape[1:]) if dynamic == [0] else None


def warn_batch_one(shapes: Mapping[str, tuple[int, ...]]) -> None:
    """The warning for inputs whose dynamic batch was taken as 1 (their shapes as now given)."""
    from tidlc.diagnostics import warn
    listed = ", ".join(f"{n}={','.join(map(str, s))}" for n, s in shapes.items())
    warn(f"dynamic batch dimension taken as 1 ({listed}): TIDL runs one frame per inference", code="shape",
         hint="--input-shape NAME=N,... for another batch")


def dynamic_input_error(name: str, shape, layout: str | None = None, loc=None) -> TidlcError:
    """The one-line error for an input whose shape is still dynamic where a static one is needed."""
    shown = "?" if shape is None else "[" + ", ".join("?" if d is None or d < 0 else str(d) for d in shape) + "]"
    return TidlcError(f"input '{name}' has a dynamic shape {shown}", loc, code="shape",
                      hint=f"give {shape_hint(name, shape, layout)}")


def apply_input_shapes(graph: Graph, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Set the declared shape of named inputs (``--input-shape``), then re-infer every type."""
    names = graph.input_names()
    # TensorFlow's spelling works too: 'x:0' for input 'x' (and 'x' for 'x:0'); see tidlc/names.py.
    # Of two entries for one input the later wins (compiler.load lists --input-shape after the
    # import config's sizes); the frontends reject a user's own duplicates.
    for name, shape in resolve_mapping(shapes, names, "input", "--input-shape", last_wins=True).items():
        op = graph.find_input(name)
        old = op.results[0].type
        if old.shape is not None and len(old.shape) != len(shape):
            raise TidlcError(f"--input-shape {name}: rank {len(shape)} but the model declares "
                             f"{tuple('?' if d is None else d for d in old.shape)}",
                             hint="give one value per dimension")
        op.results[0].type = old.with_shape(shape)
    reinfer(graph)


def reinfer(graph: Graph) -> bool:
    """Recompute every op's result types from its operands; returns whether any changed."""
    changed = False
    for op in graph.ops:
        if op.kind == "input":
            continue
        types = infer_types(op)
        check_result_sizes(op, types)
        for v, t in zip(op.results, types):
            # keep annotations the inference cannot know (quantization)
            if v.type.quant is not None and t.quant != v.type.quant:
                t = t.with_quant(v.type.quant)  # the declared quantization wins over an operand's
                if v.type.dtype[0] in "iu":  # a fixed-point result keeps its storage type
                    t = t.with_dtype(v.type.dtype)
            if t.layout is None and v.type.layout is not None and t.shape == v.type.shape:
                t = t.with_layout(v.type.layout)
            if t != v.type:
                v.type = t
                changed = True
    return changed


def apply_input_layout(graph: Graph, layout: str) -> bool:
    """Make every 4-D input of another declared layout accept ``layout`` (``--input-layout``).

    The input's type becomes the permuted shape in ``layout``, and a transpose
    back to the model's own layout feeds its former readers; the ``layout``
    pass (-O2) cancels it against the transposes of the NHWC importers.
    Inputs without a layout (not 4-D) are left alone. Returns whether any changed.
    """
    from tidlc.ir.builder import Builder
    perms = {("NHWC", "NCHW"): (0, 3, 1, 2), ("NCHW", "NHWC"): (0, 2, 3, 1)}
    if layout not in ("NCHW", "NHWC"):
        raise TidlcError(f"unknown input layout {layout!r}", hint="use NCHW or NHWC")
    changed = False
    for op in graph.input_ops:
        value = op.results[0]
        t = value.type
        if t.layout is None or t.layout == layout or t.rank != 4:
            continue
        to_new = perms[(t.layout, layout)]
        back = perms[(layout, t.layout)]
        new_type = t.with_shape(None if t.shape is None else [t.shape[p] for p in to_new]).with_layout(layout)
        if t.quant is not None and t.quant.axis is not None:
            new_type = new_type.with_quant(attrs.evolve(t.quant, axis=to_new.index(t.quant.axis % 4)))
        fresh = Builder(Graph()).input(op.attrs["name"], new_type, op.loc)
        transpose = Builder(Graph()).make("transpose", [fresh], {"perm": back}, op.name, op.loc)
        graph.replace_uses(value, transpose.results[0])
        transpose.results[0].name = value.name
        fresh.name = value.name
        i = graph.ops.index(op)
        graph.ops[i:i + 1] = [fresh.producer, transpose]
        changed = True
    if changed:
        reinfer(graph)
    return changed
