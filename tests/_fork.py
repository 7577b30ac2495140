"""Run a Python script in a new process forked from a parent that has already imported torch and
Lightning: what ``subprocess.run([sys.executable, *args], capture_output=True, text=True)`` does,
without paying ``import lightning.pytorch`` (3-5 s on the CI machine) in every run.

    from tests._fork import lightning, run_forked

    proc = run_forked([SCRIPT, *args], preload=lightning(), cwd=tmp_path, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr

``args`` is what follows the interpreter on a command line: a script and its arguments, or
``["-m", module, *arguments]``. Each run is a process of its own that starts from a parent that has
only imported ``preload``: what a run does (files, globals, Trainer state, seeds) dies with it, as
with a fresh interpreter. The child takes the caller's cwd, environment, argv and standard streams
(stdout and stderr captured, stdin inherited), resets what a fresh interpreter would not inherit
(signal handlers, random seeds, ``sys.path[0]``), replays what the imports printed and set in the
environment, runs the script as ``__main__`` and leaves as the interpreter does (exit status, the
traceback of an uncaught exception, atexit handlers, flushed streams). A timeout kills it and
raises ``subprocess.TimeoutExpired``, as ``subprocess.run`` does.

``preload`` is imported before the script runs, outside whatever warning filters or settings the
script would make first (what the imports print is printed by every run): preload only what the
script imports as it is, not what it imports in its own way (the demo imports Lightning with its
warnings held back, and tests/test_cli.py checks that). Starting a parent costs what the imports
cost, so forking pays from the second run with the same ``preload`` and environment on.

The parent (this file run as a script, a "fork server") is started on first use, one per
``preload`` and per value of the variables a fresh interpreter or those imports read at startup
(:data:`STARTUP_ENV`), and ends with the test session. It never runs torch code: a fork of a process
with OpenMP worker threads would hang, one that has only imported torch is safe.

A script must not start processes of its own that import Lightning (Lightning's launcher starts each
rank after the first as a fresh interpreter): ``run_script`` in tests/_helpers.py starts every rank of
a DDP run from here instead, its rank in its environment, as torchrun does. ``BESTLINK_FORK=0`` runs
every script in a fresh interpreter instead (the same results, slower): use it to rule the fork out
when a run behaves oddly.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

#: Variables read when the interpreter starts or while ``preload`` is imported (the interpreter's,
#: the locale, the loader, the thread pools', torch's configuration, Lightning's and torchmetrics'
#: rank and warning switches, and fsspec's, gcsfs's and google-auth's settings): a run whose value of
#: any of them differs from a running server's gets a server of its own. Every other variable is
#: read later, and the child has the caller's.
STARTUP_ENV = re.compile(
    r"PYTHON|LC_|LANG|LD_|OMP_|MKL_|KMP_|GOMP_|OPENBLAS_|TORCH|PYTORCH|CUDA|FSSPEC_|GCSFS_|GCE_"
    r"|(RANK|LOCAL_RANK|SLURM_PROCID|JSM_NAMESPACE_RANK|POSSIBLE_USER_WARNINGS)$"
)
#: ...except these, which torch reads when it loads a checkpoint, not at import
RUNTIME_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD"}
#: the rank variables Lightning and torchmetrics read at import (the first one set, else 0): where
#: all that are set say "0", it is as if none were, so rank zero of a DDP run shares the parent of
#: the single-process runs
RANK_ENV = {"RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"}


def lightning(package: str = "lightning.pytorch") -> tuple[str, ...]:
    """What to preload for a script on ``package`` ("lightning.pytorch" or "pytorch_lightning"):
    Trainer, Fabric and LightningCLI scripts of one test session then share one parent. Lightning
    imports torch._dynamo with ``import lightning.pytorch`` from 2.4 on, and before that when a
    fit starts (6 s of imports in every run of a 2.0-2.3 Trainer). ModelCheckpoint's setup imports
    whichever of adlfs, gcsfs and s3fs is installed (``cloud_io._is_object_storage``, 2.6): seconds
    more in every run where the object-store clients are installed."""
    return ("torch", "torch._dynamo", package, f"{package}.cli", "adlfs", "gcsfs", "s3fs")


def run_forked(
    args: Sequence[str | os.PathLike[str]],
    *,
    preload: Sequence[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([sys.executable, *args], cwd=, env=, timeout=, capture_output=True, text=True)``,
    forked from a parent that has imported ``preload`` (module names; a missing one is skipped)."""
    argv = [os.fspath(a) for a in args]
    cmd = [sys.executable, *argv]
    env = _environ() if env is None else dict(env)
    if not _can_fork():
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    cwd = os.path.abspath(os.fspath(cwd) if cwd is not None else os.getcwd())
    if not os.path.isdir(cwd):  # what subprocess.run raises, before anything runs
        raise FileNotFoundError(2, "No such file or directory", cwd)
    server = _server(tuple(preload), env)
    # what a child started now would inherit from this process: ignored signals, the signal mask
    ignored = [s for s in signal.valid_signals() if signal.getsignal(s) == signal.SIG_IGN]
    blocked = list(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    request = json.dumps({"argv": argv, "cwd": cwd, "env": env, "ignored": ignored, "blocked": blocked}).encode()
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        _stdin() as stdin,
    ):
        conn.connect(server.address)
        socket.send_fds(conn, [request], [stdin, out.fileno(), err.fileno()])
        pid = int(_reply(conn))
        conn.settimeout(timeout)
        try:
            returncode = int(_reply(conn))
        except TimeoutError:
            assert timeout is not None
            os.kill(pid, signal.SIGKILL)
            conn.settimeout(None)
            _reply(conn)  # killed and reaped, as subprocess.run leaves it
            raise subprocess.TimeoutExpired(cmd, timeout, output=_text(out), stderr=_text(err)) from None
        return subprocess.CompletedProcess(cmd, returncode, _text(out), _text(err))


