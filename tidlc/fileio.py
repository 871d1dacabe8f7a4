"""Safe file input (regular files only, size limits) and atomic, deterministic output
(temp file + rename; no timestamps)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from tidlc.diagnostics import TidlcError


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


_PLAIN = ("file", "model file")  # "no such file" says it all; other kinds name what was looked for


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
        raise TidlcError("no such file" if what in _PLAIN else f"no such {what}", path, code="file") from None
    except IsADirectoryError:
        raise TidlcError(f"is a directory, expected a {what}", path, code="file") from None
    except OSError as exc:
        raise TidlcError(f"cannot read {what}: {exc.strerror}", path, code="file") from None
    except ValueError:  # a NUL byte in a name read from a list or config file
        raise TidlcError(f"bad {what} name (it holds a NUL byte)", repr(path)[1:-1], code="file") from None
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


LOCK_NAME = ".tidlc.lock"  # in an output folder while a group of outputs is renamed into place
_TEMP = re.compile(r"\.tmp(\d+)$")


def temp_name(path: str) -> str:
    """The temporary name ``path`` is written under: unique per process (``path.tmpPID``)."""
    return f"{path}.tmp{os.getpid()}"


def is_temp_name(name: str) -> bool:
    return _TEMP.search(name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # exists under another user (or not a valid pid: then not ours to judge)
    return True


def remove_stale_temps(path: str) -> None:
    """Remove ``path.tmpPID`` files left by killed writers (PID no longer running) so that they
    do not pile up; temps of running processes (a concurrent compile) are left alone."""
    directory, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        m = _TEMP.search(name)
        if m and name[:m.start()] == base and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _make_dir(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise TidlcError(f"cannot create output directory: {exc.strerror}", directory, code="output") from None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator:
    """Write to ``path.tmpPID`` and rename over ``path`` only if the block succeeds."""
    _make_dir(os.path.dirname(os.path.abspath(path)))
    remove_stale_temps(path)
    tmp = temp_name(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise TidlcError(f"cannot write: {exc.strerror}", path, code="output") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


@contextmanager
def folder_lock(directory: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``directory/.tidlc.lock`` (blocks while another process holds it).

    The lock file exists only while it is held: the holder unlinks it before unlocking, so a
    waiter that then gets the lock on the unlinked file sees that the name is gone (or names a
    newer file) and locks again; output folders are left with the outputs only."""
    import fcntl
    path = os.path.join(directory, LOCK_NAME)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TidlcError(f"cannot lock the output directory: {exc.strerror}", directory, code="output") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held, named = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        _unlink_quietly(path)
        os.close(fd)  # releases the lock


def remove_stale(outdir: str, names: Sequence[str]) -> None:
    """Delete the files ``names`` in ``outdir`` left by an earlier compile of another shape (a
    partitioned model's manifest beside a whole model's net.bin, or the reverse); best effort."""
    for name in names:
        path = os.path.join(outdir, name)
        if os.path.isfile(path):
            with contextlib.suppress(OSError):
                os.unlink(path)


def commit_files(files: Mapping[str, bytes]) -> None:
    """Write files that belong together (net.bin + io.bin) as one commit: every temp file is
    written first, then all are renamed into place under the first file's folder lock, so two
    processes committing into one folder never interleave their renames. A kill between two renames
    leaves a mixed pair, which the readers detect (io.bin records the net.bin it belongs to)."""
    paths = list(files)
    for path in paths:
        _make_dir(os.path.dirname(os.path.abspath(path)))
        remove_stale_temps(path)
    temps: list[str] = []
    try:
        for path in paths:
            temps.append(temp_name(path))
            with open(temps[-1], "wb") as fh:
                fh.write(files[path])
                fh.flush()
                os.fsync(fh.fileno())
        with folder_lock(os.path.dirname(os.path.abspath(paths[0]))):
            for tmp, path in zip(temps, paths):
                os.replace(tmp, path)
    except OSError as exc:
        raise TidlcError(f"cannot write: {exc.strerror}", paths[len(temps) - 1] if temps else paths[0],
                         code="output") from None
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                _unlink_quietly(tmp)


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
    with open_regular(path, what) as fh:
        return read_npy(fh, path, os.fstat(fh.fileno()).st_size)


def read_npy(fh, name: str, size: int) -> np.ndarray:
    """The .npy array in the binary stream ``fh`` (``size`` bytes from its start; ``name`` in
    errors): the header parsed and checked (dtype, limits, size) before the data is read."""
    from tidlc import limits
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=10000)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=10000)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many kinds on bad bytes
        raise TidlcError(f"not a readable .npy array: {_short(exc)}", name, hint="save inputs with numpy.save",
                         code="input") from None
    if dtype.hasobject or dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise TidlcError(f"unsupported .npy dtype {dtype}", name, hint="save a numeric array (bool, int, float)",
                         code="input")
    count = limits.check_shape(shape, dtype.itemsize, "array", name)
    start = fh.tell()
    if size - start < count * dtype.itemsize:
        raise TidlcError(f"truncated .npy array: {size - start} data bytes for shape {list(shape)} {dtype} "
                         f"({count * dtype.itemsize} needed)", name, code="input")
    if not count:
        data = np.zeros(0, dtype)
    elif hasattr(fh, "fileno") and isinstance(fh, io.BufferedReader):
        data = np.fromfile(fh, dtype=dtype, count=count)
    else:  # a stream without a descriptor (an .npz member)
        raw = fh.read(count * dtype.itemsize)
        if len(raw) < count * dtype.itemsize:
            raise TidlcError(f"truncated .npy array: {len(raw)} data bytes for shape {list(shape)} {dtype}",
                             name, code="input")
        data = np.frombuffer(raw, dtype=dtype, count=count)
    return data.reshape(shape, order="F" if fortran else "C")


class NpzFile:
    """The arrays of an .npz file, read one member at a time through :func:`read_npy` (no
    pickles; each member's header checked before its data is inflated, and inflating reads only
    the bytes the header declares, so a zip bomb costs nothing)."""

    def __init__(self, path: str, what: str = ".npz file"):
        self.path = path
        self._fh = open_regular(path, what)
        try:
            self._zip = zipfile.ZipFile(self._fh)
            names = [i.filename for i in self._zip.infolist()]
        except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on a damaged directory
            self._fh.close()
            raise TidlcError(f"not a readable .npz file: {_short(exc)}", path, hint="save frames with numpy.savez",
                             code="input") from None
        self.files = [n[:-4] for n in names if n.endswith(".npy")]

    def array(self, name: str) -> np.ndarray:
        member = f"{self.path}[{name}]"
        try:
            info = self._zip.getinfo(name + ".npy")
            with self._zip.open(info) as fh:
                return read_npy(fh, member, info.file_size)
        except TidlcError:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile/zlib: bad CRC, method, encryption, truncation
            raise TidlcError(f"cannot read the .npz member: {_short(exc)}", member, code="input") from None

    def close(self) -> None:
        self._zip.close()
        self._fh.close()

    def __enter__(self) -> NpzFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
