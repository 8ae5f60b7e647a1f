"""Window refits fitted off the event loop, installed exactly where the trainer says.

An ``sklearn_window`` candidate cuts a :class:`~trainers.candidates.RefitJob` every
``refit_every`` events and installs its result exactly ``refit_lag`` events later (see
:mod:`trainers.candidates`). Fitting it inline at that event would stall the agent for the whole
fit; the :class:`RefitPool` instead

1. **submits** each job to an executor before the event after the one that cut it, or before a
   restored trainer's first event when the snapshot holds it pending. The default is the event
   loop's thread pool: a fit's native parts release the GIL, but its Python parts (gradient
   boosting's tree growing) still compete with the event loop, so a fit there takes about twice
   as long as inline (``bench/window_refits.py``);
2. **hands in** the result before the event that installs it, waiting for the fit only if it
   is still running then (backpressure, only when a fit takes longer than ``refit_lag`` events).

Exactly-once holds because the result is a pure function of the job and is installed at a fixed
event, not when it is ready: a job whose fit failed here, or that was never submitted, is
fitted inline at its due event by the trainer, with the same result (or the same error, which
quarantines the candidate). After a crash the job is in the restored snapshot, and is submitted
again.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from concurrent.futures import Executor
from typing import Any

from trainers.candidates import RefitJob
from trainers.trainer import ModelTrainer

__all__ = ["RefitPool"]

log = logging.getLogger("driftline.trainer")


class RefitPool:
    """Fits the refit jobs of trainers in an executor and hands each result in when it is due.

    Parameters
    ----------
    executor
        Where fits run; None: the event loop's default thread pool.
    """

    def __init__(self, executor: Executor | None = None) -> None:
        self._executor = executor
        # Per trainer (gone with it), each submitted job by identity, with its fit's future.
        self._fits: weakref.WeakKeyDictionary[
            ModelTrainer, dict[int, tuple[RefitJob, asyncio.Future[Any]]]
        ] = weakref.WeakKeyDictionary()

    def submit(self, trainer: ModelTrainer) -> None:
        """Step 1: start fitting every job of `trainer` not submitted yet."""
        pending = trainer.refit_jobs()
        if not pending and not self._fits:
            return  # called for every event: most workers never see a job
        submitted = self._fits.setdefault(trainer, {})
        # Jobs no longer pending (their candidate was quarantined or replaced) are let go.
        current = {id(job) for job in pending}
        for key in submitted.keys() - current:
            del submitted[key]
        loop = asyncio.get_running_loop()
        for job in pending:
            if id(job) not in submitted:
                submitted[id(job)] = (job, loop.run_in_executor(self._executor, job.fit))

    async def ready(self, trainer: ModelTrainer) -> None:
        """Step 2: before `trainer` learns its next event, hand in the results it installs
        (and submit the jobs cut since: by the last event, or pending in a restored trainer)."""
        self.submit(trainer)
        if not self._fits:
            return
        submitted = self._fits[trainer]
        for job in trainer.refit_jobs(due_next=True):
            _, fit = submitted.pop(id(job))
            try:
                fitted = await fit
            except Exception as error:
                # Fitted again inline at the due event, which fails alike and quarantines it.
                log.error(
                    "%s: the refit of %r cut at its event %d failed: %s",
                    trainer.spec.name,
                    job.candidate,
                    job.cut,
                    error,
                )
                continue
            trainer.provide_refit(job, fitted)
