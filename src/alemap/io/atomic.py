"""Writing files so that a final name always holds a complete file.

Each file is written under a temporary name in the same folder and moved into
place with :func:`os.replace`, which is atomic on POSIX and Windows. A run that
fails or is killed leaves at most a ``.tmp-*`` file, never a truncated file
under a final name.

Temporary names are ``.tmp-<pid>.<host>-<final name>-<random>``: a later run
removes those whose process is gone (:func:`remove_stale_temps`), so a folder
that was interrupted ends up clean once a rerun completes.

Files get the permissions of a normally created file (``0666`` less the umask),
not the ``0600`` of :func:`tempfile.mkstemp`, and ``.npz`` files are written
with fixed zip timestamps, so the same arrays always give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np

__all__ = ["atomic_path", "write_json", "write_nifti", "write_npz", "write_text", "remove_stale_temps", "temp_prefix", "TEMP_PREFIX"]

#: Every temporary file starts with this.
TEMP_PREFIX = ".tmp-"

_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
_STALE = re.compile(r"^\.tmp-(\d+)\.([0-9a-f]{6})-")
#: Fixed timestamp of every member of an ``.npz`` (zip) file: the earliest zip allows.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _fsync_dir(folder: Path) -> None:
    """Flush the folder entry of a rename to disk (best effort; not possible on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_prefix(name: str) -> str:
    """Prefix of a temporary file for ``name`` (process and host in it, for :func:`remove_stale_temps`)."""
    return f"{TEMP_PREFIX}{os.getpid()}.{_HOST}-{name}-"


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success move it to ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(final.name), dir=final.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but belongs to someone else, or cannot tell
        return True
    return True


def remove_stale_temps(folder: str | Path, depth: int = 0) -> list[Path]:
    """Delete temporary files left in ``folder`` by killed alemap processes of this host.

    Only names this module creates are touched, and only when their process
    (the pid in the name, on this host) no longer runs; ``depth`` levels of
    subfolders are searched too. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        try:
            if path.is_dir() and not path.is_symlink():
                if depth > 0:
                    removed += remove_stale_temps(path, depth - 1)
                continue
            m = _STALE.match(path.name)
            if m is None or m.group(2) != _HOST or _alive(int(m.group(1))):
                continue
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def write_text(final: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(final: str | Path, obj) -> None:
    """Write JSON (indented, UTF-8) atomically."""
    write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_nifti(final: str | Path, img: nib.Nifti1Image) -> None:
    """Write a NIfTI image atomically (gzip chosen by the final suffix)."""
    final = Path(final)
    with atomic_path(final) as tmp:
        gz = tmp.with_name(tmp.name + (".nii.gz" if final.name.endswith(".gz") else ".nii"))
        try:
            nib.save(img, str(gz))
            os.replace(gz, tmp)
        finally:
            if gz.exists():
                gz.unlink()


def write_npz(final: str | Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` atomically; identical arrays give identical bytes.

    The layout is :func:`numpy.savez_compressed`'s (one ``NAME.npy`` member per
    array, deflated), readable by :func:`numpy.load`, but every member carries
    the same fixed timestamp instead of the time of writing.
    """
    with atomic_path(final) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for name, value in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
