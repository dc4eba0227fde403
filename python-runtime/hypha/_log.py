"""`worker.log`: a logging.Logger whose records are one stderr line each.

hyphad logs a worker's stderr line by line (`hyphactl tail`, its JSON log),
so a record must never span lines: a traceback or a message with newlines is
folded onto one line, its line breaks shown as ` | `.
"""
import logging
import sys

LOGGER = "hypha.worker"


class OneLine(logging.Formatter):
    """`LEVEL message`; hyphad adds the time and the worker's name."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.rstrip("\n").replace("\r\n", "\n").replace("\n", " | ")


class _Stderr(logging.Handler):
    """Writes to whatever sys.stderr is at the time (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def worker_logger() -> logging.Logger:
    log = logging.getLogger(LOGGER)
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        h = _Stderr()
        h.setFormatter(OneLine())
        log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False  # one line per record, not one more through the root logger
    return log