def _environ() -> dict[str, str]:
    """What a child started without ``env=`` inherits: the process's C-level environment, which
    can hold more than ``os.environ`` (readline, once imported, sets COLUMNS and LINES there)."""
    import ctypes

    try:
        entries = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
    except (OSError, ValueError):
        return dict(os.environ)
    env: dict[str, str] = {}
    i = 0
    while (entry := entries[i]) is not None:
        name, sep, value = os.fsdecode(entry).partition("=")
        if sep:
            env[name] = value
        i += 1
    return env


def _can_fork() -> bool:
    needs = hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(socket, "send_fds")
    return needs and os.environ.get("BESTLINK_FORK", "1") != "0"


class _stdin:
    """The caller's fd 0 for the child, as a fresh process inherits it (/dev/null where it is closed)."""

    def __enter__(self) -> int:
        try:
            os.fstat(0)
            self.fd = -1
            return 0
        except OSError:
            self.fd = os.open(os.devnull, os.O_RDONLY)
            return self.fd

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def _reply(conn: socket.socket) -> str:
    data = conn.recv(64)
    if not data:
        raise RuntimeError("the fork server of tests/_fork.py went away (its stderr is in the test output)")
    return data.decode()


def _text(file: Any) -> str:
    """What ``text=True`` makes of captured bytes: the locale's encoding, universal newlines."""
    file.seek(0)
    data: str = file.read().decode(locale.getpreferredencoding(False))
    return data.replace("\r\n", "\n").replace("\r", "\n")


# --- the servers, seen from the caller -------------------------------------------------------------


