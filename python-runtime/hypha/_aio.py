"""run_async() and `async with worker:`: the asyncio loop of a Worker.

Inbound: a reader callback decodes what hyphad sent into a bounded queue of
frames; at `worker.queue` frames it stops reading stdin until the handlers
caught up, so hyphad's back-pressure (its `block` policy) reaches it.
`worker.concurrency` dispatcher tasks take frames in order.

Outbound: the loop's thread owns the buffer; publishes are written, without
ever blocking the loop, at the next loop iteration (or at 64 KiB); what the
pipe does not take waits for it to be writable. Other threads hand their
frames to the loop. `await worker.publish_async()` waits while more than
256 KiB wait.

Stops (shutdown frame, EOF, SIGTERM, leaving `async with`) stop the reading;
every frame already read is still handled, then streams end, on_stop hooks
run, and the buffer is written out.
"""
import asyncio
import collections
import heapq
import inspect
import os
import signal
import threading
import traceback
from typing import Any, Deque, Generic, List, Optional, Tuple, TypeVar

from .frames import CONTROL_TYPE, Decoder, ProtocolError

READ_SIZE = 65536
M = TypeVar("M")


async def _maybe_await(r: Any) -> None:
    if r is not None and inspect.isawaitable(r):
        await r


class Stream(Generic[M]):
    """The messages of one type, for `async for`; ends when the worker stops."""

    def __init__(self, worker: Any, cls: type, maxsize: int) -> None:
        self.cls = cls
        self.maxsize = maxsize
        self._items: Deque[M] = collections.deque()
        self._closed = False
        self._abandoned = False
        self._ready: Optional[asyncio.Event] = None
        self._space: Optional[asyncio.Event] = None

    def _events(self) -> Tuple[asyncio.Event, asyncio.Event]:
        if self._ready is None or self._space is None:
            self._ready, self._space = asyncio.Event(), asyncio.Event()
        return self._ready, self._space

    async def _put(self, msg: M) -> None:
        ready, space = self._events()
        while len(self._items) >= self.maxsize and not self._abandoned:
            space.clear()
            await space.wait()  # a full stream holds the dispatcher, and so hyphad
        self._items.append(msg)
        ready.set()

    def _close(self) -> None:
        self._closed = True
        self._events()[0].set()

    def _abandon(self) -> int:
        self._abandoned = True
        self._events()[1].set()
        return len(self._items)

    def __aiter__(self) -> "Stream[M]":
        return self

    async def __anext__(self) -> M:
        ready, space = self._events()
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            ready.clear()
            await ready.wait()
        space.set()
        return self._items.popleft()


