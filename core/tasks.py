"""Enqueueing Celery tasks from web code without ever failing the web request."""

import logging
import threading
import time

log = logging.getLogger("bonito.tasks")
RETRY_DELAYS_S = (1, 5, 30)


def enqueue(task, *args, **kwargs) -> None:
    """Send a task to the broker; if the broker is down, log it and keep retrying in the
    background, and in the end run the task here so its work is never lost."""
    try:
        task.apply_async(args=args, kwargs=kwargs, retry=False)
        return
    except Exception as exc:  # any broker failure
        log.warning(
            "broker unavailable for %s (%s); retrying in the background",
            task.name,
            type(exc).__name__,
        )

    def retry():
        for delay in RETRY_DELAYS_S:
            time.sleep(delay)
            try:
                task.apply_async(args=args, kwargs=kwargs, retry=False)
                log.info("%s enqueued after the broker came back", task.name)
                return
            except Exception as exc:
                log.info("broker still down for %s (%s)", task.name, type(exc).__name__)
        log.warning("broker still down; running %s in this process", task.name)
        task.apply(args=args, kwargs=kwargs)

    threading.Thread(target=retry, name=f"enqueue-{task.name}", daemon=True).start()
