"""Decoding in a child process: a decoder that crashes or hangs costs one file, never the process that asked.

:func:`open_sandboxed` returns a :class:`VideoReader` whose opening, frame reads and closing run in a *decode child*:
one per process and thread that reads (a DataLoader worker, or the main process with 0 workers), forked on first use
and again after each crash or hang. The child runs :func:`.backends.open_video`; frames come back through a shared
memory file (uint8 (T, H, W, 3), written once by the child, straight from the decoder's buffer; the parent copies
them out, or with ``copy_frames=False`` uses them in place until its next request), requests and replies are small
pickles over a socket pair. A reader's last read (``frames_and_close``) is one request, which also frees the decoder.

Each request names its file before it is sent. When the child dies during a request (a segmentation fault, an abort,
a double free in FFmpeg) or gives no reply within ``timeout`` seconds (it is then killed), the request raises
:class:`VideoDecodeError` for that file with :func:`.errors.crash_reason` ("decoder crashed: signal 11 (SIGSEGV)") or
:func:`.errors.hang_reason` ("decoder hung: no frames after 60 s"), and the next request starts a new child. Every other
failure comes back as the exception the reader raised (a broken file, a missing one).

The child is a fork (no interpreter start-up; the readers are imported before it): it ignores SIGINT and SIGTERM
(the parent decides when decoding stops) and is killed when its parent dies (``PR_SET_PDEATHSIG``); the fatal signals
get their default action back and core dumps are off, so a crash ends the child at once; it never collects objects
inherited from the parent (``gc.freeze``: a decoder the parent left in a reference cycle must not be freed where its
threads do not exist), and it installs no Python log callback in FFmpeg (``av.logging.set_level`` has deadlocked decoder
threads). Needs ``os.fork`` (Linux, macOS): :func:`sandbox_available`.
"""

from __future__ import annotations

import gc
import math
import mmap
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Pipe

import torch

from . import backends
from .base import T, VideoReader, shares_memory
from .errors import VideoDecodeError, crash_reason, hang_reason, problem_reason

#: seconds a request may go without a reply before its file is named hung (a clip decodes in well under a second)
DEFAULT_TIMEOUT = 60.0
_CHUNK_FRAMES = 64  # frames per decoder read in the child (see _read_into)
_REAP_SECONDS = 5.0  # how long to wait for a dead or killed child to be reaped before leaving it for later


def sandbox_available() -> bool:
    """Whether decoding can be isolated here (the child is started with ``os.fork``)."""
    return hasattr(os, "fork") and sys.platform != "win32"


class _SharedFrames:
    """The shared memory file through which the child hands frames to its parent; the child grows it."""

    def __init__(self) -> None:
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("gnvideo-decode", os.MFD_CLOEXEC)  # kept across fork, not across exec
        else:
            import tempfile

            with tempfile.TemporaryFile() as f:
                self.fd = os.dup(f.fileno())
        self._map: mmap.mmap | None = None

    def _mapped(self, nbytes: int, grow: bool) -> mmap.mmap:
        size = os.fstat(self.fd).st_size
        if nbytes > size:
            if not grow:
                raise RuntimeError(f"decode child reported {nbytes} bytes of frames, the shared file holds {size}")
            size = -(-max(nbytes, 2 * size) // mmap.PAGESIZE) * mmap.PAGESIZE
            os.ftruncate(self.fd, size)
        if self._map is None or len(self._map) < nbytes:
            self._map = mmap.mmap(self.fd, size)  # an earlier map is freed with the last view of it
        return self._map

    def write(self, frames: torch.Tensor, offset: int = 0) -> tuple[int, ...]:
        """Child side: put uint8 ``frames`` into the file at byte ``offset``; returns their shape."""
        n = frames.numel()
        if n:
            mapped = self._mapped(offset + n, grow=True)
            torch.frombuffer(mapped, dtype=torch.uint8, count=n, offset=offset).copy_(frames.reshape(-1))
        return tuple(frames.shape)

    def read(self, shape: Sequence[int], copy: bool = True) -> torch.Tensor:
        """Parent side: the uint8 frames of ``shape`` the child just wrote; a view of the file when not ``copy``
        (overwritten by the child's next frames)."""
        n = 1
        for s in shape:
            n *= int(s)
        if n == 0:
            return torch.empty(tuple(shape), dtype=torch.uint8)
        view = torch.frombuffer(self._mapped(n, grow=False), dtype=torch.uint8, count=n).view(tuple(shape))
        return view.clone() if copy else view

    def close(self) -> None:
        self._map = None
        os.close(self.fd)


def _meta(reader: VideoReader) -> tuple:
    return (reader.backend, reader.frame_count, reader.fps, reader.rotation, reader.num_repeated,
            reader.last_num_repeated)


def _become_child(parent: int) -> None:
    """Process set-up of a decode child, right after the fork (see the module docstring)."""
    gc.freeze()
    import faulthandler
    import resource

    faulthandler.disable()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)  # DataLoader workers install handlers that print and re-raise
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: die with the parent
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(0)
    torch.set_num_threads(1)


