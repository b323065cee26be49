"""Layer builds in worker processes.

Inflating, hashing and compressing release the GIL, but a builder's own Python work (tar
headers, chunk records, RAFS layout and serialisation: about half of a layer's CPU time)
does not, so two layers built in threads share one core for it. In worker processes they
use a core each. The parent keeps everything else: it reads the source (so digests are
checked, progress is counted and credentials stay where they are), runs the hooks, and
streams the still-compressed layer to the worker over a pipe, whose small buffer bounds
memory. A worker inflates, builds into the layer's work directory and answers with the
`BuiltLayer` and the layer's diff_id.

Used for large multi-layer images only (see `ConvertOptions.layer_processes`). A worker is
forked from the converting process when that process runs one thread (the CLI does): it is
ready at once, with every module loaded. Otherwise (threads of a caller's own) it is a fresh
interpreter, which costs a start-up and the imports, something small images would notice.
"""

from __future__ import annotations

import gc
import io
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from nydusify_core import errors
from nydusify_core.conversion.readahead import ReadAhead
from nydusify_core.errors import NydusifyError
from nydusify_core.oci.layertar import BlockReader, decode_layer
from nydusify_core.rafs.builder import BuildOptions
from nydusify_core.rafs.model import tree_building
from nydusify_core.types import BuiltLayer

__all__ = ["ENV_START", "WORKER_NAME", "LayerProcessPool", "build_layer_stream", "picklable"]

_COPY = 1 << 20
_END = b""  # the message after a layer's last data block
_SOCKET_BUFFER = 4 << 20
ENV_START = "NYDUSIFY_LAYER_WORKER_START"  # "exec": never fork layer workers (tests, debugging)
_WORKER_MAIN = "import sys; from nydusify_core.conversion.layerproc import serve; serve(int(sys.argv[1]))"


@dataclass(frozen=True)
class _Task:
    media_type: str
    label: str
    layer_dir: Path
    options: BuildOptions


def picklable(obj: Any) -> bool:
    """Whether `obj` (a layer builder) can be handed to a worker process: it pickles, and
    its class can be imported there (not one defined in the caller's main script)."""
    if type(obj).__module__ == "__main__":
        return False
    try:
        pickle.loads(pickle.dumps(obj))
    except Exception:
        return False
    return True


# --- the worker side ----------------------------------------------------------------------


class _PipeReader(BlockReader):
    """The layer's compressed bytes as the parent sends them, up to the end message."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._pending = memoryview(b"")
        self.ended = False

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Up to `size` bytes; a whole message as received when it fits (no copy)."""
        if not self._pending:
            if self.ended:
                return b""
            data = self._conn.recv_bytes()
            if data == _END:
                self.ended = True
                return b""
            if size is None or size < 0 or size >= len(data):
                return data
            self._pending = memoryview(data)
        n = len(self._pending) if size is None or size < 0 else min(size, len(self._pending))
        out = bytes(self._pending[:n])
        self._pending = self._pending[n:]
        return out

    def drain(self) -> None:
        """Consume the rest of the layer so the parent's sends never block forever."""
        self._pending = memoryview(b"")
        while not self.ended:
            if self._conn.recv_bytes() == _END:
                self.ended = True


def build_layer_stream(builder: Any, source: IO[bytes], *, media_type: str, label: str, layer_dir: Path,
                       options: BuildOptions) -> tuple[BuiltLayer, str]:
    """Inflate and build the compressed layer read from `source`, in this process, with
    inflating and hashing on their own thread; (built layer, diff_id). `source` is read to
    its end, so a verifying source has checked its digest when this returns."""
    tar = decode_layer(source, media_type=media_type, layer=label)
    ahead = ReadAhead(tar, block=_COPY, name="inflate")
    try:
        stream = io.BufferedReader(ahead, _COPY)
        built = builder.build_layer(stream, layer_dir, options, label=label)
        while stream.read(_COPY):  # the tar's padding: the diff_id covers the whole stream
            pass
    finally:
        ahead.close()  # the reader thread has finished: `tar` and `source` are ours again
    while source.read(_COPY):  # anything after the compressed stream
        pass
    diff_id = tar.diff_id
    assert diff_id is not None  # the stream was read to its end
    return built, diff_id


def serve(fd: int) -> None:
    """The worker process: build the layers the parent sends over socket `fd`."""
    conn = Connection(fd)
    try:
        builder = conn.recv()
    except Exception:  # the parent has gone, or the builder's class is not importable here
        return
    _serve_layers(conn, builder)


WORKER_NAME = b"nydusify-layer"  # the workers' process name (ps, top, /proc/PID/comm)


def _name_process() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, WORKER_NAME, 0, 0, 0)  # PR_SET_NAME
    except Exception:  # not Linux: the name is only a courtesy
        pass


