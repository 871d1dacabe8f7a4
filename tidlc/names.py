"""Matching tensor names given by a user to a model's names, TensorFlow's ``:0`` suffix included.

TensorFlow names the tensors of an op ``op:0``, ``op:1``...; tidlc names a
graph's inputs and first outputs after their node (``op``) and further outputs
``op:1``. Users copy names from TensorFlow (``input:0``) or from tidlc
(``input``), so every place that matches a user's name to a model's names
(``--input-shape``, ``--input NAME=FILE``, output lists, import-config name
lists) goes through :func:`resolve_tensor_name`: an exact match wins, then
``x:0`` stands for ``x`` and ``x`` for ``x:0`` when exactly one of them is a
name of the model. :func:`resolve_or_error` adds a clear error naming the
nearest names; :func:`resolve_mapping` resolves the keys of a ``name -> value``
dict (two keys naming one tensor, ``x`` and ``x:0``, are an error).
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import TypeVar

from tidlc.diagnostics import TidlcError

T = TypeVar("T")


def base_name(name: str) -> str:
    """``x:0`` -> ``x``; any other name unchanged (``x:1`` is another tensor than ``x``)."""
    return name[:-2] if name.endswith(":0") and len(name) > 2 else name


def resolve_tensor_name(name: str, names: Sequence[str]) -> str | None:
    """The name in ``names`` that ``name`` means, or None.

    ``name`` itself when it is one of ``names``; else ``x:0`` -> ``x`` and ``x`` -> ``x:0``
    when exactly one such spelling is in ``names``.
    """
    if name in names:
        return name
    candidates = {c for c in (base_name(name), f"{name}:0") if c != name and c in names}
    return candidates.pop() if len(candidates) == 1 else None


def nearest_names(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """The names of ``names`` closest to ``name`` (compared without ``:0``), best first."""
    bases = {}
    for candidate in names:
        bases.setdefault(base_name(candidate), candidate)
    close = difflib.get_close_matches(base_name(name), list(bases), n=n, cutoff=0.5)
    return [bases[c] for c in close]


def unknown_name_error(name: str, names: Sequence[str], what: str = "input", flag: str = "") -> TidlcError:
    """``--input-shape names unknown input 'x:0'`` with the nearest names in the hint."""
    near = nearest_names(name, names)
    listing = ", ".join(names) if names else "(none)"
    kinds = what + ("es" if what.endswith("s") else "s")
    hint = (f"did you mean '{near[0]}'? " if near else "") + f"the model's {kinds} are: {listing}"
    message = f"{flag} names unknown {what} '{name}'" if flag else f"no {what} named '{name}'"
    return TidlcError(message, hint=hint, code="option")


def resolve_or_error(name: str, names: Sequence[str], what: str = "input", flag: str = "") -> str:
    """:func:`resolve_tensor_name`, or a TidlcError naming the nearest names."""
    found = resolve_tensor_name(name, names)
    if found is None:
        raise unknown_name_error(name, names, what, flag)
    return found


def resolve_mapping(mapping: Mapping[str, T], names: Sequence[str], what: str = "input", flag: str = "",
                    strict: bool = True, last_wins: bool = False) -> dict[str, T]:
    """``mapping`` with every key replaced by the name it means. Two keys meaning one name
    (``x`` and ``x:0``) are an error (``last_wins``: the later one counts); an unknown key is an
    error when ``strict``, else kept as is."""
    out: dict[str, T] = {}
    given: dict[str, str] = {}
    for key, value in mapping.items():
        found = resolve_tensor_name(key, names)
        if found is None:
            if strict:
                raise unknown_name_error(key, names, what, flag)
            found = key
        if found in out and not last_wins:
            raise TidlcError(f"{flag + ': ' if flag else ''}'{given[found]}' and '{key}' both name {what} '{found}'",
                             hint="give each tensor once", code="option")
        out.pop(found, None)
        out[found] = value
        given[found] = key
    return out


__all__ = ["base_name", "nearest_names", "resolve_mapping", "resolve_or_error", "resolve_tensor_name",
           "unknown_name_error"]
