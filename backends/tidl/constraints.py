"""TIDL's documented layer constraints, checked one op at a time (``TidlBackend.supports``).

Every rule here comes from the TIDL facts sheet (``shared/reference/tidl-facts.md``,
section 2 "Layers, op mapping and constraints": TI's allow-listing constraints
``tidl_constraint_conv.h`` and edgeai-tidl-tools ``docs/supported_ops_rts_versions.md``);
the comment on each table says which line. Where the facts are silent no
constraint is made up: the op falls through to the layer tables.

:func:`check` returns a :class:`Verdict` when a documented constraint decides the
op -- ``host`` (TIDL cannot run it as it is: the ARM cores would) or ``penalty``
(TIDL's import rewrites it into slower layers) -- and ``None`` otherwise.
:func:`annotate` adds the notes of an accelerated op: MMA padding waste (K and
output channels padded to the 64-wide MMA panel, output width padded to the
row granularity), resize factors split into several layers, and the like.
:func:`alignment` gives the padding waste as data.
"""
from __future__ import annotations

import functools
import math

import attrs

from tidlc.backend import Verdict
from tidlc.partition import RUN_TIME_SIZE

# --------------------------------------------------------------------------- facts
# tidl-facts §2 "Conv: ... validated (k,s): 1x1 s1/s2, 2x2 s1/s2, 3x3 s1/s2/s3, 5x5 s1/s2,
# 7x7 s1/s2, 1x3/3x1/1x5/5x1/1x7/7x1 s1, 11x11 s4 (stride 4 only with 11x11)". (kH, kW) -> strides
CONV_VALIDATED = {
    (1, 1): (1, 2), (2, 2): (1, 2), (3, 3): (1, 2, 3), (5, 5): (1, 2), (7, 7): (1, 2),
    (1, 3): (1,), (3, 1): (1,), (1, 5): (1,), (5, 1): (1,), (1, 7): (1,), (7, 1): (1,),
    (11, 11): (4,),
}
# tidl-facts §2 "depthwise (groups==Cin==Cout) only {1x1s1, 1x3s1, 3x3s1, 3x3s2, 5x5s1, 5x5s2,
# 7x7s1, 7x7s2}" ("1x3" read as kH x kW = 1 x 3)
DEPTHWISE_VALIDATED = {(1, 1): (1,), (1, 3): (1,), (3, 3): (1, 2), (5, 5): (1, 2), (7, 7): (1, 2)}
# tidl-facts §2 "Pooling: validated 1x1, 2x2, 3x3 with stride 1/2 (4x4 not optimal); no dilation"
POOL_VALIDATED = (1, 2, 3)
POOL_STRIDES = (1, 2)
POOL_NOT_OPTIMAL = (4,)
# tidl-facts §2 "GlobalAveragePool plane H*W <= 1024 (else convert to MatMul)"
GLOBAL_POOL_MAX_PLANE = 1024
# tidl-facts §2 "Deconv: only 2x2/4x4 (8x8 in 8.x; 3x3 in 11.x docs) kernels with stride 2,
# group=1, output = 2x input; prefer Resize"
DECONV_KERNELS = (2, 4)
DECONV_KERNELS_SOME_VERSIONS = {8: "TIDL 8.x only", 3: "listed only in the TIDL 11.x docs"}
DECONV_STRIDE = 2
# tidl-facts §2 "Resize: nearest/linear only, H and W only, scale >= 1, equal W/H scales,
# power-of-2 factors only (>4 split into 4x then 2x); coordinate modes half_pixel/pytorch_half_pixel
# (round_prefer_ceil) or asymmetric (floor, nearest only)"
RESIZE_MODES = ("nearest", "linear")
RESIZE_MAX_FACTOR_ONE_LAYER = 4
RESIZE_NEAREST_COORDS = {("asymmetric", "floor"), ("half_pixel", "round_prefer_ceil"),
                         ("pytorch_half_pixel", "round_prefer_ceil")}
RESIZE_LINEAR_COORDS = ("half_pixel", "pytorch_half_pixel")
# tidl-facts §2 "Rank <= 6 (N, D1, D2, C, H, W)"
MAX_RANK = 6
# tidl-facts §2 "Limits (10.x header): ... in bufs/layer 24, out bufs 16"
MAX_IN_BUFS = 24
MAX_OUT_BUFS = 16
# tidl-facts §2 "EltWise: 2 inputs, broadcast except batch"
ELTWISE = ("add", "sub", "mul", "max", "min", "div", "pow")
# tidl-facts §2 "MMA panel = 64 (C7100/TDA4VM; 32 on C7504 AM62A/AM67A)"; the device's
# mma.panel_bytes overrides it
MMA_PANEL = 64

_MAC_KINDS = ("conv2d", "deconv2d", "dense", "matmul")


# --------------------------------------------------------------------------- devices
@functools.lru_cache(maxsize=16)
def _load_named_device(name: str):
    from tidlc.backends.tidl.perf.device import load_device

    from tidlc.diagnostics import TidlcError
    try:
        return load_device(name)
    except TidlcError:  # e.g. a plugin's device (its plugins are not at hand): TDA4VM's granularity
        return load_device("tda4vm")


def resolve_device(device=None):
    """A perf-model Device from None (``tda4vm``), a device name / TOML path, or a Device
    (a name only a plugin knows falls back to ``tda4vm``: the alignment granularity is all
    the checks read from it)."""
    if device is None:
        device = "tda4vm"
    if isinstance(device, str):
        return _load_named_device(device)
    return device