@dataclass
class _Server:
    preload: tuple[str, ...]
    startup: dict[str, str]
    proc: subprocess.Popen[bytes]
    folder: str
    imported: dict[str, str | None] | None = None  # what the imports set in the environment

    @property
    def address(self) -> str:
        return os.path.join(self.folder, "socket")

    def serves(self, preload: tuple[str, ...], startup: dict[str, str]) -> bool:
        """Whether a fresh interpreter with ``startup`` would import ``preload`` as this server did:
        same values, or the one the imports set themselves (torch sets TORCHINDUCTOR_CACHE_DIR, so a
        caller that has imported torch has it)."""
        if preload != self.preload or self.proc.poll() is not None:
            return False
        imported = self.imported or {}
        names = startup.keys() | self.startup.keys()
        return all(startup.get(k) in (self.startup.get(k), imported.get(k, self.startup.get(k))) for k in names)


_SERVERS: list[_Server] = []


_STARTING = threading.Lock()  # the ranks of one run ask from threads of their own


def _server(preload: tuple[str, ...], env: dict[str, str]) -> _Server:
    with _STARTING:
        return _find_or_start(preload, env)


def _find_or_start(preload: tuple[str, ...], env: dict[str, str]) -> _Server:
    zero = all(env[k] == "0" for k in RANK_ENV & env.keys())  # rank zero, however it is said
    startup = {
        k: v for k, v in env.items() if STARTUP_ENV.match(k) and k not in RUNTIME_ENV and not (zero and k in RANK_ENV)
    }
    for server in _SERVERS:
        if server.serves(preload, startup):
            return server
    folder = tempfile.mkdtemp(prefix="bestlink-fork-")
    pipe = subprocess.PIPE
    proc = subprocess.Popen([sys.executable, __file__], stdin=pipe, stdout=pipe, cwd=folder, env=env)
    server = _Server(preload, startup, proc, folder)
    assert server.proc.stdin is not None and server.proc.stdout is not None
    server.proc.stdin.write(json.dumps({"address": server.address, "preload": preload}).encode() + b"\n")
    server.proc.stdin.flush()
    ready = server.proc.stdout.readline()
    if not ready.startswith(b"ready "):
        server.proc.kill()
        raise RuntimeError(f"the fork server of tests/_fork.py did not start (it said {ready!r})")
    server.imported = json.loads(ready.removeprefix(b"ready "))
    if not _SERVERS:
        atexit.register(_stop_servers)
    _SERVERS.append(server)
    return server


def _stop_servers() -> None:
    """At the end of the session: closing its stdin ends a server (and any child still running)."""
    for server in _SERVERS:
        assert server.proc.stdin is not None
        server.proc.stdin.close()
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
        shutil.rmtree(server.folder, ignore_errors=True)


# --- the server (this file run as a script) ------------------------------------------------------


def _serve() -> None:
    config = json.loads(sys.stdin.buffer.readline())
    startup_env = dict(os.environ)
    del sys.path[0]  # this file's folder; a child puts its script's folder there
    printed = _import(config["preload"])
    changed = {k: os.environ.get(k) for k in {*startup_env, *os.environ} if os.environ.get(k) != startup_env.get(k)}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(config["address"])
    listener.listen()
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "run")
    sel.register(0, selectors.EVENT_READ, "caller")
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection of the caller)
    sys.stdout.write(f"ready {json.dumps(changed)}\n")
    sys.stdout.flush()
    while True:
        for key, _ in sel.select():
            if key.data == "run":
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:  # the child: nothing of the server's may stay open in it
                    sel.close()
                    for sock in (listener, conn, *(c for _, c in running.values())):
                        sock.close()
                    for pidfd in running:
                        os.close(pidfd)
                    _child(request, fds, printed, startup_env, changed)
                for fd in fds:
                    os.close(fd)
                conn.send(str(pid).encode())
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "exit")
            elif key.data == "exit":
                pid, conn = running.pop(key.fd)
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                try:
                    conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                except OSError:
                    pass  # the caller stopped waiting (a timeout already killed the child)
                conn.close()
            elif not os.read(0, 4096):  # the caller closed our stdin: it has finished, or died
                for pid, _ in running.values():
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                os._exit(0)  # nothing to flush; tearing down torch's modules would only cost CPU


