"""The `bonito` command. Exit codes: 0 ok, 1 failure, 2 usage error, 3 auth error,
130 interrupted (Ctrl-C)."""

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import click

from . import __version__, fields, profiles
from .client import (
    AUTH,
    FAILURE,
    SHAPE,
    USAGE,
    Client,
    CliError,
    Unreachable,
    clean_token,
    expect,
    me_of,
    path_id,
    server_url,
)
from .configfile import fill_env, mask_secrets
from .output import (
    err_console,
    error,
    field_text,
    layout,
    line,
    percent,
    print_json,
    record,
    safe,
    short_cell,
    table,
    terminal_width,
    write_csv,
)
from .params import (
    ID,
    MOMENT,
    NAME,
    HelpGroup,
    add_root_options,
    closed_pipe,
    parse_moment,
    quiet_broken_pipe,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class State:
    profile_name: str | None = None
    org: str | None = None
    url: str | None = None
    token: str | None = None
    json: bool = False
    quiet: bool = False
    wide: bool = False
    _profile: profiles.Profile | None = None
    _client: Client | None = None

    @property
    def profile(self) -> profiles.Profile:
        if self._profile is None:
            try:
                self._profile = profiles.resolve(
                    self.profile_name, self.org, self.url, clean_token(self.token)
                )
            except profiles.ProfileError as exc:
                raise CliError(str(exc), exc.code) from None
        return self._profile

    @property
    def client(self) -> Client:
        if self._client is None:
            server_url(self.profile.url)  # a wrong URL is named as such, whatever the profile
            if self.profile.refused:
                raise CliError(self.profile.refused, AUTH)
            if not self.profile.token:
                raise CliError(
                    f"Not logged in (profile {self.profile.name!r}): run "
                    f"`bonito{' --profile ' + self.profile.name if self.profile_name else ''} auth login` "
                    "or set BONITO_TOKEN.",
                    AUTH,
                )
            client = Client(self.profile.url, self.profile.token)
            if self.org:  # --org is honoured, or refused: never acted on in another org
                slug = me_of(client)["org"]["slug"]
                if slug != self.org:
                    raise CliError(
                        f"The token is for org {slug!r}, not {self.org!r} (--org): log in to "
                        f"{self.org!r} with `bonito auth login --org {self.org}` or pass its token.",
                        AUTH,
                    )
            self._client = client
        return self._client


def out_options(f):
    """--json and --quiet on every command (also accepted before the command name)."""

    def set_json(ctx, _param, value):
        if value:
            ctx.ensure_object(State).json = True

    def set_quiet(ctx, _param, value):
        if value:
            ctx.ensure_object(State).quiet = True

    f = click.option(
        "--json",
        "json_",
        is_flag=True,
        expose_value=False,
        callback=set_json,
        help="Print JSON (the REST API's field names).",
    )(f)
    f = click.option(
        "--quiet",
        "-q",
        is_flag=True,
        expose_value=False,
        callback=set_quiet,
        help="Print only ids or secrets, for scripts.",
    )(f)
    return f


def wide_option(f):
    """--wide on a command that prints a table (fitted to the terminal otherwise)."""

    def set_wide(ctx, _param, value):
        if value:
            ctx.ensure_object(State).wide = True

    return click.option(
        "--wide",
        "-w",
        is_flag=True,
        expose_value=False,
        callback=set_wide,
        help="Every column in full, however wide (default: fit the terminal).",
    )(f)


pass_state = click.make_pass_decorator(State, ensure=True)


def show(
    state: State,
    data,
    columns: list[str],
    quiet_field: str = "id",
    empty: str = "None.",
    fit: dict | None = None,
) -> None:
    """A list or one row, as the output flags ask; ``empty`` said for an empty list (not a
    table of headers alone). A list's table fits the terminal (``fit``: which columns
    matter most and which may be cut, see output.layout) unless --wide."""
    for row in data if isinstance(data, list) else [data]:
        expect(row, dict, "the answer")
    if state.json:
        print_json(data)
    elif state.quiet:
        for row in data if isinstance(data, list) else [data]:
            if row.get(quiet_field) is not None:
                click.echo(row[quiet_field])
    elif isinstance(data, list) and not data:
        click.echo(empty)
    elif isinstance(data, list):
        table(data, columns, wide=state.wide, **(fit or {}))
    else:
        record(data)


def done(state: State, message: str, data=None) -> None:
    if state.json:
        print_json(data if data is not None else {"ok": True})
    elif not state.quiet:
        click.echo(message)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: no JSON can carry it
        raise ValueError(f"{text} is beyond a JSON number")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _json(text: str):
    """JSON as a request can carry it: no NaN, Infinity or number past a float's range."""
    return json.loads(text, parse_float=_finite, parse_constant=_no_constant)


def parse_sets(pairs, file=None) -> dict:
    """-s field=value (value read as JSON when it is: numbers, true, lists) and -f FILE.json."""
    body = {}
    if file is not None:
        try:
            body = _json(file.read())
        except ValueError as exc:
            raise CliError(f"{file.name}: not valid JSON: {exc}", USAGE) from None
        if not isinstance(body, dict):
            raise CliError(f"{file.name}: must hold a JSON object.", USAGE)
    for pair in pairs:
        if "=" not in pair:
            raise CliError(f"--set {pair!r}: write field=value.", USAGE)
        field, value = pair.split("=", 1)
        try:
            body[field] = _json(value)
        except ValueError:  # text, or a number JSON cannot carry: sent as typed
            body[field] = value
    return body


def checked_body(state: State, method: str, path: str, sets, file, what: str) -> dict:
    """The fields of -s/-f, each one the resource has (its REST schema says): an unknown
    field, which the API would ignore, is a usage error before anything is sent."""
    body = parse_sets(sets, file)
    if not body and method != "POST":  # a create with no fields: the API names what it needs
        raise CliError("Nothing to change: pass --set field=value.", USAGE)
    typed = {pair.split("=", 1)[0] for pair in sets}
    texts = fields.check(state.client, path, method, body, typed, what)
    # A text field typed as digits (-s name=2024, -s model_name=1e3) is sent as typed, not
    # as the number JSON reads in it (the API refuses a number for text).
    for pair in sets:
        field, value = pair.split("=", 1)
        if field in texts and isinstance(body.get(field), int | float):
            body[field] = value
    return body


set_option = click.option(
    "--set",
    "-s",
    "sets",
    multiple=True,
    metavar="FIELD=VALUE",
    help='A field to send; VALUE is read as JSON when it is one (5, true, ["a","b"]).',
)
file_option = click.option(
    "--file", "-f", type=click.File("r"), help="A JSON object of fields to send."
)


# ------------------------------------------------------------------------------ the root
@click.group(cls=HelpGroup, context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="bonito")
@click.option("--profile", "-p", envvar="BONITO_PROFILE", help="Which saved server/org to use.")
@click.option("--org", help="Use the profile logged in to this org (its slug).")
@click.option("--url", help="Server URL, overriding the profile (env: BONITO_URL).")
@out_options
@click.pass_context
def cli(ctx, profile, org, url):
    """Manage a Bonito AI gateway and use it, from a terminal or from CI.

    \b
    Examples:
      bonito auth login --url https://bonito.example.com
      bonito keys create --name ci-bot --model gpt-4o-mini --quiet
      bonito chat "Say hello" --model gpt-4o-mini
      bonito config apply gateway.yaml --dry-run
      bonito doctor
    """
    state = ctx.ensure_object(State)
    # Also settable after the command name (root_options_everywhere): keep what that set.
    state.profile_name = profile or state.profile_name
    state.org, state.url = org or state.org, url or state.url


# ------------------------------------------------------------------------------ auth
@cli.group(context_settings=CONTEXT)
def auth():
    """Log in with a personal access token, see who you are, log out.

    \b
    Examples:
      bonito auth login --url https://bonito.example.com --token pat-...
      BONITO_URL=... BONITO_TOKEN=pat-... bonito auth status
    """


@auth.command(context_settings=CONTEXT)
@click.option(
    "--token", envvar="BONITO_TOKEN", help="A personal access token (pat-…); asked for when absent."
)
@click.option("--api-key", help="Also keep a bn- key for `bonito chat` and `doctor`.")
@out_options
@pass_state
def login(state, token, api_key):
    """Check a personal access token against the server and save it (file mode 0600).

    Create the token in the dashboard: Settings → Tokens. The profile is named by
    --profile (default: "default") and remembers the server, the org and the token.

    \b
    Examples:
      bonito auth login --url https://bonito.example.com
      bonito -p staging auth login --url https://staging.example.com
    """
    token = token or state.token
    if not token:
        if sys.stdin.isatty():
            token = click.prompt("Personal access token", hide_input=True)
        else:  # piped: read one line, without getpass's "can not control echo" warning
            token = sys.stdin.readline()
    token = clean_token(token)
    if not token:
        raise CliError("No token given: pass --token or type it at the prompt.", USAGE)
    try:
        name, url = profiles.login_target(state.profile_name, state.org, state.url)
    except profiles.ProfileError as exc:
        raise CliError(str(exc), exc.code) from None
    try:
        me = me_of(Client(url, token))
    except Unreachable as exc:
        if url != profiles.DEFAULT_URL or state.url or os.environ.get("BONITO_URL"):
            raise
        raise Unreachable(
            f"{exc} No --url was given: {url} is the default, a server started with `make run`"
            " on this machine; pass your server's URL with --url.",
            exc.code,
        ) from None
    if state.org and me["org"]["slug"] != state.org:
        raise CliError(
            f"That token is for org {me['org']['slug']!r}, not {state.org!r} (--org): "
            f"create one while working in {state.org!r} (Settings → Tokens).",
            AUTH,
        )
    profiles.store(name, url=url, token=token, org=me["org"]["slug"], api_key=clean_token(api_key))
    done(
        state,
        safe(
            f"Logged in to {url} as {me['email']} in {me['org']['slug']} ({me['role']}); "
            f"saved as profile {name!r} in {profiles.config_file()}."
        ),
        {"profile": name, "url": url, **me},
    )


@auth.command(context_settings=CONTEXT)
@out_options
@pass_state
def status(state):
    """Who the current token acts as, and where it comes from.

    \b
    Examples:
      bonito auth status
      bonito auth status --json
    """
    me = me_of(state.client)
    data = {
        "profile": state.profile.name,
        "url": state.profile.url,
        "source": state.profile.source,
        **me,
    }
    if state.json:
        print_json(data)
    elif state.quiet:
        click.echo(safe(me["org"]["slug"]))
    else:
        click.echo(
            safe(
                f"{me['email']} in {me['org']['slug']} ({me['role']}) at {state.profile.url} "
                f"[token from {state.profile.source}, profile {state.profile.name!r}]"
            )
        )


@auth.command(context_settings=CONTEXT)
@out_options
@pass_state
def logout(state):
    """Forget the profile's saved token (revoke it in the dashboard or with `tokens revoke`).

    \b
    Examples:
      bonito auth logout
      bonito --profile staging auth logout
    """
    found = profiles.forget(state.profile.name)
    done(
        state,
        f"Logged out of profile {state.profile.name!r}."
        if found
        else "Nothing saved for that profile.",
        {"profile": state.profile.name, "removed": found},
    )


# ------------------------------------------------------------------------------ resources
PLURALS = {"audit": "audit entries", "routing": "routing policies"}  # commands' nouns


def resource(
    name,
    path,
    columns,
    *,
    help,
    example,
    ops=("list", "get", "create", "update", "delete"),
    quiet_field="id",
    list_filters=(),
    delete_verb="delete",  # "revoke": the API keeps the row, marked revoked (keys, tokens)
    keep=(),  # the columns that matter most, first: kept when the terminal is narrow
    cut=(),  # text columns that may be cut short (…) to fit
    noun=None,  # what one row is, in the help: "routing policies" (default: the name)
):
    """A command group for one REST collection: list/get/create/update/delete as it allows."""
    group = HelpGroup(name, help=help + f"\n\n\b\nExamples:\n{example}", context_settings=CONTEXT)

    if "list" in ops:

        @click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
        @wide_option
        @out_options
        @pass_state
        def list_(state, limit, **filters):
            rows = state.client.list(path, limit=limit, **filters)
            show(
                state,
                rows,
                columns,
                quiet_field,
                empty=f"No {PLURALS.get(name, name)}{' match' if any(filters.values()) else ''}.",
                fit={"keep": keep, "cut": cut},
            )

        for flt in reversed(list_filters):
            list_ = click.option(f"--{flt}", help=f"Only rows with this {flt}.")(list_)
        list_.__doc__ = (
            f"List {noun or name} (the columns that fit the terminal; --wide: all).\n\n\b\nExamples:\n"
            f"  bonito {name} list\n  bonito {name} list --wide\n  bonito {name} list --json"
        )
        group.command("list", context_settings=CONTEXT)(list_)

    if "get" in ops:

        @click.argument("id", type=NAME if quiet_field == "name" else ID)
        @out_options
        @pass_state
        def get(state, id):
            show(state, state.client.get(f"{path}/{path_id(id)}"), columns, quiet_field)

        get.__doc__ = (
            f"Show one of the {noun or name}.\n\n\b\nExamples:\n  bonito {name} get ID --json"
        )
        group.command("get", context_settings=CONTEXT)(get)

    if "create" in ops:

        @set_option
        @file_option
        @out_options
        @pass_state
        def create(state, sets, file):
            row = state.client.post(path, checked_body(state, "POST", path, sets, file, name))
            show(state, row, columns, quiet_field)
            warn_of(state, row)

        create.__doc__ = (
            f"Create one of the {noun or name} from --set fields.\n\n\b\nExamples:\n{example}"
        )
        group.command("create", context_settings=CONTEXT)(create)

    if "update" in ops:

        @click.argument("id", type=ID)
        @set_option
        @file_option
        @out_options
        @pass_state
        def update(state, id, sets, file):
            body = checked_body(state, "PATCH", f"{path}/{id}", sets, file, name)
            row = state.client.patch(f"{path}/{id}", body)
            show(state, row, columns, quiet_field)
            warn_of(state, row)

        update.__doc__ = f"Change fields of one of the {noun or name}.\n\n\b\nExamples:\n  bonito {name} update ID -s is_active=false"
        group.command("update", context_settings=CONTEXT)(update)

    if "delete" in ops:

        @click.argument("id", type=ID)
        @out_options
        @pass_state
        def delete(state, id):
            state.client.delete(f"{path}/{id}")
            past = "Revoked" if delete_verb == "revoke" else "Deleted"
            done(state, f"{past} {id}.", {"id": id, f"{past.lower()}": True})

        delete.__doc__ = (
            f"{delete_verb.capitalize()} one of the {noun or name}."
            + (" The gateways refuse it within seconds." if name == "keys" else "")
            + f"\n\n\b\nExamples:\n  bonito {name} {delete_verb} ID"
        )
        group.command(delete_verb, context_settings=CONTEXT)(delete)
    cli.add_command(group)
    return group


KEY_COLUMNS = [
    "id",
    "name",
    "kind",
    "key",
    "status",
    "allowed_models",
    "team",
    "routing_policy",
    "rpm_limit",
    "expires_at",
    "spend_this_month",
    "last_used_at",
]
keys = resource(
    "keys",
    "/api/gateway/keys",
    KEY_COLUMNS,
    ops=("list", "get", "delete"),
    delete_verb="revoke",
    keep=("id", "name", "status", "key", "spend_this_month", "last_used_at", "allowed_models"),
    cut=("name", "allowed_models", "routing_policy"),
    help="API keys (bn- keys; rt- keys route through a routing policy). The secret is shown once.",
    example="  bonito keys create --name ci-bot --model gpt-4o-mini --quiet\n  bonito keys update 12 --rpm 60 --model gpt-4o-mini\n  bonito keys rotate 12 --grace 24h\n  bonito keys disable 12\n  bonito keys enable 12\n  bonito keys revoke 12",
)


@keys.command("create", context_settings=CONTEXT)
@click.option("--name", required=True, help="What the key is for.")
@click.option("--model", "models", multiple=True, help="A model it may call (repeat; none: all).")
@click.option("--provider", "providers", multiple=True, help="A provider it may use (repeat).")
@click.option("--team", type=int, help="Team id.")
@click.option("--routing-policy", help="A routing policy's name: makes an rt- key.")
@click.option("--rpm", type=int, help="Requests per minute.")
@click.option("--tpm", type=int, help="Tokens per minute.")
@click.option("--expires", help="Expiry: a date (end of that day, UTC) or an ISO time.")
@out_options
@pass_state
def keys_create(state, name, models, providers, team, routing_policy, rpm, tpm, expires):
    """Create a key and print its secret, once (--quiet prints only the secret).

    \b
    Examples:
      bonito keys create --name ci-bot --model gpt-4o-mini
      export OPENAI_API_KEY=$(bonito keys create --name job-42 --quiet)
    """
    body = {"name": name, "allowed_models": list(models), "allowed_providers": list(providers)}
    for field, value in (
        ("team", team),
        ("routing_policy", routing_policy),
        ("rpm_limit", rpm),
        ("tpm_limit", tpm),
        ("expires_at", expires),
    ):
        if value is not None:
            body[field] = value
    _print_new_key(state, state.client.post("/api/gateway/keys", body))


def show_secret(state, row: dict, field: str) -> None:
    """A new key or token: all of it (--json), only the secret (--quiet), or the record
    and then the secret, said to be shown once."""
    if state.json:
        print_json(row)
    elif state.quiet:
        click.echo(row.get(field) or "")
    else:
        record({k: v for k, v in row.items() if k != field})
        click.echo(f"\nSecret (shown once, store it now): {safe(row.get(field))}")


def _print_new_key(state, row):
    show_secret(state, row, "api_key")


GRACE = re.compile(r"([0-9]+)([smhd]?)", re.ASCII)
GRACE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def grace_seconds(value: str) -> int:
    """--grace: 0, 3600, 90s, 30m, 1h, 24h, 7d."""
    match = GRACE.fullmatch(value.strip().lower())
    if not match:
        raise CliError(f"--grace {value!r}: write a duration like 0, 1h, 24h or 7d.", USAGE)
    return int(match[1]) * GRACE_UNITS[match[2]]


@keys.command("rotate", context_settings=CONTEXT)
@click.argument("id", type=ID)
@click.option(
    "--grace",
    default="0",
    show_default=True,
    help="How long the old secret keeps working: 0 (stops at once), 1h, 24h, 7d… (at most 30d).",
)
@out_options
@pass_state
def keys_rotate(state, id, grace):
    """Give a key a new secret (printed once); it keeps its id, settings and spend. The old
    secret keeps working for --grace, then the gateways refuse it.

    \b
    Examples:
      bonito keys rotate 12
      NEW=$(bonito keys rotate 12 --grace 24h --quiet)
    """
    body = {"grace_seconds": grace_seconds(grace)}
    _print_new_key(state, state.client.post(f"/api/gateway/keys/{id}/rotate", body))


@keys.command("disable", context_settings=CONTEXT)
@click.argument("id", type=ID)
@out_options
@pass_state
def keys_disable(state, id):
    """Disable a key: the gateways refuse it (401) within seconds until it is enabled again.
    It keeps its secret, settings, spend and history. Members may disable the keys they
    created; only org admins enable.

    \b
    Examples:
      bonito keys disable 12
    """
    row = state.client.post(f"/api/gateway/keys/{id}/disable", {})
    done(state, f"Disabled {id}.", row)


@keys.command("enable", context_settings=CONTEXT)
@click.argument("id", type=ID)
@out_options
@pass_state
def keys_enable(state, id):
    """Enable a disabled key again (org admins only; a revoked key stays revoked).

    \b
    Examples:
      bonito keys enable 12
    """
    row = state.client.post(f"/api/gateway/keys/{id}/enable", {})
    done(state, f"Enabled {id}.", row)


def _limit(value: str | None):
    """--rpm/--tpm: a number, or "none" for no key limit of its own."""
    if value is None or value.strip().lower() == "none":
        return None
    try:
        number = int(value)
    except ValueError:
        raise CliError(f"{value!r}: a whole number, or none.", USAGE) from None
    return number


@keys.command("update", context_settings=CONTEXT)
@click.argument("id", type=ID)
@click.option("--name", help="A new name.")
@click.option("--model", "models", multiple=True, help="A model it may call (repeat; replaces).")
@click.option("--all-models", is_flag=True, help="Let it call every model the org allows.")
@click.option(
    "--provider", "providers", multiple=True, help="A provider it may use (repeat; replaces)."
)
@click.option("--all-providers", is_flag=True, help="Let it use every provider.")
@click.option("--team", help="Team id, or none.")
@click.option("--routing-policy", help="Another routing policy (rt- keys only).")
@click.option("--rpm", help="Requests per minute, or none.")
@click.option("--tpm", help="Tokens per minute, or none.")
@click.option("--expires", help="A date (end of that day, UTC), an ISO time, or never.")
@out_options
@pass_state
def keys_update(
    state,
    id,
    name,
    models,
    all_models,
    providers,
    all_providers,
    team,
    routing_policy,
    rpm,
    tpm,
    expires,
):
    """Change a key's name, scopes, team, limits, expiry or routing policy (only the options
    given; the secret stays the same). Members change the keys they created.

    \b
    Examples:
      bonito keys update 12 --name backend --rpm 120
      bonito keys update 12 --model gpt-4o-mini --model gpt-4o
      bonito keys update 12 --expires 2027-06-30
      bonito keys update 12 --all-models --rpm none --expires never --json
    """
    if models and all_models or providers and all_providers:
        raise CliError(
            "--model with --all-models (or --provider with --all-providers): pick one.", USAGE
        )
    body: dict = {}
    if name is not None:
        body["name"] = name
    if models or all_models:
        body["allowed_models"] = list(models)
    if providers or all_providers:
        body["allowed_providers"] = list(providers)
    if team is not None:
        body["team"] = None if team.strip().lower() == "none" else _limit(team)
    if routing_policy is not None:
        body["routing_policy"] = routing_policy
    if rpm is not None:
        body["rpm_limit"] = _limit(rpm)
    if tpm is not None:
        body["tpm_limit"] = _limit(tpm)
    if expires is not None:
        body["expires_at"] = None if expires.strip().lower() == "never" else expires
    if not body:
        raise CliError("Nothing to change: pass an option (see --help).", USAGE)
    show(state, state.client.patch(f"/api/gateway/keys/{id}", body), KEY_COLUMNS)


providers = resource(
    "providers",
    "/api/gateway/providers",
    ["id", "name", "kind", "api_base", "is_active", "has_credentials", "active_deployments"],
    keep=("id", "name", "kind", "is_active", "has_credentials"),
    cut=("name", "api_base"),
    help="Provider connections (credentials are write-only).",
    example="  bonito providers create -s name=openai -s kind=openai \\\n"
    '      -s credentials=\'{"api_key":"sk-..."}\'\n  bonito providers test 3',
)


@providers.command("test", context_settings=CONTEXT)
@click.argument("id", type=ID)
@out_options
@pass_state
def providers_test(state, id):
    """Send a 1-token request to one of the provider's deployments; exit 1 when it fails.

    \b
    Examples:
      bonito providers test 3
    """
    result = state.client.post(f"/api/gateway/providers/{id}/test")
    if state.json:
        print_json(result)
    elif not state.quiet:
        click.echo(safe(("ok: " if result["ok"] else "failed: ") + str(result["detail"])))
    if not result["ok"]:
        sys.exit(FAILURE)


resource(
    "deployments",
    "/api/gateway/deployments",
    [
        "id",
        "model_name",
        "provider",
        "upstream_model",
        "region",
        "weight",
        "priority",
        "timeout_s",
        "is_active",
        "input_price_per_mtok",
        "output_price_per_mtok",
    ],
    keep=("id", "model_name", "provider", "upstream_model", "is_active"),
    cut=("model_name", "provider", "upstream_model", "region"),
    help="Deployments: a public model name served by a provider's upstream model.",
    example="  bonito deployments create -s model_name=gpt-4o-mini -s provider=openai \\\n"
    "      -s upstream_model=gpt-4o-mini",
    list_filters=("provider",),
)
MODEL_KEEP = ("name", "input_cost_per_token", "output_cost_per_token", "provider")
MODEL_CUT = ("name", "provider", "mode")
models = resource(
    "models",
    "/api/gateway/models",
    [
        "name",
        "provider",
        "mode",
        "input_cost_per_token",
        "output_cost_per_token",
        "max_input_tokens",
    ],
    ops=("list", "get"),
    quiet_field="name",
    list_filters=("search", "provider", "mode"),
    keep=MODEL_KEEP,
    cut=MODEL_CUT,
    help="The model catalog, with prices per token.",
    example="  bonito models list --search claude\n  bonito models search gpt-4o\n  bonito models get gpt-4o-mini",
)


@models.command("search", context_settings=CONTEXT)
@click.argument("term")
@click.option(
    "--limit", type=click.IntRange(min=0), default=50, show_default=True, help="At most this many."
)
@wide_option
@out_options
@pass_state
def models_search(state, term, limit):
    """Catalog models whose name contains TERM, with their prices.

    \b
    Examples:
      bonito models search sonnet
    """
    rows = state.client.list("/api/gateway/models", limit=limit, search=term)
    show(
        state,
        rows,
        ["name", "provider", "mode", "input_cost_per_token", "output_cost_per_token"],
        "name",
        fit={"keep": MODEL_KEEP, "cut": MODEL_CUT},
    )


resource(
    "routing",
    "/api/gateway/routing-policies",
    ["id", "name", "strategy", "models", "weights", "smart", "is_active"],
    keep=("id", "name", "strategy", "is_active", "models"),
    cut=("name", "models", "weights", "smart"),
    help="Routing policies; keys made with --routing-policy (rt- keys) route through them.",
    example="  bonito routing create -s name=cheap -s strategy=cost_optimized \\\n"
    '      -s models=\'["gpt-4o-mini","haiku"]\'',
    noun="routing policies",
)
resource(
    "budgets",
    "/api/gateway/budgets",
    [
        "id",
        "scope",
        "team",
        "key",
        "period",
        "amount_usd",
        "spent_usd",
        "hard",
        "thresholds",
        "is_active",
    ],
    keep=("id", "scope", "amount_usd", "spent_usd", "period", "hard", "is_active"),
    cut=("team", "key", "thresholds"),
    help="Spending budgets for the org, a team or a key; hard ones refuse requests at 100%.",
    example="  bonito budgets create -s amount_usd=100.00 -s period=monthly -s hard=true",
)
resource(
    "teams",
    "/api/gateway/teams",
    ["id", "name", "description", "created_at"],
    keep=("id", "name", "created_at"),
    cut=("name", "description"),
    ops=("list", "get", "create", "delete"),
    help="Teams.",
    example="  bonito teams create -s name=research",
)
resource(
    "members",
    "/api/gateway/members",
    ["id", "email", "name", "role", "team"],
    keep=("id", "email", "role"),
    cut=("email", "name", "team"),
    ops=("list", "get", "update", "delete"),
    help="Members of the org and their roles (invite people from the dashboard).",
    example="  bonito members update 7 -s role=viewer",
)
tokens = resource(
    "tokens",
    "/api/tokens",
    ["id", "name", "token", "created_at", "last_used_at", "revoked_at"],
    keep=("id", "name", "token", "last_used_at", "revoked_at"),
    cut=("name",),
    ops=("list", "delete"),
    delete_verb="revoke",
    help="Your personal access tokens for this org.",
    example="  bonito tokens create --name laptop\n  bonito tokens revoke 4",
)


@tokens.command("create", context_settings=CONTEXT)
@click.option("--name", required=True, help="What the token is for (a laptop, a CI job).")
@out_options
@pass_state
def tokens_create(state, name):
    """Create a personal access token and print it once.

    \b
    Examples:
      bonito tokens create --name ci --quiet
    """
    show_secret(state, state.client.post("/api/tokens", {"name": name}), "access_token")


resource(
    "audit",
    "/api/gateway/audit",
    ["id", "created_at", "actor_label", "action", "target_type", "target_repr"],
    keep=("id", "created_at", "action", "actor_label", "target_repr"),
    cut=("actor_label", "action", "target_type", "target_repr"),
    ops=("list", "get"),
    list_filters=("action",),
    help="The org's audit log (admins).",
    example="  bonito audit list --action api_key.create --limit 20",
)


def warn_of(state, answer) -> None:
    """The server's `warnings` on a save (a smart policy's tier dearer than its top tier:
    saved, but likely a mistake), each a `Warning: …` line on stderr. With --json they are
    in the JSON printed."""
    if state.json or not isinstance(answer, dict):
        return
    for warning in answer.get("warnings") or []:
        click.echo(f"Warning: {safe(warning)}", err=True)


def settings_group(name, path, help, example):
    group = HelpGroup(name, help=help + f"\n\n\b\nExamples:\n{example}", context_settings=CONTEXT)

    @group.command("get", context_settings=CONTEXT)
    @out_options
    @pass_state
    def get(state):
        show(state, state.client.get(path), [])

    get.help = (
        f"Show the settings.\n\n\b\nExamples:\n  bonito {name} get\n  bonito {name} get --json"
    )

    @group.command("set", context_settings=CONTEXT)
    @set_option
    @file_option
    @out_options
    @pass_state
    def set_(state, sets, file):
        body = checked_body(state, "PUT", path, sets, file, name)
        row = state.client.put(path, body)
        show(state, row, [])
        warn_of(state, row)

    set_.help = f"Change some of the settings (the others stay).\n\n\b\nExamples:\n{example}"
    cli.add_command(group)


settings_group(
    "policies",
    "/api/gateway/policy",
    "The org's gateway policy: model/provider allow- and deny-lists, regions, monthly spend cap.",
    "  bonito policies get\n  bonito policies set -s denied_models='[\"gpt-4\"]' \\\n"
    "      -s monthly_spend_cap_usd=500",
)
settings_group(
    "gateway",
    "/api/gateway/config",
    "The org's gateway settings: default strategy, enabled providers, fallback models, limits.",
    "  bonito gateway set -s default_strategy=cost_optimized \\\n      -s request_timeout_s=60",
)


# ------------------------------------------------------------------------------ usage, analytics, logs
RANGES = ["1h", "24h", "7d", "30d", "90d"]  # the REST API's presets


def range_options(default: str):
    """The time range and filters of usage, analytics and logs, as their REST endpoints take
    them; dates are checked here (a usage error, exit 2), as the server reads them."""

    def decorate(f):
        for opt, kw in reversed(
            [
                (
                    "--range",
                    {
                        "type": click.Choice(RANGES),
                        "help": f"How far back from now (default {default}).",
                    },
                ),
                (
                    "--since",
                    {
                        "type": MOMENT,
                        "help": "From this date or time instead: 2026-11-01, 2026-11-01T08:00Z or 2026-11-01T09:00+01:00 (no offset: UTC).",
                    },
                ),
                (
                    "--until",
                    {
                        "type": MOMENT,
                        "help": "Up to this date or time (default: now); same formats as --since.",
                    },
                ),
                ("--model", {"help": "Only this model (the name apps send)."}),
                ("--provider", {"help": "Only this provider (its name)."}),
                ("--key", {"help": "Only this key (its id, as in `bonito keys list`)."}),
                ("--team", {"help": "Only this team (its id, as in `bonito teams list`)."}),
                (
                    "--policy",
                    {
                        "help": "Only this smart routing policy (its id or name; "
                        "'(org default)': the org's default smart routing)."
                    },
                ),
            ]
        ):
            names = (opt, "range_") if opt == "--range" else (opt,)  # range() is a builtin
            f = click.option(*names, **kw)(f)
        return f

    return decorate


def _filters(kw) -> dict:
    since, until = kw.get("since"), kw.get("until")
    if since and until and parse_moment(since) >= parse_moment(until):
        raise CliError(f"--since {since} is not before --until {until}.", USAGE)
    return {("range" if k == "range_" else k): v for k, v in kw.items() if v is not None}


BREAKDOWN = ["name", "requests", "tokens", "cost_usd"]
BREAKDOWN_FIT = {"keep": ("name", "bucket", "cost_usd", "requests", "tokens"), "cut": ("name",)}


@cli.command(context_settings=CONTEXT)
@range_options("24h")
@click.option("--csv", "as_csv", is_flag=True, help="Cost by model as CSV.")
@wide_option
@out_options
@pass_state
def usage(state, as_csv, **kw):
    """Totals for a time range (requests, tokens, cost) and cost by model.

    \b
    Examples:
      bonito usage --range 7d
      bonito usage --range 30d --json | jq .cost
      bonito usage --range 30d --csv > usage.csv
    """
    data = state.client.get("/api/gateway/usage", **_filters(kw))
    if as_csv:
        write_csv(data["by_model"], _columns(data["by_model"], BREAKDOWN))
    elif state.json:
        print_json(data)
    elif state.quiet:
        click.echo(field_text("cost_usd", data.get("cost_usd")))
    else:
        record({k: v for k, v in data.items() if k != "by_model"})
        if data["by_model"]:
            columns = _columns(data["by_model"], BREAKDOWN)
            table(data["by_model"], columns, "By model", wide=state.wide, **BREAKDOWN_FIT)


def _columns(rows, preferred):
    seen = list(rows[0]) if rows else preferred
    return [c for c in preferred if c in seen] + [c for c in seen if c not in preferred]


def report_command(groups, default: str, group_help: str):
    """A report of the analytics API: its range and filters, --group-by (one of ``groups``),
    --csv for the breakdown, --wide, --json and --quiet."""

    def decorate(f):
        for wrap in reversed(
            [
                cli.command(context_settings=CONTEXT),
                range_options("7d"),
                click.option(
                    "--group-by",
                    type=click.Choice(groups),
                    default=default,
                    show_default=True,
                    help=group_help,
                ),
                click.option("--csv", "as_csv", is_flag=True, help="The breakdown as CSV."),
                wide_option,
                out_options,
                pass_state,
            ]
        ):
            f = wrap(f)
        return f

    return decorate


@report_command(
    ["model", "provider", "key", "team", "time"],
    "model",
    "Which breakdown to print (time: the series).",
)
def analytics(state, group_by, as_csv, **kw):
    """Requests, tokens and cost over time or by model/provider/key/team; latency; errors.

    \b
    Examples:
      bonito analytics --range 30d --group-by team
      bonito analytics --group-by time --csv > series.csv
      bonito analytics --json
    """
    data = state.client.get("/api/gateway/analytics", **_filters(kw))
    rows = data["series"] if group_by == "time" else data[f"by_{group_by}"]
    if state.json and not as_csv:
        print_json(data)
        return
    columns = _columns(rows, BREAKDOWN)
    if as_csv:
        write_csv(rows, columns)
    elif state.quiet:
        for row in rows:
            click.echo(row.get("name", row.get(columns[0])))
    else:
        record(
            {"since": data["since"], "until": data["until"], **data["totals"], **data["latency"]}
        )
        table(rows, columns, f"By {group_by}", wide=state.wide, **BREAKDOWN_FIT)


SAVINGS_GROUPS = ("policy", "classifier", "tier", "model", "day")
SAVINGS_COLUMNS = [
    "requests",
    "cost_usd",
    "top_tier_cost_usd",
    "saved_usd",
    "saved_pct",
    "rated",
    "avg_feedback",
]


@report_command(
    SAVINGS_GROUPS,
    "policy",
    "Which breakdown to print (classifier: the A/B arms; tier: quality by tier).",
)
def savings(state, group_by, as_csv, **kw):
    """What smart routing saved: the cost of smart-routed requests against what the same
    tokens would have cost on each policy's top tier, by policy, A/B arm, tier, model or day.

    \b
    Examples:
      bonito savings --range 30d
      bonito savings --group-by classifier --range 30d
      bonito savings --group-by day --csv > savings.csv
    """
    data = state.client.get("/api/gateway/analytics", **_filters(kw)).get("smart_routing") or {}
    rows = data.get(f"by_{group_by}") or []
    columns = [group_by, *SAVINGS_COLUMNS]
    if state.json and not as_csv:
        print_json(data)
    elif as_csv:
        write_csv(rows, columns)
    elif state.quiet:
        click.echo(field_text("saved_usd", data.get("saved_usd")))
    elif not data.get("requests") and not data.get("unpriced_requests"):
        click.echo("No smart-routed requests in this range.")
    else:
        record({k: v for k, v in data.items() if not k.startswith("by_")})
        table(rows, columns, f"By {group_by}", wide=state.wide, keep=(group_by, "saved_usd"))


LOG_COLUMNS = [
    "created_at",
    "request_id",
    "status",
    "http_status",
    "model_used",
    "provider",
    "key_name",
    "input_tokens",
    "output_tokens",
    "cost",
    "latency_ms",
]
LOG_FIT = {
    "keep": ("created_at", "status", "model_used", "cost", "key_name", "latency_ms"),
    "cut": ("request_id", "model_used", "provider", "key_name"),
}
# `logs --follow` prints a row as it comes: its columns are as wide as these (cut with …
# beyond them when the terminal is narrow), not as the widest row's.
FOLLOW_WIDTHS = {
    "created_at": 19,
    "request_id": 36,
    "status": 7,
    "http_status": 3,
    "model_used": 24,
    "provider": 12,
    "key_name": 16,
    "input_tokens": 7,
    "output_tokens": 7,
    "cost": 12,
    "latency_ms": 6,
}


@cli.command(context_settings=CONTEXT)
@range_options("30d")
@click.option(
    "--status",
    type=click.Choice(["success", "error"]),
    help="Only requests that succeeded or failed.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many (the newest).",
)
@click.option(
    "--follow",
    "-F",
    is_flag=True,
    help="Keep printing new requests as they finish (the server's live tail; Ctrl-C ends, exit 0).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=2.0,
    show_default=True,
    help="Seconds between polls with --follow when the server has no live tail.",
)
@wide_option
@out_options
@pass_state
def logs(state, limit, follow, interval, **kw):
    """Request logs, newest first; --follow prints new ones as they come (one JSON line each
    with --json).

    \b
    Examples:
      bonito logs --range 1h --status error
      bonito logs --follow --model gpt-4o-mini
      bonito logs --follow --json | jq -c '{model_used, cost}'
    """
    if not math.isfinite(interval):  # nan passes FloatRange's comparisons
        raise click.BadParameter(
            f"{interval} is not a number of seconds.", param_hint="'--interval'"
        )
    params = {**_filters(kw), "ordering": "-created_at"}
    if not follow:
        show(
            state,
            state.client.list("/api/gateway/logs", limit=limit, **params),
            LOG_COLUMNS,
            "request_id",
            empty="No requests match (the last 30 days unless --range or --since says).",
            fit=LOG_FIT,
        )
        return
    from . import follow as live

    # The socket first, then the history: a row stored in between is in one or the other
    # (printed once: rows are told apart by id).
    socket = None
    try:
        try:
            slug = state.client.get("/api/me")["org"]["slug"]
        except CliError as exc:
            if exc.code != FAILURE or isinstance(exc, Unreachable):
                raise  # no server to poll either: one error, not a fallback that fails too
            raise live.NoLiveTail(
                f"the server did not say which org this token is for ({exc})"
            ) from None
        socket = live.open_tail(
            state.client.url, state.client.token, slug, f"bonito-cli/{__version__}"
        )
    except live.NoLiveTail as exc:
        live.note(f"{exc}; polling every {interval:g}s instead.")
    rows = state.client.list("/api/gateway/logs", limit=limit, **params)
    seen = {live.row_id(r) for r in rows}
    for row in reversed(rows):  # REST's rows in the live tail's shape: one shape throughout
        _log_line(state, live.live_row(row))
    newest = {"at": rows[0]["created_at"] if rows else None}

    def emit(row):
        _log_line(state, row)
        newest["at"] = row["created_at"]

    filters = _filters(kw)
    if kw.get("policy") is not None:  # the tail's rows name their policy: its name, then
        filters["policy_name"] = _policy_name(state, kw["policy"])
    try:
        if socket is not None:
            with socket:
                live.tail(socket, filters, seen, emit)
        live.poll(state.client, params, seen, newest["at"], interval, emit)
    except KeyboardInterrupt:
        return  # Ctrl-C ends --follow: exit code 0


def _policy_name(state, policy: str) -> str:
    """The name usage rows record for --policy, as the server reads the filter: the org
    default's is ""; digits are a policy's id when there is one, else a name."""
    if policy == "(org default)":
        return ""
    if policy.isdigit():
        try:
            return state.client.get(f"/api/gateway/routing-policies/{policy}")["name"]
        except CliError:
            pass
    return policy


def _log_line(state, row):
    if state.json:
        click.echo(json.dumps(row, default=str))
    elif state.quiet:
        click.echo(row["request_id"])
    else:
        # Server strings (a request id, a key's name) printed literally: no escape sequence
        # in them reaches the terminal.
        texts = {c: safe(_log_cell(c, row.get(c), short=not state.wide)) for c in LOG_COLUMNS}
        if state.wide:
            click.echo("  ".join(texts.values()))
        else:
            widths = layout(FOLLOW_WIDTHS, LOG_COLUMNS, terminal_width(), **LOG_FIT)
            click.echo(line(texts, widths, FOLLOW_RIGHT).plain)
        sys.stdout.flush()


FOLLOW_RIGHT = {"http_status", "input_tokens", "output_tokens", "cost", "latency_ms"}


def _log_cell(column, value, short: bool) -> str:
    """A --follow line's cell: cost with the 8 decimals it is stored with (the live tail
    sends a number: not 1.2e-05); ``short``: a time to the second."""
    return short_cell(value, column) if short else field_text(column, value)


# ------------------------------------------------------------------------------ config
@cli.group(context_settings=CONTEXT)
def config():
    """Apply or export the org's gateway config (the apply_config YAML format).

    \b
    Examples:
      bonito config export > gateway.yaml
      bonito config apply gateway.yaml --dry-run
      bonito config apply gateway.yaml
    """


@config.command("apply", context_settings=CONTEXT)
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@out_options
@pass_state
def config_apply(state, file, dry_run):
    """Apply FILE (YAML; - for stdin) to the org: all of it or none of it.

    Keep provider secrets out of the file with `api_key: env:NAME` (a value on its own
    line): the CLI fills it from its own environment before sending. Exit 1 when the
    server refuses the file, 2 when a named variable is not set.

    \b
    Examples:
      bonito config apply gateway.yaml --dry-run
      bonito config apply gateway.yaml --quiet
    """
    try:
        raw = file.read()
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{file.name} is not UTF-8 text (byte {exc.start}): save the YAML file as UTF-8.",
            USAGE,
        ) from None
    text, secrets = fill_env(raw)
    result = mask_secrets(
        state.client.post("/api/gateway/config/apply", {"yaml": text, "dry_run": dry_run}),
        secrets,
    )
    if state.json:
        print_json(result)
        return
    warn_of(state, result)
    if state.quiet:
        return
    verb = "Would change" if dry_run else "Changed"
    if not result["changes"]:
        click.echo("No changes." if dry_run else "Applied: nothing changed.")
        return
    for change in result["changes"]:
        click.echo(safe(f"{change['action']:<28} {change['target_type']} {change['target']}"))
        diff = change.get("changes") or {}
        before, after = diff.get("before") or {}, diff.get("after") or {}
        for field in sorted(set(before) | set(after)):
            if before.get(field) != after.get(field):
                click.echo(
                    safe(
                        f"    {field}: {json.dumps(before.get(field), ensure_ascii=False)} -> "
                        f"{json.dumps(after.get(field), ensure_ascii=False)}"
                    )
                )
    click.echo(f"{verb}: {len(result['changes'])} item(s).")