def is_tda4vm(device) -> bool:
    return device is None or "tda4vm" in str(getattr(device, "name", device)).lower()


# --------------------------------------------------------------------------- helpers
def _shape(value) -> tuple | None:
    t = value.type
    if t is None or t.shape is None or not t.is_static:
        return None
    return tuple(int(d) for d in t.shape)


def _rank(value) -> int | None:
    t = value.type
    return None if t is None or t.shape is None else len(t.shape)


def _is_constant(value, depth: int = 8) -> bool:
    """Computed from constants only (a weight, possibly behind a cast, dequantize or reshape).
    Weight pre-processing chains are short: past ``depth`` ops a value counts as variable."""
    op = value.producer
    if op is None or op.kind == "input":
        return False
    if op.kind == "const" or op.kind == "shape" and op.operands and _shape(op.operands[0]) is not None:
        return True  # (the shape of a static tensor folds to a constant)
    if depth <= 0 or not op.operands:
        return False
    return all(_is_constant(v, depth - 1) for v in op.operands)


def _pct(part: float) -> str:
    pct = 100.0 * part
    return "<1%" if 0 < pct < 1 else f"{pct:.0f}%"


def _signedness(value) -> bool | None:
    t = value.type
    if t is None:
        return None
    if t.quant is not None:
        return bool(t.quant.signed)
    if t.dtype in ("i8", "i16", "i32"):
        return True
    if t.dtype in ("u8", "u16", "u32"):
        return False
    return None


def _hw_axes(value) -> tuple[int, int] | None:
    rank = _rank(value)
    if rank is None or rank < 2:
        return None
    if value.type.layout == "NHWC" and rank == 4:
        return 1, 2
    return rank - 2, rank - 1


def _channel_axis(value) -> int | None:
    rank = _rank(value)
    if rank is None or rank < 3:
        return None
    if value.type.layout == "NHWC" and rank == 4:
        return 3
    return rank - 3


def _kernel_list(table: dict, stride: int) -> str:
    ks = [f"{kh}x{kw}" for (kh, kw), strides in table.items() if stride in strides]
    return ", ".join(ks) if ks else "none"


def _strides_of(table: dict) -> list[int]:
    return sorted({s for strides in table.values() for s in strides})


# --------------------------------------------------------------------------- checks
def check(op, device=None) -> Verdict | None:
    """The verdict TIDL's documented constraints give ``op``, or None when none decides it.

    ``host``: a constraint the op breaks; ``penalty``: TIDL's import rewrites the op into
    slower layers. Accelerated ops get their notes from :func:`annotate`.
    """
    if op.kind == "host":
        op_type = op.attrs.get("op_type") or "an unknown op"
        reason = op.attrs.get("reason")
        if reason:  # a form the frontend does not lower (a 3-D convolution, cubic resizing)
            return Verdict("host", f"'{op_type}' is an opaque op the frontend kept: {reason}",
                           hint=f"change the '{op_type}' to a form tidlc lowers, or leave it to the ARM cores")
        return Verdict("host", f"'{op_type}' is an opaque op the frontend kept: TIDL has no layer for it",
                       hint=f"replace '{op_type}' with ops TIDL supports (docs/ir.md), or leave it to the "
                            "ARM cores (with TI's runtime: OSRT offloads the rest as TIDL subgraphs)")
    verdict = _check_static(op) or _check_dtype(op) or _check_rank(op) or _check_buffers(op)
    if verdict is not None:
        return verdict
    rule = _RULES.get(op.kind)
    return rule(op, device) if rule is not None else None


def _named(v, op) -> str:
    """How a verdict names ``v``, an operand or result of ``op``: by its name, else by its role."""
    return f"'{v.name}'" if v.name else ("an input" if v in op.operands else "the result")


def _check_static(op) -> Verdict | None:
    """A tensor whose size is known only at run time (after NonZero, NonMaxSuppression or a Pad by a
    computed count: an exported YOLO with its NMS): TIDL's layers and buffers have static shapes."""
    for v in op.operands:  # (a result sized by shape arithmetic that folds is not one)
        shape = v.type.shape
        if (shape is None or None in shape) and not _is_constant(v):
            return Verdict("host", f"{_named(v, op)} is {v.type}: {RUN_TIME_SIZE}, and TIDL's layers have static "
                                   "shapes",
                           hint="after data-dependent ops (NonZero, NonMaxSuppression) the ARM cores run the "
                                "rest; export the model without its post-processing to keep it all on "
                                "the accelerator, or give dynamic inputs a size with --input-shape")
    return None


# tensors TIDL has no type for (its buffers hold 8/16/32-bit integers and float32; a bool is a byte)
NO_TIDL_DTYPES = ("i64",)
_INDEX_MOVES = ("reshape", "squeeze", "unsqueeze", "flatten", "transpose", "slice", "concat")
_INDEX_MAKERS = ("argmax", "max_pool_index")  # (indices the IR types i64; the layer writes 8-32 bits)


def _accelerated_indices(v, depth: int = 0) -> bool:
    """Whether ``v`` holds the indices of an accelerated ArgMax or max pool with indices (TIDL
    writes them as 8 to 32-bit integers; the IR types them i64), moved by reshapes, slices or
    concats at most."""
    op = v.producer
    if op is None or depth > 16:
        return False
    if op.kind in _INDEX_MAKERS:
        return (verdict := check(op)) is None or verdict.level != "host"
    return op.kind in _INDEX_MOVES and all(
        _is_constant(u) or _accelerated_indices(u, depth + 1) for u in op.operands)


