"""The fork server: one per Python worker with `preload:` in its topology.

hyphad starts `PYTHON forkserver.py` with fd 0 one end of an AF_UNIX
SOCK_SEQPACKET socketpair (one JSON object per datagram), fds 1 and 2 a pipe
hyphad logs, HYPHA_FORKSERVER_PRELOAD the comma-separated modules to import,
and otherwise the worker's environment and cwd. It imports the modules once,
says `ready`, then forks an instance of the worker for each `spawn` request,
so a restart costs milliseconds instead of the imports again.

The worker is a grandchild (double fork): the intermediate exits at once, so
the worker is reparented to hyphad (a child subreaper), which reaps it and
sees its real exit status. The worker then undoes what the server's process
state would leak (process group, parent-death signal, fds, signals, mask,
environment, cwd, stdio, sys.argv and sys.path) and runs the script or
module as `python3 SCRIPT ARGS...` or `python3 -m MODULE ARGS...` would.

Started by path, not as part of the hypha package: standard library only.
"""
import os
import sys

# First, before any import: sys.path[0] is this file's directory,
# python-runtime/hypha, whose types.py or frames.py would shadow the
# standard library's and the workers' modules. Imports (the preloads too)
# resolve against the cwd instead, as under `python3 -m`.
if sys.path and not getattr(sys.flags, "safe_path", False):
    sys.path[0] = os.getcwd()

import ctypes  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from types import TracebackType  # noqa: E402
from typing import Any, Dict, List, NoReturn, Optional, TextIO, Tuple, Union  # noqa: E402

PR_SET_PDEATHSIG = 1
MAX_REQUEST = 1 << 20  # a datagram is bounded by the sender's SO_SNDBUF: 1 MiB is plenty
MAX_FDS = 16  # room for more than the 3 expected, so extras are received and closed
PARENT_WAIT = 2.0
_HERE = os.path.abspath(__file__)
_RUNPY = getattr(runpy, "_run_code").__code__.co_filename  # "<frozen runpy>" on 3.11


class Refused(Exception):
    """A spawn request the server answers with an error reply."""


def log(msg: str) -> None:
    try:
        sys.stderr.write(f"hypha-forkserver[{os.getpid()}]: {msg}\n")
        sys.stderr.flush()
    except OSError:
        pass  # hyphad's log pipe is gone: the channel says whether we are


def thread_count() -> int:
    return max(len(os.listdir("/proc/self/task")), threading.active_count())


def preload(names: List[str]) -> None:
    """Import each module in order; a failure is a failed start (exit 1)."""
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)


def send(chan: socket.socket, obj: Dict[str, Any]) -> None:
    chan.send(json.dumps(obj, separators=(",", ":")).encode())


Request = Union[Dict[str, Any], Refused]
Spawn = Tuple[List[str], List[str], str, int]


