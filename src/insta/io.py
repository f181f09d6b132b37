"""Reading and writing files: the one place that deals with encodings, JSON/YAML syntax errors
and safe output.

Reading: every problem (missing, a folder, no permission, bytes that are not UTF-8, invalid
JSON or YAML) becomes one :class:`InstaError` line naming the file (and line or byte offset).
A UTF-8 byte-order mark is accepted and dropped. Texts are checked for lone surrogates
(``"\\ud800"`` in JSON, or command-line bytes that are not UTF-8), which no model, cache key
or terminal can take.

Writing: :func:`atomic_path` / :func:`write_text_atomic` / :func:`write_json_atomic` write a
temporary file beside the target and rename it over the target only when complete, so a
file is never half-written and a failure (a full disk, a kill) leaves the old one intact.
Targets that are not regular files (a FIFO, a device, a symbolic link) are refused before
any work starts (:func:`check_out`): renaming over them would destroy them. :func:`atomic_dir`
does the same for folders. A temporary is named after its target, its host and its process
(``.NAME.HOST-PID.XXXX.tmp``): one left by a process that was killed (SIGKILL, a power cut)
is removed by the next write of the same target. JSON output is strict: NaN and infinities
are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import InstaError, Terminated

PathLike = str | os.PathLike[str]

# ---------------------------------------------------------------- reading


def read_bytes(path: PathLike, what: str = "file") -> bytes:
    """The bytes of a file, or one line saying why it cannot be read."""
    p = Path(path).expanduser()
    try:
        if p.exists() and not p.is_file() and not p.is_dir():  # a FIFO or device would block or never end
            raise InstaError(f"{what} {p} is not a regular file (a FIFO, socket or device); give a file")
        return p.read_bytes()
    except FileNotFoundError:
        raise InstaError(f"{what} {p} does not exist") from None
    except IsADirectoryError:
        raise InstaError(f"{what} {p} is a folder; give a file") from None
    except PermissionError:
        raise InstaError(f"{what} {p} cannot be read (permission denied); check its permissions") from None
    except OSError as exc:
        raise InstaError(f"{what} {p} cannot be read ({exc.strerror or exc})") from None


def decode(data: bytes, where: PathLike) -> str:
    """UTF-8 text of ``data`` (a leading byte-order mark dropped), or one line naming the byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InstaError(f"{where}: the file is UTF-16 text; re-save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InstaError(f"{where}: not UTF-8 text (byte {exc.start}: 0x{data[exc.start]:02x}); "
                         "re-save the file as UTF-8") from None


def read_text(path: PathLike, what: str = "file") -> str:
    return decode(read_bytes(path, what), Path(path).expanduser())


def parse_json(text: str, where: PathLike, *, line: bool = False) -> Any:
    """A JSON document (or, ``line``, one line of a JSON Lines file, ``where`` = file:line);
    every way it can be unreadable is one line naming the place."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if line:
            raise InstaError(f"{where}: malformed JSON line ({exc.msg}, column {exc.colno}); fix or remove that "
                             "line") from None
        raise InstaError(f"{where}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise InstaError(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300 by default)
        raise InstaError(f"{where}: {_huge_number(exc)}") from None


def _huge_number(exc: ValueError) -> str:
    if "digits" not in str(exc):
        raise exc
    return "a number with more digits than can be read (over 4,300); no field of insta takes one that size: fix the value"


def read_json(path: PathLike, what: str = "file", *, expect: type | None = None, data: bytes | None = None) -> Any:
    """A JSON document; with ``expect`` (dict or list) its top level must be of that type."""
    p = Path(path).expanduser()
    doc = parse_json(decode(read_bytes(p, what) if data is None else data, p), p)
    if expect is not None and not isinstance(doc, expect):
        raise InstaError(f"{p}: expected a JSON {json_type(expect)}, got {json_type(type(doc))}")
    return doc


def iter_jsonl(path: PathLike, what: str = "file") -> Iterator[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a JSON Lines file."""
    p = Path(path).expanduser()
    for lineno, line in enumerate(read_text(p, what).splitlines(), start=1):
        if line.strip():
            yield lineno, parse_json(line, f"{p}:{lineno}", line=True)


