"""Files and trust: the cache folder is refused where someone else could change what svmjax
runs (real folders with real modes and owners), and old temporary files of interrupted
writes are removed, no other file."""

import os
import re
import stat
import sys
import time

import jax
import pytest

from svmjax import _files, cache, cli

posix = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX modes and owners")
OTHER_UID = 65534  # nobody
PRIVATE_GROUP = _files._private_group  # the tests below count group bits unless they say


def _folder(path, mode):
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def _chown_to_another_user(path):
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    os.chown(path, OTHER_UID, -1)


@pytest.fixture(autouse=True)
def _no_cache_left_enabled(monkeypatch):
    monkeypatch.delenv(cache.SHARED_ENV_VAR, raising=False)
    monkeypatch.setattr(_files, "_private_group", lambda gid: False)  # group bits count
    yield
    cache.disable()


def _refused(path, *, shared=None):
    with pytest.raises(PermissionError) as caught:
        cache.enable(path, shared=shared)
    message = str(caught.value)
    assert "\n" not in message and "svmjax runs the programs it loads from there" in message
    assert "SVMJAX_CACHE_SHARED=1" in message
    assert jax.config.jax_compilation_cache_dir is None  # nothing enabled
    return message


@posix
@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757, 0o770, 0o720])
def test_a_folder_others_can_write_is_refused_even_with_the_sticky_bit(tmp_path, mode):
    folder = _folder(tmp_path / "cache", mode)
    message = _refused(folder)
    assert message.startswith(f"cache folder {folder} can be written by others (mode {mode:#o})")
    assert f'run "chmod go-w {folder}" or choose a folder you own' in message
    os.chmod(folder, 0o755)  # the fix the message names
    assert cache.enable(folder) == folder


@posix
def test_a_parent_others_can_write_is_refused_unless_sticky(tmp_path):
    parent = _folder(tmp_path / "shared", 0o777)
    folder = _folder(parent / "cache", 0o700)
    message = _refused(folder)
    assert message.startswith(
        f"cache folder {folder} can be replaced by others: {parent} can be written by "
        "others (mode 0o777, no sticky bit)"
    )
    assert f'run "chmod go-w {parent}" or choose a folder elsewhere' in message
    _refused(parent / "missing" / "cache")  # checked before anything is created
    assert not (parent / "missing").exists()
    os.chmod(parent, 0o1777)  # like /tmp: others cannot replace what is yours
    assert cache.enable(folder) == folder
    assert cache.enable(parent / "new") == parent / "new"


@posix
def test_a_folder_or_parent_of_another_user_is_refused(tmp_path):
    folder = _folder(tmp_path / "cache", 0o700)
    _chown_to_another_user(folder)
    message = _refused(folder)
    assert message.startswith(f"cache folder {folder} belongs to ")
    assert f"uid {OTHER_UID}" in message.split(", and")[0]
    assert message.endswith(
        ": choose a folder you own (for a cache shared by a team on purpose: shared=True or "
        "SVMJAX_CACHE_SHARED=1)"
    )
    parent = _folder(tmp_path / "theirs", 0o755)
    _chown_to_another_user(parent)
    inner = _folder(parent / "cache", 0o700)
    message = _refused(inner)
    assert message.startswith(f"cache folder {inner} can be replaced by ")
    assert f"uid {OTHER_UID}" in message and f", who owns {parent}, and" in message
    assert "choose a folder elsewhere" in message


@posix
@pytest.mark.parametrize("where", [".", "svmjax-exported"])
def test_an_entry_inside_that_others_can_write_or_own_is_refused(tmp_path, where):
    folder = _folder(tmp_path / "cache", 0o700)
    entry = _folder(folder / where, 0o700) / "program"
    entry.write_bytes(b"compiled")
    os.chmod(entry, 0o666)
    entry = entry.resolve()
    message = _refused(folder)
    assert f"cache folder {folder} holds {entry}, which others can write (mode 0o666)" in message
    assert f'run "chmod -R go-w {folder}"' in message
    os.chmod(entry, 0o644)
    assert cache.enable(folder) == folder
    cache.disable()
    _chown_to_another_user(entry)
    assert f"holds {entry}, which belongs to " in _refused(folder)


