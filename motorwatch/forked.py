"""Run a function in this process and in forked ones at once, one call each, and collect the results.

A forked child starts at once with this process's libraries already imported (numba, onnxruntime,
Arrow: the ~1 s a fresh interpreter spends loading them). It inherits the function as it is, closures
included, so nothing but the results is pickled. Only the forking thread exists in a child: the
function must not count on another thread of the parent, nor on a lock one of them may hold.
"""

from __future__ import annotations

import multiprocessing
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TypeVar

T = TypeVar("T")


def can_fork() -> bool:
    """Whether this platform forks processes (Linux, the BSDs; not Windows, and macOS only unsafely)."""
    return sys.platform != "darwin" and "fork" in multiprocessing.get_all_start_methods()


def in_processes(count: int, run: Callable[[int], T]) -> list[T]:
    """``[run(0), ..., run(count - 1)]``, all at once: ``run(0)`` in this process, each other call in
    a forked process of its own (forked first, before ``run(0)`` starts any thread here).

    An exception in a child is raised here, with the child's traceback as its cause; a child that
    dies without a result raises :class:`ChildProcessError`. On any failure (or ``KeyboardInterrupt``)
    the children still running are terminated."""
    context = multiprocessing.get_context("fork")
    sys.stdout.flush()  # else a child inherits what is buffered, and writes it again
    sys.stderr.flush()
    children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        for k in range(1, count):
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_child, args=(run, k, send), name=f"motorwatch-shard-{k}")
            child.start()
            send.close()  # the child's end: EOF here once the child exits
            children.append((child, receive))
        here = run(0)
        return [here, *(_result(child, receive) for child, receive in children)]
    finally:
        for child, receive in children:
            if child.is_alive():
                child.terminate()
            child.join()
            receive.close()


def _child(run: Callable[[int], T], k: int, send: Connection) -> None:
    try:
        outcome: tuple[bool, object] = (True, run(k))
    except BaseException as exc:  # handed to the parent, which raises it
        outcome = (False, (exc, traceback.format_exc()))
    try:
        send.send(outcome)
    except Exception as exc:  # an exception (or a result) that does not pickle
        send.send((False, (RuntimeError(f"{type(exc).__name__}: {exc}"), traceback.format_exc())))
    send.close()


def _result(child: multiprocessing.process.BaseProcess, receive: Connection) -> T:
    try:
        ok, value = receive.recv()
    except EOFError:
        child.join()
        raise ChildProcessError(
            f"process {child.name} exited with code {child.exitcode} before its result"
        ) from None
    if ok:
        return value  # type: ignore[return-value]
    exc, trace = value  # type: ignore[misc]
    raise exc from _ChildTraceback(f"in process {child.name}:\n{trace}")


class _ChildTraceback(Exception):
    """The traceback of an exception raised in a child process, as text."""
