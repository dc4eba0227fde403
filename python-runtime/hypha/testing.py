"""Unit-test a worker's handlers in-process: no hyphad, no subprocess.

    from hypha.testing import Harness
    import myworker                      # defines `worker = Worker()` and its handlers
    from messages import TradeTick, RiskSignal

    def test_risk_signal():
        with Harness(myworker.worker) as h:
            out = h.feed(TradeTick(symbol="ETH", price=101.0, qty=2))
            assert out == [RiskSignal(symbol="ETH", level=3)]
            h.advance(5.0)               # timers due in those 5 seconds run
            assert h.controls[-1] == {"op": "heartbeat"}

The harness drives the worker's own code: frames are encoded and decoded as
under hyphad, handlers are called by the same dispatch, publishes go through
the same buffer. Time is the harness's: `advance()` moves it and runs the
timers due. `async def` handlers, hooks and timers are run to completion on a
private event loop.
"""
import asyncio
import inspect
import json
import threading
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

from .frames import CONTROL_TYPE, Decoder, encode
from .types import Message
from .worker import Worker

M = TypeVar("M", bound=Message)


class Harness:
    """Plays hyphad for one Worker, inside the test's process.

    published: every message the worker published, decoded (a message of a
        class the harness cannot know is a `(type_id, payload)` tuple).
    controls: every control frame it sent (hello, ready, heartbeat, ...).
    frames: every frame it wrote, as (type_id, payload) bytes.
    writes: how many writes carried them (publishes of one turn are coalesced).
    now: the harness's clock, in seconds.
    """

    def __init__(self, worker: Worker, *, welcome: Optional[Dict[str, Any]] = None) -> None:
        if worker._owner is not None:
            raise RuntimeError("this worker is already running")
        self.worker = worker
        self.published: List[Any] = []
        self.controls: List[Dict[str, Any]] = []
        self.frames: List[Tuple[int, bytes]] = []
        self.writes = 0
        self.now = 0.0
        self._welcome = welcome if welcome is not None else {
            "op": "welcome", "worker": worker.name or "test", "instance": worker.instance}
        self._decoder = Decoder()
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._started = False
        self._saved = (worker._write_all, worker._clock)

    # ---- lifecycle -----------------------------------------------------------

    def start(self) -> "Harness":
        """hello, the welcome, on_start hooks, ready; timers start counting."""
        w = self.worker
        if w._streams:
            raise RuntimeError("the Harness does not drive worker.stream() (it needs the asyncio loop): "
                               "test the code that handles each message directly, and the stream under "
                               "hyphad")
        w._write_all = self._capture
        w._clock = lambda: self.now
        w._owner = threading.get_ident()
        w._stopping = w._hello_sent = False
        w._since = self.now
        w._hello()
        for fn in w._start_hooks:
            self._run(fn)
        w._control(op="ready")
        for t in w._timers:
            w._schedule(t, self.now)
        w._start_heartbeats()
        w._on_control(json.dumps(self._welcome).encode())  # read once serving, as from hyphad
        self._started = True
        self._flush()
        return self

    def stop(self, reason: str = "shutdown") -> List[Any]:
        """What hyphad's stop does: the worker stops, on_stop hooks run, the
        buffer is flushed. Returns what was published meanwhile."""
        w = self.worker
        mark = len(self.published)
        try:
            w._request_stop(reason)
            if self._started:
                for fn in w._stop_hooks:
                    self._run(fn)
            self._flush()
        finally:
            w._owner = None
            w._heap.clear()
            w._write_all, w._clock = self._saved
            self._started = False
            if self._loop is not None:
                self._loop.close()
                self._loop = None
        return self.published[mark:]

    def __enter__(self) -> "Harness":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            self.stop()

    # ---- driving ----------------------------------------------------------------

    def feed(self, *msgs: Message) -> List[Any]:
        """Deliver these messages as one read from hyphad (one loop turn);
        returns what the handlers published."""
        return self.feed_bytes(b"".join(encode(m.TYPE_ID, m.to_bytes()) for m in msgs))

    def feed_raw(self, type_id: int, payload: bytes) -> List[Any]:
        """Deliver one frame of any type id and payload."""
        return self.feed_bytes(encode(type_id, payload))

    def feed_bytes(self, data: bytes) -> List[Any]:
        """Deliver raw stream bytes (any chunking of frames)."""
        self._need_started()
        w = self.worker
        mark = len(self.published)
        table = w._table
        wrapped = {t: (self._runner(e[0]),) + e[1:] for t, e in table.items()}
        w._table = wrapped
        try:
            w._feed(data)
        finally:
            if w._table is wrapped:  # (else a handler registered another: keep that table)
                w._table = table
        self._flush()
        return self.published[mark:]

    def advance(self, seconds: float) -> List[Any]:
        """Move the clock and run every timer due meanwhile, in time order;
        returns what they published."""
        self._need_started()
        w = self.worker
        mark = len(self.published)
        end = self.now + seconds
        heap = w._heap
        while heap and heap[0].due <= end and not w._stopping:
            self.now = max(self.now, heap[0].due)
            w._run_due(self.now, self._run)
            self._flush()
        self.now = end
        return self.published[mark:]

    def take(self, cls: Optional[Type[M]] = None) -> List[Any]:
        """The published messages (only those of `cls` if given), removed
        from `published`."""
        if cls is None:
            out, self.published = self.published, []
            return out
        out = [m for m in self.published if isinstance(m, cls)]
        self.published = [m for m in self.published if not isinstance(m, cls)]
        return out

    # ---- internals --------------------------------------------------------------

    def _need_started(self) -> None:
        if not self._started:
            raise RuntimeError("start the harness first (Harness(worker).start() or `with Harness(worker) as h`)")

    def _run(self, fn: Any, *args: Any) -> Any:
        r = fn(*args)
        if r is not None and inspect.isawaitable(r):
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(_await(r))
        return r

    def _runner(self, fn: Any) -> Any:
        return lambda *args: self._run(fn, *args)

    def _flush(self) -> None:
        w = self.worker
        if w._obuf:
            w._flush_owned()

    def _capture(self, data: Any) -> None:
        with self._lock:
            self.writes += 1
            frames = self._decoder.feed(bytes(data))
        classes = self._classes()
        for t, payload in frames:
            self.frames.append((t, payload))
            if t == CONTROL_TYPE:
                self.controls.append(json.loads(payload))
                continue
            cls = classes.get(t)
            self.published.append(cls.from_bytes(payload) if cls is not None else (t, payload))

    def _classes(self) -> Dict[int, Any]:
        w = self.worker
        known: Dict[int, Any] = {getattr(cls, "TYPE_ID"): cls for cls in w._headers}
        known.update({t: cls for t, (cls, _) in w._handlers.items() if t not in known})
        return known


async def _await(aw: Any) -> Any:
    return await aw
