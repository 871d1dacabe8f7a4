"""Resource limits, checked before anything is allocated.

Model files come from strangers: a 200-byte ONNX file may declare a tensor of
2**40 elements, a prototxt may nest ten thousand braces, a .npy header may
promise a terabyte. Every reader asks this module *before* it allocates or
recurses, and a violation is a one-line :class:`~tidlc.diagnostics.TidlcError`
(code ``limit``) naming the limit and the flag that raises it::

    model.onnx: 'conv1.w': error: tensor needs 8.0 GiB, over the tensor-bytes limit of 2 GiB
      (hint: raise it with --limit tensor-bytes=9G)

Limits are process-wide (one :class:`Limits` value, replaced by
:func:`set_limits` from the CLI's ``--limit NAME=VALUE`` or by ``TIDLC_LIMITS``
in the environment, ``NAME=VALUE,NAME=VALUE``). Defaults fit every real model
we know of with a wide margin and keep a hostile input under about 2 GiB of
memory. docs/errors.md lists them.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import attrs

from tidlc.diagnostics import Loc, TidlcError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@attrs.frozen
class Limits:
    """Every limit, by its command-line name (``--limit tensor-bytes=4G``)."""

    tensor_bytes: int = 1 << 30  # one tensor (weights, activations, an input array)
    total_bytes: int = 3 << 30  # all weights of one model together
    elements: int = 1 << 29  # elements of one declared tensor
    rank: int = 8  # dimensions of one tensor
    dim: int = 1 << 24  # one dimension
    nesting: int = 64  # nesting depth of text formats (prototxt messages, IR regions)
    ops: int = 100_000  # layers / nodes / operators of one model
    string: int = 1 << 20  # one string (names, attribute text)
    file_bytes: int = 4 << 30  # one input file
    frames: int = 100_000  # calibration frames one compile may read or make
    image_pixels: int = 1 << 26  # pixels of one decoded image

    @staticmethod
    def names() -> list[str]:
        return [f.name.replace("_", "-") for f in attrs.fields(Limits)]


_current = Limits()


def current() -> Limits:
    return _current


def set_limits(limits: Limits) -> None:
    global _current
    _current = limits


def parse_size(text: str) -> int:
    """``"4G"`` -> 4294967296; plain integers and K/M/G/T suffixes (powers of 1024)."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS and not t[-1:].isdigit() else ""
    try:
        value = float(t[: len(t) - len(unit)] if unit else t)
    except ValueError:
        raise TidlcError(f"bad limit value {text!r}", hint="an integer, optionally with K, M, G or T") from None
    if not value >= 0 or value != value or value > 1 << 62:
        raise TidlcError(f"bad limit value {text!r}", hint="a non-negative number")
    return int(value * _UNITS[unit])


def parse_limits(specs: Iterable[str], base: Limits | None = None) -> Limits:
    """``["tensor-bytes=4G", "ops=1e6"]`` -> a :class:`Limits` (unknown names are errors)."""
    values = {}
    names = Limits.names()
    for spec in specs:
        for item in (s for s in spec.split(",") if s.strip()):
            name, sep, value = item.partition("=")
            name = name.strip().lower().replace("_", "-")
            if not sep or name not in names:
                import difflib
                close = difflib.get_close_matches(name, names, n=1)
                raise TidlcError(f"unknown limit {item.strip()!r}",
                                 hint=(f"did you mean {close[0]}? " if close else "") + f"limits: {', '.join(names)}",
                                 code="option")
            values[name.replace("-", "_")] = parse_size(value)
    return attrs.evolve(base or Limits(), **values)


def limits_from_env() -> Limits:
    spec = os.environ.get("TIDLC_LIMITS", "")
    return parse_limits([spec]) if spec.strip() else Limits()


def _human(n: int) -> str:
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            v = n / size
            return f"{v:.0f}{unit}" if v == int(v) else f"{v:.1f}{unit}"
    return str(n)


def _ceil_size(n: int) -> str:
    """The smallest round size >= n: 1728 -> '2K' (a value for --limit that surely suffices)."""
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{-(-n // size)}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    text = _human(n)
    return f"{text[:-1]} {text[-1]}iB" if text[-1:].isalpha() else f"{n} bytes"


def exceeded(limit: str, needed: int, what: str, loc: Loc | str | None = None) -> TidlcError:
    """The error for ``needed`` over the limit ``limit`` (a field name of :class:`Limits`)."""
    flag = limit.replace("_", "-")
    allowed = getattr(_current, limit)
    size = limit.endswith("bytes") or limit == "string"
    raise_to = _ceil_size(max(needed, allowed + 1)) if size else str(max(needed, allowed + 1))
    if size:
        message = f"{what} needs {_bytes(needed)}, over the {flag} limit of {_bytes(allowed)}"
    else:
        message = f"{what}: {needed:,} is over the {flag} limit of {allowed:,}"
    return TidlcError(message, loc, hint=f"raise it with --limit {flag}={raise_to} if the file is trusted",
                      code="limit")


def check(limit: str, needed: int, what: str, loc: Loc | str | None = None) -> None:
    """Raise the limit error when ``needed`` exceeds limit ``limit``."""
    if needed > getattr(_current, limit):
        raise exceeded(limit, needed, what, loc)


def check_shape(shape: Sequence, itemsize: int = 4, what: str = "tensor",
                loc: Loc | str | None = None) -> int:
    """Check a declared shape (rank, each dim, element count, bytes); return the element count.

    Dims that are not non-negative integers are the caller's business (symbolic dims are
    skipped here); the checks use Python integers, so nothing overflows.
    """
    check("rank", len(shape), f"{what} rank", loc)
    count = 1
    for d in shape:
        if isinstance(d, (int,)) or hasattr(d, "__index__"):
            d = int(d)
            if d > _current.dim:
                raise exceeded("dim", d, f"{what} dimension", loc)
            if d >= 0:
                count *= d
    check("elements", count, f"{what} elements", loc)
    check("tensor_bytes", count * itemsize, what, loc)
    return count
