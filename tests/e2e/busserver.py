"""A MessageBus for the tests, with Mycelium endpoint semantics.

It listens on a Unix path or a TCP port. Mycelium has two kinds of endpoint
and the bus plays either:

- handshake=True (PythonBridgeService, `bind_unix_endpoint_with_digest`):
  each client must first send `u16 LE 32 | 32-byte schema digest`; a client
  with another digest (or another first u16) is closed at once and counted
  in `refused`.
- handshake=False (`bind_unix_endpoint`, every `bind_tcp_endpoint`,
  topology.toml endpoints): no handshake is read, frames from byte 0. A
  client that sends one anyway has its 34 bytes read as a frame header
  (type 32, a length from the digest's first four bytes): a length over the
  limit closes it, counted in `corrupt` (its header in `corrupt_headers`).

After that, every frame a client sends is fanned out to every connected
client, the sender included ("echo"), unless the bus was made with
echo=False.

Everything runs on one background thread (selectors), so a test can look at
what the bus received (`frames`), inject frames (`publish`), drop every
connection (`drop_clients`), or stop and restart listening (`close`,
`start`). Frames are parsed strictly: a length over 16 MiB (Mycelium's MAX_PAYLOAD_SIZE)
closes the client.
"""
import os
import selectors
import socket
import struct
import threading
import time

HEADER = struct.Struct("<HI")
MAX_PAYLOAD = 16777216  # mycelium-protocol's codec.rs


class _Client:
    def __init__(self, sock, name):
        self.sock = sock
        self.name = name
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.ready = False
        self.frames = 0


