"""The bonito command against hostile or broken answers and careless input (the review of
issue 20): options in any place, server strings printed literally, secrets kept in their
place, --org and saved tokens honoured, clean errors on answers that are not the API's.
Against the live server of test_cli.py, and a tiny fake HTTP server for the bad answers."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.tests import test_cli as base
from cli.tests.test_cli import CLI, bonito, cli_env, ctrl_c_reaches_python

# The live server and login of test_cli.py (one server for this module).
server, home, logged_in = base.server, base.home, base.logged_in

pytestmark = pytest.mark.slow
REPO = CLI.parent
# Every terminal control character but newline and tab: C0 (ESC among them), DEL, C1.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
NASTY = "[/] [link=https://evil.example]click me[/link] [blink]x[/blink] :smile:"
ESCAPES = "x\x1b[2J\x1b]0;OWNED\x07\x9b31m\x7fy"


# ------------------------------------------------------------------------------ a fake server
class Fake:
    """A server that answers whatever a test sets: routes map a path prefix to
    (status, body, content type, extra headers) or a function of the request."""

    def __init__(self):
        self.routes: dict = {}
        self.seen: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.seen.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body.decode()}
                )
                matching = [p for p in fake.routes if self.path.startswith(p)]
                route = (
                    fake.routes[max(matching, key=len)]
                    if matching
                    else (404, "not found", "text/plain", ())
                )
                if callable(route):
                    route = route(self.path, body)
                status, text, kind, extra = route
                data = text.encode() if isinstance(text, str) else text
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def json(self, prefix, data, status=200, extra=()):
        self.routes[prefix] = (status, json.dumps(data), "application/json", extra)

    @classmethod
    def answering(cls, answers: dict):
        """A module fixture's body: a server signed in as ME that answers each path of
        ``answers`` with its JSON, shut down after the module."""
        server = cls()
        server.json("/api/me", ME)
        for path, answer in answers.items():
            server.json(path, answer)
        yield server
        server.httpd.shutdown()


@pytest.fixture
def fake():
    server = Fake()
    yield server
    server.httpd.shutdown()


ME = {"email": "e@x", "name": "E", "org": {"slug": "acme", "name": "Acme"}, "role": "admin"}


def at(fake, home, *args, check=None, env=None, input=None):
    """The CLI pointed at the fake server with a token from the environment."""
    return bonito(
        home,
        *args,
        env={"BONITO_URL": fake.url, "BONITO_TOKEN": "pat-fake", **(env or {})},
        check=check,
        input=input,
    )


def run_shell(home, script, env=None):
    return subprocess.run(
        ["bash", "-c", script],
        cwd=home,
        env=cli_env(home, **(env or {})),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def others(server):
    """A second org ("other") with its admin's token, and a member's token in demo."""
    out = (
        server["bonito"]
        .manage(
            "shell",
            "-c",
            "from orgs.models import User, Organization; from orgs import services; "
            "from orgs.audit import Actor; a = Actor(via='test'); "
            "eve = services.user_create(actor=a, email='eve@other.test'); "
            "o = services.org_create(actor=a, name='Other', slug='other', owner=eve); "
            "services.membership_add(actor=a, org=o, user=eve, role='admin'); "
            "bob = services.user_create(actor=a, email='bob@demo.test'); "
            "d = Organization.objects.get(slug='demo'); "
            "services.membership_add(actor=a, org=d, user=bob, role='member'); "
            "print(services.pat_create(actor=a, user=eve, org=o, name='cli')[1]); "
            "print(services.pat_create(actor=a, user=bob, org=d, name='cli')[1])",
        )
        .split()
    )
    return {"eve": out[-2], "bob": out[-1]}


# ------------------------------------------------------------------------------ F1 F2 F3 F15
COMMANDS = [
    ("auth", "status"),
    ("keys", "list"),
    ("teams", "list"),
    ("providers", "list"),
    ("policies", "get"),
    ("usage",),
    ("doctor",),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_root_options_work_before_and_after_the_command(server, logged_in, command):
    for args in (("--json", *command), (*command, "--json")):
        result = bonito(logged_in, *args, check=0)
        json.loads(result.stdout)
    for args in (("-q", *command), (*command, "--quiet")):
        result = bonito(logged_in, *args, check=0)
        assert "Error" not in result.stderr
    for args in (
        ("--org", "demo", "--url", server["url"], *command, "--json"),
        (*command, "--org", "demo", "--url", server["url"], "--json"),
        (*command, "--token", server["pat"], "--json"),
        ("--token", server["pat"], *command, "--json"),
    ):
        json.loads(bonito(logged_in, *args, check=0).stdout)


def test_the_dashboards_login_line_works_as_shown(server, home):
    """The exact line of Settings → Tokens (templates/orgs/settings.html), the token on stdin
    as a person would paste it, and the docs' form with --org."""
    template = (REPO / "templates/orgs/settings.html").read_text()
    [line] = re.findall(r'<code id="cli-login">([^<]+)</code>', template)
    line = line.replace("{{ request.scheme }}://{{ request.get_host }}", server["url"])
    assert "{" not in line and line.startswith("bonito auth login --url ")
    args = line.split()[1:]
    result = bonito(home, *args, input=server["pat"] + "\n", check=0)
    assert "GetPassWarning" not in result.stderr and "Logged in" in result.stdout
    assert bonito(home, "auth", "status", "--quiet", check=0).stdout.strip() == "demo"
    for args in (
        ("auth", "login", "--url", server["url"], "--org", "demo", "--token", server["pat"]),
        ("--org", "demo", "--url", server["url"], "auth", "login", "--token", server["pat"]),
    ):
        bonito(home, *args, check=0)
    wrong = bonito(home, "auth", "login", "--url", server["url"], "--org", "nope",
                   "--token", server["pat"], check=3)  # fmt: skip
    assert "not 'nope'" in wrong.stderr