def _check_dtype(op) -> Verdict | None:
    """A computed int64 tensor (shape arithmetic of run-time sizes, an index after an ArgMax the host
    runs): TIDL's tensors are 8/16/32-bit integers or float32."""
    if op.kind == "const":
        return None
    data = list(op.operands[:1]) if op.kind == "reshape" else list(op.operands)  # (not its target shape)
    for v in (*data, *(() if op.kind in _INDEX_MAKERS else op.results)):
        if v.type.dtype in NO_TIDL_DTYPES and not _is_constant(v) and not _accelerated_indices(v):
            return Verdict("host", f"{_named(v, op)} is {v.type}: TIDL has no {v.type.dtype} tensors (8/16/32-bit "
                                   "integers and float32)",
                           hint="compute it in float32 (or int32) in the model, or leave it to the ARM cores")
    return None


def _check_rank(op) -> Verdict | None:
    for v in (*op.operands, *op.results):
        rank = _rank(v)
        if rank is not None and rank > MAX_RANK:
            return Verdict("host", f"{_named(v, op)} is a rank-{rank} tensor {v.type.shape}: TIDL tensors have at most "
                                   f"{MAX_RANK} dims (N, D1, D2, C, H, W)",
                           hint=f"reshape to at most {MAX_RANK} dims (merge adjacent axes) around "
                                f"this {op.kind}")
    return None


def _check_buffers(op) -> Verdict | None:
    variable = [v for v in op.operands if not _is_constant(v)] if len(op.operands) > MAX_IN_BUFS else ()
    if len(variable) > MAX_IN_BUFS:
        return Verdict("host", f"{op.kind} reads {len(variable)} tensors: a TIDL layer takes at most "
                               f"{MAX_IN_BUFS} input buffers",
                       hint=f"split it into a tree of {op.kind}s of at most {MAX_IN_BUFS} inputs each")
    if len(op.results) > MAX_OUT_BUFS:
        return Verdict("host", f"{op.kind} makes {len(op.results)} tensors: a TIDL layer writes at most "
                               f"{MAX_OUT_BUFS} output buffers",
                       hint=f"split it in two steps of at most {MAX_OUT_BUFS} outputs each")
    return None


def _check_conv(op, device) -> Verdict | None:
    x, w = op.operands[0], op.operands[1]
    if not _is_constant(w):
        return Verdict("host", "conv2d with a computed (non-constant) weight: a TIDL convolution has one "
                               "variable input, its weights are constants",
                       hint="make the weights an initializer/constant (fold the ops that produce them); kernels "
                            "the network predicts (a dynamic head) as 1x1 convs, stride 1, unpadded: -O2 makes "
                            "them a MatMul")
    ws = _shape(w)
    if ws is None:
        return None
    kh, kw = ws[2], ws[3]
    sh, sw = op.attrs["strides"]
    dh, dw = op.attrs["dilations"]
    pt, pl, pb, pr = op.attrs["pads"]
    groups = op.attrs["groups"]
    xs = _shape(x)
    cin = xs[1] if xs is not None else ws[1] * groups
    cout = ws[0]
    depthwise = groups > 1 and groups == cin == cout
    what = f"{'depthwise ' if depthwise else ''}conv {kh}x{kw} stride {sh}" + (f"x{sw}" if sw != sh else "")
    if sh != sw:
        return Verdict("penalty", f"{what}: TIDL's convolution needs strideH == strideW; the import makes it "
                                  "a convolution plus a 1x1 max pool with the strides (the conv computes "
                                  "every position the pool then drops)",
                       hint=f"use equal strides ({sh}x{sh} or {sw}x{sw}) and adapt the layers after it")
    s = sh
    if (dh > 1 or dw > 1) and s > 1:
        return Verdict("host", f"{what} dilated {dh}x{dw}: TIDL supports dilation only on stride-1 convolutions",
                       hint=f"use the dilated conv at stride 1 followed by a 1x1 stride-{s} max pool (the same "
                            "result), or drop the dilation")
    if depthwise:
        if s in DEPTHWISE_VALIDATED.get((kh, kw), ()):
            return _check_conv_pads(op, xs, pl, pr, what)
        if s in _strides_of(DEPTHWISE_VALIDATED):
            hint = (f"with stride {s} use a {_kernel_list(DEPTHWISE_VALIDATED, s)} depthwise kernel; a larger "
                    "window can be built from stacked 3x3 depthwise convs")
        else:
            hint = (f"stride {s} is not supported for depthwise: use stride 1 or 2 (a stride-2 conv followed by a "
                    "1x1 stride-2 max pool makes stride 4)")
        return Verdict("host", f"{what}: TIDL's depthwise convolution supports only 1x1 s1, 1x3 s1, 3x3 s1/s2, "
                               "5x5 s1/s2 and 7x7 s1/s2", hint=hint)
    if s in CONV_VALIDATED.get((kh, kw), ()):
        return _check_conv_pads(op, xs, pl, pr, what)
    if kh == kw == s and s > 1 and not any((pt, pl, pb, pr)) and dh == dw == 1:
        # tidl-facts §2 "NxN stride-N conv -> Transpose + InnerProduct"
        return Verdict("penalty", f"{what} (non-overlapping patches): TIDL's import makes it a Transpose plus an "
                                  "InnerProduct, not a convolution",
                       hint="expect a transpose (data movement) before the MMA; a space_to_depth/reshape into a "
                            "1x1 conv in the model does the same explicitly")
    if s == 4:
        reason = f"{what}: TIDL supports stride 4 only with an 11x11 kernel"
        hint = "use two stride-2 convs (e.g. 3x3 s2 then 3x3 s2) instead of one stride-4 conv"
    elif max(kh, kw) > 7 and s == 2:
        reason = f"{what}: TIDL does not support kernels larger than 7 with stride 2"
        hint = "use a 7x7 (or smaller) stride-2 kernel, or a stride-1 conv followed by a stride-2 one"
    elif s in _strides_of(CONV_VALIDATED):
        reason = f"{what} is not among TIDL's validated kernel/stride pairs"
        hint = (f"with stride {s} use a {_kernel_list(CONV_VALIDATED, s)} kernel; a larger receptive field "
                "can be built from stacked 3x3 convs")
    else:
        reason = f"{what}: TIDL supports conv strides 1, 2, 3 (3x3 only) and 4 (11x11 only)"
        hint = "reach the stride with a chain of stride-2 convs or pools"
    return Verdict("host", reason, hint=hint)