class AsyncLoop:
    high_water = 262144
    low_water = 65536

    def __init__(self, worker: Any) -> None:
        self.w = worker
        self.error: Optional[BaseException] = None
        self.stopper: Optional["asyncio.Task[None]"] = None
        self.tasks: List["asyncio.Task[None]"] = []
        self.drainers: List[Tuple[int, "asyncio.Future[None]"]] = []
        self.pending: Deque[Tuple[int, bytes]] = collections.deque()
        self.decoder = Decoder()
        self.reading = self.paused = self.writer_on = self.flush_soon = False
        self.have_signal = False

    # ---- start and end ------------------------------------------------------

    async def enter(self) -> None:
        w = self.w
        if w._owner is not None:
            raise RuntimeError("this worker is already running")
        self.loop = asyncio.get_running_loop()
        w._attach()
        w._stopping = w._hello_sent = False
        w._deadline = None
        self.out = w._out_fd
        self.was_blocking = os.get_blocking(self.out)
        os.set_blocking(self.out, False)
        self.stopped, self.have, self.timer_wake = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.stop_requested = asyncio.Event()
        # The worker's output and stop paths, pointed at this loop until exit.
        w._owner = threading.get_ident()
        w._first = self.schedule_flush
        w._flush_owned = self.flush
        w._foreign = self.foreign
        w._request_stop = self.request_stop
        w._wake_timers = self.timer_wake.set
        try:
            self.loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
            self.have_signal = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
        try:
            w._hello()
            for fn in w._start_hooks:
                await _maybe_await(fn())
        except BaseException:
            self.cleanup()
            raise
        w._control(op="ready")
        now = w._clock()
        for t in w._timers:
            w._schedule(t, now)
        w._start_heartbeats()
        self.start_reading()
        self.tasks = [self.loop.create_task(self.dispatch()) for _ in range(w.concurrency)]
        self.timers = self.loop.create_task(self.run_timers())

    async def exit(self, body_failed: bool) -> None:
        w = self.w
        self.request_stop("exit")
        if body_failed:
            left = sum(s._abandon() for s in w._streams.values())
            if left:
                w.log.warning("%d messages were left unread in streams", left)
        try:
            assert self.stopper is not None
            await self.stopper
            for fn in w._stop_hooks:
                try:
                    await _maybe_await(fn())
                except Exception:
                    w.log.error("on_stop hook failed: %s", traceback.format_exc().rstrip())
            if self.error is None:
                self.flush()
                await self.drained(0)
        finally:
            self.cleanup()
        if self.error is not None and not body_failed:
            raise self.error

    def cleanup(self) -> None:
        w = self.w
        self.stop_reading()
        if self.writer_on:
            self.loop.remove_writer(self.out)
            self.writer_on = False
        if self.have_signal:
            self.loop.remove_signal_handler(signal.SIGTERM)
            if w._stopping:  # as run() does: a clean exit is not turned into a kill
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.set_blocking(self.out, self.was_blocking)
        for name in ("_first", "_flush_owned", "_foreign", "_request_stop", "_wake_timers"):
            w.__dict__.pop(name, None)  # the Worker's own methods again
        w._owner = None
        w._heap.clear()

    def request_stop(self, reason: str) -> None:
        w = self.w
        if w._stopping:
            return
        w._stopping = True
        w._stop_reason = reason
        self.stop_requested.set()
        self.stop_reading()
        self.have.set()
        self.timer_wake.set()
        self.stopper = self.loop.create_task(self.finish_serving())

    async def finish_serving(self) -> None:
        """Every frame read is handled, running timers end, then streams end."""
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if getattr(self, "timers", None) is not None:
            await asyncio.gather(self.timers, return_exceptions=True)
        for s in self.w._streams.values():
            s._close()
        self.stopped.set()

    def fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
        for _, fut in self.drainers:
            if not fut.done():
                fut.set_exception(err)
        self.drainers.clear()
        self.request_stop("error")

    # ---- inbound -----------------------------------------------------------

    def start_reading(self) -> None:
        if not self.reading and not self.w._stopping:
            self.loop.add_reader(self.w._in, self.readable)
            self.reading = True

    def stop_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.w._in)
            self.reading = False

    def readable(self) -> None:
        w = self.w
        try:
            data = os.read(w._in, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            w.log.warning("reading stdin failed: %s", e)
            data = b""
        if not data:
            if self.decoder.pending:
                w.log.warning("stdin ended in the middle of a frame (%d bytes)", self.decoder.pending)
            self.request_stop("EOF")
            return
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as e:
            from .worker import WorkerError
            self.fail(WorkerError(f"corrupt frame stream from hyphad: {e}"))
            return
        pending = self.pending
        for t, payload in frames:
            if t == CONTROL_TYPE:
                w._on_control(payload)
            else:
                pending.append((t, payload))
        if len(pending) >= w.queue:
            self.stop_reading()  # back-pressure: hyphad's pipe fills, then hyphad's queue
            self.paused = True
        if pending:
            self.have.set()

    async def dispatch(self) -> None:
        w = self.w
        pending = self.pending
        resume_at = max(1, w.queue // 2)
        n = 0
        while True:
            if not pending:
                if w._stopping:
                    return
                self.have.clear()
                await self.have.wait()
                continue
            if w._stopping and w._out_of_time():
                w._give_up(len(pending))
                pending.clear()
                return
            t, payload = pending.popleft()
            if self.paused and len(pending) < resume_at:
                self.paused = False
                self.start_reading()
            e = w._table.get(t)
            if e is None:
                w.dropped += 1
                continue
            args = (e[3](*e[1](payload)),) if len(payload) == e[2] else w._slow(e, t, payload)
            if args is None:
                continue
            if not await self.call(e[0], *args):
                return
            n += 1
            if not n & 255:
                await asyncio.sleep(0)  # a long run of sync handlers lets the loop breathe

    async def call(self, fn: Any, *args: Any) -> bool:
        """A handler or a timer, awaited if async; False once a failure must
        end the worker (fail_on_error)."""
        try:
            await _maybe_await(fn(*args))
        except Exception as err:
            try:
                self.w._handler_failed()
            except Exception:
                self.fail(err)
                return False
        return True

    # ---- timers ------------------------------------------------------------

    async def run_timers(self) -> None:
        w = self.w
        heap = w._heap
        while not w._stopping:
            now = w._clock()
            if heap and heap[0].due <= now:
                t = heapq.heappop(heap)
                if not await self.call(t.fn):
                    return
                now = w._clock()
                t.due += t.interval
                if t.due <= now:
                    t.due = now + t.interval
                heapq.heappush(heap, t)
                continue
            self.timer_wake.clear()
            try:
                await asyncio.wait_for(self.timer_wake.wait(), heap[0].due - now if heap else None)
            except asyncio.TimeoutError:
                pass

    # ---- outbound ----------------------------------------------------------

    def schedule_flush(self) -> None:
        if not self.flush_soon:
            self.flush_soon = True
            self.loop.call_soon(self.flush_now)

    def flush_now(self) -> None:
        self.flush_soon = False
        self.flush()

    def flush(self) -> None:
        if not self.writer_on and self.w._obuf:
            self.write_some()

    def write_some(self) -> None:
        w = self.w
        buf = w._obuf
        try:
            n = os.write(self.out, buf)
            del buf[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            from .worker import WorkerError
            buf.clear()
            self.fail(WorkerError(f"hyphad closed the frame pipe (stdout): {e}"))
        if buf and not self.writer_on:
            self.loop.add_writer(self.out, self.write_some)
            self.writer_on = True
        elif not buf and self.writer_on:
            self.loop.remove_writer(self.out)
            self.writer_on = False
        w._since = w._clock()
        left = len(buf)
        keep = []
        for low, fut in self.drainers:
            if left <= low:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((low, fut))
        self.drainers = keep

    async def drained(self, low: int) -> None:
        if self.error is not None:
            raise self.error
        if len(self.w._obuf) <= low:
            return
        fut = self.loop.create_future()
        self.drainers.append((low, fut))
        self.flush()
        await fut

    def foreign(self, frame: bytes) -> None:
        """A publish from another thread: the loop appends it, in order."""
        self.loop.call_soon_threadsafe(self.append, frame)

    def append(self, frame: bytes) -> None:
        w = self.w
        if not w._obuf:
            self.schedule_flush()
        w._obuf += frame
