"""Loaded models and their job queues: one bounded queue and one worker thread per model.

A model's forward passes add and remove hooks on the model itself, so two computations on one model must not
overlap: each :class:`ModelSlot` has a lock that its worker holds for a whole job and that the quick views take
for their one call. Jobs wait in a bounded queue (a full queue is :class:`QueueFull`, HTTP 429); a job reports
progress through :func:`circuitlab.core.progress_sink` (the library's own progress bars), and is cancelled at
its next progress step by raising :class:`Cancelled` there. A job that raises fails with its message, stored
with it; the worker goes on with the next.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Optional

from circuitlab.errors import CircuitlabError
from circuitlab.serve.analyses import Analysis, result_json
from circuitlab.serve.store import Store


class QueueFull(Exception):
    """The model's job queue is full (HTTP 429)."""


class Cancelled(Exception):
    """Raised inside a job's progress callback when the job was cancelled."""


@dataclass
class Job:
    """A job in memory while it is queued or running (the store holds it for good)."""

    id: str
    slot: "ModelSlot"
    analysis: Analysis
    args: dict
    status: str = "queued"
    progress: dict = field(default_factory=dict)
    error: Optional[str] = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    version: int = 0  # bumped at every change, for the event stream

    def state(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "progress": dict(self.progress), "error": self.error,
                "model": self.slot.name, "analysis": self.analysis.name, "args": self.args}

    def touch(self) -> None:
        self.version += 1


class ModelSlot:
    """One loaded model: its name, weight fingerprint, lock, queue and worker thread."""

    def __init__(self, name: str, model: Any, store: Store, *, max_queue: int, max_tokens: int, max_memory: int,
                 jobs: dict[str, Job]) -> None:
        from circuitlab.models.identity import weight_fingerprint

        self.name, self.model, self.store = name, model, store
        self.fingerprint = weight_fingerprint(model)
        self.lock = threading.Lock()
        self.max_tokens, self.max_memory = max_tokens, max_memory
        self.queue: "queue.Queue[Optional[Job]]" = queue.Queue(maxsize=max_queue)
        self.jobs = jobs
        self.current: Optional[Job] = None
        self.thread = threading.Thread(target=self._work, name=f"circuitlab-serve-{name}", daemon=True)
        self.thread.start()

    def info(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {"name": self.name, "fingerprint": self.fingerprint, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                "d_model": cfg.d_model, "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx, "attn_only": bool(cfg.attn_only),
                "tokenizer": self.model.tokenizer is not None, "queued": self.queue.qsize(),
                "max_tokens": self.max_tokens}

    def compute(self, analysis: Analysis, args: dict, progress: bool = False, **extra: Any) -> Any:
        """Run ``analysis`` now under the model's lock (the views; the worker for jobs)."""
        with self.lock:
            return analysis.run(self.model, args, max_tokens=self.max_tokens, max_memory=self.max_memory,
                                progress=progress, **extra)

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the job queue of {self.name} is full ({self.queue.maxsize} jobs waiting); try again "
                            "when one has finished") from None
        self.jobs[job.id] = job

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            try:
                self._run(job)
            except BaseException:  # never let a job take the worker down
                traceback.print_exc()
            finally:
                self.current = None
                job.done.set()
                job.touch()
                self.jobs.pop(job.id, None)  # finished: the store has it from now on

    def _run(self, job: Job) -> None:
        from circuitlab.core import progress_sink

        if job.done.is_set():  # cancelled while it waited (see cancel_waiting)
            return
        if job.cancel.is_set():
            self._finish(job, "cancelled", error="cancelled before it started")
            return
        self.current = job
        job.status = "running"
        job.progress = {"desc": "starting", "n": 0, "total": None, "started": time.time()}
        job.touch()
        self.store.set_status(job.id, "running")

        def report(desc: str, n: float, total: Optional[float]) -> None:
            if job.cancel.is_set():
                raise Cancelled()
            job.progress = {**job.progress, "desc": desc, "n": n, "total": total}
            job.touch()

        try:
            with progress_sink(report):
                result = self.compute(job.analysis, job.args, progress=True)
            data = result_json(result)
        except Cancelled:
            self._finish(job, "cancelled", error="cancelled")
        except CircuitlabError as exc:
            self._finish(job, "failed", error=str(exc))
        except Exception as exc:  # a bug or a library error: the job fails, the server goes on
            self._finish(job, "failed", error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            if job.cancel.is_set():
                self._finish(job, "cancelled", error="cancelled")
            else:
                self._finish(job, "done", result=data)

    def _finish(self, job: Job, status: str, *, result: Optional[dict] = None, error: Optional[str] = None) -> None:
        if not self.store.closed:
            self.store.set_status(job.id, status, result=result, error=error)
        job.status, job.error = status, error
        job.touch()

    def cancel(self, job: Job) -> None:
        """Cancel ``job``: a waiting job is cancelled at once, a running one at its next progress step."""
        job.cancel.set()
        if job.status == "queued" and self.current is not job:
            self._finish(job, "cancelled", error="cancelled before it started")
            job.done.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel the running and queued jobs and stop the worker (waits up to ``timeout`` seconds)."""
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel.set()
                self._finish(job, "cancelled", error="the server stopped")
                job.done.set()
        running = self.current
        if running is not None:
            running.cancel.set()
        self.queue.put(None)
        self.thread.join(timeout)
        if running is not None and self.thread.is_alive():  # still between two progress steps: record it now
            self._finish(running, "cancelled", error="the server stopped")
