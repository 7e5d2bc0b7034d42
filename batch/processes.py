"""Decoding in worker processes, for a model fast enough that decoding threads cannot feed it.

Decoding itself (libsndfile, soxr) releases the GIL, but the Python around it per file
(soundfile's wrappers, windowing, the result's bookkeeping) holds it, so threads stop scaling
near 3,100 files/s of 4 s clips (measured on 16 cores beside an H200, README "GPU"), well
below what a GPU scores. Processes each have their own GIL. Each process builds its own
frontend once; a file over ``STREAM_ABOVE_S`` is not decoded there but handed back to be
streamed in this process when it is scored, as with threads.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from ser.batch.discovery import Found
from ser.batch.frontends import Frontend
from ser.batch.scoring import Prepared, prepare_file, streamed
from ser.errors import SerError

FILES_PER_TASK = 8
"""Files sent to a process at once: fewer round trips, and still a small share of a batch."""

_frontend: Frontend | None = None  # each worker process's own


def _start(make_frontend: Callable[[], Frontend]) -> None:
    """Worker set-up: Ctrl-C is the parent's to handle (it stops the pool), then the frontend."""
    global _frontend
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _frontend = make_frontend()


def _prepare(files: list[Found], sample_rate: int) -> list[tuple[Prepared, bool]]:
    """Each file's model inputs, or (without its stream, which cannot travel) a file to stream."""
    done = []
    for found in files:
        prepared = prepare_file(found, _frontend, sample_rate)
        to_stream = prepared.stream is not None
        done.append((replace(prepared, stream=None) if to_stream else prepared, to_stream))
    return done


def prepare_in_processes(
    found: Iterable[Found],
    make_frontend: Callable[[], Frontend],
    sample_rate: int,
    workers: int,
    ahead: int = 0,
) -> Iterator[Prepared]:
    """:func:`ser.batch.scoring.prepare_all` in ``workers`` processes, in input order.

    ``make_frontend`` must pickle (a ``functools.partial`` of a module-level function). At most
    about ``ahead + 2 x workers x FILES_PER_TASK`` files are in flight. Processes start from a
    fork server, never by forking this process (whose ONNX Runtime threads a fork would copy
    mid-lock).

    Raises:
        SerError: when a decoding process dies (killed, or crashed inside a decoder); the rows
            scored until then are in the run's journal.
    """
    context = multiprocessing.get_context("forkserver")
    local: list[Frontend] = []  # this process's frontend, for the files it streams
    limit = max(1, (ahead + 2 * workers * FILES_PER_TASK) // FILES_PER_TASK)
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start, initargs=(make_frontend,)
    )
    in_flight: deque[Future] = deque()

    def finish(future: Future) -> Iterator[Prepared]:
        try:
            done = future.result()
        except BrokenProcessPool:
            raise SerError(
                "a decoding process died (killed, or crashed in a decoder); the files scored "
                "so far are kept in the journal for the next --incremental run"
            ) from None
        for prepared, to_stream in done:
            if to_stream:
                if not local:
                    local.append(make_frontend())
                prepared = streamed(prepared.found, local[0], sample_rate)
            yield prepared

    try:
        chunk: list[Found] = []
        for item in found:
            chunk.append(item)
            if len(chunk) < FILES_PER_TASK:
                continue
            in_flight.append(pool.submit(_prepare, chunk, sample_rate))
            chunk = []
            if len(in_flight) >= limit:
                yield from finish(in_flight.popleft())
        if chunk:
            in_flight.append(pool.submit(_prepare, chunk, sample_rate))
        while in_flight:
            yield from finish(in_flight.popleft())
    finally:  # stopped early (a signal, a full disk): queued files are dropped
        pool.shutdown(wait=False, cancel_futures=True)