def _unique_key_loader():
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """A safe loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise InstaError(f"{self.name}:{key_node.start_mark.line + 1}: the key {key!r} is given twice; keep one")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def read_yaml(path: PathLike, what: str = "file", loader: Any = None, *, unique_keys: bool = False) -> Any:
    """A YAML document (safe loading); ``unique_keys`` refuses a key given twice (configs)."""
    import yaml

    p = Path(path).expanduser()
    text = read_text(p, what)
    if unique_keys:
        loader = _unique_key_loader()
    try:
        doc_loader = (loader or yaml.SafeLoader)(text)
        doc_loader.name = str(p)
        try:
            return doc_loader.get_single_data()
        finally:
            doc_loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise InstaError(f"{where}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except ValueError as exc:
        raise InstaError(f"{p}: {_huge_number(exc)}") from None


def json_type(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(t, t.__name__)


def surrogate_at(text: str) -> int | None:
    """Position of the first lone surrogate in ``text`` (not encodable as UTF-8), else None."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return exc.start


def check_text(text: str, where: str) -> str:
    """``text`` unchanged, or an error when it holds a lone surrogate (bytes that were not UTF-8)."""
    at = surrogate_at(text)
    if at is not None:
        raise InstaError(f"{where}: the text holds an invalid character at position {at} (U+{ord(text[at]):04X}: "
                         "a lone surrogate, or bytes that are not UTF-8); fix the text")
    return text


# ---------------------------------------------------------------- writing


def outside_cache(path: PathLike, what: str = "--out") -> Path:
    """``path``, or an error when it lies inside insta's own cache folder (the embedding
    database, stored vectors, parsed templates: a clear would delete the output, the output
    could damage the cache)."""
    from .paths import cache_dir

    p = Path(path).expanduser()
    root = cache_dir()
    if p.resolve().is_relative_to(root.resolve()):
        raise InstaError(f"{what} {path} is inside insta's cache folder ({root}); give a path outside it")
    return p


