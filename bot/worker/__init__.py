"""The worker role: every job handler registered in one place, and the process that runs
them (`cosmo worker`, or supervised by `cosmo serve`)."""

from bot.worker.runtime import build_worker, job_kinds, run_worker

__all__ = ["build_worker", "job_kinds", "run_worker"]