def test_login_to_a_second_org_by_org_and_the_hint_it_gives(server, home, others):
    bonito(home, "auth", "login", "--url", server["url"], "--token", server["pat"], check=0)
    hint = bonito(home, "--org", "other", "keys", "list", check=3).stderr  # not logged in
    assert "bonito auth login --org other" in hint
    bonito(home, "auth", "login", "--org", "other", "--url", server["url"],
           "--token", others["eve"], check=0)  # fmt: skip
    assert bonito(home, "--org", "other", "auth", "status", "-q", check=0).stdout.strip() == "other"
    assert bonito(home, "--org", "demo", "auth", "status", "-q", check=0).stdout.strip() == "demo"


@pytest.mark.parametrize("content", ['{"profiles": []}', "[]", '{"profiles": {"a": 1}}', "{"])
def test_a_broken_config_file_is_a_clear_usage_error(server, home, content):
    (home / "cfg").mkdir()
    (home / "cfg" / "config.json").write_text(content)
    for args in (("keys", "list"), ("auth", "logout"), ("auth", "status")):
        result = bonito(home, *args, check=2)
        assert "config.json" in result.stderr and "unexpected" not in result.stderr


# ------------------------------------------------------------------------------ F4 F5
def assert_literal(text: str):
    assert not CONTROL.search(text), repr(text)
    assert "unexpected" not in text and "MarkupError" not in text


def test_server_strings_print_literally_in_every_human_output(server, logged_in):
    """Rich markup, emoji codes and escape sequences in names and descriptions print as
    themselves: tables, records, the secret's record, audit rows, breakdowns, logs."""
    made = json.loads(
        bonito(logged_in, "keys", "create", "--name", NASTY, "--json", check=0).stdout
    )
    # Escape sequences in a description are refused by the server now (names and
    # descriptions are one line of visible text): the refusal prints literally too.
    refused = bonito(
        logged_in, "teams", "create", "-s", "name=evil-team", "-s",
        f"description={NASTY} {ESCAPES}", check=1,
    )  # fmt: skip
    assert "control characters" in refused.stderr
    assert_literal(refused.stdout + refused.stderr)
    team = json.loads(
        bonito(
            logged_in,
            "teams",
            "create",
            "-s",
            "name=evil-team",
            "-s",
            f"description={NASTY}",
            "--json",
            check=0,
        ).stdout  # fmt: skip
    )
    created = bonito(logged_in, "keys", "create", "--name", NASTY + "2", check=0).stdout
    assert_literal(created)
    import httpx

    httpx.post(
        server["url"] + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {made['api_key']}", "X-Request-ID": "[/]" + NASTY},
        json={"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    time.sleep(1)
    for args in (
        ("keys", "list"),
        ("keys", "get", str(made["id"])),
        ("teams", "list"),
        ("teams", "get", str(team["id"])),
        ("audit", "list", "--limit", "20"),
        ("analytics", "--group-by", "key"),
        ("usage",),
        ("logs", "--limit", "5"),
    ):
        result = bonito(logged_in, *args, check=0)
        assert_literal(result.stdout + result.stderr)
    listed = bonito(logged_in, "keys", "list", "--wide", check=0).stdout  # names whole
    assert "[/]" in listed and ":smile:" in listed and "[link=" in listed
    described = bonito(logged_in, "teams", "get", str(team["id"]), check=0).stdout
    assert "[/]" in described and ":smile:" in described


def test_server_error_messages_print_literally(fake, home):
    fake.json("/api/", {"detail": f"boom {NASTY} {ESCAPES}"}, status=500)
    for args in (("keys", "list"), ("teams", "get", "1"), ("auth", "status")):
        result = at(fake, home, *args, check=1)
        assert_literal(result.stderr)
        assert "[/]" in result.stderr and "\\x1b" in result.stderr


def sse(*events: str) -> tuple:
    body = "".join(f"data: {e}\n\n" for e in events)
    return (200, body, "text/event-stream", ())


def test_chat_streams_text_without_escapes_and_skips_lines_that_are_not_events(fake, home):
    piece = json.dumps({"choices": [{"delta": {"content": f"hi {ESCAPES} there\n"}}]})
    fake.routes["/v1/chat/completions"] = sse(
        piece, "not-json", '{"choices": "odd"}', "[1, 2]", "[DONE]"
    )
    result = at(fake, home, "chat", "x", "-m", "m", "--api-key", "bn-x", check=0)
    assert_literal(result.stdout + result.stderr)
    assert "hi x\\x1b[2J" in result.stdout and "there" in result.stdout
    fake.routes["/v1/chat/completions"] = sse('{"error": "a [/] string \\u001b[2J"}')
    failed = at(fake, home, "chat", "x", "-m", "m", "--api-key", "bn-x", check=1)
    assert_literal(failed.stderr)
    assert "a [/] string" in failed.stderr
    fake.json("/v1/chat/completions", {"error": {"message": "[/] model \x1b[2J"}}, status=400)
    refused = at(fake, home, "chat", "x", "-m", "[/]", "--api-key", "bn-x", check=1)
    assert_literal(refused.stderr)


# ------------------------------------------------------------------------------ F6
@pytest.mark.parametrize(
    "text",
    [
        "teams:\n- name: env:CI_SECRET\n",
        "teams:\n- name: ok\n  description: 'env:CI_SECRET'\n",
        "providers:\n- name: p\n  kind: openai\n  api_base: env:CI_SECRET\n",
        "gateway:\n  credentials_note: env:CI_SECRET\n",
    ],
)
def test_env_values_outside_credential_fields_are_refused(server, logged_in, text):
    (logged_in / "c.yaml").write_text(text)
    result = bonito(logged_in, "config", "apply", "c.yaml", "--dry-run",
                    env={"CI_SECRET": "ghp_topsecret"}, check=2)  # fmt: skip
    assert "ghp_topsecret" not in result.stdout + result.stderr
    assert "only in api_key and credentials fields" in result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "gateway:\n  fallback_models: [env:CI_SECRET]\n",
        "teams:\n- name: ok\n  description: |\n    api_key: env:CI_SECRET\n",
        "teams:\n- {name: env:CI_SECRET}\n",
    ],
)
def test_env_text_elsewhere_is_never_filled(server, logged_in, text):
    (logged_in / "c.yaml").write_text(text)
    result = bonito(logged_in, "config", "apply", "c.yaml", "--dry-run", "--json",
                    env={"CI_SECRET": "ghp_topsecret"})  # fmt: skip
    assert "ghp_topsecret" not in result.stdout + result.stderr


