"""Function calls in a frozen GraphDef, inlined before import.

A frozen graph can still call functions of its ``library``: Keras 3 runs a
grouped convolution (``Conv2D(groups=C)``: ConvNeXt's depthwise 7x7, RegNet,
ResNeXt) as an XLA-compiled function, and freezing keeps each as a
``StatefulPartitionedCall`` node whose ``f`` attribute names a ``FunctionDef``.
:func:`inline_calls` replaces every ``PartitionedCall`` / ``StatefulPartitionedCall``
by the function's body, as TensorFlow's own grappler does:

* the body's nodes are renamed ``<call node>/<body node>``; an argument
  reference becomes the call's operand, a body reference ``node:arg:K``
  (FunctionDef naming: the op's output argument and the index in it) the
  node's flat output ``node:K`` (offset by the earlier output arguments of the
  few ops with more than one, such as ``FusedBatchNormV3``);
* readers of the call's output ``K`` read the body tensor that the function
  returns for its ``K``-th output argument;
* calls inside a body are inlined in turn; a function that calls itself, or
  a call of a function the library lacks, is an error naming the node.

Control edges (``^name``) are kept renamed, or dropped when they named an
argument; the importer ignores them anyway.
"""
from __future__ import annotations

from typing import Any

from tidlc.diagnostics import Loc, TidlcError

CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
MAX_DEPTH = 32

# ops with more than one output argument: their names in order (each a single tensor). Every other
# op has one output argument (possibly a list: Split's 'output'), so 'node:arg:K' is output K.
_OUTPUT_ARGS: dict[str, tuple[str, ...]] = {
    **{op: ("y", "batch_mean", "batch_variance", "reserve_space_1", "reserve_space_2", "reserve_space_3")
       for op in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")},
    "TopKV2": ("values", "indices"), "Unique": ("y", "idx"), "Switch": ("output_false", "output_true"),
    "Merge": ("output", "value_index"),
}


def has_calls(graphdef) -> bool:
    return any(node.op in CALL_OPS for node in graphdef.node)


def inline_calls(graphdef, path: str = "") -> list[Any]:
    """The graph's nodes with every function call replaced by the function's body (a new list;
    the GraphDef is not modified). Readers of a call's outputs are rewired to the body's results."""
    functions = {f.signature.name: f for f in graphdef.library.function}
    nodes: list[Any] = []
    aliases: dict[str, str] = {}  # 'call:K' (or 'call' for K = 0) -> the body tensor it returns
    work = [(node, 0, ()) for node in reversed(graphdef.node)]
    while work:
        node, depth, stack = work.pop()
        if node.op not in CALL_OPS:
            nodes.append(node)
            continue
        name = node.attr["f"].func.name if "f" in node.attr else ""
        fdef = functions.get(name)
        loc = Loc(node.name, path)
        if fdef is None:
            raise TidlcError(f"node '{node.name}' ({node.op}) calls function '{name}', which the graph's "
                             "library does not define", loc, code="model",
                             hint="freeze the graph with its function library (convert_variables_to_constants_v2)")
        if name in stack or depth >= MAX_DEPTH:
            raise TidlcError(f"node '{node.name}' ({node.op}) calls function '{name}' recursively", loc,
                             code="model")
        body, returns = _expand(node, fdef, loc)
        for k, ref in enumerate(returns):
            aliases[node.name if k == 0 else f"{node.name}:{k}"] = ref
        work.extend((inner, depth + 1, (*stack, name)) for inner in reversed(body))
    return [_rewired(node, aliases) for node in nodes] if aliases else nodes


def _expand(call, fdef, loc: Loc) -> tuple[list[Any], list[str]]:
    """The body's nodes, renamed under the call and reading the call's operands, and the tensor
    each output argument returns (in the call's names)."""
    sig = fdef.signature
    operands = [ref for ref in call.input if not ref.startswith("^")]
    if len(operands) != len(sig.input_arg):
        raise TidlcError(f"node '{call.name}' passes {len(operands)} operands to function '{sig.name}', "
                         f"which takes {len(sig.input_arg)}", loc, code="model")
    args = {arg.name: ref for arg, ref in zip(sig.input_arg, operands)}
    prefix = call.name + "/"
    ops = {node.name: node.op for node in fdef.node_def}

    def ref_of(ref: str) -> str | None:
        control = ref.startswith("^")
        ref = ref[1:] if control else ref
        head, _, rest = ref.partition(":")
        if head in args and not rest:  # a bare name is an argument ('node:arg:K' a node's output)
            return None if control else args[head]
        if head not in ops:
            raise TidlcError(f"function '{sig.name}' reads '{ref}', which none of its nodes or arguments "
                             "produces", loc, code="model")
        if control:
            return "^" + prefix + head
        index = 0
        if rest:
            arg, _, k = rest.partition(":")
            index = int(k) if k.isdigit() else 0
            names = _OUTPUT_ARGS.get(ops[head])
            if names is not None:
                if arg not in names:
                    raise TidlcError(f"function '{sig.name}' reads output '{arg}' of '{head}' ({ops[head]}), "
                                     "which that op does not have", loc, code="model")
                index += names.index(arg)
        return prefix + head + (f":{index}" if index else "")

    body = []
    for inner in fdef.node_def:
        node = type(inner)()
        node.CopyFrom(inner)
        node.name = prefix + inner.name
        refs = [ref_of(ref) for ref in inner.input]
        del node.input[:]
        node.input.extend(ref for ref in refs if ref is not None)
        body.append(node)
    returns = []
    for arg in sig.output_arg:
        ref = fdef.ret.get(arg.name)
        if ref is None:
            raise TidlcError(f"function '{sig.name}' returns nothing for its output '{arg.name}'", loc,
                             code="model")
        returns.append(ref_of(ref))
    return body, returns


def _rewired(node, aliases: dict[str, str]):
    """``node`` with references to call outputs replaced by what the calls return (chains of calls
    returning calls' outputs resolved)."""
    def resolve(ref: str) -> str:
        control = ref.startswith("^")
        key = ref.removeprefix("^").removesuffix(":0")
        seen = 0
        while key in aliases and seen <= len(aliases):
            key = aliases[key]
            seen += 1
        return "^" + key.split(":")[0] if control else key

    if not any(ref.removeprefix("^").removesuffix(":0") in aliases for ref in node.input):
        return node
    new = type(node)()
    new.CopyFrom(node)
    del new.input[:]
    new.input.extend(resolve(ref) for ref in node.input)
    return new


__all__ = ["CALL_OPS", "has_calls", "inline_calls"]
