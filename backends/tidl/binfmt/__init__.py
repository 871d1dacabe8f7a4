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
from .net import decode_io, decode_net, encode_io, encode_net, perf_of

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "CompiledModel",
    "decode_io",
    "decode_net",
    "encode_io",
    "encode_net",
    "read_compiled",
    "write_bin",
]

NET_NAME, IO_NAME = "net.bin", "io.bin"


def write_bin(graph: Graph, outdir: str, options=None, net_name: str = NET_NAME, io_name: str = IO_NAME,
              device: str = "tda4vm") -> list[str]:
    """Write net.bin (with the perf estimate) and io.bin atomically; returns the paths."""
    from tidlc.backends.tidl.fixed import graph_is_quantized

    from tidlc.fileio import atomic_write
    if not graph_is_quantized(graph):
        raise TidlcError("net.bin holds quantized graphs only", hint="compile with quantization (--emit bin)")
    try:
        from tidlc.backends.tidl.perf import estimate
        perf = json.loads(estimate(graph, device, options).to_json())
    except TidlcError:
        perf = {}
    net = encode_net(graph, perf, device)
    io = encode_io(graph, device)
    net_path, io_path = os.path.join(outdir, net_name), os.path.join(outdir, io_name)
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
        raise TidlcError("no such file", path, hint="compile with `tidlc compile MODEL --emit bin -o DIR`") from None
    except OSError as exc:
        raise TidlcError(f"cannot read: {exc.strerror}", path) from None


def read_compiled(location: str) -> CompiledModel:
    """``location``: a folder with net.bin + io.bin, or a net.bin path (io.bin beside it)."""
    if os.path.isdir(location):
        net_path, io_path = os.path.join(location, NET_NAME), os.path.join(location, IO_NAME)
    else:
        net_path = location
        io_path = os.path.join(os.path.dirname(location), IO_NAME)
    graph, box = decode_net(_read(net_path), net_path)
    io = decode_io(_read(io_path), io_path)
    try:
        perf = perf_of(box)
    except ValueError:
        raise TidlcError("corrupt net.bin: unreadable PERF section", net_path) from None
    return CompiledModel(graph, io, perf, box.device, box.version)