def test_filled_secrets_are_masked_in_dry_run_diffs(server, logged_in):
    (logged_in / "p.yaml").write_text(
        "providers:\n- name: envp\n  kind: openai\n  api_key: env:CI_SECRET\n"
        "- name: envq\n  kind: openai\n  credentials:\n    api_key: 'env:CI_SECRET'\n"
    )
    env = {"CI_SECRET": "sk-ghp-topsecret-1234"}
    for extra in ((), ("--json",)):
        result = bonito(logged_in, "config", "apply", "p.yaml", "--dry-run", *extra,
                        env=env, check=0)  # fmt: skip
        assert "sk-ghp-topsecret-1234" not in result.stdout + result.stderr
        assert "envp" in result.stdout


# ------------------------------------------------------------------------------ F7 F9
def test_org_is_honoured_or_refused_for_every_command(server, home, others):
    env = {"BONITO_URL": server["url"], "BONITO_TOKEN": others["eve"]}
    (home / "c.yaml").write_text("teams:\n- name: wrong-org\n")
    for args in (
        ("keys", "create", "--name", "wrong-org", "-q"),
        ("keys", "list"),
        ("config", "apply", "c.yaml"),
        ("teams", "create", "-s", "name=wrong-org"),
        ("agent", "status"),
        ("usage",),
        ("chat", "hi", "-m", "demo-chat", "--api-key", server["api_key"]),
        ("doctor",),
    ):
        result = bonito(home, "--org", "demo", *args, env=env)
        assert result.returncode == (1 if args[0] == "doctor" else 3), result.stderr
        assert "not 'demo'" in result.stderr or "not demo" in result.stdout
    keys = bonito(home, "keys", "list", "--json", env=env, check=0).stdout
    teams = bonito(home, "teams", "list", "--json", env=env, check=0).stdout
    assert "wrong-org" not in keys + teams
    assert bonito(home, "--org", "other", "keys", "list", "-q", env=env, check=0)


def test_the_environment_token_is_not_mixed_with_a_saved_profiles_org(server, home, others):
    bonito(home, "auth", "login", "--url", server["url"], "--token", server["pat"], check=0)
    env = {"BONITO_TOKEN": others["eve"]}
    result = bonito(home, "agent", "status", "--json", env=env)
    assert "No such organization" not in result.stderr
    assert result.returncode in (0, 1)  # other is not in VPC mode: the server says so


def test_a_saved_token_goes_only_to_its_own_url(server, home, fake):
    fake.json("/api/", {"results": [], "next": None})
    bonito(home, "auth", "login", "--url", server["url"], "--token", server["pat"], check=0)
    for args, env in (
        (("--url", fake.url, "keys", "list"), {}),
        (("keys", "list", "--url", fake.url), {}),
        (("keys", "list"), {"BONITO_URL": fake.url}),
        (("doctor",), {"BONITO_URL": fake.url}),
        (("chat", "hi", "-m", "m"), {"BONITO_URL": fake.url}),
    ):
        result = bonito(home, *args, env=env)
        assert result.returncode in (1, 3), result.stderr
        assert "not sent elsewhere" in result.stdout + result.stderr or args[0] == "chat"
    assert not [s for s in fake.seen if "Authorization" in s["headers"]]
    # An explicit token for the other URL is fine.
    at(fake, home, "keys", "list", check=0)


# ------------------------------------------------------------------------------ F8
@pytest.mark.parametrize("token", ["{pat} ", " {pat}\n", "{pat}\t"])
def test_whitespace_around_a_token_is_dropped(server, home, token):
    token = token.format(pat=server["pat"])
    env = {"BONITO_URL": server["url"], "BONITO_TOKEN": token}
    bonito(home, "keys", "list", "-q", env=env, check=0)
    bonito(home, "--url", server["url"], "--token", token, "keys", "list", check=0)


@pytest.mark.parametrize("token", ["pat-abc def", "pat-\x7fabc", "pat-é"])
def test_no_token_is_ever_echoed_in_an_error(fake, home, token):
    for env in (
        {"BONITO_URL": fake.url, "BONITO_TOKEN": token},
        {"BONITO_URL": "http://127.0.0.1:9", "BONITO_TOKEN": token},
    ):
        result = bonito(home, "keys", "list", env=env)
        assert result.returncode == 3, result.stderr
        assert token.strip() not in result.stderr and "abc" not in result.stderr
    dead = bonito(home, "--url", "http://user:hunter2@127.0.0.1:9", "--token", "pat-x",
                  "keys", "list", check=1)  # fmt: skip
    assert "hunter2" not in dead.stderr and "Cannot reach" in dead.stderr