def _check_conv_pads(op, xs, pl, pr, what) -> Verdict | None:
    # tidl-facts §2 Conv: "input width >= max(padL, padR)"
    if xs is not None and xs[3] < max(pl, pr):
        return Verdict("host", f"{what}: input width {xs[3]} is smaller than the padding "
                               f"(left {pl}, right {pr}); TIDL needs width >= max(padL, padR)",
                       hint="use smaller pads, or a wider input")
    return None


def _check_deconv(op, device) -> Verdict | None:
    ws = _shape(op.operands[1])
    if ws is None:
        return None
    kh, kw = ws[2], ws[3]
    sh, sw = op.attrs["strides"]
    groups = op.attrs["groups"]
    what = f"ConvTranspose {kh}x{kw} s{sh}" + (f"x{sw}" if sw != sh else "")
    if sh == sw == 1:
        return Verdict("host", f"{what}: TIDL's Deconv2D supports only stride 2",
                       hint=f"a stride-1 ConvTranspose is a Conv {kh}x{kw} with flipped, transposed weights "
                            f"and pads k-1-p: export it as a Conv")
    resize = (f"replace {what} by Resize x{sh} (nearest) + Conv {kh}x{kw}" if sh == sw
              else f"replace {what} by Resize + Conv {kh}x{kw}")
    if sh != DECONV_STRIDE or sw != DECONV_STRIDE:
        return Verdict("host", f"{what}: TIDL's Deconv2D supports only stride 2 (output = 2x input)",
                       hint=resize + ("; Resize factors must be powers of two" if sh == sw else ""))
    if groups != 1:
        return Verdict("host", f"{what} with {groups} groups: TIDL's Deconv2D supports only group=1",
                       hint=f"compile at -O2, which makes one whose output is exactly {sh}x its input a conv per "
                            f"output phase + DepthToSpace; or {resize} (a depthwise conv for groups == channels)")
    if not (kh == kw and kh in DECONV_KERNELS):
        if kh == kw and kh in DECONV_KERNELS_SOME_VERSIONS:
            reason = (f"{what}: TIDL's Deconv2D kernel must be 2x2 or 4x4 with stride 2 "
                      f"({kh}x{kh} is {DECONV_KERNELS_SOME_VERSIONS[kh]}; other tools versions reject it)")
        else:
            reason = f"{what}: TIDL's Deconv2D supports only 2x2 and 4x4 kernels with stride 2"
        return Verdict("host", reason, hint=f"{resize}, or use a 2x2/4x4 stride-2 ConvTranspose")
    xs, ys = _shape(op.operands[0]), _shape(op.results[0])
    if xs is not None and ys is not None and (ys[2] != 2 * xs[2] or ys[3] != 2 * xs[3]):
        return Verdict("host", f"{what}: output {ys[2]}x{ys[3]} is not 2x the input {xs[2]}x{xs[3]}; TIDL's "
                               "Deconv2D must double H and W exactly",
                       hint="set pads / output_padding so the output is exactly 2x the input (e.g. k4 s2 p1), "
                            "or crop with a slice afterwards")
    return None


def _check_pool(op, device) -> Verdict | None:
    kh, kw = op.attrs["kernel"]
    sh, sw = op.attrs["strides"]
    dh, dw = op.attrs["dilations"]
    mode = op.attrs["mode"]
    what = f"{mode} pool {kh}x{kw} stride {sh}" + (f"x{sw}" if sw != sh else "")
    if dh > 1 or dw > 1:
        return Verdict("host", f"{what} dilated {dh}x{dw}: TIDL pooling has no dilation",
                       hint="use an undilated pool")
    square = kh == kw and sh == sw and sh in POOL_STRIDES
    if square and kh in POOL_VALIDATED:
        return None
    if square and kh in POOL_NOT_OPTIMAL:
        return Verdict("penalty", f"{what}: TIDL runs 4x4 pooling, but not optimally (validated: 1x1, 2x2, 3x3)",
                       hint="use 2x2 or 3x3 windows where the model allows")
    if mode == "max" and kh == kw and sh == sw == 1 and kh % 2 == 1 and kh > 3:
        hint = (f"a {kh}x{kh} stride-1 max pool equals {(kh - 1) // 2} chained 3x3 stride-1 max pools "
                "(pads 1 each)")
    elif kh == kw == sh == sw and kh & (kh - 1) == 0 and not any(op.attrs["pads"]):
        n = kh.bit_length() - 1
        hint = (f"a {kh}x{kh} stride-{kh} pool equals {n} chained 2x2 stride-2 {mode} pools (the same result "
                "without padding)")
    elif mode == "avg" and kh == kw and sh == sw and sh in (1, 2) and kh in (5, 7):
        hint = (f"use 2x2/3x3 pooling, or a {kh}x{kh} stride-{sh} depthwise conv with weights 1/{kh * kh} "
                "(TIDL validates those)")
    else:
        hint = "use square 1x1, 2x2 or 3x3 pooling with stride 1 or 2"
    if mode == "avg":  # plugins/patterns.py's _avg_pool_as_depthwise
        hint += ("; at -O2 tidlc makes an unpadded average pool (or one counting its padding) a depthwise conv "
                 "TIDL validates where one reads the same windows")
    return Verdict("host", f"{what}: TIDL validates pooling only for 1x1, 2x2 and 3x3 windows with stride 1 or 2",
                   hint=hint)