@config.command("export", context_settings=CONTEXT)
@click.option("--output", "-o", type=click.File("w"), default="-", help="Write to this file.")
@out_options
@pass_state
def config_export(state, output):
    """Print the org's gateway config as YAML (provider secrets are never included).

    \b
    Examples:
      bonito config export -o gateway.yaml
    """
    data = state.client.get("/api/gateway/config/export")
    if state.json:
        print_json(data)
    else:
        output.write(data["yaml"])


# ------------------------------------------------------------------------------ agent
@cli.group(context_settings=CONTEXT)
def agent():
    """The VPC agent of the org (deployment mode "vpc").

    \b
    Examples:
      bonito agent status
      bonito agent token rotate --quiet
    """


def _org_slug(state) -> str:
    client = state.client  # checks --org against the token first
    return state.org or state.profile.org or me_of(client)["org"]["slug"]


@agent.command("status", context_settings=CONTEXT)
@wide_option
@out_options
@pass_state
def agent_status(state):
    """The org's mode and tokens, and each agent's heartbeat, version, config sync, request
    and error rates (rounded; --json has every field).

    \b
    Examples:
      bonito agent status
      bonito agent status --json | jq '.agents[] | {hostname, spool}'
    """
    data = expect(state.client.get(f"/api/orgs/{_org_slug(state)}/agent"), dict, "the answer")
    if state.json:
        print_json(data)
        return
    if state.quiet:
        click.echo(data.get("status", ""))
        return
    # A summary laid out for an 80-column terminal; --json has every field, unrounded.
    if data.get("deployment_mode") != "vpc":  # no agents: their status colour means nothing
        record({k: v for k, v in data.items() if k not in ("agents", "tokens", "status")})
        click.echo("\nShared gateway: no agents. Switch in Settings → Deployment mode.")
        return
    record({k: v for k, v in data.items() if k not in ("agents", "tokens")})
    now = datetime.now(UTC)
    tokens = [
        {
            "token": t.get("id"),
            "created": _minute(t.get("created_at")),
            "last used": _minute(t.get("last_used_at")) or "never",
            "valid until": _minute(t.get("valid_until")),
        }
        for t in data.get("tokens") or []
    ]
    click.echo()
    if tokens:
        table(tokens, list(tokens[0]), "Org tokens", wide=state.wide, keep=("token", "valid until"))
    else:
        click.echo("No usable org token: `bonito agent token rotate` makes one.")
    agents = [
        {
            "agent": a.get("hostname") or a.get("agent_id"),
            "status": a.get("status"),
            "heartbeat": _ago(a.get("last_heartbeat_at"), now),
            "version": a.get("version"),
            "config": _config(a),
            "req/s": _number(a.get("request_rate"), "{:.2f}"),
            "errors": percent(a.get("error_rate"), fraction=True),
        }
        for a in data.get("agents") or []
    ]
    click.echo()
    if agents:
        table(
            agents,
            list(agents[0]),
            "Agents",
            wide=state.wide,
            keep=("agent", "status", "heartbeat", "config", "errors", "req/s"),
            cut=("agent", "version"),
        )
    else:
        click.echo("No agent has sent a heartbeat yet (docs/agent.md: run one with the token).")