# ------------------------------------------------------------------------------ F10 F11 F12
@pytest.mark.parametrize(
    "route",
    [
        (200, "<html><body>Login</body></html>", "text/html", ()),
        (500, "<html><h1>Server Error</h1></html>", "text/html", ()),
        (302, "", "text/html", (("Location", "https://elsewhere.example/x"),)),
        (200, '{"email": "x"}', "application/json", ()),
        (200, '{"results": "notalist", "next": null}', "application/json", ()),
        (200, "[1, 2]", "application/json", ()),
        (200, '"a string"', "application/json", ()),
    ],
    ids=["html", "html500", "redirect", "me-shape", "results-shape", "list", "string"],
)
def test_answers_that_are_not_the_apis_are_clean_errors(fake, home, route):
    fake.routes["/"] = route
    for args in (("keys", "list"), ("auth", "status"), ("teams", "get", "1"), ("doctor",),
                 ("doctor", "--json"), ("usage",), ("config", "export")):  # fmt: skip
        result = at(fake, home, *args)
        # One object printed as a record is fine; anything else fails cleanly.
        assert result.returncode == 1 or args[1] == "get", (args, result.stdout, result.stderr)
        assert not re.search(r"unexpected \w+Error", result.stderr), (args, result.stderr)
    doctor = at(fake, home, "doctor", check=1).stdout
    assert "FAIL" in doctor and "server reachable" in doctor


def test_doctor_names_a_web_page_for_what_it_is(fake, home):
    fake.routes["/"] = (200, "<html>Login</html>", "text/html", ())
    out = at(fake, home, "doctor", check=1).stdout
    assert "not a Bonito API (got text/html)" in out
    assert "TLS" in out  # every check has its line, skipped


def test_a_list_that_never_ends_is_cut_off(fake, home):
    fake.json("/api/me", ME)
    fake.json("/api/gateway/keys", {"results": [{"id": 1}], "next": "more"})
    result = at(fake, home, "keys", "list", "-q", check=1)
    assert "pages" in result.stderr
    assert at(fake, home, "keys", "list", "-q", "--limit", "3", check=0).stdout.split() == [
        "1",
        "1",
        "1",
    ]


def doctor_fake(fake, role="admin", provider_delay=0.0):
    fake.routes["/api/health"] = lambda path, body: (
        200,
        '{"status": "ok"}',
        "application/json",
        (("Date", formatdate(usegmt=True)),),
    )
    fake.json("/api/me", {**ME, "role": role})
    fake.json("/api/gateway/providers", {"results": [{"id": 1, "name": "slow", "is_active": True}],
                                         "next": None})  # fmt: skip
    fake.json("/api/gateway/deployments", {"results": [], "next": None})

    def test_provider(path, body):
        time.sleep(provider_delay)
        return (200, '{"ok": true, "detail": "fine"}', "application/json", ())

    fake.routes["/api/gateway/providers/1/test"] = test_provider