def _import(preload: list[str]) -> tuple[bytes, bytes]:
    """Import ``preload``, returning what the imports printed (each child prints it again, as a
    fresh interpreter importing them would)."""
    import importlib

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            for name in preload:
                try:
                    importlib.import_module(name)
                except ImportError:
                    pass  # a script that needs it fails in its own import, with its own traceback
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return out.read(), err.read()


def _child(
    request: dict[str, Any],
    fds: list[int],
    printed: tuple[bytes, bytes],
    startup_env: dict[str, str],
    changed: dict[str, str | None],
) -> NoReturn:
    """The forked run: become what ``python ARGV`` in the caller's cwd and environment would be."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    _signals(set(request["ignored"]), request["blocked"])
    os.chdir(request["cwd"])
    env: dict[str, str] = request["env"]
    for name, value in changed.items():  # what the imports set, where they saw the caller's value
        if env.get(name) == startup_env.get(name):
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
    os.environ.clear()
    os.environ.update(env)
    _reseed()
    os.write(1, printed[0])
    os.write(2, printed[1])
    status, killed_by = _run(request["argv"])
    _leave(status, killed_by)


def _signals(ignored: set[int], blocked: list[int]) -> None:
    """The signal state of ``python`` started by the caller: what the caller ignores stays ignored
    (exec keeps SIG_IGN), every other signal is at its default, then what the interpreter sets at
    startup (SIGPIPE and SIGXFSZ ignored, SIGINT raising KeyboardInterrupt unless it is ignored)."""
    for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if signal.SIGINT not in ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _reseed() -> None:
    """A fresh interpreter seeds these from the OS; a fork would repeat the server's state in every run."""
    import random

    random.seed()
    if "numpy.random" in sys.modules:
        sys.modules["numpy.random"].seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()


def _run(argv: list[str]) -> tuple[int, int | None]:
    """Run ``python ARGV``'s main module; return the exit status (and the signal an uncaught
    KeyboardInterrupt ends the process with, as the interpreter does)."""
    import builtins
    import runpy
    import types
    from importlib.machinery import SourceFileLoader

    main = types.ModuleType("__main__")  # the server's own __main__ stays out of the run's way
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            sys.path.insert(0, os.getcwd())
            runpy._run_module_as_main(argv[1])  # type: ignore[attr-defined]  # what `python -m` calls
        else:
            script = argv[0]
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.realpath(script)))
            path = script if os.path.isabs(script) else os.path.join(os.getcwd(), script)
            main.__file__ = path
            main.__loader__ = SourceFileLoader("__main__", path)
            main.__cached__ = None  # type: ignore[attr-defined]
            try:
                with open(path, "rb") as fh:
                    source = fh.read()
            except OSError as error:  # the interpreter's own words and status
                why = f"[Errno {error.errno}] {error.strerror}"
                print(f"{sys.executable}: can't open file {path!r}: {why}", file=sys.stderr)
                return 2, None
            code = compile(source, path, "exec")
            del main
            exec(code, sys.modules["__main__"].__dict__)
        return 0, None
    except SystemExit as leave:
        if leave.code is None:
            return 0, None
        if isinstance(leave.code, int):
            return leave.code & 0xFF, None
        print(leave.code, file=sys.stderr)
        return 1, None
    except BaseException as error:  # what the interpreter prints: the traceback from the script on
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == _run.__code__.co_filename:
            tb = tb.tb_next
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        return 1, signal.SIGINT if isinstance(error, KeyboardInterrupt) else None


def _leave(status: int, killed_by: int | None) -> NoReturn:
    """End as the interpreter ends: threads joined, atexit handlers, the main module's objects
    released (open files flushed), standard streams flushed (exit status 120 when that fails)."""
    import gc
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize calls first
    atexit._run_exitfuncs()
    main = sys.modules.pop("__main__", None)
    if main is not None:
        main.__dict__.clear()
    del main
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = 120
    if killed_by is not None:
        signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    os._exit(status)


if __name__ == "__main__":
    _serve()