def out_dir(path: PathLike, what: str = "--out", *, create: bool = True) -> Path:
    """``path`` as an output folder (new, or one an earlier run wrote to resume it), created
    when ``create``; or a one-line error: never a file, a link to nowhere, a path under a
    file, nor a folder inside insta's cache."""
    if not str(path).strip():
        raise InstaError(f"{what} is empty; give a folder path")
    p = outside_cache(path, what)
    blocking = next((a for a in p.parents if a.exists() or a.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        raise InstaError(f"{what} {p}: {blocking} is a file, not a folder; give a path in a folder")
    if p.is_symlink() and not p.exists():
        raise InstaError(f"{what} {p} is a symbolic link to nothing; give the path of a folder")
    if p.exists() and not p.is_dir():
        raise InstaError(f"{what} {p} is a file, not a folder; give a new folder (or the folder of an earlier run, "
                         "to resume it)")
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InstaError(f"{what} {p}: cannot create the folder ({exc.strerror or exc}); give a writable path") from None
    return p


#: this machine, as it appears in the names of temporaries
_HOST = re.sub(r"[^A-Za-z0-9-]", "", platform.node())[:40] or "host"
#: the temporaries this process has open (a stale one may carry this process's id after a restart)
_LIVE: set[str] = set()


def _temp_prefix(name: str) -> str:
    return f".{name}.{_HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(dest: Path) -> None:
    """Remove the temporaries of ``dest`` that processes on this machine which are no longer
    running left beside it (killed while writing: SIGKILL, OOM, a power cut). Those of live
    processes (a concurrent write) and of other machines are left alone; best effort."""
    name = re.escape(dest.name)
    pattern = re.compile(rf"\.{name}\.{re.escape(_HOST)}-(\d+)\..+\.tmp")
    try:
        entries = [e for e in dest.parent.iterdir() if e.name.startswith(f".{dest.name}.")]
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or str(entry) in _LIVE:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            pass


def check_out(path: PathLike, what: str = "--out", *, probe: bool = True) -> Path:
    """``path`` as a place for a new regular file, or a one-line error: never a folder, and
    never a FIFO, device or symbolic link (replacing one by a regular file would destroy it;
    writing through it would not be atomic). Commands call it before they start working."""
    if not str(path).strip():
        raise InstaError(f"{what} is empty; give a file path")
    if str(path).endswith(("/", os.sep)):
        raise InstaError(f"{what} {path} names a folder (it ends in '/'); give a file path")
    p = Path(path).expanduser()
    blocking = next((a for a in p.parents if a.exists() or a.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        raise InstaError(f"{what} {p}: {blocking} is a file, not a folder; give a path in a folder")
    if p.is_symlink() or (p.exists() and not p.is_file()):
        kind = ("a symbolic link" if p.is_symlink() else "a folder" if p.is_dir()
                else "a FIFO" if stat.S_ISFIFO(p.stat().st_mode) else "a device or special file")
        fix = "give a file path" if kind == "a folder" else "give the path of a regular file"
        raise InstaError(f"{what} {p} is {kind}, not a regular file; {fix}")
    if probe and p.parent.is_dir():  # a folder that takes no new file fails now, not after the work
        try:
            fd, probe_path = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=p.parent)
            os.close(fd)
            os.unlink(probe_path)
        except OSError as exc:
            raise InstaError(f"{what} {p}: cannot write in {p.parent} ({exc.strerror or exc}); give a writable path") from None
    return p


def _default_mode(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_path(path: PathLike, what: str = "--out") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (normal file
    permissions), on failure it is removed: the target is never half-written."""
    p = check_out(path, what, probe=False)  # its own temporary file is the probe
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(p)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(p.name), suffix=".tmp", dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise InstaError(f"cannot write {p}: {exc.strerror or exc}") from None
    _LIVE.add(tmp)
    try:
        yield Path(tmp)
        _default_mode(Path(tmp))
        check_out(p, what, probe=False)  # still not a FIFO/device/link that appeared meanwhile
        os.replace(tmp, p)
    except OSError as exc:
        raise InstaError(f"cannot write {p}: {exc.strerror or exc} (nothing was replaced)") from None
    finally:
        _LIVE.discard(tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: PathLike, text: str, what: str = "--out") -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path, what) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path).expanduser()


def strict_json(doc: Any) -> Any:
    """``doc`` with every NaN or infinite float replaced by None: standard JSON."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: strict_json(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [strict_json(v) for v in doc]
    return doc


def dumps(doc: Any, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN), non-ASCII kept, unknown objects as their string."""
    return json.dumps(strict_json(doc), indent=indent, ensure_ascii=False, default=str, allow_nan=False)


def write_json_atomic(path: PathLike, doc: Any, what: str = "--out") -> Path:
    """Write ``doc`` as strict JSON to ``path`` atomically."""
    return write_text_atomic(path, dumps(doc) + "\n", what)


@contextmanager
def atomic_dir(dest: PathLike, what: str = "--out") -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``dest``; when the block succeeds it becomes
    ``dest`` (which must be absent or an empty folder), else it is removed."""
    d = Path(dest).expanduser()
    if d.is_symlink():
        raise InstaError(f"{what} {d} is a symbolic link; give the path of a new folder")
    if d.exists() and not d.is_dir():
        raise InstaError(f"{what} {d} exists and is not a folder; give a new folder")
    if d.exists() and any(d.iterdir()):
        raise InstaError(f"{what} {d} already exists and is not empty; give a new folder")
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(d)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(d.name), suffix=".tmp", dir=d.parent))
    except OSError as exc:
        raise InstaError(f"cannot write {d}: {exc.strerror or exc}") from None
    _LIVE.add(str(tmp))
    try:
        yield tmp
        if d.exists():
            d.rmdir()
        tmp.rename(d)
    except OSError as exc:
        raise InstaError(f"cannot write {d}: {exc.strerror or exc} (nothing was written)") from None
    finally:
        _LIVE.discard(str(tmp))
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def run_state(path: PathLike, state: dict[str, Any], what: str = "state") -> Iterator[None]:
    """``path`` says ``status: running`` (with ``state``) while the block runs. Left by an
    exception — Ctrl-C, SIGTERM through the CLI, an error — it says ``status: interrupted``
    with the reason instead, the rest of ``state`` kept, so that a rerun with the same settings
    still resumes and nobody reads a dead run as running. The block writes the final state."""
    write_json_atomic(path, {"status": "running", **state}, what)
    try:
        yield
    except BaseException as exc:
        reason = ("Ctrl-C" if isinstance(exc, KeyboardInterrupt) else str(exc) if isinstance(exc, Terminated)
                  else f"{type(exc).__name__}: {exc}")
        try:
            write_json_atomic(path, {"status": "interrupted", **state, "reason": reason[:500]}, what)
        except Exception:  # noqa: BLE001 - the original exception matters more than the note
            pass
        raise