def test_doctor_measures_skew_at_the_first_answer_and_prints_as_it_goes(fake, home):
    doctor_fake(fake, provider_delay=3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonito_cli", "doctor"],
        cwd=home,
        env=cli_env(home, BONITO_URL=fake.url, BONITO_TOKEN="pat-fake"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()  # printed before the slow provider test ends
    started = time.monotonic()
    rest, err = proc.communicate(timeout=60)
    assert "server reachable" in first and time.monotonic() - started > 1.5
    [skew] = re.findall(r"clock skew: ([+-]\d+)s", rest)
    assert abs(int(skew)) <= 1  # the 3 s test is not counted as skew
    assert proc.returncode == 0, (rest, err)


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_doctor_skips_provider_tests_a_role_cannot_run(fake, home, role):
    doctor_fake(fake, role=role)
    out = at(fake, home, "doctor", check=0).stdout
    assert re.search(r"SKIP\s+providers: 1 active; testing them needs the admin role", out)
    assert not [s for s in fake.seen if s["path"].endswith("/test")]
    data = json.loads(at(fake, home, "doctor", "--json", check=0).stdout)
    assert all(c["hint"] == "" for c in data if c["status"] != "fail")


def test_doctor_for_a_member_of_the_live_server(server, home, others):
    env = {"BONITO_URL": server["url"], "BONITO_TOKEN": others["bob"]}
    out = bonito(home, "doctor", env=env, check=0).stdout
    assert "SKIP" in out and "FAIL" not in out


def test_doctor_when_unreachable_or_refused_says_why(server, home):
    dead = bonito(home, "doctor", "--json", env={"BONITO_URL": "http://127.0.0.1:9",
                                                 "BONITO_TOKEN": "pat-x"}, check=1)  # fmt: skip
    checks = {c["check"]: c for c in json.loads(dead.stdout)}
    assert checks["TLS"]["status"] == "skip" and checks["providers"]["status"] == "skip"
    bad = bonito(home, "doctor", "--json", env={"BONITO_URL": server["url"],
                                                "BONITO_TOKEN": "pat-wrong"}, check=1)  # fmt: skip
    checks = {c["check"]: c for c in json.loads(bad.stdout)}
    assert checks["/v1 request"]["detail"] == "no valid token"


# ------------------------------------------------------------------------------ F13
def test_config_apply_refuses_a_billion_laughs(server, logged_in):
    levels = ["gateway:", "  fallback_models: &a0 [x]"] + [
        f"  smart_{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 8)
    ]
    (logged_in / "laughs.yaml").write_text("\n".join(levels) + "\n")
    started = time.monotonic()
    result = bonito(logged_in, "config", "apply", "laughs.yaml", "--dry-run", check=1)
    assert "aliases" in result.stderr and time.monotonic() - started < 10


# ------------------------------------------------------------------------------ F14
@pytest.mark.parametrize(
    "args", ["keys list -q", "keys list", "models list", "completion bash", "--help"]
)
def test_a_closed_pipe_is_not_a_failure(server, logged_in, args):
    result = run_shell(
        logged_in,
        f"set -o pipefail; {sys.executable} -m bonito_cli {args} | true; echo rc=$?",
    )
    assert "rc=0" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


# ------------------------------------------------------------------------------ F16
def test_chat_appends_stdin_to_the_prompt(server, logged_in):
    env = {"BONITO_API_KEY": server["api_key"]}
    out = bonito(logged_in, "chat", "Review this", "-m", "demo-chat", input="THE DIFF\n",
                 env=env, check=0).stdout  # fmt: skip
    assert "Review this" in out and "THE DIFF" in out


def test_chat_keeps_the_conversation_after_an_error(fake, home):
    import os
    import pty

    answers = iter([(429, '{"error": {"message": "slow down"}}', "application/json", ())])

    def completion(path, body):
        try:
            return next(answers)
        except StopIteration:
            sent = json.loads(body)["messages"]
            text = f"got {len(sent)} messages: " + " | ".join(m["content"] for m in sent)
            reply = {"choices": [{"message": {"role": "assistant", "content": text}}]}
            return (200, json.dumps(reply), "application/json", ())

    fake.routes["/v1/chat/completions"] = completion
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonito_cli", "chat", "-m", "m", "--no-stream", "-q"],
        cwd=home,
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(home, BONITO_URL=fake.url, BONITO_API_KEY="bn-x"),
    )
    os.close(secondary)
    for line in ("first", "second", "third"):
        os.write(primary, (line + "\n").encode())
        time.sleep(0.7)
    os.write(primary, b"\x04")
    out, err = proc.communicate(timeout=30)
    os.close(primary)
    assert proc.returncode == 0, err
    assert "slow down" in err and "Chatting with" not in err  # --quiet: no banner
    # "first" was refused: the conversation went on without it.
    assert "got 1 messages: second" in out and "got 3 messages: second | got 1" in out


# ------------------------------------------------------------------------------ F17
def doc_commands() -> list[str]:
    text = (REPO / "docs/cli.md").read_text()
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, re.S)
    lines = [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("bonito ")]


def test_the_docs_strategy_examples_run(server, logged_in):
    examples = [c for c in doc_commands() if "strategy=" in c]
    assert examples
    for n, line in enumerate(examples):
        import shlex

        args = shlex.split(line)[1:]
        args = [a.replace("name=cheap", f"name=cheap{n}") for a in args]
        result = bonito(logged_in, *args)
        assert result.returncode == 0, (line, result.stderr)


def test_the_docs_read_only_examples_run(server, logged_in):
    import shlex

    read_only = ("list", "get", "status", "search", "usage", "analytics", "export")
    ran = 0
    for line in doc_commands():
        if "|" in line or ">" in line or "$" in line or "..." in line or "…" in line:
            continue
        args = shlex.split(line)[1:]
        if not any(word in read_only for word in args[:2]) or any(a.isdigit() for a in args):
            continue
        result = bonito(logged_in, *args)
        assert result.returncode == 0, (line, result.stderr)
        ran += 1
    assert ran >= 5


# ------------------------------------------------------------------------------ F18
BAD_IDS = ["abc/../../../me", "1?x=1", "../me", "1 2", "-1", "1/rotate", "%2e%2e"]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_are_checked_before_any_request(fake, home, bad):
    for args in (
        ("keys", "get"),
        ("keys", "revoke"),
        ("keys", "rotate"),
        ("providers", "test"),
        ("teams", "get"),
        ("members", "update", "-s", "role=viewer"),
        ("tokens", "revoke"),
    ):
        result = at(fake, home, *args, "--", bad, check=2)
        assert "not an id" in result.stderr
    assert fake.seen == []


def test_a_revoked_ids_json_is_a_number(server, logged_in):
    made = json.loads(bonito(logged_in, "keys", "create", "--name", "n", "--json", check=0).stdout)
    out = json.loads(bonito(logged_in, "keys", "revoke", str(made["id"]), "--json", check=0).stdout)
    assert out["id"] == made["id"]


def test_bonito_alone_is_a_usage_error_with_help(home):
    result = bonito(home, check=2)
    assert "Commands:" in result.stdout + result.stderr


def test_model_names_stay_one_path_segment(fake, home):
    fake.json("/api/gateway/models/", {"name": "n"})
    at(fake, home, "models", "get", "a/../../me", check=0)
    assert fake.seen[-1]["path"] == "/api/gateway/models/a%2F..%2F..%2Fme"
    at(fake, home, "models", "get", "..", check=2)


def test_help_of_settings_and_agent_token_has_examples(home):
    for args in (("policies", "get"), ("policies", "set"), ("gateway", "get"),
                 ("gateway", "set"), ("agent", "token"), ("agent", "token", "rotate")):  # fmt: skip
        assert "Examples:" in bonito(home, *args, "--help", check=0).stdout