def _read_into(frames: _SharedFrames, reader: VideoReader, indices: Sequence[int], close: bool) -> tuple:
    """Child side: the frames of ``indices`` into the shared file, straight from the decoder's buffer (one copy),
    ``_CHUNK_FRAMES`` at a time: the decoder's output buffer then stays small enough to be reused memory rather than
    new pages each read (a test video's 206 frames at 340x256 are 54 MB). Returns (shape, reader meta)."""
    chunks = [indices[s:s + _CHUNK_FRAMES] for s in range(0, len(indices), _CHUNK_FRAMES)] or [indices]
    offset, repeated, shape = 0, 0, None
    try:
        for k, chunk in enumerate(chunks):
            last = close and k == len(chunks) - 1
            part = reader.frames_through(chunk, lambda f, at=offset: frames.write(f, at), close=last)
            if shape is not None and tuple(part[1:]) != shape[1:]:
                raise VideoDecodeError(f"frame size changed within one read: {shape[1:]} then {tuple(part[1:])}",
                                       reader.path)
            shape = (part[0] + (shape[0] if shape else 0), *part[1:])
            offset += math.prod(part)
            repeated += reader.last_num_repeated
    except BaseException:
        if close:  # a failed read is freed in the same request too (a crash while freeing is still this file's)
            reader.close()
        raise
    meta = _meta(reader)
    return shape, (*meta[:-1], repeated)


def _serve(conn, frames: _SharedFrames) -> None:
    """The decode child's loop: ``("open", path, backend, short_side)``, ``("frames", indices, close)``,
    ``("close",)``. With ``close``, the decoder is freed before the frames are copied into the shared file."""
    reader: VideoReader | None = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the parent closed its end or exited
            return
        try:
            if request[0] == "open":
                if reader is not None:
                    reader.close()
                reader = None
                reader = backends.open_video(*request[1:])
                reply: tuple = ("ok", _meta(reader))
            elif request[0] == "frames":
                try:
                    shape, meta = _read_into(frames, reader, request[1], request[2])
                finally:
                    if request[2]:  # the reader closed itself after the copy
                        reader = None
                reply = ("ok", shape, meta)
            else:  # "close": the decoder is freed here, so a crash while freeing it is still this file's
                if reader is not None:
                    reader.close()
                reader = None
                reply = ("ok",)
        except Exception as err:  # noqa: BLE001 - every failure goes back to the caller, who decides
            reply = ("error", err)
        try:
            conn.send(reply)
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            conn.send(("error", RuntimeError(problem_reason(reply[1]))))
        reply = None


class DecodeSandbox:
    """The decode child of one process and thread (use :func:`open_sandboxed`, which finds it).

    Attributes:
        generation: children started so far (a reader opened in an earlier one has nothing left to close).
        pid: the running child's process id, or None.
        current: the reader whose file the child holds open (one at a time: an open closes the previous file).
    """

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.frames = _SharedFrames()
        self.pid: int | None = None
        self.generation = 0
        self.current: SandboxedReader | None = None
        self._conn = None
        self._unreaped: list[int] = []

    def _start(self) -> None:
        import warnings

        backends.import_decoders()
        parent_end, child_end = Pipe(duplex=True)
        with warnings.catch_warnings():  # 3.12+ warns on fork in a threaded process; the child touches no lock
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                parent_end.close()
                _become_child(self.owner)
                _serve(child_end, self.frames)
            except BaseException:  # noqa: BLE001 - the child never returns into the parent's code
                code = 1
            finally:
                os._exit(code)
        child_end.close()
        self.pid, self._conn = pid, parent_end
        self.generation += 1

    def _exit_code(self, wait: float) -> int | None:
        """The child's exit code (``-N``: killed by signal N) once reaped within ``wait`` seconds, else None."""
        deadline = time.monotonic() + wait
        while True:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)

    def _forget(self, kill: bool) -> int | None:
        """Drop the child (killed first when ``kill``); its exit code if it was reaped."""
        if self.pid is None:
            return None
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        code = self._exit_code(_REAP_SECONDS)
        if code is None:
            self._unreaped.append(self.pid)  # stuck in the kernel (a dead NFS mount): reaped later if ever
        self._conn.close()
        self.pid, self._conn, self.current = None, None, None
        self._unreaped = [pid for pid in self._unreaped if not _reaped(pid)]
        return code

    def request(self, message: tuple, path: str, timeout: float) -> tuple:
        """Send ``message`` about ``path`` and return the reply's fields; see the module docstring for failures."""
        if self.pid is not None and self._conn.poll(0):  # an idle child never writes: it died (EOF), no file's doing
            self._forget(kill=True)
        if self.pid is None:
            self._start()
        try:
            self._conn.send(message)
        except OSError:  # died between the check and the send
            self._forget(kill=True)
            self._start()
            self._conn.send(message)
        try:
            if not self._conn.poll(timeout):
                self._forget(kill=True)
                raise VideoDecodeError(hang_reason(timeout), path)
            reply = self._conn.recv()
        except (EOFError, OSError):
            raise VideoDecodeError(crash_reason(self._forget(kill=True)), path) from None
        except VideoDecodeError:
            raise
        except BaseException:  # interrupted while the child works, or a reply that cannot be read: start afresh
            self._forget(kill=True)
            raise
        if reply[0] == "error":
            raise reply[1]
        return reply[1:]

    def stop(self) -> None:
        """End the child (a new one starts with the next request)."""
        self._forget(kill=True)

    def disown(self) -> None:
        """Forget a sandbox inherited through a fork: its child belongs to the parent process, left running."""
        if self._conn is not None:
            self._conn.close()
        self.pid, self._conn = None, None
        self.frames.close()


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


