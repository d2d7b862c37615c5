"""Token counting loads its encoding without the network: from the BPE files LiteLLM ships,
or an operator's TIKTOKEN_CACHE_DIR; a missing or altered file is a clear error, never a
download."""

import shutil
import socket
import tempfile
from pathlib import Path

import pytest
import tiktoken.registry

from gateway.dataplane import tokens


@pytest.fixture
def no_network(monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("token counting tried the network")

    monkeypatch.setattr(socket, "getaddrinfo", refused)
    monkeypatch.setattr(socket.socket, "connect", refused)


@pytest.fixture
def fresh_process(monkeypatch, tmp_path):
    """tiktoken and tokens.py as in a new process: no encoding loaded, no cache folder named,
    and tiktoken's fallback cache (under the temp dir) empty."""
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    tokens._encoding.cache_clear()
    yield
    tokens._encoding.cache_clear()


def _shipped() -> Path:
    """The copy LiteLLM ships (looked up with the environment as a fresh process has it)."""
    return Path(tokens.bpe_folder()) / tokens.CL100K_FILE


def test_counting_needs_no_network_and_no_configuration(no_network, fresh_process):
    assert tokens.count_tokens("hello world") == 2
    assert tokens._encoding().encode("hello world") == [15339, 1917]  # cl100k_base's ids


def test_an_operators_folder_is_used_instead(no_network, fresh_process, tmp_path, monkeypatch):
    folder = tmp_path / "bpe"
    folder.mkdir()
    shutil.copy(_shipped(), folder / tokens.CL100K_FILE)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(folder))
    assert tokens.bpe_folder() == str(folder)
    assert tokens.count_tokens("hello world") == 2


@pytest.mark.parametrize("state", ["missing", "altered"])
def test_a_missing_or_altered_file_is_an_error_not_a_download(
    no_network, fresh_process, tmp_path, monkeypatch, state
):
    folder = tmp_path / "bpe"
    folder.mkdir()
    if state == "altered":
        (folder / tokens.CL100K_FILE).write_bytes(_shipped().read_bytes()[:-100])
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(folder))
    with pytest.raises(RuntimeError, match="never downloads it"):
        tokens.count_tokens("hello world")
    # Nothing written or deleted there (tiktoken deletes an altered copy before downloading).
    assert [p.name for p in folder.iterdir()] == (
        [tokens.CL100K_FILE] if state == "altered" else []
    )
