"""The Overview's copyable snippets: each one, run or parsed in its language, uses exactly
the model name an admin typed, whatever characters it holds."""

import ast
import json
import re
import shlex
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from gateway import services
from gateway.models import Deployment
from gateway.tests.conftest import ACTOR

pytestmark = pytest.mark.django_db

HOSTILE_MODELS = [
    "it's-a-model",
    'say "hi"',
    "$(touch /tmp/bonito-pwned)",
    "`id`",
    "${HOME}",
    "back\\slash\\n",
    "new\nline",
    "tab\tand\rcarriage",
    "'); alert(1); ('",
    '"><img src=x onerror=alert(1)>',
    "</code></script><script>alert(1)</script>",
    "emoji 😀 and \u2028 separator",
    "a'\"$`\\!#;&|<>*?~{}[]",
]


class _Code(HTMLParser):
    def __init__(self):
        super().__init__()
        self.blocks, self._id = {}, None

    def handle_starttag(self, tag, attrs):
        if tag == "code":
            self._id = dict(attrs).get("id")
            self.blocks[self._id] = ""

    def handle_endtag(self, tag):
        if tag == "code":
            self._id = None

    def handle_data(self, data):
        if self._id:
            self.blocks[self._id] += data


def _snippets(client, org) -> dict[str, str]:
    parser = _Code()
    parser.feed(client.get(reverse("overview", args=[org.slug])).content.decode())
    # What the Copy button puts on the clipboard (bonito.js: textContent, trimmed).
    return {k: v.strip() for k, v in parser.blocks.items()}


@pytest.fixture(params=HOSTILE_MODELS)
def model(request, org_a):
    provider = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    try:
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=request.param, provider=provider, upstream_model="m"
        )
    except ValidationError:
        # Control characters are refused now; a row saved before that rule still has them.
        Deployment.objects.create(
            org=org_a, model_name=request.param, provider=provider, upstream_model="m"
        )
    return request.param


def test_it_quotes_the_curl_body_for_the_shell(alice_client, org_a, model):
    curl = _snippets(alice_client, org_a)["snip-curl"]
    # What a POSIX shell hands to curl (line continuations joined first, as the shell does).
    argv = shlex.split(curl.replace("\\\n", ""))
    assert argv[0] == "curl" and argv[1] == "http://testserver/v1/chat/completions"
    assert json.loads(argv[argv.index("-d") + 1])["model"] == model
    # And a real shell, with curl replaced by a function that prints its arguments.
    script = 'curl() { for a in "$@"; do printf \'%s\\0\' "$a"; done; }\n' + curl
    out = subprocess.run(
        ["/bin/sh", "-c", script], capture_output=True, check=True, env={"BONITO_API_KEY": "bn-x"}
    ).stdout.decode()
    args = out.split("\0")
    assert "Authorization: Bearer bn-x" in args
    assert json.loads(args[args.index("-d") + 1])["model"] == model


def test_it_writes_the_model_as_a_python_string_literal(alice_client, org_a, model):
    tree = ast.parse(_snippets(alice_client, org_a)["snip-py"])
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    (model_arg,) = [k.value for c in calls for k in c.keywords if k.arg == "model"]
    (base_arg,) = [k.value for c in calls for k in c.keywords if k.arg == "base_url"]
    assert ast.literal_eval(model_arg) == model
    assert ast.literal_eval(base_arg) == "http://testserver/v1"


def test_it_writes_the_model_as_a_javascript_string_literal(alice_client, org_a, model):
    node = _snippets(alice_client, org_a)["snip-node"]
    (literal,) = re.findall(r'model: ("(?:[^"\\\n]|\\.)*"), messages:', node)
    assert json.loads(literal) == model  # a JSON string is the JS literal JSON.stringify writes
    if shutil.which("node") is None:
        return
    # Run the snippet itself, with the SDK faked at its import.
    fake_sdk = (
        "class OpenAI { constructor(o) { this.o = o; this.chat = { completions: { create: "
        "async (a) => { process.stdout.write(JSON.stringify({base: this.o.baseURL, model: a.model})); "
        "return { choices: [{ message: { content: '' } }] }; } } }; } }\n"
    )
    program = node.replace('import OpenAI from "openai";', fake_sdk)
    out = subprocess.run(
        ["node", "--input-type=module", "-e", program],
        capture_output=True,
        check=True,
        env={"BONITO_API_KEY": "bn-x", "PATH": "/usr/bin:/bin"},
    ).stdout.decode()
    assert json.loads(out.split("\n")[0]) == {"base": "http://testserver/v1", "model": model}


def test_the_snippets_name_a_chat_model_before_an_embedding_one(alice_client, org_a):
    """The snippets are chat completions: an embedding model first in the alphabet (and
    as healthy) made the Overview's example fail when run."""
    provider = services.provider_save(actor=ACTOR, org=org_a, name="mock", kind="mock")
    for name, upstream in (("a-embed", "text-embedding-3-small"), ("z-chat", "gpt-4o-mini")):
        services.deployment_save(
            actor=ACTOR, org=org_a, model_name=name, provider=provider, upstream_model=upstream
        )
    curl = _snippets(alice_client, org_a)["snip-curl"]
    argv = shlex.split(curl.replace("\\\n", ""))
    assert json.loads(argv[argv.index("-d") + 1])["model"] == "z-chat"
