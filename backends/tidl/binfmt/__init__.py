"""tidlc's net.bin / io.bin format (docs/format.md): writer, reader, checks.

Modelled on TIDL-RT's network and io binaries but not compatible with them:
TI's files are C struct dumps locked to one firmware release.
"""
from __future__ import annotations

import json
import os

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph

from .container import FORMAT_MAJOR, FORMAT_MINOR, RECOMPILE
from .net import (
    IO_MAGIC,
    NET_MAGIC,
    check_io,
    decode_io,
    decode_net,
    encode_io,
    encode_net,
    net_digest,
    perf_of,
)

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "NET_MAGIC",
    "CompiledModel",
    "decode_io",
    "decode_net",
    "encode_io",
    "encode_net",
    "file_magic",
    "find_net",
    "read_compiled",
    "write_bin",
]

NET_NAME, IO_NAME = "net.bin", "io.bin"


def write_bin(graph: Graph, outdir: str, options=None, net_name: str = NET_NAME, io_name: str = IO_NAME,
              device: str = "tda4vm") -> list[str]:
    """Write net.bin (with the perf estimate) and io.bin as one commit; returns the paths.

    ``net_name``/``io_name`` are names inside ``outdir`` or paths (TIDL's
    ``outputNetFile`` and ``<outputParamsFile>1.bin``); when the io descriptor is
    not ``io.bin`` beside the net, the net records its relative path so that
    ``read_compiled`` finds it. io.bin records the net's SHA-256: a pair torn by a
    kill between the two renames is refused by ``read_compiled``.
    """
    from tidlc.backends.tidl.fixed import graph_is_quantized

    from tidlc.fileio import commit_files
    if not graph_is_quantized(graph):
        raise TidlcError("net.bin holds quantized graphs only", hint="compile with quantization (--emit bin)")
    try:
        from tidlc.backends.tidl.perf import estimate
        perf = json.loads(estimate(graph, device, options).to_json())
    except TidlcError:
        perf = {}
    net_path, io_path = os.path.join(outdir, net_name), os.path.join(outdir, io_name)
    io_file = os.path.relpath(os.path.abspath(io_path), os.path.dirname(os.path.abspath(net_path)))
    from tidlc.backends.tidl.perf.model import compile_settings
    settings = compile_settings(options) if isinstance(options, CompileOptions) else {}
    net = encode_net(graph, perf, device, io_file=None if io_file == IO_NAME else io_file.replace(os.sep, "/"),
                     settings=settings)
    try:  # what is written reads back: a writer/reader mismatch is tidlc's error, before any file exists
        decode_net(net, net_path)
    except TidlcError as exc:
        raise TidlcError(f"internal error: the net.bin written does not read back ({exc.message})", net_path,
                         hint="please report this with the model; --debug shows where", code="internal") from exc
    commit_files({net_path: net, io_path: encode_io(graph, device, net)})
    return [net_path, io_path]


class CompiledModel:
    """A compiled model read back from disk: the graph, its io descriptor and perf report, and the
    deployment settings it was compiled with (``batches``, ``msmc_kb``: the ones given)."""

    def __init__(self, graph: Graph, io: dict, perf: dict, device: str, version: tuple[int, int],
                 settings: dict | None = None):
        self.graph, self.io, self.perf, self.device, self.version = graph, io, perf, device, version
        self.settings = settings or {}


def _read(path: str, what: str) -> bytes:
    from tidlc.fileio import read_bytes
    if not os.path.lexists(path):
        raise TidlcError(f"no such file (the {what} of a compiled model)", path, code="file",
                         hint="compile with `tidlc compile MODEL -o DIR`")
    return read_bytes(path, what)  # regular files only (no FIFO blocks the reader), size-limited


def file_magic(path: str) -> bytes:
    from tidlc.fileio import open_regular
    try:
        with open_regular(path) as fh:
            return fh.read(len(NET_MAGIC))
    except (OSError, TidlcError):
        return b""


def _compiled_files(folder: str, magic: bytes) -> list[str]:
    """The files in ``folder`` that start with ``magic`` (sorted by name); temporary files of a
    running or killed compile (``*.tmpPID``) are never taken for outputs."""
    from tidlc.fileio import is_temp_name
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    paths = [os.path.join(folder, n) for n in names if not is_temp_name(n)]
    return [p for p in paths if os.path.isfile(p) and file_magic(p) == magic]


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
                             hint=f"name the net file, e.g. {nets[0]}", code="file")
        return nets[0] if nets else None
    if location.lower().endswith(".bin") or file_magic(location) == NET_MAGIC:
        return location  # the reader says what is wrong with it, if anything
    return None


def _io_path(net_path: str, meta: dict) -> str:
    """The io descriptor of a net: the one it names, else io.bin beside it, else the only one beside it."""
    folder = os.path.dirname(net_path)
    if meta.get("io_file"):
        return os.path.normpath(os.path.join(folder, meta["io_file"]))
    default = os.path.join(folder, IO_NAME)
    if not os.path.exists(default):
        found = _compiled_files(folder or ".", IO_MAGIC)
        if len(found) == 1:
            return found[0]
    return default


def read_compiled(location: str, io_path: str | None = None) -> CompiledModel:
    """``location``: a folder with net.bin + io.bin (or one net under another name, TIDL-style),
    or a net file (its io descriptor: the one it names, or io.bin beside it). ``io_path`` overrides.
    The pair must come from one compile (io.bin records the net's SHA-256)."""
    net_path = find_net(location)
    if net_path is None:
        raise TidlcError("no net.bin in this folder" if os.path.isdir(location) else "not a net.bin file", location,
                         hint="compile with `tidlc compile MODEL -o DIR`", code="file")
    net = _read(net_path, "net.bin")
    graph, box = decode_net(net, net_path)
    meta = box.json("META")
    io_path = io_path or _io_path(net_path, meta)
    io, bound_to = decode_io(_read(io_path, "io.bin"), io_path)
    if bound_to != net_digest(net):
        raise TidlcError(f"{os.path.basename(io_path)} was not written with {net_path} (the two files come "
                         f"from different compiles)", io_path, code="mismatch",
                         hint=f"{RECOMPILE}; keep the net.bin and io.bin of one compile together")
    check_io(graph, io, io_path)
    return CompiledModel(graph, io, perf_of(box), box.device, box.version, meta.get("settings"))
