"""The Celery app; tasks live in each app's tasks.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bonito.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

app = Celery("bonito")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_broker_folders(sender, **kwargs):
    # The embedded broker is a folder, and beat's schedule a file, under var/; a fresh
    # clone does not have them yet.
    import contextlib
    from pathlib import Path

    if sender.conf.beat_schedule_filename:
        # A process that only sends tasks need not be able to write there; beat says so.
        with contextlib.suppress(OSError):
            Path(sender.conf.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)
    options = sender.conf.broker_transport_options or {}
    if str(sender.conf.broker_url).startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if options.get(key):
                Path(options[key]).mkdir(parents=True, exist_ok=True)
