"""The engine's public exceptions: what a face (command line, console, script) catches and
shows an operator. Each message is one line."""

from __future__ import annotations


class InvalidInput(ValueError):
    """Bad input from a person or a script; the message is one line."""


class DuplicateJob(Exception):
    """An active job (pending or running) already holds this job type and entity."""

    def __init__(self, existing_id: int, job_type: str, entity_id: str) -> None:
        super().__init__(
            f"an active {job_type} job for {entity_id!r} already exists: job {existing_id}"
        )
        self.existing_id = existing_id


class ControlError(Exception):
    """An operation the job's state does not allow; the message says why, in one line."""


class JobNotFound(ControlError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id
