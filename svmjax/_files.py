"""Internal: the folders svmjax loads from and the files it leaves behind.

:func:`trusted_folder` checks that a folder whose contents svmjax runs (the compilation
cache) can be changed by no one but the user (or root); :func:`write_npz` writes an archive
atomically and durably, and removes (:func:`remove_stale`) the temporary files of its writes
that were killed midway. The rules: ``docs/files.md``.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

STALE_SECONDS = 300.0
"""Age after which a temporary file of an interrupted write is removed: a live writer's
file is younger, as every write updates its time of modification."""

_SHARED = "for a cache shared by a team on purpose: shared=True or SVMJAX_CACHE_SHARED=1"


def trusted_folder(path: str | os.PathLike, *, shared: bool = False) -> Path:
    """``path`` with symlinks resolved, created where missing (each new level with mode
    0o700, or the umask's where ``shared``), once it is checked that no one but the user
    or root can change what it holds.

    Checked on POSIX (skipped where ``os.geteuid`` does not exist, e.g. Windows): the
    folder, everything in it and every folder above it up to the root belong to the user
    or root; none of them can be written by others (by its group only where the group is
    the user's private one); a folder above may be written by others if its sticky bit is
    set (others can then add entries but not replace this one), the folder itself may not.

    Raises:
      PermissionError: one line naming what is wrong and the fix; with ``shared``, the
        same is a warning and the folder is used.
    """
    folder = Path(path).expanduser().resolve()
    posix = hasattr(os, "geteuid")
    if posix:  # before creating anything in a place that may be refused
        _judge(folder, [_problem(p, parent=True) for p in folder.parents], shared)
    for level in reversed([folder, *folder.parents]):
        if not level.exists():
            try:
                level.mkdir(mode=0o777 if shared else 0o700)
            except FileExistsError:  # made meanwhile by another process
                pass
    if posix:
        inside = (_problem(p, inside=folder) for p in _contents(folder))
        _judge(folder, [_problem(folder), *inside], shared)
    return folder


def _judge(folder: Path, problems: list[tuple[str, str] | None], shared: bool) -> None:
    """Raise (or, where ``shared``, warn) about the first of ``problems``: ``(what is
    wrong, the fix)`` pairs, None where nothing is."""
    found = [problem for problem in problems if problem is not None]
    if not found:
        return
    reason, fix = found[0]
    if shared:
        message = f"cache folder {folder} {reason}: used as a shared cache, so whoever can "
        warnings.warn(message + "write there can run code in this process", stacklevel=4)
        return
    raise PermissionError(
        f"cache folder {folder} {reason}, and svmjax runs the programs it loads from "
        f"there: {fix} ({_SHARED})"
    )


def _problem(
    path: Path, *, parent: bool = False, inside: Path | None = None
) -> tuple[str, str] | None:
    """What lets someone other than the user or root change ``path`` (the cache folder,
    one of its ``parent`` folders, or an entry ``inside`` it), and the fix; None if
    nothing does or ``path`` does not exist."""
    try:
        info = path.stat()
    except OSError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    writers = stat.S_IWOTH | (0 if _private_group(info.st_gid) else stat.S_IWGRP)
    writable = bool(mode & writers) and not (parent and mode & stat.S_ISVTX)
    owner = None if info.st_uid in (os.geteuid(), 0) else _user(info.st_uid)
    if parent:
        if owner:
            return f"can be replaced by {owner}, who owns {path}", "choose a folder elsewhere"
        if writable:
            reason = f"can be replaced by others: {path} can be written by others"
            fix = f'run "chmod go-w {path}" or choose a folder elsewhere'
            return f"{reason} (mode {mode:#o}, no sticky bit)", fix
    elif inside is not None:
        if owner:
            return f"holds {path}, which belongs to {owner}", f"remove {path}"
        if writable:
            reason = f"holds {path}, which others can write (mode {mode:#o})"
            return reason, f'run "chmod -R go-w {inside}"'
    else:
        if owner:
            return f"belongs to {owner}", "choose a folder you own"
        if writable:
            fix = f'run "chmod go-w {path}" or choose a folder you own'
            return f"can be written by others (mode {mode:#o})", fix
    return None


def _contents(folder: Path) -> list[Path]:
    """Every file and folder under ``folder`` (symlinks not followed into folders)."""
    found = []
    for root, folders, files in os.walk(folder):
        found += [Path(root, name) for name in folders + files]
    return found


def _user(uid: int) -> str:
    """``user NAME (uid N)``, or ``uid N`` where the name is unknown."""
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _private_group(gid: int) -> bool:
    """Whether ``gid`` is the user's private group (named after the user, their primary
    group, no other member listed), so that its write permission lets no one else write."""
    try:
        import grp
        import pwd

        user, group = pwd.getpwuid(os.geteuid()), grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return (
        gid == user.pw_gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
    )


def remove_stale(directory: str | os.PathLike, name: str | re.Pattern[str]) -> list[Path]:
    """Remove the regular files of ``directory`` whose whole name matches the pattern
    ``name``, that belong to the user and were last modified more than
    :data:`STALE_SECONDS` ago; return them. Never fails: a file that cannot be removed (or
    that another process removed first) is left to a later call."""
    pattern = re.compile(name)
    now, removed = time.time(), []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            mine = not hasattr(os, "geteuid") or info.st_uid == os.geteuid()
            if stat.S_ISREG(info.st_mode) and mine and now - info.st_mtime > STALE_SECONDS:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` to the ``.npz`` file ``path`` atomically and durably: a temporary
    file ``<name>.<8 characters>.tmp`` beside it, flushed to disk, renamed over ``path``
    (the folder synced too). A failed write removes its temporary file and leaves an older
    ``path`` as it was; a successful one removes the temporary files of this name's writes
    that were killed midway. No pickle. Returns the absolute path."""
    path = Path(os.path.abspath(os.fspath(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    _sync_directory(path.parent)
    # What writes killed midway left (a live writer's file is younger than STALE_SECONDS).
    remove_stale(path.parent, re.escape(path.name) + r"\.[a-z0-9_]{8}\.tmp")
    return path


def _sync_directory(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