def _global_pool_verdict(h: int, w: int, name: str) -> Verdict | None:
    plane = h * w
    if plane <= GLOBAL_POOL_MAX_PLANE:
        return None
    steps, hh, ww = 0, h, w
    while hh * ww > GLOBAL_POOL_MAX_PLANE and hh % 2 == 0 and ww % 2 == 0:
        hh, ww, steps = hh // 2, ww // 2, steps + 1
    if hh * ww <= GLOBAL_POOL_MAX_PLANE:
        split = (f"split it: {steps} x (2x2 stride-2 average pool) first, then {name} on {hh}x{ww} "
                 "(the same mean)" if steps > 1 else
                 f"split it: a 2x2 stride-2 average pool first, then {name} on {hh}x{ww} (the same mean)")
    else:
        split = "split it into average pools that leave at most 1024 elements"
    return Verdict("host", f"{name} on {h}x{w} ({plane} elements per plane): TIDL's global pooling takes at most "
                           f"{GLOBAL_POOL_MAX_PLANE} elements (H*W)",
                   hint=f"{split}, or use MatMul with a 1/{plane} vector over the flattened plane")


def _check_global_pool(op, device) -> Verdict | None:
    if op.attrs["mode"] != "avg":
        return None  # the facts state the limit for GlobalAveragePool only
    xs = _shape(op.operands[0])
    if xs is None or len(xs) != 4:
        return None
    return _global_pool_verdict(xs[2], xs[3], "GlobalAveragePool")


def _check_reduce(op, device) -> Verdict | None:
    # tidl-facts §2 mapping: "Mean -> Pooling": a mean over H and W is a global average pool
    if op.attrs["op"] != "mean":
        return None
    x = op.operands[0]
    xs = _shape(x)
    hw = _hw_axes(x)
    if xs is None or len(xs) != 4 or hw is None:
        return None
    axes = {a % 4 for a in op.attrs["axes"]} if op.attrs["axes"] else set(range(4))
    if axes != set(hw):
        return None
    return _global_pool_verdict(xs[hw[0]], xs[hw[1]], "ReduceMean over H, W")


def _resize_factors(op) -> list[float] | None:
    x, y = op.operands[0], op.results[0]
    rank = _rank(x)
    if rank is None:
        return None
    scales = op.attrs["scales"]
    if not op.attrs["sizes"] and len(scales) == rank:
        return [float(s) for s in scales]
    xs, ys = _shape(x), _shape(y)
    if xs is None or ys is None:
        return None
    return [b / a if a else 1.0 for a, b in zip(xs, ys)]


def _p2(f: float) -> bool:
    n = round(f)
    return abs(f - n) < 1e-6 and n >= 1 and n & (n - 1) == 0


def _nearest_index(n_in: int, n_out: int, scale: float, coord: str, rule: str):
    import numpy as np

    from tidlc.ir.ops.tensor import _source_coords
    src = _source_coords(n_out, n_in, scale, coord)
    if rule == "floor":
        idx = np.floor(src)
    elif rule == "ceil":
        idx = np.ceil(src)
    elif rule == "round_prefer_ceil":
        idx = np.floor(src + 0.5)
    else:
        idx = np.ceil(src - 0.5)
    return np.clip(idx, 0, n_in - 1).astype(np.int64)


def _nearest_same_as_supported(op, factors, hw) -> bool:
    """Whether this nearest resize picks the same samples as asymmetric/floor (true for many
    coordinate modes at integer factors)."""
    xs = _shape(op.operands[0])
    if xs is None:
        return False
    ys = _shape(op.results[0])
    coord, rule = op.attrs["coord_mode"], op.attrs["nearest_mode"]
    for axis in hw:
        n_in, f = xs[axis], factors[axis]
        n_out = ys[axis] if ys is not None else round(n_in * f)
        mine = _nearest_index(n_in, n_out, f, coord, rule)
        ref = _nearest_index(n_in, n_out, f, "asymmetric", "floor")
        if len(mine) != len(ref) or (mine != ref).any():
            return False
    return True


