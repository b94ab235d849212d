"""Persistent handlers for jetjobs workers, in Python: one process computes many jobs.

A jetjobs worker started with ``--exec 'python3 my_handler.py' --persistent`` runs the program
once per slot and sends it one job at a time over the line-delimited JSON protocol of
``docs/handler-protocol.md``; ``serve`` speaks it::

    import jetjobs

    def compute(job):
        # job.table ("schema.table"), job.key ({"subject_id": 3, "session_id": 7}),
        # job.attempt, job.priority, job.deadline (a datetime, or None), job.trace
        if busy():
            raise jetjobs.Retry("the file server is busy")  # retried with backoff
        return {"result": 1.5}  # a target row (or a list of rows, or None)

    jetjobs.serve(compute)

An exception fails the job: its message ("ValueError: bad input", as DataJoint writes it)
becomes the job's error_message and its traceback the error_stack. Imports and connections
made before ``serve`` are paid once per process, not once per job.

For DataJoint pipelines, ``python3 -m jetjobs.datajoint module.Class`` computes a table with
DataJoint's own ``make()``: see ``jetjobs.datajoint``. Standard library only.
"""

import datetime
import json
import os
import signal
import sys
import traceback

__all__ = ["Job", "Retry", "serve", "protocol_stream", "PROTOCOL", "VERSION"]

#: The protocol's name and the version this package speaks (the handshake line).
PROTOCOL = "jetjobs-handler"
VERSION = 1

_stream = None


class Retry(Exception):
    """Raise (or raise from) it to fail the job as retryable: the worker retries it with
    backoff while attempts remain (jobs.max_attempts), then records it as an error."""


class Job:
    """One job, as the worker sends it."""

    __slots__ = ("id", "table", "key", "attempt", "priority", "deadline", "trace")

    def __init__(self, request):
        self.id = request["id"]
        #: The target table, "schema.table".
        self.table = request["table"]
        #: The key: the key columns and their values (numbers, strings; dates and UUIDs as
        #: strings, binary values as base64).
        self.key = request["key"]
        #: 1 for the job's first reservation, 2 for its first retry, ...
        self.attempt = request.get("attempt", 1)
        self.priority = request.get("priority")
        deadline = request.get("deadline")
        #: When the worker kills the handler (its --timeout), as an aware datetime; or None.
        self.deadline = datetime.datetime.fromisoformat(deadline.replace("Z", "+00:00")) if deadline else None
        #: The job's W3C trace context: "traceparent", "tracestate", "baggage" when traced.
        self.trace = request.get("trace") or {}

    def __repr__(self):
        return f"Job(table={self.table!r}, key={self.key!r}, attempt={self.attempt})"


def protocol_stream():
    """Take this process's stdout for the protocol and return the file to write it on.

    The protocol stream is a duplicate of file descriptor 1; descriptor 1 itself and
    ``sys.stdout`` are pointed at stderr, so that nothing else -- ``print``, a library's
    logger, a C extension, a child process -- can write into the protocol. Call it before
    importing anything that may print on stdout (DataJoint logs "connected to ..." there);
    ``serve`` calls it too. It may be called any number of times.
    """
    global _stream
    if _stream is None:
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        _stream = os.fdopen(fd, "w", encoding="utf-8")
    return _stream


def _error_message(error):
    """The exception line as DataJoint stores it: "ValueError: bad input", or the class name."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _stack(error):
    """The traceback from the first frame outside this package, as DataJoint's own
    traceback.format_exc() starts at populate's frame."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def _failure(request_id, error, retry):
    return {
        "id": request_id,
        "ok": False,
        "message": _error_message(error),
        "stack": _stack(error),
        "retry": retry,
    }


def serve(handler, stdin=None):
    """Serve jobs until the worker closes stdin: ``handler(job)`` computes one ``Job``.

    The handler returns the target rows for the worker to insert with the job's completion
    (a dict for one row, a list of dicts, or None for none); raising fails the job, and
    raising ``Retry`` asks for a retry. SIGINT and SIGTERM end the process (the worker then
    releases the job it was computing, when it is stopping itself).
    """
    out = protocol_stream()
    source = stdin if stdin is not None else sys.stdin.buffer
    # A signal ends the process instead of failing the job as KeyboardInterrupt would: the
    # worker releases a job whose handler died of its own stop signal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    out.write(json.dumps({"protocol": PROTOCOL, "version": VERSION}) + "\n")
    out.flush()
    for line in source:
        if not line.strip():
            continue
        request = json.loads(line)
        request_id = request["id"]
        try:
            rows = handler(Job(request))
            reply = {"id": request_id, "ok": True}
            if rows is not None:
                reply["rows"] = [rows] if isinstance(rows, dict) else list(rows)
            encoded = json.dumps(reply, default=str)
        except Retry as error:
            encoded = json.dumps(_failure(request_id, error, True))
        except Exception as error:  # noqa: BLE001 -- every failure is the job's
            encoded = json.dumps(_failure(request_id, error, False))
        # Everything written on stderr for this job precedes its reply (the protocol's rule).
        sys.stderr.flush()
        out.write(encoded + "\n")
        out.flush()