def _serve_layers(conn: Connection, builder: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and stops us
    _name_process()
    # A layer's records all stay alive until it is built, so collections during a build free
    # nothing (see model.tree_building); here the whole process is ours: collect between layers.
    gc.disable()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        source = _PipeReader(conn)
        reply: tuple[Any, ...]
        try:
            reply = ("ok", *build_layer_stream(
                builder, source, media_type=task.media_type, label=task.label,
                layer_dir=task.layer_dir, options=task.options,
            ))
        except NydusifyError as exc:
            reply = ("error", type(exc).__name__, str(exc), exc.exit_code)
        except Exception as exc:  # a bug: reported like one by the parent
            reply = ("bug", type(exc).__name__, str(exc), 1)
        try:
            source.drain()
            conn.send(reply)
        except (EOFError, OSError):
            return
        del reply
        gc.collect()


# --- the parent side ----------------------------------------------------------------------


class _Forked:
    """The `subprocess.Popen` calls `_Worker` makes, for a child made by `os.fork`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"layer worker {self.pid}", timeout or 0)
            time.sleep(0.005)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


def _can_fork() -> bool:
    """Whether a worker may be forked from this process: only while it runs one thread,
    since a lock another thread held at the fork would stay locked forever in the child."""
    return hasattr(os, "fork") and threading.active_count() == 1 and os.environ.get(ENV_START) != "exec"


def _fork(builder: Any, theirs: socket.socket, mine: socket.socket) -> _Forked:
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:  # the child: never return into the parent's stack, never run its exit handlers
        mine.close()
        gc.freeze()  # the parent's objects: collections here must not touch (and copy) them
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _serve_layers(Connection(theirs.detach()), builder)
        code = 0
    finally:
        os._exit(code)


class _Worker:
    """A child process talking over a socket pair: forked from this process when that is
    safe (it starts at once, with every module loaded), else `python -c _WORKER_MAIN FD`.

    Not `multiprocessing`: its spawn mode would re-import the caller's main module, which
    breaks scripts that call `convert` without a main guard."""

    def __init__(self, builder: Any) -> None:
        mine, theirs = socket.socketpair()
        # room for a few 1 MiB messages: with the default ~200 KiB, every message took several
        # wake-ups of both sides, and a busy machine delays each (the kernel caps the request)
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        self.process: Any
        try:
            if _can_fork():
                self.process = _fork(builder, theirs, mine)
                self.conn = Connection(mine.detach())
            else:
                self.process = subprocess.Popen(
                    [sys.executable, "-c", _WORKER_MAIN, str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                )
                self.conn = Connection(mine.detach())
                self.conn.send(builder)
        finally:
            theirs.close()
            mine.close()
        self.retired = False

    def retire(self) -> None:
        """Ask the worker to exit when it is idle, without waiting for it."""
        if not self.retired:
            self.retired = True
            try:
                self.conn.send(None)
            except OSError:
                pass

    def stop(self) -> None:
        self.retire()
        self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _error(kind: str, name: str, message: str, exit_code: int) -> NydusifyError:
    cls = getattr(errors, name, None)
    if kind == "error" and isinstance(cls, type) and issubclass(cls, NydusifyError):
        exc = cls.__new__(cls)
        NydusifyError.__init__(exc, message)
    else:
        exc = NydusifyError(f"layer worker failed: {name}: {message}")
    exc.exit_code = exit_code  # type: ignore[misc]
    return exc


class LayerProcessPool:
    """`size` worker processes, each building one layer at a time for the calling thread."""

    def __init__(self, size: int, builder: Any) -> None:
        self._builder = builder
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        try:
            for _ in range(size):
                self._add()
        except BaseException:
            self.close()
            raise

    def _add(self) -> None:
        worker = _Worker(self._builder)
        self._all.append(worker)
        self._idle.put(worker)

    def build(self, source: IO[bytes], *, media_type: str, label: str, layer_dir: Path, options: BuildOptions) -> tuple[BuiltLayer, str]:
        """Build the compressed layer read from `source`; (built layer, diff_id).

        An error reading `source` is raised as is (the worker's answer is then dropped);
        a worker that dies is replaced and its layer fails with a one-line error."""
        worker = self._idle.get()
        read_error: BaseException | None = None
        try:
            worker.conn.send(_Task(media_type, label, layer_dir, options))
            try:
                while block := source.read(_COPY):
                    worker.conn.send_bytes(block)
            except (BrokenPipeError, ConnectionResetError):
                raise
            except BaseException as exc:  # the worker still answers (a truncated layer): take it
                read_error = exc
            worker.conn.send_bytes(_END)
            with tree_building():  # the reply is a whole tree of records
                reply = worker.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            self._replace(worker)
            raise NydusifyError(f"{label}: the layer worker process died (exit code {worker.process.returncode})") from None
        self._idle.put(worker)
        if read_error is not None:
            raise read_error
        if reply[0] == "ok":
            return reply[1], reply[2]
        raise _error(*reply)

    def _replace(self, worker: _Worker) -> None:
        self._all.remove(worker)
        worker.conn.close()
        worker.process.kill()
        worker.process.wait()
        self._add()

    def retire(self) -> None:
        """No more layers will come: the workers exit now, while the caller merges."""
        for worker in self._all:
            worker.retire()

    def close(self) -> None:
        for worker in self._all:
            worker.stop()
        self._all.clear()