@posix
def test_a_missing_folder_is_created_private_and_its_parents_checked(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = cache.enable()  # the default folder: created, and it passes
    assert folder == tmp_path / "xdg" / "svmjax" / "jax"
    for level in (tmp_path / "xdg", tmp_path / "xdg" / "svmjax", folder):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700
    assert jax.config.jax_compilation_cache_dir == str(folder)
    assert cache.enable() == folder  # and again, as it stands


@posix
def test_a_symlink_is_followed_and_its_target_checked(tmp_path):
    target = _folder(tmp_path / "real", 0o777)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert f"cache folder {target} can be written by others" in _refused(link)
    os.chmod(target, 0o700)
    assert cache.enable(link) == target  # JAX is given the target: relinking changes nothing
    assert jax.config.jax_compilation_cache_dir == str(target)


@posix
def test_the_environment_variable_folder_is_checked_too(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "cache", 0o777)
    monkeypatch.setenv(cache.ENV_VAR, str(folder))
    assert f"cache folder {folder} can be written by others" in _refused(None)


@posix
def test_a_cache_shared_on_purpose_warns_instead(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "team", 0o777)
    warning = f"cache folder {folder} can be written by others (mode 0o777): used as a shared"
    with pytest.warns(UserWarning, match=re.escape(warning)):
        assert cache.enable(folder, shared=True) == folder
    assert jax.config.jax_compilation_cache_dir == str(folder)
    cache.disable()
    monkeypatch.setenv(cache.SHARED_ENV_VAR, "1")
    with pytest.warns(UserWarning, match="whoever can write there can run code in this process"):
        cache.enable(folder)
    cache.disable()
    _refused(folder, shared=False)  # the argument wins over the environment
    monkeypatch.setenv(cache.SHARED_ENV_VAR, "0")
    _refused(folder)


@posix
def test_a_group_that_is_the_users_alone_may_write(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "cache", 0o770)
    _refused(folder)
    monkeypatch.setattr(_files, "_private_group", lambda gid: gid == folder.stat().st_gid)
    assert cache.enable(folder) == folder
    os.chmod(folder, 0o772)  # others still count
    cache.disable()
    _refused(folder)


def test_private_group_needs_the_users_own_group_alone():
    if not hasattr(os, "geteuid"):
        pytest.skip("POSIX users and groups")
    import grp
    import pwd

    user = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(user.pw_gid)
    expected = group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
    assert PRIVATE_GROUP(user.pw_gid) == expected
    others = {g.gr_gid for g in grp.getgrall()} - {user.pw_gid}
    assert not any(PRIVATE_GROUP(gid) for gid in others)


def test_no_check_where_the_platform_has_no_owners(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "geteuid", raising=False)  # as on Windows
    folder = tmp_path / "new" / "cache"
    assert cache.enable(folder) == folder and folder.is_dir()


@posix
def test_the_command_line_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_gradcheck", lambda args: 0)  # only the flag is under test
    folder = _folder(tmp_path / "cache", 0o777)
    assert cli.main(["gradcheck", "--cache", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"svmjax gradcheck: error: cache folder {folder} can be written")
    assert err.count("\n") == 1
    monkeypatch.setenv(cache.SHARED_ENV_VAR, "1")
    with pytest.warns(UserWarning, match="used as a shared cache"):
        assert cli.main(["gradcheck", "--cache", str(folder)]) == 0


# --- temporary files of interrupted writes ---------------------------------------------------


def _aged(path, seconds):
    now = time.time()
    os.utime(path, (now - seconds, now - seconds))
    return path


def test_remove_stale_removes_old_matching_files_only(tmp_path):
    old = _files.STALE_SECONDS + 60
    stale = tmp_path / "ck.npz.abcd1234.tmp"
    stale.write_bytes(b"half")
    _aged(stale, old)
    young = tmp_path / "ck.npz.live5678.tmp"
    young.write_bytes(b"being written")
    _aged(young, _files.STALE_SECONDS - 60)
    foreign = [tmp_path / "other.npz.abcd1234.tmp", tmp_path / "ck.npz.notes"]
    for path in foreign:
        path.write_bytes(b"not ours")
        _aged(path, old)
    folder = _aged(_folder(tmp_path / "ck.npz.dir12345.tmp", 0o700), old)
    pattern = re.escape("ck.npz") + r"\.[a-z0-9_]{8}\.tmp"
    assert _files.remove_stale(tmp_path, pattern) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [young.name, folder.name, *(p.name for p in foreign)]
    )
    assert _files.remove_stale(tmp_path / "missing", pattern) == []


@posix
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX owners")
def test_remove_stale_leaves_another_users_file(tmp_path):
    path = tmp_path / "ck.npz.abcd1234.tmp"
    path.write_bytes(b"theirs")
    _chown_to_another_user(path)
    _aged(path, _files.STALE_SECONDS + 60)
    assert _files.remove_stale(tmp_path, r"ck\.npz\.[a-z0-9_]{8}\.tmp") == []
    assert path.exists()