def _check_resize(op, device) -> Verdict | None:
    x = op.operands[0]
    mode = op.attrs["mode"]
    if mode not in RESIZE_MODES:
        return Verdict("host", f"resize mode '{mode}': TIDL resizes with nearest or linear only",
                       hint="use nearest or (bi)linear")
    factors = _resize_factors(op)
    hw = _hw_axes(x)
    if factors is None or hw is None:
        return None
    others = [(i, f) for i, f in enumerate(factors) if i not in hw and abs(f - 1.0) > 1e-6]
    if others:
        axes = ", ".join(f"axis {i} x{f:g}" for i, f in others)
        return Verdict("host", f"resize scales {axes}: TIDL resizes H and W only",
                       hint="keep the scales of the other axes at 1 (transpose/reshape so the resized axes "
                            "are H and W)")
    fh, fw = factors[hw[0]], factors[hw[1]]
    if fh < 1 - 1e-6 or fw < 1 - 1e-6:
        return Verdict("host", f"resize by x{fh:g} (H), x{fw:g} (W) shrinks the tensor: TIDL's Resize only "
                               "upsamples (scale >= 1)",
                       hint="downsample with a stride-2 pool or conv instead")
    if abs(fh - fw) > 1e-6:
        return Verdict("host", f"resize by x{fh:g} (H) and x{fw:g} (W): TIDL needs the same factor on H and W",
                       hint="resize H and W by the same power-of-two factor (change the model so the "
                            "factors match)")
    f = fh
    if not _p2(f):
        lo = 2 ** math.floor(math.log2(f)) if f >= 1 else 1
        hi = 2 ** math.ceil(math.log2(f))
        choices = " or ".join(f"x{c}" for c in dict.fromkeys((lo, hi)) if c > 1) or "x2"
        return Verdict("host", f"x{f:g} resize: TIDL resizes by power-of-two factors only",
                       hint=f"x{f:g} resize: use {choices} (power-of-two factors), adjusting the layers "
                            "around it to the new size" + _input_size_note(x))
    coord = op.attrs["coord_mode"]
    if mode == "linear" and coord not in RESIZE_LINEAR_COORDS:
        return Verdict("host", f"linear resize with coordinate mode '{coord}': TIDL's linear resize uses "
                               "half_pixel / pytorch_half_pixel only",
                       hint="export with coordinate_transformation_mode=half_pixel (PyTorch: "
                            "align_corners=False), or use nearest")
    if mode == "nearest" and (coord, op.attrs["nearest_mode"]) not in RESIZE_NEAREST_COORDS \
            and not _nearest_same_as_supported(op, factors, hw):
        return Verdict("host", f"nearest resize with coordinate mode '{coord}' and nearest mode "
                               f"'{op.attrs['nearest_mode']}': TIDL supports asymmetric/floor or "
                               "half_pixel/pytorch_half_pixel with round_prefer_ceil",
                       hint="export with coordinate_transformation_mode=asymmetric and nearest_mode=floor")
    return None


def _input_size_note(value, steps: int = 400) -> str:
    """When the graph input ``value`` comes from (along first operands) has an H or W that is no
    multiple of 32: a segmentation net's odd planes (torchvision's LRASPP at 520x520: 65, 33) make
    its upsamplings back to them non-power-of-two; at the nearest multiple they are x2 and x16."""
    while steps and value.producer is not None and value.producer.kind != "input" and value.producer.operands:
        value, steps = value.producer.operands[0], steps - 1
    if value.producer is None or value.producer.kind != "input":
        return ""
    shape, hw = _shape(value), _hw_axes(value)
    if shape is None or hw is None or len(shape) != 4:
        return ""
    h, w = shape[hw[0]], shape[hw[1]]
    if h % 32 == 0 and w % 32 == 0:
        return ""
    fit = [max(32, round(d / 32) * 32) for d in (h, w)]
    return (f"; the input is {h}x{w}, no multiple of 32: at {fit[0]}x{fit[1]} (exported at that "
            "size) the planes halve evenly and upsamplings back to them are powers of two")


def _check_concat(op, device) -> Verdict | None:
    x = op.operands[0]
    rank = _rank(x)
    if rank is None or rank == 0:
        return None
    axis = op.attrs["axis"] % rank
    c = _channel_axis(x)
    chw = {c, *(_hw_axes(x) or ())} - {None}
    if rank >= 4 and axis == 0:
        return Verdict("host", "concat along the batch axis: TIDL concatenates along C, H or W only",
                       hint="concatenate along channels (or H/W) instead, or run the batches separately")
    if rank >= 4 and axis not in chw:
        return Verdict("host", f"concat along axis {axis} of a rank-{rank} tensor: TIDL concatenates along the "
                               "C, H or W axes only",
                       hint="reshape so the concatenated axis is C, H or W")
    return None


def _check_eltwise(op, device) -> Verdict | None:
    ys = _shape(op.results[0])
    if ys is None or len(ys) < 4:
        return None
    for v in op.operands:
        s = _shape(v)
        if s is None:
            continue
        padded = (1,) * (len(ys) - len(s)) + s
        if padded[0] != ys[0]:
            return Verdict("host", f"{op.kind} broadcasts {s} over the batch axis of {ys}: TIDL's EltWise "
                                   "broadcasts every axis but the batch",
                           hint="repeat the operand over the batch (expand/concat) or fold the batch into "
                                "another axis")
    return None


def _check_argmax(op, device) -> Verdict | None:
    x = op.operands[0]
    rank = _rank(x)
    c = _channel_axis(x)
    if rank is not None and c is not None and op.attrs["axis"] % rank != c:
        return Verdict("host", f"argmax along axis {op.attrs['axis'] % rank}: TIDL's ArgMax runs along the "
                               "channel axis only",
                       hint="transpose so the reduced axis is the channel axis")
    if not op.attrs["keepdims"]:
        return Verdict("host", "argmax with keepdims=0: TIDL's ArgMax keeps the reduced axis (keepdims=1)",
                       hint="use keepdims=1 and squeeze/reshape afterwards")
    return None


