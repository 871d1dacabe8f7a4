"""Ops declared as data.

An :class:`OpDef` states everything about an op kind in one place: operand
names (``"b?"`` optional, ``"xs*"`` zero or more, ``"xs+"`` one or more),
typed attributes with defaults and validators, result count, type inference,
the float reference implementation (used by the interpreter and by constant
folding) and the MAC count. The registry is filled by the builtin op modules and by plugins through
the ``tidlc_ops`` hook.

What an op *is* -- element-wise, indifferent to the axis order, scale
preserving, a multiply-accumulate layer, a fusable activation, a lookup-table
function -- is declared by its :class:`Trait` set, and the passes ask the
OpDef (``op.opdef.has(Trait.ELEMENTWISE)``) instead of keeping lists of op
names, so an op a plugin declares with traits is handled by the layout pass,
the fusions and the quantizer like a builtin one.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from tidlc.ir.types import TensorType

REQUIRED = object()
_KINDS = ("int", "float", "str", "bool", "ints", "floats", "strs")


def _normalize_scalar(kind: str, value: Any) -> Any:
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
                isinstance(value, (float, np.floating)) and float(value).is_integer()):
            raise TypeError("expected an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError("expected a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    if kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return bool(value)
        raise TypeError("expected true/false")
    raise AssertionError(kind)


@attrs.frozen
class AttrSpec:
    """One attribute: its kind, default, and constraints."""

    kind: str = attrs.field(validator=attrs.validators.in_(_KINDS))
    default: Any = REQUIRED
    choices: tuple | None = None
    length: int | None = None  # exact length of an ``ints``/``floats`` list
    check: Callable[[Any], str | None] | None = None  # returns a problem or None
    doc: str = ""

    def normalize(self, value: Any) -> Any:
        """Convert ``value`` to the canonical Python form or raise ValueError."""
        if self.kind in ("ints", "floats", "strs"):
            if isinstance(value, np.ndarray):  # frontends hand over arrays, 0-d ones too
                value = value.reshape(-1).tolist()
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                value = [value]
            value = tuple(_normalize_scalar(self.kind[:-1], v) for v in value)
            if self.length is not None and len(value) != self.length:
                raise ValueError(f"expected {self.length} values, got {len(value)}")
        else:
            value = _normalize_scalar(self.kind, value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ValueError(problem)
        return value


# Short constructors used by the op tables.
def a_int(default=REQUIRED, **kw) -> AttrSpec:
    return AttrSpec("int", default, **kw)


def a_float(default=REQUIRED, **kw) -> AttrSpec:
    return AttrSpec("float", default, **kw)


def a_str(default=REQUIRED, **kw) -> AttrSpec:
    return AttrSpec("str", default, **kw)


def a_bool(default=REQUIRED, **kw) -> AttrSpec:
    return AttrSpec("bool", default, **kw)


def a_ints(default=REQUIRED, **kw) -> AttrSpec:
    return AttrSpec("ints", tuple(default) if isinstance(default, (list, tuple)) else default, **kw)


def a_floats(default=REQUIRED, **kw) -> AttrSpec:
    return AttrSpec("floats", tuple(default) if isinstance(default, (list, tuple)) else default, **kw)


def positive(value) -> str | None:
    vals = value if isinstance(value, tuple) else (value,)
    return None if all(v > 0 for v in vals) else "must be positive"


def non_negative(value) -> str | None:
    vals = value if isinstance(value, tuple) else (value,)
    return None if all(v >= 0 for v in vals) else "must not be negative"


def _no_macs(op) -> int:
    return 0


class Trait(str, enum.Enum):
    """What an op is, for the passes that transform or quantize it (``OpDef.traits``).

    A trait is a promise the op's definition makes; the passes that read it
    rely on it without knowing the op. Declare only what holds for every
    attribute value (or say what the op's hooks do about the rest).
    """

    #: Every result element is computed from the operands' elements at the same
    #: (broadcast) position: one result shaped like the numpy broadcast of all
    #: operands (activations, unary math, add/mul/..., cast, quantize). Read by
    #: the layout pass: every operand of an element-wise op is moved across a
    #: transpose (constants are permuted, broadcasting kept). ``prelu`` keeps its
    #: documented exception: a 1-D slope of C values is per channel (axis 1).
    ELEMENTWISE = "elementwise"
    #: ``op(transpose(x, perm))`` equals ``transpose(op'(x), perm)``, where
    #: ``op'`` has the attributes ``OpDef.permute_attrs(attrs, perm)`` (the same
    #: attributes when the op has no such hook). The layout pass sinks
    #: transposes through it. Its transposed operands: every operand of an
    #: ELEMENTWISE op, every operand of a variadic first operand (``"xs+"``:
    #: concat), else the first one only (the others are parameters the
    #: attributes index, like ``scale``'s per-channel vectors).
    LAYOUT_AGNOSTIC = "layout_agnostic"
    #: Every result value lies within the range of its data operands (they are
    #: moved, copied, selected, padded, averaged or interpolated: reshape,
    #: transpose, concat, slice, gather, pooling, resize, pad), so quantization
    #: passes the input's scale through (the coarsest one for several data
    #: operands) and needs no calibrated range for the result. Its data
    #: operands: those of a variadic first operand, else the first one (the
    #: others are shapes or indices). A fixed-point executor without a kernel of
    #: its own for the op runs its float ``compute`` on the integer codes,
    #: which is exact for ops that only move or select values.
    SCALE_PRESERVING = "scale_preserving"
    #: A multiply-accumulate layer: data operand 0, weights operand 1 (constant;
    #: ``matmul`` may take a second tensor), optional bias operand 2. Quantized
    #: with the accumulator scheme (accumulator scale = input scale x weight
    #: scale, a rounding shift to the output). ``OpDef.macs`` counts its
    #: multiply-accumulates on the MMA; a channel-wise ``scale`` counts none
    #: (TIDL runs it on the vector unit).
    MAC = "mac"
    #: An activation a producer can carry in its ``act`` attribute
    #: (fuse-activation folds it there). Its name must be one of the fused
    #: activations the ``act`` attribute knows (``tidlc.ir.ops.ACTIVATIONS``).
    FUSABLE_ACTIVATION = "fusable_activation"
    #: A unary element-wise function of one input whose fixed-point form is a
    #: lookup table of its float ``compute`` over every input code (8 or 16
    #: bits): sigmoid, tanh, exp, ... The quantizer gives its result a scale of
    #: its own (from calibration or ``OpDef.value_range``) and the fixed-point
    #: executor builds the table.
    LUT = "lut"


def _traits(values: Iterable) -> frozenset:
    """Trait members from members or their names (``"elementwise"``); unknown names raise."""
    if isinstance(values, (str, Trait)):
        values = (values,)
    out = set()
    for value in values:
        try:
            out.add(Trait(value))
        except ValueError:
            raise ValueError(f"unknown op trait {value!r}; known: "
                             f"{', '.join(t.value for t in Trait)}") from None
    return frozenset(out)


@attrs.frozen
class OpDef:
    """The declaration of one op kind.

    ``traits``: a frozenset of :class:`Trait` (names are accepted:
    ``traits={"elementwise", "layout_agnostic"}``), what the op is for the
    passes. ``permute_attrs(attrs, perm)``: for a ``LAYOUT_AGNOSTIC`` op whose
    attributes name axes (concat axis, softmax axis, reduce axes, pad pads,
    slice axes, ...), the attributes the op needs on the untransposed operand
    when its operand is ``transpose(x, perm)``. It returns the new attribute
    dict; or ``(attrs, result_perm)`` when the result has fewer axes than the
    operand (a reduction without keepdims, squeeze), ``result_perm`` being the
    transpose that then restores the result's axis order; or ``None`` when the
    op cannot take this transpose. ``value_range``: the real range every
    result value lies in whatever the input (sigmoid: ``(0, 1)``), which
    quantization uses instead of a calibrated one.
    """

    name: str
    operands: tuple[str, ...]
    attrs: Mapping[str, AttrSpec]
    infer: Callable[[Any, list[TensorType]], list[TensorType]]
    compute: Callable[..., Any] | None = None
    macs: Callable[[Any], int] = _no_macs
    num_results: Any = 1  # int, or callable(op attrs) -> int
    foldable: bool = True  # may constant folding evaluate it?
    category: str = "misc"  # mac | vector | data | shape | io | detection | misc
    doc: str = ""
    plugin: str = "builtin"
    traits: frozenset = attrs.field(default=frozenset(), converter=_traits)
    permute_attrs: Callable[[Mapping[str, Any], tuple[int, ...]], Any] | None = None
    value_range: tuple[float, float] | None = None

    def has(self, trait: Trait | str) -> bool:
        """Whether the op declares ``trait`` (a :class:`Trait` or its name)."""
        return (trait if isinstance(trait, Trait) else Trait(trait)) in self.traits

    @property
    def min_operands(self) -> int:
        return sum(1 for o in self.operands if not o.endswith(("?", "*")))

    @property
    def max_operands(self) -> float:
        return math.inf if any(o.endswith(("*", "+")) for o in self.operands) else len(self.operands)

    @property
    def arity(self) -> str:
        """The operand count in words: ``2``, ``2 to 3``, ``at least 1``."""
        lo, hi = self.min_operands, self.max_operands
        if lo == hi:
            return str(lo)
        return f"at least {lo}" if hi == math.inf else f"{lo} to {hi}"

    def normalize_attrs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in, values converted; raises ValueError naming the attribute."""
        unknown = sorted(set(given) - set(self.attrs))
        if unknown:
            raise ValueError(f"{self.name}: unknown attribute(s) {', '.join(unknown)}; "
                             f"known: {', '.join(self.attrs) or 'none'}")
        out = {}
        for key, spec in self.attrs.items():
            if key in given and given[key] is not None:
                try:
                    out[key] = spec.normalize(given[key])
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{self.name}: attribute '{key}': {exc}") from None
            elif spec.default is REQUIRED:
                raise ValueError(f"{self.name}: missing required attribute '{key}'")
            else:
                out[key] = spec.default
        return out

    def result_count(self, attrs_: Mapping[str, Any]) -> int:
        return self.num_results(attrs_) if callable(self.num_results) else self.num_results


class OpRegistry:
    """Name -> OpDef. Re-registering a name is an error that names both owners."""

    def __init__(self) -> None:
        self._defs: dict[str, OpDef] = {}

    def register(self, opdef: OpDef) -> OpDef:
        old = self._defs.get(opdef.name)
        if old is not None and old is not opdef:
            raise ValueError(f"op '{opdef.name}' is defined twice: by {old.plugin} and by {opdef.plugin}")
        self._defs[opdef.name] = opdef
        return opdef

    def unregister(self, name: str) -> None:
        self._defs.pop(name, None)

    def get(self, name: str) -> OpDef | None:
        return self._defs.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._defs

    def names(self) -> list[str]:
        return sorted(self._defs)

    def with_trait(self, trait: Trait | str) -> list[str]:
        """The names of the registered ops that declare ``trait`` (sorted)."""
        return sorted(name for name, d in self._defs.items() if d.has(trait))


OPS = OpRegistry()


def get_opdef(name: str) -> OpDef:
    opdef = OPS.get(name)
    if opdef is None:
        from tidlc.ir import ops  # noqa: F401  (builtin tables register on import)
        opdef = OPS.get(name)
    if opdef is None:
        raise KeyError(f"unknown op '{name}'")
    return opdef


def defop(name: str, operands: Sequence[str], attrs_: Mapping[str, AttrSpec] | None = None,
          *, infer, compute=None, macs=_no_macs, num_results=1, foldable=True,
          category="misc", doc="", traits=(), permute_attrs=None, value_range=None) -> OpDef:
    """Declare and register a builtin op."""
    return OPS.register(OpDef(name=name, operands=tuple(operands), attrs=dict(attrs_ or {}),
                              infer=infer, compute=compute, macs=macs, num_results=num_results,
                              foldable=foldable, category=category, doc=doc, traits=traits,
                              permute_attrs=permute_attrs, value_range=value_range))