class Bus:
    def __init__(self, digest, unix=None, tcp=None, echo=True, handshake=True):
        """digest: 32 bytes, or a 64-char hex string (None with
        handshake=False). unix: a socket path; tcp: (host, port), port 0
        picks a free one (see `.port`). handshake=False: read none."""
        if isinstance(digest, str):
            digest = bytes.fromhex(digest)
        assert digest is None and not handshake or len(digest) == 32
        self.digest = digest
        self.handshake = handshake
        self.unix = unix
        self.tcp = tcp
        self.echo = echo
        self.port = None
        self.lock = threading.Lock()
        self.frames = []          # (type_id, payload bytes) in arrival order
        self.from_client = []     # client name for each frame in `frames`
        self.refused = 0          # handshakes that did not match
        self.accepted = 0         # clients whose handshake matched (handshake=False: every client)
        self.handshakes = []      # raw 34-byte handshakes received
        self.corrupt = 0          # clients closed for a length over the limit
        self.corrupt_headers = [] # (type, length) of each such frame header
        self._clients = {}
        self._sel = selectors.DefaultSelector()
        self._listener = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self._tasks = []
        self._stop = False
        self._n = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        self.start()

    # ---- control from the test thread -----------------------------------

    def _call(self, fn, timeout=5.0):
        done = threading.Event()
        box = {}

        def task():
            try:
                box["v"] = fn()
            except BaseException as e:  # reported to the caller
                box["e"] = e
            done.set()
        with self.lock:
            self._tasks.append(task)
        self._wake_w.send(b"x")
        if not done.wait(timeout):
            raise TimeoutError("bus thread did not answer")
        if "e" in box:
            raise box["e"]
        return box.get("v")

    def start(self):
        """Listen (again)."""
        def go():
            if self._listener is not None:
                return
            if self.unix:
                try:
                    os.unlink(self.unix)
                except FileNotFoundError:
                    pass
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(self.unix)
            else:
                family = socket.AF_INET6 if ":" in self.tcp[0] else socket.AF_INET
                s = socket.socket(family, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.tcp[0], self.port or self.tcp[1]))
                self.port = s.getsockname()[1]
            s.listen(64)
            s.setblocking(False)
            self._listener = s
            self._sel.register(s, selectors.EVENT_READ, ("listen", None))
        self._call(go)

    def close(self):
        """Stop listening and drop every client (a bus that went away)."""
        def go():
            if self._listener is not None:
                self._sel.unregister(self._listener)
                self._listener.close()
                self._listener = None
                if self.unix:
                    try:
                        os.unlink(self.unix)
                    except FileNotFoundError:
                        pass
            for c in list(self._clients.values()):
                self._drop(c)
        self._call(go)

    def drop_clients(self):
        """Close every client connection, keep listening."""
        self._call(lambda: [self._drop(c) for c in list(self._clients.values())])

    def publish(self, type_id, payload):
        """Send a frame to every ready client, as if another service published it."""
        data = HEADER.pack(type_id, len(payload)) + bytes(payload)
        self._call(lambda: self._fanout(data, None))

    def clients(self):
        """Names of the connected clients that passed the handshake (with
        handshake=False: every connected client)."""
        return self._call(lambda: [c.name for c in self._clients.values() if c.ready])

    def received(self, type_id=None):
        with self.lock:
            return [p for (t, p) in self.frames if type_id is None or t == type_id]

    def count(self, type_id=None):
        with self.lock:
            if type_id is None:
                return len(self.frames)
            return sum(1 for (t, _) in self.frames if t == type_id)

    def wait_count(self, n, type_id=None, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(type_id) >= n:
                return True
            time.sleep(0.01)
        return self.count(type_id) >= n

    def wait_clients(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.clients()) >= n:
                return True
            time.sleep(0.02)
        return len(self.clients()) >= n

    def shutdown(self):
        if self._stop:
            return
        try:
            self.close()
        except TimeoutError:
            pass
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        self._wake_r.close()
        self._wake_w.close()

    # ---- the bus thread ----------------------------------------------------

    def _loop(self):
        while not self._stop:
            for key, ev in self._sel.select(0.5):
                kind, c = key.data
                if kind == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except BlockingIOError:
                        pass
                    with self.lock:
                        tasks, self._tasks = self._tasks, []
                    for t in tasks:
                        t()
                elif kind == "listen":
                    self._accept()
                elif c.sock.fileno() >= 0:
                    if ev & selectors.EVENT_READ:
                        self._read(c)
                    if ev & selectors.EVENT_WRITE and c.sock.fileno() >= 0:
                        self._write(c)
        for c in list(self._clients.values()):
            self._drop(c)

    def _accept(self):
        while self._listener is not None:
            try:
                s, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            self._n += 1
            c = _Client(s, f"client{self._n}")
            if not self.handshake:  # frames from byte 0: ready at once
                c.ready = True
                with self.lock:
                    self.accepted += 1
            self._clients[s.fileno()] = c
            self._sel.register(s, selectors.EVENT_READ, ("client", c))

    def _drop(self, c):
        if c.sock.fileno() >= 0:
            self._clients.pop(c.sock.fileno(), None)
            self._sel.unregister(c.sock)
            c.sock.close()

    def _read(self, c):
        try:
            data = c.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        c.inbuf += data
        if not c.ready:
            if len(c.inbuf) < 34:
                return
            hs = bytes(c.inbuf[:34])
            del c.inbuf[:34]
            with self.lock:
                self.handshakes.append(hs)
            if struct.unpack_from("<H", hs)[0] != 32 or hs[2:] != self.digest:
                with self.lock:
                    self.refused += 1
                self._drop(c)
                return
            c.ready = True
            with self.lock:
                self.accepted += 1
        off = 0
        buf = c.inbuf
        while len(buf) - off >= 6:
            t, n = HEADER.unpack_from(buf, off)
            if n > MAX_PAYLOAD:
                with self.lock:
                    self.corrupt += 1
                    self.corrupt_headers.append((t, n))
                self._drop(c)
                return
            if len(buf) - off < 6 + n:
                break
            frame = bytes(buf[off:off + 6 + n])
            off += 6 + n
            with self.lock:
                self.frames.append((t, frame[6:]))
                self.from_client.append(c.name)
            c.frames += 1
            self._fanout(frame, c)
        del buf[:off]

    def _fanout(self, frame, sender):
        for c in list(self._clients.values()):
            if not c.ready or (c is sender and not self.echo):
                continue
            c.outbuf += frame
            self._write(c)

    def _write(self, c):
        while c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(c)
                return
            del c.outbuf[:n]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
        if c.sock.fileno() >= 0:
            self._sel.modify(c.sock, events, ("client", c))
