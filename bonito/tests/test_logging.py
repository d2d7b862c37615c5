"""A refused request (403, 404) logs one line, not two tracebacks; a server error keeps its
traceback. Through the project's real LOGGING, with DEBUG on as under `make run`."""

import io
import logging

import pytest
from django.urls import reverse
from django.utils.log import configure_logging

pytestmark = pytest.mark.django_db


@pytest.fixture
def server_log(settings):
    settings.DEBUG = True
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
    stream = io.StringIO()
    handlers = logging.getLogger().handlers
    assert len(handlers) == 1
    handlers[0].setStream(stream)
    yield stream
    settings.DEBUG = False
    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def test_a_403_logs_one_line(server_log, bob_client, org_a):
    response = bob_client.post(reverse("settings", args=[org_a.slug]), {"name": "Renamed"})
    assert response.status_code == 403
    lines = server_log.getvalue().splitlines()
    assert [line for line in lines if "Forbidden" in line] == [lines[0]] and len(lines) == 1
    assert "Traceback" not in server_log.getvalue()


def test_a_404_logs_one_line(server_log, charlie_client, org_a):
    assert charlie_client.get(reverse("overview", args=[org_a.slug])).status_code == 404
    text = server_log.getvalue()
    assert text.count("Not Found") == 1 and "Traceback" not in text


def test_a_server_error_keeps_its_traceback_once(server_log):
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        logging.getLogger("django.request").error(
            "Internal Server Error: %s", "/x", exc_info=exc, extra={"status_code": 500}
        )
    text = server_log.getvalue()
    assert text.count("Traceback") == 1 and "RuntimeError: boom" in text