def receive(chan: socket.socket) -> Optional[Tuple[Request, List[int]]]:
    """(request, fds), or None at EOF. A malformed request is a
    (Refused, fds) pair so the caller replies and closes the fds."""
    msg, anc, flags, _ = chan.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(MAX_FDS * 4))
    fds: List[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(data) // 4
            fds.extend(int.from_bytes(data[i * 4:i * 4 + 4], sys.byteorder, signed=True) for i in range(n))
    if not msg and not fds:
        return None  # SOCK_SEQPACKET: zero bytes is the peer's close
    if flags & socket.MSG_TRUNC:
        return Refused(f"request over {MAX_REQUEST} bytes"), fds
    try:
        req = json.loads(msg)
    except ValueError as e:
        return Refused(f"not JSON: {e}"), fds
    if not isinstance(req, dict):
        return Refused("not a JSON object"), fds
    return req, fds


def check(req: Dict[str, Any], fds: List[int]) -> Spawn:
    """The request's parts, validated before any fork so that a mistake is
    an error reply rather than a worker that dies at once."""
    if req.get("op") != "spawn":
        raise Refused(f"unknown op {req.get('op')!r}")
    if len(fds) != 3:
        raise Refused(f"{len(fds)} fds received, 3 expected (stdin, stdout, stderr)")
    argv, env, cwd, hyphad = req.get("argv"), req.get("env"), req.get("cwd"), req.get("hyphad_pid")
    if not isinstance(argv, list) or len(argv) < 2 or not all(isinstance(a, str) for a in argv):
        raise Refused("argv must be [python, SCRIPT, args...] or [python, -m, MODULE, args...]")
    if argv[1] == "-m":
        if len(argv) < 3 or not argv[2]:
            raise Refused("argv: -m without a module")
    elif argv[1].startswith("-"):
        raise Refused(f"argv: interpreter option {argv[1]!r} is not supported by the fork server")
    if not isinstance(env, list) or not all(isinstance(e, str) and e.find("=") > 0 for e in env):
        raise Refused("env must be a list of KEY=VALUE strings")
    if not isinstance(cwd, str) or not os.path.isdir(cwd):
        raise Refused(f"cwd {cwd!r} is not a directory")
    if not isinstance(hyphad, int) or isinstance(hyphad, bool):
        raise Refused("hyphad_pid must be an integer")
    # Our parent is the subreaper that will adopt the worker; if it is not
    # hyphad the worker would wait for an adoption that never comes.
    if os.getppid() != hyphad:
        raise Refused(f"the fork server's parent is {os.getppid()}, not hyphad_pid {hyphad}")
    n = thread_count()
    if n > 1:
        raise Refused(f"the fork server has {n} threads (a preloaded module started them): it cannot fork safely")
    return argv, env, cwd, hyphad


def spawn(chan: socket.socket, argv: List[str], env: List[str], cwd: str, hyphad: int, fds: List[int]) -> int:
    """Double fork; the worker's pid. Only the server returns from here."""
    r, w = os.pipe()
    try:
        # Buffered output would be written again by the children.
        sys.stdout.flush()
        sys.stderr.flush()
        mid = os.fork()
        if mid == 0:
            intermediate(chan, r, w, argv, env, cwd, hyphad, fds)
        os.close(w)
        w = -1
        out = b""
        while not out.endswith(b"\n"):
            chunk = os.read(r, 64)
            if not chunk:
                break
            out += chunk
        _, status = os.waitpid(mid, 0)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    text = out.decode(errors="replace").strip()
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or not text.isdigit():
        raise Refused(f"fork failed: {text or 'the intermediate died (status %d)' % status}")
    return int(text)


def intermediate(chan: socket.socket, r: int, w: int, argv: List[str], env: List[str], cwd: str, hyphad: int,
                 fds: List[int]) -> NoReturn:
    """Fork the worker, report its pid, exit: the worker is orphaned to hyphad."""
    code = 1
    try:
        os.close(r)
        try:
            pid = os.fork()
        except OSError as e:
            os.write(w, f"{e}\n".encode())
            os._exit(1)
        if pid == 0:
            worker(chan, w, argv, env, cwd, hyphad, fds)
        # As hyphad's spawn does: set the group from the parent side too,
        # so killpg works as soon as hyphad has the reply.
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        os.write(w, b"%d\n" % pid)
        code = 0
    finally:
        os._exit(code)


def setup_fail(what: str) -> NoReturn:
    try:
        os.write(2, f"hypha-forkserver: worker {os.getpid()}: {what}\n".encode())
    finally:
        os._exit(127)


def reset_signals() -> None:
    """The dispositions and mask of a fresh `python3` exec'd by hyphad."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass  # glibc's reserved real-time signals
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        signal.set_wakeup_fd(-1)  # a preloaded event loop's fd is closed now
    except ValueError:
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def std_stream(fd: int, name: str, old: Optional[TextIO], write: bool) -> io.TextIOWrapper:
    """sys.std* as CPython's create_stdio makes it (POSIX)."""
    # sys.flags does not say -u or PYTHONUNBUFFERED; our own streams do
    # (write_through on all three, and no buffer under stdout and stderr).
    unbuffered = bool(getattr(old, "write_through", False))
    buf: Any = open(fd, "wb" if write else "rb", buffering=0 if unbuffered and write else -1, closefd=False)
    raw = buf if unbuffered and write else buf.raw
    try:
        setattr(raw, "name", name)
    except AttributeError:
        pass
    encoding = getattr(old, "encoding", None) or "utf-8"
    errors = "backslashreplace" if fd == 2 else (getattr(old, "errors", None) or "strict")
    line = not unbuffered and (fd == 2 or raw.isatty())
    stream = io.TextIOWrapper(buf, encoding=encoding, errors=errors, newline="\n",
                              line_buffering=line, write_through=unbuffered)
    setattr(stream, "mode", "w" if write else "r")
    return stream


def worker(chan: socket.socket, w: int, argv: List[str], env: List[str], cwd: str, hyphad: int,
           fds: List[int]) -> NoReturn:
    """The grandchild: become the worker, run it, exit. Never returns."""
    try:
        os.close(w)  # else the server's read of the pid waits for our closerange
        os.setpgid(0, 0)
        deadline = time.monotonic() + PARENT_WAIT
        while os.getppid() != hyphad:
            if time.monotonic() > deadline:
                setup_fail(f"not adopted by hyphad ({hyphad}) within {PARENT_WAIT} s: parent {os.getppid()}")
            time.sleep(0.0001)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                      ctypes.c_ulong(0), ctypes.c_ulong(0)) < 0:
            setup_fail(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
        if os.getppid() != hyphad:
            setup_fail("hyphad exited during the spawn")
        chan.detach()  # the socket object must not close fd 0 once it is stdin
        for target, fd in enumerate(fds):
            os.dup2(fd, target, inheritable=True)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY or soft > 1 << 30:
            soft = 1 << 30
        os.closerange(3, soft)
        reset_signals()
        os.environ.clear()
        for e in env:
            key, _, value = e.partition("=")
            os.environ[key] = value
        os.chdir(cwd)
    except BaseException as e:
        setup_fail(f"setup failed: {type(e).__name__}: {e}")
    # os.fork's hook reseeded random; once more from fresh entropy all the
    # same. numpy's legacy global generator has no hook: without this every
    # worker would draw the same numbers. Not imported yet: seeds itself.
    for name in ("random", "numpy.random"):
        module = sys.modules.get(name)
        if module is not None:
            try:
                module.seed()
            except BaseException:
                pass
    try:
        sys.stdin = sys.__stdin__ = std_stream(0, "<stdin>", sys.__stdin__, False)
        sys.stdout = sys.__stdout__ = std_stream(1, "<stdout>", sys.__stdout__, True)
        sys.stderr = sys.__stderr__ = std_stream(2, "<stderr>", sys.__stderr__, True)
    except BaseException as e:
        setup_fail(f"stdio: {type(e).__name__}: {e}")
    code = 1
    try:
        code = run(argv)
    finally:
        os._exit(code)  # never back into the server's code


def trimmed(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """The traceback from the worker's first frame: the server's and runpy's
    frames are not the worker's (a fresh interpreter has none of ours)."""
    while tb is not None and tb.tb_frame.f_code.co_filename in (_HERE, _RUNPY):
        tb = tb.tb_next
    return tb


def run(argv: List[str]) -> int:
    """Run the script or module as the interpreter would; its exit code."""
    sys.orig_argv = list(argv)
    keep_path0 = getattr(sys.flags, "safe_path", False) or not sys.path
    code = 0
    try:
        if argv[1] == "-m":
            sys.argv = argv[2:]
            if not keep_path0:
                sys.path[0] = os.getcwd()
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            script = argv[1]
            sys.argv = argv[1:]
            if not keep_path0:
                sys.path[0] = os.path.dirname(os.path.realpath(script))
            try:
                # What `python3 missing.py` says, and its status 2.
                os.close(os.open(script, os.O_RDONLY))
            except OSError as e:
                sys.stderr.write(f"{sys.executable}: can't open file {os.path.abspath(script)!r}: "
                                 f"[Errno {e.errno}] {e.strerror}\n")
                return finish(2)
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = exit_code(e)
    except BaseException as e:
        tb = trimmed(e.__traceback__)
        e.with_traceback(tb)  # the hook prints the exception's own, not its tb argument
        if tb is None and isinstance(e, ImportError) and argv[1] == "-m":
            sys.stderr.write(f"{sys.executable}: {e}\n")  # as `python3 -m missing`
        else:
            try:
                sys.excepthook(type(e), e, tb)
            except BaseException:
                traceback.print_exception(type(e), e, tb)
        # CPython dies of an uncaught KeyboardInterrupt by SIGINT itself.
        code = -signal.SIGINT if isinstance(e, KeyboardInterrupt) else 1
    return finish(code)


def exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    try:
        sys.stderr.write(f"{e.code}\n")
    except BaseException:
        pass
    return 1


def finish(code: int) -> int:
    """Py_FinalizeEx's order: non-daemon threads, atexit, stdio flush."""
    try:
        getattr(threading, "_shutdown")()
    except BaseException:
        traceback.print_exc()
    try:
        import atexit
        getattr(atexit, "_run_exitfuncs")()
    except SystemExit as e:
        code = exit_code(e)
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # BrokenPipeError, a closed or replaced stream
            pass
    if code == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 128 + signal.SIGINT
    return code & 0xFF if isinstance(code, int) else 1


def error(rid: Any, text: str) -> Dict[str, Any]:
    return {"op": "error", "id": rid, "error": " ".join(text.split())}  # one line


def serve(chan: socket.socket) -> None:
    while True:
        got = receive(chan)
        if got is None:
            return
        req, fds = got
        rid = req.get("id") if isinstance(req, dict) else None
        try:
            if isinstance(req, Refused):
                raise req
            pid = spawn(chan, *check(req, fds), fds)
            reply: Dict[str, Any] = {"op": "spawned", "id": rid, "pid": pid}
        except Refused as e:
            reply = error(rid, str(e))
        except OSError as e:  # fork, pipe: EAGAIN, ENOMEM
            reply = error(rid, f"{type(e).__name__}: {e}")
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if reply["op"] == "error":
            log(f"spawn {rid}: {reply['error']}")
        send(chan, reply)


def main() -> NoReturn:
    # An inherited SIG_IGN for SIGCHLD would reap the intermediates before
    # our waitpid; SIGINT is hyphad's to handle: we end at EOF or SIGTERM.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    chan = socket.socket(fileno=0)
    names = [n.strip() for n in os.environ.get("HYPHA_FORKSERVER_PRELOAD", "").split(",") if n.strip()]
    preload(names)
    # Frozen objects are left out of collections, so the workers' collector
    # does not touch (and copy) the pages the preloaded modules live in.
    gc.collect()
    gc.freeze()
    try:
        send(chan, {"op": "ready", "pid": os.getpid(), "threads": len(os.listdir("/proc/self/task")),
                    "preloaded": names, "python": "%d.%d.%d" % sys.version_info[:3]})
        serve(chan)
    except (BrokenPipeError, ConnectionResetError):
        pass  # hyphad is gone: nothing left to serve
    os._exit(0)  # no interpreter teardown: the preloaded modules' atexit is theirs


if __name__ == "__main__":
    main()
