"""A cancel that a library reported as an error of its own.

Seen on Python 3.11: redis-py turns a cancel into a ``TimeoutError``, SQLAlchemy into a
``PendingRollbackError``. A background loop that logs errors and carries on would then never
stop, and whoever awaits it (a service's exit) would hang.
"""

from __future__ import annotations

import asyncio


def reraise_cancel(exc: BaseException) -> None:
    """Raise ``CancelledError`` if the running task was cancelled: call it in an ``except``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
