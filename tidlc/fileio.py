"""Safe file input (regular files only, size limits) and atomic, deterministic output
(temp file + rename; no timestamps)."""
from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from tidlc.diagnostics import TidlcError


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str, what: str = "file"):
    """Open ``path`` for binary reading if it is a regular file within the file-bytes limit.

    FIFOs, devices, sockets and directories are refused by name *without blocking*: the file is
    opened non-blocking and checked with fstat on the descriptor (no race with a swapped path).
    """
    from tidlc import limits
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise TidlcError(f"no such {what}", path, code="file") from None
    except IsADirectoryError:
        raise TidlcError(f"is a directory, expected a {what}", path, code="file") from None
    except OSError as exc:
        raise TidlcError(f"cannot read {what}: {exc.strerror}", path, code="file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TidlcError(f"is {_kind(st.st_mode)}, expected a {what}", path,
                             hint="tidlc reads regular files only", code="file")
        limits.check("file_bytes", st.st_size, what, path)
        if hasattr(os, "O_NONBLOCK"):
            import fcntl
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str, what: str = "file") -> None:
    """Raise the error :func:`open_regular` would raise (for readers that open files themselves)."""
    open_regular(path, what).close()


def read_bytes(path: str, what: str = "file") -> bytes:
    """The whole content of a regular file (see :func:`open_regular`)."""
    with open_regular(path, what) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise TidlcError(f"cannot read {what}: {exc.strerror}", path, code="file") from None


def read_text(path: str, what: str = "file") -> str:
    """A regular text file decoded as UTF-8 (a byte that is not UTF-8 is a one-line error)."""
    data = read_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TidlcError(f"not a UTF-8 text file (byte 0x{data[exc.start]:02x})",
                         _byte_loc(path, data, exc.start), code="format") from None


def _byte_loc(path: str, data: bytes, offset: int):
    from tidlc.diagnostics import Loc
    line = data.count(b"\n", 0, offset) + 1
    col = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return Loc(file=path, line=line, col=col)


@contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator:
    """Write to ``path.tmpPID`` and rename over ``path`` only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise TidlcError(f"cannot create output directory: {exc.strerror}", directory) from None
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise TidlcError(f"cannot write: {exc.strerror}", path) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Like ``numpy.savez`` but byte-identical for identical arrays (fixed zip timestamps)."""
    with atomic_write(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for name in arrays:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def load_array(path: str, what: str = ".npy array") -> np.ndarray:
    """Read a .npy file: no pickles, no object arrays, the header checked against the limits
    before the data is read; every problem is a TidlcError naming the file."""
    from tidlc import limits
    with open_regular(path, what) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=10000)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=10000)
            else:
                raise ValueError(f"unknown .npy version {version}")
        except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many kinds on bad bytes
            raise TidlcError(f"not a readable .npy array: {_short(exc)}", path, hint="save inputs with numpy.save",
                             code="input") from None
        if dtype.hasobject or dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
            raise TidlcError(f"unsupported .npy dtype {dtype}", path, hint="save a numeric array (bool, int, float)",
                             code="input")
        count = limits.check_shape(shape, dtype.itemsize, "array", path)
        start = fh.tell()
        size = os.fstat(fh.fileno()).st_size
        if size - start < count * dtype.itemsize:
            raise TidlcError(f"truncated .npy array: {size - start} data bytes for shape {list(shape)} {dtype} "
                             f"({count * dtype.itemsize} needed)", path, code="input")
        data = np.fromfile(fh, dtype=dtype, count=count) if count else np.zeros(0, dtype)
    return data.reshape(shape, order="F" if fortran else "C")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
