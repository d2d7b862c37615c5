"""Static files (WhiteNoise's FileResponse) stream over ASGI without Django's warning that
a StreamingHttpResponse consumed a synchronous iterator, byte for byte; WSGI is unchanged."""

import warnings
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import AsyncClient, Client

FILES = ["css/bonito.css", "js/bonito.js", "favicon.svg"]


async def _body(response):
    return b"".join([chunk async for chunk in response])


@pytest.mark.parametrize("name", FILES)
def test_static_files_stream_async_over_asgi(name):
    expected = (Path(settings.BASE_DIR) / "static" / name).read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = async_to_sync(AsyncClient().get)(f"/static/{name}")
        assert response.status_code == 200 and response.is_async
        assert async_to_sync(_body)(response) == expected
    assert not [w for w in caught if "StreamingHttpResponse" in str(w.message)]


def test_wsgi_static_files_stay_synchronous():
    expected = (Path(settings.BASE_DIR) / "static" / FILES[0]).read_bytes()
    response = Client().get(f"/static/{FILES[0]}")
    assert response.status_code == 200 and not response.is_async
    assert b"".join(response.streaming_content) == expected