def _check_layernorm(op, device) -> Verdict | None:
    x = op.operands[0]
    rank = _rank(x)
    if rank is None or x.type.shape is None:
        return None
    axes = [a for a in range(op.attrs["axis"] % rank, rank) if x.type.shape[a] != 1]
    if len(axes) > 1 or (axes and axes[0] != rank - 1):
        return Verdict("host", f"layernorm over axes {axes} of {list(x.type.shape)}: TIDL's LayerNorm normalizes "
                               "the width (last) axis only",
                       hint="reshape so the normalized values lie along the last axis (N,C,H,W -> N,C,1,H*W for an "
                            "instance norm), or run it on the host")
    return None


def _check_reshape(op, device) -> Verdict | None:
    # a computed target shape whose result is still fully known folds to a constant (shape inference)
    if len(op.operands) > 1 and not _is_constant(op.operands[1]) and _shape(op.results[0]) is None:
        return Verdict("host", "reshape to a computed, unknown shape: TIDL's Reshape needs a static shape",
                       hint="make the target shape a constant (fix the input shape with --input-shape so "
                            "shape arithmetic folds)")
    return None


def _check_matmul(op, device) -> Verdict | None:
    a, b = op.operands
    if _is_constant(a) or _is_constant(b) or not is_tda4vm(device):
        return None
    unsigned = [_named(v, op) for v in (a, b) if _signedness(v) is False]
    if not unsigned:
        return None
    # (edgeai-tidl-tools, supported_ops_rts_versions.md, InnerProduct: "For TDA4VM variable input
    # case, doesn't support unsigned input"; tidlc's quantizer makes both signed: ptq.signed_sources)
    return Verdict("host", f"matmul of two computed tensors with unsigned {' and '.join(unsigned)}: TIDL on TDA4VM "
                           "takes no unsigned input to a MatMul of two variable tensors",
                   hint="quantize the non-negative operand as signed (tidlc's quantizer does: a calibrated "
                        "compile), or run this matmul on the host")


_RULES = {
    "conv2d": _check_conv, "deconv2d": _check_deconv, "pool2d": _check_pool, "global_pool": _check_global_pool,
    "reduce": _check_reduce, "resize": _check_resize, "concat": _check_concat, "argmax": _check_argmax,
    "layernorm": _check_layernorm, "reshape": _check_reshape, "matmul": _check_matmul, **{k: _check_eltwise for k in ELTWISE},
}


# --------------------------------------------------------------------------- alignment
@attrs.frozen
class Padding:
    """One padded dimension of a MAC layer: ``size`` rounds up to ``padded``."""

    what: str  # "W", "K", "Cout"
    size: int
    padded: int
    granularity: int  # the multiple it rounds up to
    source: str  # what the dimension is / where the granularity comes from
    unit: str = "MMA"  # the unit whose work is wasted ("vector" for a depthwise conv's rows)

    @property
    def waste(self) -> float:
        return 1.0 - self.size / self.padded if self.padded else 0.0

    def describe(self) -> str:
        detail = f" ({self.source})" if self.what == "K" else ""
        return f"{self.what}={self.size}{detail} pads to {self.padded}: {_pct(self.waste)} of {self.unit} work wasted"


