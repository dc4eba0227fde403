"""The worker API: handlers, hooks, timers, publish, and the blocking run loop.

A worker's stdin carries frames from hyphad and its stdout frames to hyphad;
stderr is its log. Under hyphad (HYPHA_WORKER is set) `Worker()` takes fd 1
for frames at once and points fd 1 and `sys.stdout` at stderr, so a stray
`print()` or a C library writing to stdout cannot corrupt the stream.
Elsewhere (a unit test importing the module) nothing is taken until `run()`.

Stops: a shutdown frame, stdin EOF and SIGTERM only set a flag. A running
handler finishes; the frames already read are handled; publishes are flushed;
`on_stop` hooks run; `run()` returns. Nothing is raised from a signal handler.

Output: publishes made on the loop's thread during one turn (the handlers of
one read, a timer, a hook) are coalesced into one write, flushed when the turn
ends, when 16 KiB are waiting, and in a long turn after every 4 KiB of frames
read if the oldest waiting is older than `flush_delay`. Publishes from other threads
are written at once, whole. (docs/python-sdk.md has the reasons.)
"""
import dataclasses
import hashlib
import heapq
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union, overload

from ._aio import Stream
from ._log import worker_logger
from .frames import CONTROL_TYPE, HEADER, MAX_PAYLOAD, ProtocolError
from .types import Message

READ_SIZE = 65536
FLUSH_BYTES = 16384  # a write per 16 KiB: ~750 small frames, under 1 ms of publishing
_os_write = os.write
_get_ident = threading.get_ident
_clock = time.monotonic
_unpack_header = HEADER.unpack_from

M = TypeVar("M", bound=Message)
F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[M], Any]  # may return an awaitable under run_async()
RawHandler = Callable[[int, bytes], Any]


def _type_ref(t: Any) -> Union[int, str]:
    """A message class, name or id as the control protocol names types."""
    if isinstance(t, bool):
        raise TypeError(f"not a message type: {t!r}")
    if isinstance(t, (int, str)):
        return t
    type_id = getattr(t, "TYPE_ID", None)
    if isinstance(type_id, int):
        return type_id
    raise TypeError(f"subscribe() takes message classes, names or type ids, not {t!r}")


def _fast_struct(cls: type) -> Any:
    """The class's struct when a payload decodes as cls(*struct.unpack(payload)):
    a generated dataclass whose fields are all scalars."""
    st, codes = getattr(cls, "STRUCT", None), getattr(cls, "CODES", None)
    if st is None or codes is None or not dataclasses.is_dataclass(cls):
        return None
    if st.size != getattr(cls, "SIZE", -1) or len(codes) != len(dataclasses.fields(cls)):
        return None
    return st


class WorkerError(Exception):
    """Misuse or a situation the worker cannot run in, said plainly."""


class SchemaMismatch(WorkerError):
    """The message classes were generated from other contracts than hyphad's."""


class _Timer:
    __slots__ = ("interval", "fn", "due", "internal")

    def __init__(self, interval: float, fn: Callable[[], Any], internal: bool = False) -> None:
        self.interval = interval
        self.fn = fn
        self.due = 0.0
        self.internal = internal

    def __lt__(self, other: "_Timer") -> bool:
        return self.due < other.due


