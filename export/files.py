"""Atomic file output: everything is written to a temporary name in the target's folder and
renamed into place, so a killed run never leaves a half-written file.

Temporary names are hidden and name their writer, `.<target name>.<pid>.<random>.tmp`, so a
later run can remove what a killed one left behind (`remove_stale_temps`) without touching
the temporaries of a writer that is still running."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_prefix(path: str | os.PathLike) -> str:
    """Prefix of the temporary names beside `path` written by this process."""
    return f".{Path(path).name}.{os.getpid()}."


def _writer_pid(name: str) -> int | None:
    """The pid in a temporary name `.<target>.<pid>.<random>.tmp`, or None if `name` is not
    one."""
    if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
        return None
    parts = name[1 : -len(TEMP_SUFFIX)].rsplit(".", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit():
        return None
    return int(parts[1])


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Removes, anywhere under `folder`, the temporary files and folders of atomic writes
    whose writer no longer runs (a killed run's leftovers). Returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for root, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            pid = _writer_pid(name)
            if pid is None or _running(pid):
                continue
            path = Path(root) / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        dirs[:] = [d for d in dirs if (Path(root) / d).exists()]
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False):
    """Yields a temporary path beside `path`; on success it is renamed onto `path`
    (replacing an existing file or folder), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = temp_prefix(path)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp / mkdtemp create private (0600 / 0700) entries: give the result the
        # permissions an ordinary file or folder gets under the current umask
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)
        if is_dir and path.exists():
            old = path.with_name(f"{prefix}old{TEMP_SUFFIX}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def check_out_file(path: str | os.PathLike | None, flag: str = "--out") -> None:
    """A command's output file must not be an existing folder: said before any work."""
    if path is not None and Path(path).is_dir():
        raise ValueError(f"{flag} must be a file path, got the folder {str(path)!r}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