def test_ctrl_c_in_a_conversation_is_exit_130(fake, home):
    import os
    import pty
    import signal

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonito_cli", "chat", "-m", "m"],
        cwd=home,
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(home, BONITO_URL=fake.url, BONITO_API_KEY="bn-x"),
        preexec_fn=ctrl_c_reaches_python,
    )
    os.close(secondary)
    assert "Chatting with m." in proc.stderr.readline()  # the banner, then the prompt
    time.sleep(0.5)  # waiting at the prompt
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    os.close(primary)
    assert proc.returncode == 130, err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ the second review
@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/api", "/api/me", "/o/demo/keys/"])
def test_login_refuses_a_url_that_is_not_the_servers_root(server, home, suffix):
    """The SDKs' base URL (…/v1) or an API path: refused, naming the URL to use, before any
    token is sent there; nothing is saved."""
    result = bonito(home, "auth", "login", "--url", server["url"] + suffix,
                    "--token", server["pat"], check=2)  # fmt: skip
    assert f"use --url {server['url']} " in result.stderr, result.stderr
    assert "Incorrect API key" not in result.stderr
    assert not (home / "cfg" / "config.json").exists()
    env = {"BONITO_URL": server["url"] + suffix, "BONITO_TOKEN": server["pat"]}
    assert f"BONITO_URL={server['url']})" in bonito(home, "keys", "list", env=env, check=2).stderr
    env["BONITO_API_KEY"] = server["api_key"]
    assert "not the Bonito server's root" in bonito(home, "chat", "hi", "-m", "demo-chat",
                                                    env=env, check=2).stderr  # fmt: skip


def test_a_url_without_a_scheme_is_a_usage_error(home):
    result = bonito(home, "auth", "login", "--url", "bonito.example.com", "--token", "pat-x",
                    check=2)  # fmt: skip
    assert "http:// or https://" in result.stderr


def test_a_reverse_proxy_prefix_is_a_server_url(fake, home):
    fake.json("/bonito/api/me", ME)
    fake.json("/bonito/api/gateway/keys", {"results": [{"id": 7}], "next": None})
    bonito(home, "auth", "login", "--url", fake.url + "/bonito/", "--token", "pat-fake", check=0)
    assert bonito(home, "keys", "list", "-q", check=0).stdout.split() == ["7"]
    assert {s["path"].split("?")[0] for s in fake.seen} == {
        "/bonito/api/me",
        "/bonito/api/gateway/keys",
    }


def test_the_gateways_openai_shaped_error_is_named_for_what_it_is(fake, home):
    """A URL that leads to the /v1 data plane (its own host, a proxy sending everything
    there): its OpenAI-shaped 401 is not taken for the management API's auth error."""
    fake.json("/", {"error": {"message": "Incorrect API key provided. Create a bn- key.",
                              "type": "invalid_request_error", "code": "invalid_api_key"}},
              status=401)  # fmt: skip
    for args in (("auth", "login", "--url", fake.url, "--token", "pat-fake"), ("keys", "list")):
        result = at(fake, home, *args, check=1)
        assert "not the control plane's" in result.stderr, result.stderr
        assert "without /v1" in result.stderr and "Incorrect API key provided" in result.stderr
    assert not (home / "cfg" / "config.json").exists()


class Held:
    """A route that answers only once released: the CLI waits in its request meanwhile."""

    def __init__(self):
        self.release = threading.Event()

    def __call__(self, path, body):
        self.release.wait(30)
        return (200, json.dumps(ME), "application/json", ())


@pytest.mark.parametrize(
    "args",
    [("logs", "--follow", "--limit", "5"), ("keys", "list"), ("auth", "status")],
    ids=" ".join,
)
def test_ctrl_c_before_following_or_during_a_request_is_exit_130(fake, home, args):
    held = Held()
    fake.routes["/api/"] = held
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonito_cli", *args],
        cwd=home,
        env=cli_env(home, BONITO_URL=fake.url, BONITO_TOKEN="pat-fake"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_reaches_python,
    )
    try:
        deadline = time.monotonic() + 20
        while not fake.seen and time.monotonic() < deadline:  # waiting for the answer now
            time.sleep(0.05)
        assert fake.seen, "the CLI sent no request"
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, (out, err)
        assert "Traceback" not in err and "Aborted." in err
    finally:
        held.release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _chat(server, home, text):
    bonito(home, "chat", text, "-m", "demo-chat", env={"BONITO_API_KEY": server["api_key"]},
           check=0)  # fmt: skip


def _logged_rows(home, at_least: int) -> list:
    deadline = time.time() + 20
    while True:  # usage rows are batched into the database
        rows = json.loads(bonito(home, "logs", "--limit", "3", "--json", check=0).stdout)
        if len(rows) >= at_least or time.time() > deadline:
            return rows
        time.sleep(0.3)


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_logs_follow_prints_history_and_live_rows_in_one_shape(server, logged_in, as_json):
    """The --limit rows of history (from REST) and the rows the live tail pushes: the same
    fields (the live tail's, billing/live.py), cost a number, in --json and in the table."""
    from billing.live import FIELDS

    _chat(server, logged_in, "history")
    assert _logged_rows(logged_in, 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bonito_cli", "logs", "--follow", "--limit", "1",
         "--interval", "600", "--model", "demo-chat", *(["--json"] if as_json else [])],
        cwd=logged_in,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(logged_in),
        preexec_fn=ctrl_c_reaches_python,
    )  # fmt: skip
    try:
        history = proc.stdout.readline()  # printed after the socket is open
        time.sleep(1)
        _chat(server, logged_in, "live")
        live = proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert "polling" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if as_json:
        rows = [json.loads(history), json.loads(live)]
        for row in rows:
            assert set(row) == set(FIELDS) | {"key_name", "team_name"}
            assert isinstance(row["cost"], int | float) and isinstance(row["key_id"], int)
            assert row["created_at"].endswith("Z") and row["key_name"]
        assert rows[0]["id"] != rows[1]["id"]
    else:
        for line in (history, live):
            cells = line.split()
            assert re.fullmatch(r"\d+\.\d{8}", cells[-2]), line  # the cost, as stored
            assert "None" not in cells and "demo-chat" in cells


