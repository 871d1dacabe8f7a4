"""tidlc's net.bin / io.bin format (docs/format.md): writer, reader, checks.

Modelled on TIDL-RT's network and io binaries but not compatible with them:
TI's files are C struct dumps locked to one firmware release.
"""
from __future__ import annotations

import json
import os

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph

from .container import FORMAT_MAJOR, FORMAT_MINOR
from .net import IO_MAGIC, NET_MAGIC, decode_io, decode_net, encode_io, encode_net, perf_of

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "CompiledModel",
    "decode_io",
    "decode_net",
    "encode_io",
    "encode_net",
    "find_net",
    "read_compiled",
    "write_bin",
]

NET_NAME, IO_NAME = "net.bin", "io.bin"


def write_bin(graph: Graph, outdir: str, options=None, net_name: str = NET_NAME, io_name: str = IO_NAME,
              device: str = "tda4vm") -> list[str]:
    """Write net.bin (with the perf estimate) and io.bin atomically; returns the paths.

    ``net_name``/``io_name`` are names inside ``outdir`` or paths (TIDL's
    ``outputNetFile`` and ``<outputParamsFile>1.bin``); when the io descriptor is
    not ``io.bin`` beside the net, the net records its relative path so that
    ``read_compiled`` finds it.
    """
    from tidlc.backends.tidl.fixed import graph_is_quantized

    from tidlc.fileio import atomic_write
    if not graph_is_quantized(graph):
        raise TidlcError("net.bin holds quantized graphs only", hint="compile with quantization (--emit bin)")
    try:
        from tidlc.backends.tidl.perf import estimate
        perf = json.loads(estimate(graph, device, options).to_json())
    except TidlcError:
        perf = {}
    net_path, io_path = os.path.join(outdir, net_name), os.path.join(outdir, io_name)
    io_file = os.path.relpath(os.path.abspath(io_path), os.path.dirname(os.path.abspath(net_path)))
    net = encode_net(graph, perf, device, io_file=None if io_file == IO_NAME else io_file.replace(os.sep, "/"))
    io = encode_io(graph, device)
    with atomic_write(net_path) as fh:  # net first: an io.bin never describes a missing net
        fh.write(net)
    with atomic_write(io_path) as fh:
        fh.write(io)
    return [net_path, io_path]


class CompiledModel:
    """A compiled model read back from disk: the graph, its io descriptor and perf report."""

    def __init__(self, graph: Graph, io: dict, perf: dict, device: str, version: tuple[int, int]):
        self.graph, self.io, self.perf, self.device, self.version = graph, io, perf, device, version


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise TidlcError("no such file", path, hint="compile with `tidlc compile MODEL -o DIR`") from None
    except OSError as exc:
        raise TidlcError(f"cannot read: {exc.strerror}", path) from None


def _magic(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(NET_MAGIC))
    except OSError:
        return b""


def _compiled_files(folder: str, magic: bytes) -> list[str]:
    """The files in ``folder`` that start with ``magic`` (sorted by name)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names
            if os.path.isfile(os.path.join(folder, n)) and _magic(os.path.join(folder, n)) == magic]


def find_net(location: str) -> str | None:
    """The net file of ``location``: the path itself if it is a ``.bin`` (or holds a net), else a
    folder's ``net.bin`` or its only file holding a net (TIDL-style names); None if there is none."""
    if os.path.isdir(location):
        default = os.path.join(location, NET_NAME)
        if os.path.isfile(default):
            return default
        nets = _compiled_files(location, NET_MAGIC)
        if len(nets) > 1:
            names = ", ".join(os.path.basename(n) for n in nets)
            raise TidlcError(f"{len(nets)} compiled networks in this folder ({names})", location,
                             hint=f"name the net file, e.g. {nets[0]}")
        return nets[0] if nets else None
    if location.lower().endswith(".bin") or (os.path.isfile(location) and _magic(location) == NET_MAGIC):
        return location  # the reader says what is wrong with it, if anything
    return None


def _io_path(net_path: str, box) -> str:
    """The io descriptor of a net: the one it names, else io.bin beside it, else the only one beside it."""
    folder = os.path.dirname(net_path)
    try:
        named = json.loads(bytes(box.section("META"))).get("io_file")
    except (ValueError, AttributeError):
        named = None
    if named:
        return os.path.normpath(os.path.join(folder, named))
    default = os.path.join(folder, IO_NAME)
    if not os.path.exists(default):
        found = _compiled_files(folder or ".", IO_MAGIC)
        if len(found) == 1:
            return found[0]
    return default


def read_compiled(location: str, io_path: str | None = None) -> CompiledModel:
    """``location``: a folder with net.bin + io.bin (or one net under another name, TIDL-style),
    or a net file (its io descriptor: the one it names, or io.bin beside it). ``io_path`` overrides."""
    net_path = find_net(location)
    if net_path is None:
        raise TidlcError("no net.bin in this folder" if os.path.isdir(location) else "not a net.bin file", location,
                         hint="compile with `tidlc compile MODEL -o DIR`")
    graph, box = decode_net(_read(net_path), net_path)
    io_path = io_path or _io_path(net_path, box)
    io = decode_io(_read(io_path), io_path)
    try:
        perf = perf_of(box)
    except ValueError:
        raise TidlcError("corrupt net.bin: unreadable PERF section", net_path) from None
    return CompiledModel(graph, io, perf, box.device, box.version)