_local = threading.local()


def current_sandbox() -> DecodeSandbox:
    """This process's and thread's :class:`DecodeSandbox` (made on first use; one inherited through fork is left
    to the process that made it)."""
    box = getattr(_local, "sandbox", None)
    if box is None or box.owner != os.getpid():
        if box is not None:
            box.disown()
        box = _local.sandbox = DecodeSandbox()
    return box


class SandboxedReader(VideoReader):
    """A :class:`VideoReader` whose decoder lives in this process's decode child (see the module docstring).

    With ``copy_frames=False``, :meth:`frames` returns a view of the shared memory file, valid until the next request
    of this process's sandbox (any reader's open, frames or close): for a caller that turns the frames into new
    tensors at once (the datasets' crops), it saves one copy per clip.
    """

    def __init__(self, path: str, backend: str = "auto", short_side: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, copy_frames: bool = True) -> None:
        super().__init__(path, short_side)
        self.timeout, self.copy_frames = float(timeout), bool(copy_frames)
        self._box = current_sandbox()
        (meta,) = self._box.request(("open", path, backend, short_side), path, self.timeout)
        self._generation = self._box.generation
        self._box.current = self
        self._set(meta)

    def _set(self, meta: tuple) -> None:
        (self.backend, self.frame_count, self.fps, self.rotation, self.num_repeated,
         self.last_num_repeated) = meta

    @property
    def is_open(self) -> bool:
        """Whether the child that opened this file still holds it (not after a crash, a hang or another open)."""
        return self._box.current is self and self._generation == self._box.generation and self._box.pid is not None

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        return self._frames(indices, close=False)

    def frames_and_close(self, indices: Sequence[int]) -> torch.Tensor:
        return self._frames(indices, close=True)

    def frames_through(self, indices: Sequence[int], fn: Callable[[torch.Tensor], T], close: bool = False) -> T:
        """``fn`` of the frames in place in the shared memory file (when not ``copy_frames``); a result that shares
        that memory (which the next request overwrites) is made again from a copy. With ``close``, one request
        reads and frees the decoder, as :meth:`frames_and_close`."""
        frames = self._frames(indices, close)
        result = fn(frames)
        if not self.copy_frames and shares_memory(result, frames):
            result = fn(frames.clone())
        return result

    def _frames(self, indices: Sequence[int], close: bool) -> torch.Tensor:
        if not self.is_open:
            raise ValueError(f"{self.path}: reader is closed (or another video was opened in this process since)")
        if close:
            self._box.current = None  # the child frees the decoder with this request (a crash then is this file's)
        shape, meta = self._box.request(("frames", [int(i) for i in indices], close), self.path, self.timeout)
        self._set(meta)
        return self._box.frames.read(shape, copy=self.copy_frames)

    def close(self) -> None:
        if self.is_open:
            self._box.current = None
            self._box.request(("close",), self.path, self.timeout)


def open_sandboxed(path: str | os.PathLike, backend: str = "auto", short_side: int | None = None,
                   timeout: float = DEFAULT_TIMEOUT, copy_frames: bool = True) -> VideoReader:
    """:func:`.backends.open_video` in this process's decode child.

    Args:
        path, backend, short_side: as for :func:`.backends.open_video`.
        timeout: seconds each request (open, a frame read, close) may take before the file is named hung.
        copy_frames: False: ``frames()`` returns views that the next request overwrites (see
            :class:`SandboxedReader`).

    Raises:
        FileNotFoundError, VideoDecodeError, ValueError: as :func:`.backends.open_video` and the readers raise them;
            a crash or hang of the decoder is a :class:`VideoDecodeError` with the reasons above.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    return SandboxedReader(os.fspath(path), backend, short_side, timeout, copy_frames)


def stop_sandbox() -> None:
    """End this process's and thread's decode child, if any (the next read starts a new one)."""
    box = getattr(_local, "sandbox", None)
    if box is not None and box.owner == os.getpid():
        box.stop()


__all__ = ["DEFAULT_TIMEOUT", "DecodeSandbox", "SandboxedReader", "current_sandbox", "open_sandboxed",
           "sandbox_available", "stop_sandbox"]