def _up(n: int, m: int) -> int:
    return -(-n // m) * m if m > 0 else n


def _panel(dev, bits: int = 8) -> int:
    """The MMA panel in elements of ``bits``: 64 at 8 bits, 32 at 16 on TDA4VM."""
    return int(getattr(dev, "mma_panel_bytes", MMA_PANEL) or MMA_PANEL) // (1 if bits <= 8 else 2)


def _mac_k(op) -> tuple[int, str] | None:
    """K of a conv, deconv or dense layer on the MMA, without the bias (kH*kW*Cin/groups; a
    deconv's taps per output pixel; a dense layer's inputs), and how :func:`alignment` names
    it; None for a depthwise conv (the vector unit's) or a shape not known."""
    xs, ws = _shape(op.operands[0]), _shape(op.operands[1])
    if op.kind == "dense":
        return None if ws is None else (ws[1], "inputs")
    if xs is None or ws is None:
        return None
    groups = op.attrs["groups"]
    if op.kind == "conv2d":
        if groups > 1 and groups == xs[1] and ws[1] == 1:
            return None
        return ws[1] * ws[2] * ws[3], f"{ws[1]}x{ws[2]}x{ws[3]}"
    sh, sw = op.attrs["strides"]
    taps = math.ceil(ws[2] / sh) * math.ceil(ws[3] / sw)
    return (xs[1] // groups) * taps, f"{xs[1] // groups}x{taps} taps"


def bias_widens_k(op, device=None, bits: int = 8) -> bool:
    """Whether giving bias-less MAC layer ``op``, computed in ``bits``, a bias adds an MMA panel to
    its K: its K fills whole panels (:func:`_panel`), and the device counts the bias in K. A
    depthwise conv runs on the vector unit: no panel."""
    if op.kind not in ("conv2d", "deconv2d", "dense") or len(op.operands) > 2:
        return False
    dev = resolve_device(device)
    found = _mac_k(op)
    return bool(getattr(dev, "bias_in_k", True)) and found is not None and found[0] % _panel(dev, bits) == 0


def alignment(op, device=None) -> list[Padding]:
    """The padded dimensions of a conv / deconv / dense / matmul on the MMA (empty when none).

    K (kH*kW*Cin/groups, + 1 with a bias) and the output channels round up to the
    MMA panel (64 on TDA4VM: tidl-facts §2 efficiency hint and MMA panel); the output
    width of a conv rounds up to the device's row granularity (``mma.width_align``,
    ``mma.width_align_stride2``: the perf model's estimate, tda4vm.toml).
    """
    if op.kind not in _MAC_KINDS:
        return []
    dev = resolve_device(device)
    panel = _panel(dev)
    bias = int(len(op.operands) > 2 and bool(getattr(dev, "bias_in_k", True)))
    out = []

    def k_padding(k: int, k_text: str) -> None:
        if (k + bias) % panel:
            out.append(Padding("K", k + bias, _up(k + bias, panel), panel, f"{k_text}{' + bias' if bias else ''}"))

    if op.kind in ("conv2d", "deconv2d"):
        xs, ws, ys = _shape(op.operands[0]), _shape(op.operands[1]), _shape(op.results[0])
        if xs is None or ws is None or ys is None:
            return []
        groups = op.attrs["groups"]
        stride = op.attrs["strides"][1] if op.kind == "conv2d" else 1
        depthwise = op.kind == "conv2d" and groups > 1 and groups == xs[1] and ws[1] == 1
        align = (dev.width_align_stride2 if stride >= 2 else dev.width_align) if dev is not None else 8
        wo = ys[3]
        if wo % align:
            out.append(Padding("W", wo, _up(wo, align), align,
                               f"rows are computed in multiples of {align} columns"
                               f"{' at stride 2' if stride >= 2 else ''}", "vector" if depthwise else "MMA"))
        if depthwise:  # runs on the C7x vector unit: no MMA panel
            return out
        k_padding(*_mac_k(op))
        cout_g = ys[1] // groups
        if cout_g % panel:
            out.append(Padding("Cout", cout_g, _up(cout_g, panel), panel, "output channels per MMA panel"))
        return out
    if op.kind == "dense":
        found = _mac_k(op)
        if found is None:
            return []
        k_padding(*found)
        m = _shape(op.operands[1])[0]
        if m % panel:
            out.append(Padding("Cout", m, _up(m, panel), panel, "outputs"))
        return out
    sa, ys = _shape(op.operands[0]), _shape(op.results[0])
    if not sa or not ys:
        return []
    if sa[-1] % panel:
        out.append(Padding("K", sa[-1], _up(sa[-1], panel), panel, "inner dimension"))
    if ys[-1] % panel:
        out.append(Padding("Cout", ys[-1], _up(ys[-1], panel), panel, "output columns"))
    return out


def total_waste(pads: list[Padding]) -> float:
    """Share of the MMA's work that is padding, all padded dimensions together."""
    useful = 1.0
    for p in pads:
        useful *= p.size / p.padded if p.padded else 1.0
    return 1.0 - useful


def _alignment_hint(op, pads: list[Padding]) -> str:
    parts = []
    for p in pads:
        if p.what == "W":
            parts.append(f"output width a multiple of {p.granularity} (e.g. {p.padded})")
        elif p.what == "K":
            k = "kH*kW*Cin/groups (+1 with bias)" if op.kind == "conv2d" else \
                "Cin/groups*taps (+1 with bias)" if op.kind == "deconv2d" else "the input features"
            parts.append(f"K = {k} a multiple of {p.granularity}")
        else:
            parts.append(f"output channels a multiple of {p.granularity}")
    return "for full use: " + "; ".join(parts)


def annotate(verdict: Verdict, op, device=None) -> Verdict:
    """An accelerated verdict with the op's notes: MMA padding waste, resize splits, deconv advice."""
    if verdict.level != "accelerated":
        return verdict
    notes, hints = [], []
    if op.kind == "resize":
        factors = _resize_factors(op)
        hw = _hw_axes(op.operands[0])
        if factors is not None and hw is not None:
            f = round(factors[hw[0]])
            if f > RESIZE_MAX_FACTOR_ONE_LAYER and _p2(f):
                steps, rest = [], f
                while rest > 1:
                    step = min(RESIZE_MAX_FACTOR_ONE_LAYER, rest)
                    steps.append(f"x{step}")
                    rest //= step
                notes.append(f"x{f} resize is imported as {' then '.join(steps)} resize layers")
            if op.attrs["mode"] == "nearest" and \
                    (op.attrs["coord_mode"], op.attrs["nearest_mode"]) not in RESIZE_NEAREST_COORDS:
                notes.append(f"coordinate mode '{op.attrs['coord_mode']}'/'{op.attrs['nearest_mode']}' picks the "
                             "same samples as asymmetric/floor at this factor")
    if op.kind == "deconv2d":
        notes.append("Deconv2D is a known TIDL perf cliff")
        ws = _shape(op.operands[1])
        k = f" {ws[2]}x{ws[3]}" if ws is not None else ""
        hints.append(f"TI prefers Resize x2 + Conv{k} to ConvTranspose")
    pads = alignment(op, device)
    if pads:
        text = "; ".join(p.describe() for p in pads)
        if len(pads) > 1:
            text += f" (together {_pct(total_waste(pads))} of the {pads[0].unit} work is padding)"
        notes.append("alignment: " + text)
        hints.append(_alignment_hint(op, pads))
    if not notes and not hints:
        return verdict
    reason = "; ".join([verdict.reason, *notes] if verdict.reason else notes)
    hint = "; ".join([h for h in (verdict.hint, *hints) if h])
    return Verdict(verdict.level, reason, hint)