def _when(value) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _minute(value) -> str:
    """An ISO time from the API as 2026-12-03 11:37 (UTC); empty for none."""
    moment = _when(value) if value else None
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else ""


def _ago(value, now: datetime) -> str:
    moment = _when(value) if value else None
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))  # a clock ahead of ours: now
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _number(value, fmt: str) -> str:
    return (
        fmt.format(value) if isinstance(value, int | float) and not isinstance(value, bool) else ""
    )


def _config(agent: dict) -> str:
    """The config version the agent runs, and whether a newer change for the org exists."""
    version = agent.get("config_version")
    if version is None:
        return "none yet"
    return f"{version} " + ("in sync" if agent.get("in_sync") else "behind")


@agent.group("token", context_settings=CONTEXT)
def agent_token():
    """The agent's org token (bt-).

    \b
    Examples:
      bonito agent token rotate
      bonito agent token rotate --quiet > agent-token
    """


@agent_token.command("rotate", context_settings=CONTEXT)
@out_options
@pass_state
def agent_token_rotate(state):
    """Issue a new bt- token for the agent (shown once); the old one stops working.

    \b
    Examples:
      bonito agent token rotate --quiet > agent-token
    """
    row = state.client.post(f"/api/orgs/{_org_slug(state)}/agent/token")
    show_secret(state, row, next((k for k in ("token", "access_token") if k in row), "token"))


