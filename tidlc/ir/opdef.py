"""Ops declared as data.

An :class:`OpDef` states everything about an op kind in one place: operand
names (``"b?"`` optional, ``"xs*"`` zero or more, ``"xs+"`` one or more),
typed attributes with defaults and validators, result count, type inference,
the float reference implementation (used by the interpreter and by constant
folding) and the MAC count. The registry is filled by the builtin op modules and by plugins through
the ``tidlc_ops`` hook.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


@attrs.frozen
class OpDef:
    """The declaration of one op kind."""

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
          category="misc", doc="") -> OpDef:
    """Declare and register a builtin op."""
    return OPS.register(OpDef(name=name, operands=tuple(operands), attrs=dict(attrs_ or {}),
                              infer=infer, compute=compute, macs=macs, num_results=num_results,
                              foldable=foldable, category=category, doc=doc))