def _file_digest(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def stale_side(classes: str, hyphad: str, path: Optional[str]) -> str:
    """SchemaMismatch's message: which side is stale, and what fixes it."""
    disk = _file_digest(path) if path else None
    c, h = classes[:12] + "…", hyphad[:12] + "…"
    where = f" ({path})" if path else ""
    if disk == classes:
        return (f"hyphad still runs older contracts ({h}) than its contracts file{where} now holds "
                f"({c}, which these message classes match): restart hyphad to load them "
                f"(a reload cannot change contracts)")
    if disk == hyphad:
        return (f"these message classes are stale: generated from contracts {c}, but hyphad and its "
                f"contracts file{where} are at {h}: regenerate them with hypha-codegen {path or ''} "
                f"--py-out ...")
    if disk:
        return (f"these message classes ({c}), hyphad ({h}) and its contracts file{where} "
                f"({disk[:12]}…) all differ: regenerate the classes from that file and restart hyphad")
    return (f"these message classes were generated from contracts with digest {c}, but hyphad "
            f"runs {h}: regenerate them with hypha-codegen from hyphad's contracts file, or, if "
            f"you just changed that file, restart hyphad")


class Worker:
    """A hypha worker. See the package docstring for an example.

    heartbeat: seconds between heartbeat control frames (None: as hyphad asks
        in its welcome, a third of the worker's heartbeat.timeout; no
        heartbeats when it asks for none).
    fail_on_error: a handler that raises ends run() with that exception
        (default: the traceback is logged and the worker goes on).
    flush_delay: in a long turn of the loop (many frames read at once), the
        longest a publish waits in the buffer (seconds; default 1 ms).
    queue: under run_async(), frames read but not yet handled; at this many
        hyphad's pipe is no longer read, so its back-pressure reaches hyphad.
    concurrency: under run_async(), handlers running at once (default 1: in
        order, one at a time).
    """

    def __init__(self, *, heartbeat: Optional[float] = None, fail_on_error: bool = False,
                 flush_delay: float = 0.001, queue: int = 1024, concurrency: int = 1,
                 stdin_fd: int = 0, stdout_fd: int = 1, protect_stdout: bool = True) -> None:
        if queue < 1 or concurrency < 1:
            raise ValueError("queue and concurrency must be at least 1")
        self.name = os.environ.get("HYPHA_WORKER", "")
        self.instance = int(os.environ.get("HYPHA_INSTANCE", "0") or 0)
        self.heartbeat = heartbeat
        self.fail_on_error = fail_on_error
        self.flush_delay = flush_delay
        self.queue = queue
        self.concurrency = concurrency
        self.welcome: Optional[Dict[str, Any]] = None
        self.dropped = 0  # frames of types with no handler
        self.malformed = 0  # frames whose payload did not decode
        self.log = worker_logger()
        self._in = stdin_fd
        self._out_fd = stdout_fd
        self._protect = protect_stdout
        self._write_all: Optional[Callable[[Any], None]] = None  # set once attached
        self._headers: Dict[type, bytes] = {}
        self._handlers: Dict[int, Tuple[Any, Callable[..., Any]]] = {}
        self._raw: Dict[int, Callable[..., Any]] = {}
        self._table: Dict[int, Tuple[Callable[..., Any], Any, int, Any]] = {}
        self._streams: Dict[int, Any] = {}
        self._start_hooks: List[Callable[..., Any]] = []
        self._stop_hooks: List[Callable[..., Any]] = []
        self._timers: List[_Timer] = []
        self._heap: List[_Timer] = []
        self._digest: Optional[str] = None
        self._lock = threading.Lock()
        self._obuf = bytearray()
        self._ibuf = bytearray()
        self._owner: Optional[int] = None  # the thread whose publishes are coalesced
        self._since = 0.0  # the loop's clock when the buffer last was empty
        self._clock = _clock
        self._stopping = False
        self._stop_reason = ""
        self._deadline: Optional[float] = None  # from shutdown's grace_ms: when to give up handling
        self.unhandled = 0  # frames read but left unhandled when the grace ran out
        self.failed = 0  # handler calls that raised
        self._stats_at = -1e9  # when hyphad was last told `failed`
        self._hello_sent = False
        if "HYPHA_WORKER" in os.environ:
            self._attach()

    # ---- registration ----------------------------------------------------

    def on(self, cls: Type[M]) -> Callable[[Callable[[M], Any]], Callable[[M], Any]]:
        """Decorator: call the function with each `cls` message received."""
        self._check_class(cls, "@worker.on()")

        def register(fn: Callable[[M], Any]) -> Callable[[M], Any]:
            self._handlers[cls.TYPE_ID] = (cls, fn)
            self._compile()
            if self._hello_sent:
                self._control(op="subscribe", types=[cls.TYPE_ID])
            return fn
        return register

    def on_raw(self, type_id: int) -> Callable[[RawHandler], RawHandler]:
        """Decorator: call fn(type_id, payload_bytes) for frames of that type id."""
        def register(fn: RawHandler) -> RawHandler:
            self._raw[int(type_id)] = fn
            self._compile()
            if self._hello_sent:
                self._control(op="subscribe", types=[int(type_id)])
            return fn
        return register

    def on_start(self, fn: F) -> F:
        """Decorator: run fn() after hello, before the worker says it is
        ready (an `async def` under run_async()). If it raises, run() does."""
        self._start_hooks.append(fn)
        return fn

    def on_stop(self, fn: F) -> F:
        """Decorator: run fn() once serving ended (stop, shutdown or EOF),
        before the last publishes are flushed and run() returns."""
        self._stop_hooks.append(fn)
        return fn

    @overload
    def every(self, seconds: float) -> Callable[[F], F]: ...

    @overload
    def every(self, seconds: float, fn: F) -> F: ...

    def every(self, seconds: float, fn: Optional[F] = None) -> Any:
        """Call fn() every `seconds` on the worker's loop, the first time one
        interval after the worker is ready; a late call is not repeated to
        catch up. As a decorator (`@worker.every(1.0)`) or `every(1.0, fn)`."""
        if not seconds > 0:
            raise ValueError(f"every() needs a positive interval, not {seconds!r}")

        def register(f: F) -> F:
            t = _Timer(float(seconds), f)
            self._timers.append(t)
            if self._owner is not None:  # added while running: schedule it now
                self._schedule(t, self._clock())
            return f
        return register(fn) if fn is not None else register

    def stream(self, cls: Type[M], maxsize: Optional[int] = None) -> "Stream[M]":
        """`async for msg in worker.stream(Cls)`: the messages of that type, in
        order, under run_async(). Iteration ends when the worker stops; a full
        stream (maxsize, default the worker's queue) holds hyphad back."""
        self._check_class(cls, "worker.stream()")
        s: Stream[M] = Stream(self, cls, maxsize or self.queue)
        self._streams[cls.TYPE_ID] = s
        self._handlers[cls.TYPE_ID] = (cls, s._put)
        self._compile()
        if self._hello_sent:
            self._control(op="subscribe", types=[cls.TYPE_ID])
        return s

    def _check_class(self, cls: Any, what: str) -> None:
        for attr in ("TYPE_ID", "from_bytes", "to_bytes"):
            if not hasattr(cls, attr):
                raise TypeError(f"{what} takes a message class generated by hypha-codegen, not {cls!r}")
        digest = getattr(sys.modules.get(cls.__module__), "SCHEMA_DIGEST", None)
        if digest and self._digest and digest != self._digest:
            raise SchemaMismatch(f"{cls.__name__} comes from other contracts ({digest[:12]}…) "
                                 f"than the other handlers ({self._digest[:12]}…)")
        self._digest = digest or self._digest

    def _compile(self) -> None:
        """type id -> (handler, fast unpack or None, its payload size or -1, class or None)."""
        table: Dict[int, Tuple[Callable[..., Any], Any, int, Any]] = {}
        for type_id, (cls, fn) in self._handlers.items():
            st = _fast_struct(cls)
            # size -1 never matches a frame's length: always the slow path
            table[type_id] = (fn, st.unpack_from if st else None, cls.SIZE if st else -1, cls)
        for type_id, fn in self._raw.items():
            if type_id not in table:
                table[type_id] = (fn, None, -1, None)
        self._table = table

    @property
    def stopping(self) -> bool:
        """A stop was asked for (shutdown, EOF, SIGTERM): a long handler or
        a thread of yours can end early and let run() return."""
        return self._stopping

    @property
    def stop_reason(self) -> str:
        """Why the worker stopped: "shutdown" (hyphad's frame), "EOF", "SIGTERM",
        "exit" (left `async with`), "error"; "" while it runs."""
        return self._stop_reason if self._stopping else ""

    async def wait_stop(self) -> str:
        """Under run_async() / `async with worker:`: wait until a stop was
        asked for; returns stop_reason. For a body that does not iterate a
        stream: `async with worker: await worker.wait_stop()`."""
        aio = getattr(self, "_aio", None)
        if aio is None or self._owner is None:
            raise WorkerError("wait_stop() is for a worker served by run_async() or `async with`")
        await aio.stop_requested.wait()
        return self._stop_reason

    @property
    def buffered(self) -> int:
        """Bytes published on the loop's thread and not yet written to hyphad."""
        return len(self._obuf)

    # ---- run-time subscriptions -----------------------------------------

    def subscribe(self, *types: Any) -> None:
        """From now on also receive these types: message classes, names or
        type ids. Frames of a type with no handler are counted in `dropped`
        (register one with @on or @on_raw first). Safe from a handler or a
        thread."""
        self._control(op="subscribe", types=[_type_ref(t) for t in types])

    def unsubscribe(self, *types: Any) -> None:
        """Stop receiving these types (what the topology's `subscribe:` lists
        stays: the operator's configuration wins)."""
        self._control(op="unsubscribe", types=[_type_ref(t) for t in types])

    # ---- sending ------------------------------------------------------

    def publish(self, msg: Message) -> None:
        """Send a message to the bus. Safe from any thread; never blocks the
        asyncio loop (use `await publish_async()` to wait when hyphad is slow)."""
        # The hot path, kept flat: one dict lookup, one pack, one append.
        try:
            header = self._headers[msg.__class__]
        except KeyError:
            header = self._header_for(msg)
        payload = msg.to_bytes()
        if self._owner == _get_ident():
            buf = self._obuf
            if not buf:
                self._first()
            buf += header
            buf += payload
            if len(buf) >= FLUSH_BYTES:
                self._flush_owned()
        else:
            self._foreign(header + payload)

    def _header_for(self, msg: Any) -> bytes:
        # A message class has a fixed size, so its frame header is constant:
        # computed once per class instead of packed for every frame.
        cls = type(msg)
        if not all(hasattr(cls, a) for a in ("TYPE_ID", "SIZE", "to_bytes")):
            raise TypeError(f"publish() takes a message object generated by hypha-codegen, "
                            f"not {cls.__name__}")
        header = HEADER.pack(cls.TYPE_ID, cls.SIZE)
        self._headers[cls] = header
        return header

    def publish_raw(self, type_id: int, payload: bytes) -> None:
        """Send an already encoded payload of that type id."""
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit")
        frame = HEADER.pack(type_id, len(payload)) + payload
        if self._owner == _get_ident():
            buf = self._obuf
            if not buf:
                self._first()
            buf += frame
            if len(buf) >= FLUSH_BYTES:
                self._flush_owned()
        else:
            self._foreign(frame)

    def flush(self) -> None:
        """Write what the loop's thread has buffered now (before a long
        computation in a handler, say). Publishes are flushed anyway when the
        handler returns."""
        if self._owner == _get_ident() and self._obuf:
            self._flush_owned()

    def _control(self, **fields: Any) -> None:
        body = json.dumps(fields, separators=(",", ":")).encode()
        self.publish_raw(CONTROL_TYPE, body)

    def _foreign(self, frame: bytes) -> None:
        """A frame from a thread that does not own the buffer: written now."""
        write = self._write_all
        if write is None:
            self._attach()
            write = self._write_all
        lock = self._lock  # whole frames only: never interleaved between threads
        lock.acquire()  # (not `with`: twice as fast, and this is the hot path)
        try:
            write(frame)  # type: ignore[misc]
        finally:
            lock.release()

    def _flush_owned(self) -> None:
        buf = self._obuf
        lock = self._lock
        lock.acquire()
        try:
            self._write_all(buf)  # type: ignore[misc]
        finally:
            lock.release()
        buf.clear()
        self._since = self._clock()

    # ---- attaching to stdio ---------------------------------------------

    def _attach(self) -> None:
        if self._write_all is not None:
            return
        if "HYPHA_WORKER" not in os.environ and os.isatty(self._in):
            raise WorkerError("this program is a hypha worker: run it under hyphad, which "
                              "talks to it over stdin/stdout (stdin is a terminal and "
                              "HYPHA_WORKER is not set)")
        if self._protect and self._out_fd == 1:
            sys.stdout.flush()
            out = os.dup(1)  # not inheritable (PEP 446)
            os.dup2(2, 1)  # fd 1 is now stderr: C code writing to stdout cannot corrupt frames
            sys.stdout = sys.stderr
        else:
            out = self._out_fd
        self._out_fd = out

        def write_all(data: Any) -> None:
            try:
                n = _os_write(out, data)
                if n < len(data):  # rare: a partial write into a nearly full pipe
                    view = memoryview(data)
                    while n < len(data):
                        n += _os_write(out, view[n:])
                    view.release()
            except BrokenPipeError:
                raise WorkerError("hyphad closed the frame pipe (stdout)") from None
        self._write_all = write_all

    # ---- receiving ----------------------------------------------------

    def _hello(self) -> None:
        env_digest = os.environ.get("HYPHA_SCHEMA_DIGEST")
        if env_digest and self._digest and env_digest != self._digest:
            raise SchemaMismatch(stale_side(self._digest, env_digest, os.environ.get("HYPHA_SCHEMA_FILE")))
        self._control(op="hello", schema=self._digest or env_digest or "",
                      subscribe=sorted(set(self._handlers) | set(self._raw)), pid=os.getpid())
        self._hello_sent = True

    def _on_control(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
            op = msg.get("op")
        except (ValueError, AttributeError):
            self.log.warning("ignoring a malformed control frame: %r", payload[:80])
            return
        if op == "welcome":
            self.welcome = msg
            hb = msg.get("heartbeat_ms")
            if self.heartbeat is None and isinstance(hb, int) and hb > 0:
                self.heartbeat = hb / 1000.0
            self._start_heartbeats()
        elif op == "shutdown":
            grace = msg.get("grace_ms")
            if isinstance(grace, int) and grace > 0 and self._deadline is None:
                # Handle what was read while 80 % of the grace lasts: past
                # it, the stop signal's SIGKILL would lose everything.
                self._deadline = self._clock() + grace * 0.8 / 1000.0
            self._request_stop("shutdown")

    def _request_stop(self, reason: str) -> None:
        if not self._stopping:
            self._stopping = True
            self._stop_reason = reason

    def _start_heartbeats(self) -> None:
        if self.heartbeat and not any(t.internal for t in self._timers):
            t = _Timer(self.heartbeat, lambda: self._control(op="heartbeat"), internal=True)
            self._timers.append(t)
            if self._owner is not None:
                self._schedule(t, self._clock())
                self._control(op="heartbeat")  # the first one now: hyphad may be waiting

    def _out_of_time(self) -> bool:
        return self._stopping and self._deadline is not None and self._clock() >= self._deadline

    def _give_up(self, frames: int) -> None:
        self.unhandled += frames
        self.log.warning("stopping: %d frames read from hyphad were not handled before the grace ran "
                         "out: dropped", frames)

    def _slow(self, entry: Tuple[Callable[..., Any], Any, int, Any], type_id: int, payload: bytes) -> Optional[Tuple[Any, ...]]:
        """The handler's arguments for a frame off the fast path, or None."""
        cls = entry[3]
        if cls is None:
            return (type_id, payload)
        try:
            return (cls.from_bytes(payload),)
        except ValueError as e:
            self.malformed += 1
            self.log.warning("dropping a malformed %s: %s", cls.__name__, e)
            return None

    def _handler_failed(self) -> None:
        self.failed += 1
        self.log.error("handler failed: %s", traceback.format_exc().rstrip())
        now = self._clock()
        if now - self._stats_at >= 1.0 and self._hello_sent:
            # at most once a second: hyphad compares it with the frames it
            # wrote, and health says degraded when nearly every one fails
            self._stats_at = now
            self._control(op="stats", failed=self.failed)
        if self.fail_on_error:
            raise

    def _feed(self, data: bytes) -> None:
        """Decode and handle the frames of one read (sync handlers)."""
        buf = self._ibuf
        if buf:
            buf += data
            view: Any = buf
        else:
            view = data
        n = len(view)
        off = 0
        get = self._table.get
        unpack = _unpack_header
        check_at = off + 4096  # a long turn: look at the clock every 4 KiB of frames
        while n - off >= 6:
            t, ln = unpack(view, off)
            start = off + 6
            off = start + ln
            if off > n:
                off = start - 6
                if ln > MAX_PAYLOAD:
                    raise ProtocolError(f"frame length {ln} is over the {MAX_PAYLOAD}-byte limit")
                break
            e = get(t)
            if self._stopping and self._out_of_time():
                self._give_up(1 + _count_frames(view, off))
                off = n
                break
            if e is None:
                if t == CONTROL_TYPE:
                    self._on_control(bytes(view[start:off]))
                else:
                    self.dropped += 1
                continue
            fn, fast, size, cls = e
            try:
                if ln == size:  # the fast path: a class of scalar fields only
                    fn(cls(*fast(view, start)))
                else:
                    args = self._slow(e, t, bytes(view[start:off]))
                    if args is not None:
                        fn(*args)
            except Exception:
                self._handler_failed()
            if off >= check_at:
                check_at = off + 4096
                if self._obuf and self._clock() - self._since >= self.flush_delay:
                    self._flush_owned()  # what waits longer than flush_delay goes now
        if off == n:
            if buf:
                buf.clear()
        elif view is buf:
            del buf[:off]
        else:
            self._ibuf = bytearray(view[off:])

    # ---- timers (both loops share the schedule; run() and the harness run it)

    def _schedule(self, t: _Timer, now: float) -> None:
        t.due = now + t.interval
        heapq.heappush(self._heap, t)
        self._wake_timers()

    # Overridden on the instance by the asyncio loop while it runs.
    def _first(self) -> None:
        """The buffer stops being empty."""

    def _wake_timers(self) -> None:
        """A timer was scheduled."""

    def _run_due(self, now: float, invoke: Optional[Callable[[Callable[..., Any]], Any]] = None) -> None:
        heap = self._heap
        while heap and heap[0].due <= now and not self._stopping:
            t = heapq.heappop(heap)
            try:
                invoke(t.fn) if invoke is not None else t.fn()
            except Exception:
                self._handler_failed()
            t.due += t.interval
            if t.due <= now:  # late: no burst to catch up
                t.due = now + t.interval
            heapq.heappush(heap, t)

    def _run_hooks(self, hooks: List[Callable[..., Any]], failing_ok: bool) -> None:
        for fn in hooks:
            try:
                fn()
            except Exception:
                if not failing_ok:
                    raise
                self.log.error("on_stop hook failed: %s", traceback.format_exc().rstrip())

    # ---- the blocking loop ------------------------------------------------

    def run(self) -> None:
        """Serve until shutdown, stdin EOF or SIGTERM, then return normally.

        A stop never interrupts a handler: it finishes, the frames already
        read are handled, on_stop hooks run and publishes are flushed."""
        if self._streams:
            raise WorkerError("worker.stream() is for asyncio: serve with run_async()")
        self._deadline = None
        if self._owner is not None:
            raise WorkerError("this worker is already running")
        self._attach()
        self._stopping = self._hello_sent = False
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        previous = None
        # The handler goes in before hello/ready: hyphad may stop us as soon
        # as we say we are ready.
        if threading.current_thread() is threading.main_thread():
            def on_term(signum: int, frame: Any) -> None:
                self._request_stop("SIGTERM")
                try:
                    os.write(wake_w, b"x")
                except OSError:  # full: a wake-up is already waiting
                    pass
            previous = signal.signal(signal.SIGTERM, on_term)
        self._owner = _get_ident()
        self._since = self._clock()
        started = False
        try:
            self._hello()
            self._run_hooks(self._start_hooks, failing_ok=False)
            started = True
            self._control(op="ready")
            self._serve(wake_r)
        except ProtocolError as e:
            raise WorkerError(f"corrupt frame stream from hyphad: {e}") from None
        finally:
            try:
                if started:
                    self._run_hooks(self._stop_hooks, failing_ok=True)
                if self._obuf:
                    self._flush_owned()
            finally:
                self._owner = None
                self._hello_sent = False
                self._heap.clear()
                if previous is not None:
                    # Once stopping, hyphad's stop signal (sent a moment after
                    # the shutdown) must not kill a worker that is exiting
                    # cleanly: ignored from now on. SIGKILL after the grace
                    # still ends a program that hangs after run().
                    signal.signal(signal.SIGTERM, signal.SIG_IGN if self._stopping else previous)
                os.close(wake_r)
                os.close(wake_w)

    def _serve(self, wake_r: int) -> None:
        poller = select.poll()
        poller.register(self._in, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        now = self._clock()
        for t in self._timers:
            self._schedule(t, now)
        self._start_heartbeats()  # Worker(heartbeat=...): not waiting for the welcome
        while not self._stopping:
            if self._obuf:
                self._flush_owned()  # before blocking
            heap = self._heap
            timeout = None if not heap else max(0, int((heap[0].due - self._clock()) * 1000) + 1)
            ready = poller.poll(timeout)
            now = self._clock()
            self._since = now
            if heap and heap[0].due <= now:
                self._run_due(now)
            for fd, _ in ready:
                if fd == wake_r:
                    while _drain(wake_r):
                        pass
                    continue
                data = os.read(self._in, READ_SIZE)
                if not data:
                    if self._ibuf:
                        self.log.warning("stdin ended in the middle of a frame (%d bytes)", len(self._ibuf))
                    self._request_stop("EOF")
                    break
                self._feed(data)

    # ---- asyncio ---------------------------------------------------------

    async def run_async(self) -> None:
        """run() for asyncio: handlers and hooks may be `async def`. Same stop
        semantics; the inbound queue is bounded (`queue`)."""
        async with self:
            await self._aio.stopped.wait()

    async def __aenter__(self) -> "Worker":
        from ._aio import AsyncLoop
        self._aio = AsyncLoop(self)
        await self._aio.enter()
        return self

    async def __aexit__(self, et: Any, e: Any, tb: Any) -> None:
        await self._aio.exit(et is not None)

    async def publish_async(self, msg: Message) -> None:
        """publish(), then wait while more than 256 KiB wait for hyphad: the
        way an async producer keeps hyphad's back-pressure."""
        self.publish(msg)
        aio = getattr(self, "_aio", None)
        if aio is not None and len(self._obuf) >= aio.high_water:
            await aio.drained(aio.low_water)

    async def drain(self) -> None:
        """Wait until everything published has been written to hyphad."""
        aio = getattr(self, "_aio", None)
        if aio is not None:
            await aio.drained(0)


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _count_frames(view: Any, off: int) -> int:
    """Whole frames in view from off."""
    n, count = len(view), 0
    while n - off >= 6:
        off += 6 + _unpack_header(view, off)[1]
        if off > n:
            break
        count += 1
    return count
