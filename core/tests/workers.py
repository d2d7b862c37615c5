"""Each pytest-xdist worker is a process with databases of its own.

pytest-django gives every worker its own test database (the worker id added to its name),
and bonito/settings.py gives each its own Redis database of ``REDIS_URL`` (worker ``gwN``:
database d + N). The tests that find the machine's Redis when ``REDIS_URL`` is unset (the
embedded-defaults pass) take a database per worker from :func:`local_redis_url`.
"""

import os


def worker_index() -> int:
    """0 outside xdist; N for worker ``gwN``."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") else 0


def local_redis_url(first_db: int) -> str:
    """The machine's Redis when REDIS_URL is unset: database first_db + this worker's index
    (the suite runs with at most 4 workers: 8-11 and 12-15 stay clear of each other and of
    REDIS_URL's /1 + N)."""
    return f"redis://127.0.0.1:6379/{first_db + worker_index()}"
