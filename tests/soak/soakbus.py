"""The fault suite's MessageBus: one process per incarnation, so that the
suite can SIGKILL and SIGSTOP it (tests/soak/soak.py).

Mycelium semantics, as tests/e2e/busserver.py's Bus: a Unix socket whose
clients send the digest handshake (`u16 LE 32 | 32-byte digest`; another one
is closed at once), then frames; every whole frame is fanned out to every
client, its sender included (echo).

What the suite reads afterwards, written unbuffered (one os.write right
after each recv or send, so a SIGKILL loses nothing that was recorded):

  DIR/bus-NNN-C.recv   the raw bytes received on connection C (handshake first)
  DIR/bus-NNN-C.sent   the raw bytes sent on it (whole or partial frames)

and, on stdout, one line per event the suite waits for: `listening PID`,
`client C pid P` (the peer's pid, SO_PEERCRED) and `paused`.

Read-pause: once DIR/bus-NNN.pause exists and the bus gets SIGUSR1 (its
wake-up), it stops calling recv for good, writes DIR/bus-NNN.paused (its
records are then final) and says `paused`. It still sends what it has. The
suite then SIGKILLs it: what hyphad wrote meanwhile is in the socket buffer.
"""
import argparse
import os
import selectors
import signal
import socket
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from busserver import HEADER, MAX_PAYLOAD  # noqa: E402

HANDSHAKE = struct.Struct("<H32s")


class Conn:
    """One client: its socket, buffers and the two record files it owns."""

    def __init__(self, sock, n, prefix):
        self.sock, self.n = sock, n
        self.inbuf, self.outbuf = bytearray(), bytearray()
        self.ready = False  # the handshake was checked
        self.recv_fd = os.open(f"{prefix}-{n}.recv", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.sent_fd = os.open(f"{prefix}-{n}.sent", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.events = 0

    def close(self):
        self.sock.close()
        os.close(self.recv_fd)
        os.close(self.sent_fd)


class SoakBus:
    def __init__(self, path, digest, directory, incarnation):
        self.path, self.digest = path, digest
        self.prefix = os.path.join(directory, "bus-%03d" % incarnation)
        self.paused = False
        self.conns = {}
        self.accepted = 0
        self.sel = selectors.DefaultSelector()
        self.wake_r, wake_w = socket.socketpair()
        for s in (self.wake_r, wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        self._wake_w = wake_w  # kept open: the signal handler writes to it
        signal.signal(signal.SIGUSR1, lambda *_: None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        if os.path.exists(path):
            os.unlink(path)  # the socket of a SIGKILLed predecessor
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")

    def say(self, line):
        os.write(1, (line + "\n").encode())

    # ---- the loop ------------------------------------------------------------

    def run(self):
        self.say(f"listening {os.getpid()}")
        while True:
            for key, ev in self.sel.select():
                if key.fileobj is self.wake_r:
                    self.on_wake()
                elif key.data == "listen":
                    self.accept()
                else:
                    self.on_io(key.data, ev)

    def on_wake(self):
        try:
            while self.wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        if not self.paused and os.path.exists(self.prefix + ".pause"):
            self.paused = True
            for c in list(self.conns.values()):
                self.interest(c)
            with open(self.prefix + ".paused", "w") as f:
                f.write("paused\n")
            self.say("paused")

    def accept(self):
        while True:
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            self.accepted += 1
            c = Conn(s, self.accepted, self.prefix)
            self.conns[c.n] = c
            pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            self.say(f"client {c.n} pid {pid}")
            self.interest(c)

    def interest(self, c):
        """Read unless paused; write while something waits to go."""
        want = (0 if self.paused else selectors.EVENT_READ) | (selectors.EVENT_WRITE if c.outbuf else 0)
        if want == c.events:
            return
        if c.events and want:
            self.sel.modify(c.sock, want, c)
        elif want:
            self.sel.register(c.sock, want, c)
        else:
            self.sel.unregister(c.sock)
        c.events = want

    def drop(self, c):
        if c.events:
            self.sel.unregister(c.sock)
        self.conns.pop(c.n, None)
        c.close()

    def on_io(self, c, ev):
        if ev & selectors.EVENT_READ and not self.paused:
            self.read(c)
        if c.n in self.conns and ev & selectors.EVENT_WRITE:
            self.write(c)

    # ---- frames ----------------------------------------------------------

    def read(self, c):
        try:
            data = c.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(c)
            return
        os.write(c.recv_fd, data)  # recorded before anything else happens to it
        c.inbuf += data
        if not c.ready:
            if len(c.inbuf) < HANDSHAKE.size:
                return
            kind, digest = HANDSHAKE.unpack_from(c.inbuf)
            if kind != 32 or digest != self.digest:
                self.drop(c)
                return
            del c.inbuf[:HANDSHAKE.size]
            c.ready = True
        self.fan_out(c)

    def fan_out(self, c):
        buf, off = c.inbuf, 0
        while len(buf) - off >= HEADER.size:
            _, n = HEADER.unpack_from(buf, off)
            if n > MAX_PAYLOAD:
                self.drop(c)
                return
            if len(buf) - off < HEADER.size + n:
                break
            frame = bytes(buf[off:off + HEADER.size + n])
            off += HEADER.size + n
            for other in list(self.conns.values()):
                if other.ready:
                    other.outbuf += frame
        del buf[:off]
        for other in list(self.conns.values()):
            if other.outbuf:
                self.write(other)

    def write(self, c):
        while c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.drop(c)
                return
            os.write(c.sent_fd, c.outbuf[:n])
            del c.outbuf[:n]
        self.interest(c)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--digest", required=True, help="the schema digest, hex")
    ap.add_argument("--dir", required=True, help="where the records go")
    ap.add_argument("--incarnation", type=int, required=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    SoakBus(a.socket, bytes.fromhex(a.digest), a.dir, a.incarnation).run()


if __name__ == "__main__":
    main()
