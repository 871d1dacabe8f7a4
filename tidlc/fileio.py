"""Atomic, deterministic file output (temp file + rename; no timestamps)."""
from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from tidlc.diagnostics import TidlcError


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


def load_array(path: str) -> np.ndarray:
    """Read a .npy file (no pickles); errors are TidlcError."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise TidlcError("no such file", path) from None
    except (ValueError, OSError) as exc:
        raise TidlcError(f"not a readable .npy array: {exc}", path, hint="save inputs with numpy.save") from None