def test_unknown_set_fields_are_refused_naming_the_valid_ones(server, logged_in):
    """A field the resource does not have (a typo) is refused before anything is sent,
    instead of being ignored by the API with exit 0."""
    [mock] = [p for p in json.loads(bonito(logged_in, "providers", "list", "--json",
                                           check=0).stdout) if p["name"] == "mock"]  # fmt: skip
    pid = str(mock["id"])
    refused = bonito(logged_in, "providers", "update", pid, "-s", "is_actve=false", check=2)
    assert "no field 'is_actve'" in refused.stderr and "did you mean 'is_active'" in refused.stderr
    assert "api_base" in refused.stderr and "credentials" in refused.stderr  # the valid ones
    read_only = bonito(logged_in, "providers", "update", pid, "-s", "has_credentials=false",
                       check=2)  # fmt: skip
    assert "read-only" in read_only.stderr
    after = json.loads(bonito(logged_in, "providers", "get", pid, "--json", check=0).stdout)
    assert after == mock
    before = json.loads(bonito(logged_in, "gateway", "get", "--json", check=0).stdout)
    gateway = bonito(logged_in, "gateway", "set", "-s", "request_timeout=30", check=2).stderr
    assert "'request_timeout_s'" in gateway
    assert json.loads(bonito(logged_in, "gateway", "get", "--json", check=0).stdout) == before
    policy = bonito(logged_in, "policies", "set", "-s", "monthly_spend_cap=10", check=2).stderr
    assert "'monthly_spend_cap_usd'" in policy
    bonito(logged_in, "teams", "create", "-s", "name=typo-team", "-s", "descripton=x", check=2)
    assert "typo-team" not in bonito(logged_in, "teams", "list", check=0).stdout
    # A record as `get --json` prints it goes back with --file (its read-only fields are
    # the server's own); an unknown field in a file is refused as well.
    (logged_in / "p.json").write_text(json.dumps({**mock, "is_active": True}))
    bonito(logged_in, "providers", "update", pid, "-f", "p.json", check=0)
    (logged_in / "p.json").write_text(json.dumps({"is_actve": False}))
    bonito(logged_in, "providers", "update", pid, "-f", "p.json", check=2)


def test_error_messages_keep_their_newlines_and_escape_the_rest(server, logged_in, fake, home):
    bad = bonito(logged_in, "config", "apply", "-", input="providers: [\n  - name: x\n", check=1)
    assert "\\x0a" not in bad.stderr and len(bad.stderr.strip().splitlines()) > 1, bad.stderr
    fake.json("/api/", {"detail": "line one\nline two \x1b[2J\r\t."}, status=500)
    result = at(fake, home, "keys", "list", check=1)
    assert "line one\nline two \\x1b[2J\\x0d\\x09." in result.stderr


def test_an_unwritable_config_folder_is_named(server, home):
    folder = "/proc/no-such-dir/bonito"  # mkdir: FileNotFoundError, even as root
    result = bonito(home, "--url", server["url"], "auth", "login", "--token", server["pat"],
                    env={"BONITO_CONFIG_DIR": folder}, check=1)  # fmt: skip
    assert "unexpected" not in result.stderr and folder in result.stderr
    assert "BONITO_CONFIG_DIR" in result.stderr


# ------------------------------------------------------------------------------ the third review
BAD_URLS = ["http://[::1", "http://127.0.0.1:99999", "https://[nothost]/"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_url_that_cannot_be_parsed_is_a_usage_error(home, url):
    """urlsplit's ValueError (an unclosed IPv6 bracket, a port out of range) was printed as
    'unexpected ValueError: Invalid IPv6 URL', exit 1."""
    for args in (
        ("auth", "login", "--url", url, "--token", "pat-x"),
        ("--url", url, "--token", "pat-x", "keys", "list"),
    ):
        result = bonito(home, *args, check=2)
        assert "unexpected" not in result.stderr
        assert "is not a server URL" in result.stderr, result.stderr


def test_a_wrong_url_is_named_as_such_also_with_a_saved_profile(fake, home):
    """With a profile saved for one server, a --url that is not a server's root (the SDKs'
    …/v1, no scheme, unparsable) was refused as 'another server than the profile's', exit 3,
    with the advice to log in at that very URL; the URL's own problem is the error (exit 2)."""
    fake.json("/api/me", ME)
    bonito(home, "auth", "login", "--url", fake.url, "--token", "pat-fake", check=0)
    for url, words in (
        (fake.url + "/v1", f"use --url {fake.url} "),
        ("bonito.example.com", "http:// or https://"),
        ("http://[::1", "is not a server URL"),
    ):
        for args, env in (
            (("--url", url, "keys", "list"), {}),
            (("keys", "list"), {"BONITO_URL": url}),
            (("agent", "status"), {"BONITO_URL": url}),
        ):
            result = bonito(home, *args, env=env, check=2)
            assert words in result.stderr, result.stderr
            assert "not sent elsewhere" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("keys", "list", "--limit", "-3"),
        ("providers", "list", "--limit", "-1"),
        ("logs", "--limit", "-1"),
        ("models", "search", "gpt", "--limit", "-1"),
        ("logs", "--follow", "--interval", "-1"),
        ("logs", "--follow", "--interval", "0"),
        ("logs", "--follow", "--interval", "nan"),  # passed the range check, then sleep(nan)
        ("logs", "--follow", "--interval", "inf"),
    ],
)
def test_a_negative_limit_or_interval_is_a_usage_error(fake, home, args):
    """--limit -3 printed nothing at all and exit 0 (rows[:-3] of nothing); a negative poll
    interval is no interval. Refused before any request."""
    result = at(fake, home, *args, check=2)
    assert "Invalid value" in result.stderr, result.stderr
    assert not fake.seen