# ------------------------------------------------------------------------------ chat, doctor, completion
from .chat import chat  # noqa: E402
from .completion import completion  # noqa: E402
from .doctor import doctor  # noqa: E402

cli.add_command(chat)
cli.add_command(doctor)
cli.add_command(completion)
add_root_options(cli, State)


INTERRUPTED = 130  # Ctrl-C (SIGINT), as shells count it: 128 + 2
NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main() -> None:
    """Run the command; a failure is a message on stderr and an exit code, never a traceback."""
    try:
        # Without standalone mode, an exit code (ctx.exit, --version) is returned, not raised.
        code = cli.main(prog_name="bonito", standalone_mode=False)
    except (CliError, profiles.ProfileError) as exc:
        error(exc)
        sys.exit(exc.code)
    except NO_ARGS_IS_HELP as exc:  # `bonito` or `bonito keys` alone: its help, and exit 2
        click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
        sys.exit(USAGE)
    except click.UsageError as exc:
        exc.show()
        sys.exit(USAGE)
    except click.exceptions.Abort as exc:
        err_console.print("Aborted.")
        # Click turns Ctrl-C (KeyboardInterrupt) into Abort: exit 130 as shells count it,
        # whatever the command was doing. Other aborts (end of input at a prompt) are 1.
        cause = exc.__cause__ or exc.__context__
        sys.exit(INTERRUPTED if isinstance(cause, KeyboardInterrupt) else FAILURE)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except BrokenPipeError:
        quiet_broken_pipe()
    except SystemExit as exc:
        if exc.code == 1 and closed_pipe():  # Click's own EPIPE handling exits 1
            quiet_broken_pipe()
        raise
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        if os.environ.get("BONITO_DEBUG"):
            raise
        # Reading a field the answer lacks: a server that is not (this version of) Bonito.
        error(f"{SHAPE} ({type(exc).__name__}: {exc}; BONITO_DEBUG=1 shows where).")
        sys.exit(FAILURE)
    except Exception as exc:  # a bug: one line, the details only with BONITO_DEBUG=1
        if os.environ.get("BONITO_DEBUG"):
            raise
        error(f"unexpected {type(exc).__name__}: {exc}")
        sys.exit(FAILURE)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_broken_pipe()
    sys.exit(code if isinstance(code, int) else 0)