def test_a_config_file_that_is_not_utf8_text_is_named(fake, home):
    """A binary or Latin-1 file was 'unexpected UnicodeDecodeError' (exit 1)."""
    path = home / "gateway.yaml"
    path.write_bytes(b"providers:\n  - name: caf\xe9\n\xff\xfe\x00")
    result = at(fake, home, "config", "apply", str(path), check=2)
    assert "gateway.yaml" in result.stderr and "UTF-8" in result.stderr, result.stderr
    assert "unexpected" not in result.stderr
    assert not fake.seen


@pytest.mark.parametrize("shell,rc", [("bash", ".bashrc"), ("zsh", ".zshrc")])
def test_completion_install_keeps_an_rc_file_that_is_not_utf8(home, shell, rc):
    """A ~/.bashrc with Latin-1 text in it (an old alias, a prompt) was 'unexpected
    UnicodeDecodeError'; its bytes are kept as they were and the line is added once."""
    path = home / rc
    path.write_bytes(b"alias caf='echo caf\xe9'\n")
    for _ in range(2):
        bonito(home, "completion", "install", "--shell", shell, check=0)
    data = path.read_bytes()
    assert data.startswith(b"alias caf='echo caf\xe9'\n")
    assert data.count(b"# bonito completion") == 1


@pytest.mark.parametrize("value", ["1e400", "-1e999", "NaN", "Infinity", "-Infinity", "[1e400]"])
def test_a_set_value_json_cannot_carry_is_sent_as_text(fake, home, value):
    """-s amount_usd=1e400 (or NaN) was read as a float no JSON can carry: 'unexpected
    ValueError: Out of range float values are not JSON compliant' (exit 1). It is sent as
    the text typed, for the server to judge."""
    fake.json("/api/schema/", {})
    fake.json("/api/gateway/budgets", {"id": 1}, status=201)
    at(fake, home, "budgets", "create", "-s", f"amount_usd={value}", "-s", "period=monthly",
       check=0)  # fmt: skip
    sent = [s for s in fake.seen if s["path"].startswith("/api/gateway/budgets")]
    assert json.loads(sent[-1]["body"])["amount_usd"] == value


def test_a_fields_file_with_nan_is_a_usage_error(fake, home):
    path = home / "fields.json"
    path.write_text('{"amount_usd": NaN, "period": "monthly"}')
    result = at(fake, home, "budgets", "create", "--file", str(path), check=2)
    assert "fields.json" in result.stderr and "unexpected" not in result.stderr
    assert not [s for s in fake.seen if s["path"].startswith("/api/gateway/budgets")]


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://user:hunter2@127.0.0.1:9"])
def test_logs_follow_with_the_server_down_says_so_once(home, url):
    """The server down was first 'the server did not say which org this token is for
    (Cannot reach …); polling every 2s instead', then the same error again: one error."""
    result = bonito(home, "--url", url, "--token", "pat-x", "logs", "--follow", check=1)
    assert result.stderr.count("Cannot reach") == 1, result.stderr
    assert "did not say" not in result.stderr and "polling" not in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("args", "path", "model", "said"),
    [
        (("keys", "get", "999"), "/api/gateway/keys/999", "ApiKey", "No key 999"),
        (("members", "delete", "7"), "/api/gateway/members/7", "Membership", "No member 7"),
        (("models", "get", "gpt-9"), "/api/gateway/models/gpt-9", "ModelCatalogEntry", "No model"),
    ],
)
def test_an_id_not_in_the_org_is_named_in_plain_words(fake, home, args, path, model, said):
    """404s said the server's class names: 'No ModelCatalogEntry matches the given query.'"""
    fake.json("/api/me", ME)
    fake.json("/api/", {"detail": f"No {model} matches the given query."}, status=404)
    result = at(fake, home, *args, input="y\n", check=1)
    assert said in result.stderr and "in this org" in result.stderr, result.stderr
    assert model not in result.stderr


@pytest.mark.parametrize("kind", ["missing", "not pem"])
@pytest.mark.parametrize(
    "args",
    [
        ("keys", "list"),
        ("chat", "hi", "-m", "m", "--api-key", "bn-x"),
        ("doctor",),
        ("logs", "--follow"),
    ],
)
def test_a_wrong_ssl_cert_file_is_named(fake, home, kind, args):
    """SSL_CERT_FILE (the docs' way to trust a private CA) naming no file was 'unexpected
    FileNotFoundError: [Errno 2] No such file or directory', naming nothing."""
    path = home / "ca.pem"
    if kind == "not pem":
        path.write_text("not a certificate\n")
    doctor = args == ("doctor",)  # a report: the failed check, exit 1
    result = at(fake, home, *args, env={"SSL_CERT_FILE": str(path)}, check=1 if doctor else 2)
    said = result.stdout if doctor else result.stderr
    assert f"SSL_CERT_FILE {path}" in said, (result.stdout, result.stderr)
    assert "unexpected" not in said + result.stderr
    assert not fake.seen
