"""Argument types and the root options every command also accepts after its name."""

import os
import re
import sys
from datetime import UTC, datetime, timedelta, timezone

import click

from .client import _ID


class IdType(click.ParamType):
    """A REST id: digits only, so `keys get 'abc/../../me'` or `'1?x=1'` is a usage error
    (exit 2) and --json prints it as the number the REST schema has."""

    name = "ID"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if not _ID.fullmatch(text):
            self.fail(f"{value!r} is not an id (an id is digits, e.g. 12).", param, ctx)
        return int(text)


class NameType(click.ParamType):
    """A catalog name (models get NAME): any text but control characters and . or .."""

    name = "NAME"

    def convert(self, value, param, ctx):
        text = str(value)
        if text in ("", ".", "..") or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text):
            self.fail(f"{value!r} is not a name.", param, ctx)
        return text


# --since/--until as the server reads them (billing.selectors._moment): an ISO 8601 date or
# time in ASCII digits, a time without an offset being UTC, from 1970 to 2999.
_MOMENT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].*)?", re.ASCII | re.DOTALL)
# Django's parse_datetime (the server's) also takes what fromisoformat does not: one-digit
# months, days and hours, a comma before the fraction, a space before the offset.
_DJANGO_TIME = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{1,2})-(?P<day>[0-9]{1,2})"
    r"[T ](?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{1,2})"
    r"(?::(?P<second>[0-9]{1,2})(?:[.,](?P<microsecond>[0-9]{1,6})[0-9]{0,6})?)?"
    r"\s*(?P<tz>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?",
    re.ASCII,
)
MOMENT_FORMATS = "a date (2026-11-01) or an ISO 8601 time (2026-11-01T08:00Z; no offset: UTC)"
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _django_time(text: str) -> datetime | None:
    match = _DJANGO_TIME.fullmatch(text)
    if match is None:
        return None
    parts = match.groupdict()
    tz, offset = parts.pop("tz"), None
    if tz == "Z":
        offset = UTC
    elif tz:
        minutes = 60 * int(tz[1:3]) + (int(tz[-2:]) if len(tz) > 3 else 0)
        offset = timezone(timedelta(minutes=-minutes if tz[0] == "-" else minutes))
    parts["microsecond"] = (parts["microsecond"] or "0").ljust(6, "0")
    return datetime(**{k: int(v or 0) for k, v in parts.items()}, tzinfo=offset)


def parse_moment(text: str) -> datetime | None:
    """The instant ``text`` names as the server reads it, in UTC; None if it names none."""
    if not (text.isascii() and _MOMENT.fullmatch(text)):
        return None
    try:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = _django_time(text)
    except (ValueError, OverflowError):  # well formed, but no such day, hour or offset
        return None
    if parsed is None:
        return None
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if not EARLIEST <= parsed < LATEST:
        return None
    return parsed.astimezone(UTC)


class MomentType(click.ParamType):
    """--since/--until: checked here, so a date the server would refuse is a usage error
    (exit 2) before anything is sent; sent as typed."""

    name = "DATE|TIME"

    def convert(self, value, param, ctx):
        if parse_moment(str(value)) is None:
            self.fail(
                f"{value!r} is not {MOMENT_FORMATS}, from 1970 to 2999. For a span back from "
                "now, use --range (1h, 24h, 7d, 30d, 90d).",
                param,
                ctx,
            )
        return str(value)


ID, NAME, MOMENT = IdType(), NameType(), MomentType()


class HelpGroup(click.Group):
    """A group whose help lists each command with its whole summary (the first sentence of
    its help), wrapped beside its name: Click cut it at the terminal's width with "...",
    mid-phrase ("Requests, tokens and cost over time or by...")."""

    group_class = type  # its subgroups (@group.group) are HelpGroups too

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# (flag names, State attribute, takes a value, help)
ROOT_OPTIONS = [
    (("--json",), "json", False, "Print JSON (the REST API's field names)."),
    (("--quiet", "-q"), "quiet", False, "Print only ids or secrets, for scripts."),
    (("--profile", "-p"), "profile_name", True, "Which saved server/org to use."),
    (("--org",), "org", True, "Act in this org (its slug); refused if the token is for another."),
    (("--url",), "url", True, "Server URL, overriding the profile (env: BONITO_URL)."),
    (("--token",), "token", True, "A personal access token, overriding the profile."),
]


def add_root_options(group: click.Group, state_class) -> None:
    """Give every command below ``group`` the root options it lacks, so that
    `bonito keys list --json --org acme` means `bonito --json --org acme keys list`."""

    def setter(attr):
        def callback(ctx, _param, value):
            if value:  # a flag given, or a value: the last one written wins
                setattr(ctx.ensure_object(state_class), attr, value)

        return callback

    def visit(command):
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                visit(sub)
            return
        taken = {opt for p in command.params for opt in p.opts + p.secondary_opts}
        for flags, attr, takes_value, help_ in ROOT_OPTIONS:
            if any(f in taken for f in flags):
                continue
            command.params.append(
                click.Option(
                    list(flags),
                    is_flag=not takes_value,
                    expose_value=False,
                    callback=setter(attr),
                    help=help_,
                    metavar="TEXT" if takes_value else None,
                )
            )

    for sub in group.commands.values():
        visit(sub)
    visit_group = group.params  # the root itself: the options it lacks (--token)
    taken = {opt for p in visit_group for opt in p.opts + p.secondary_opts}
    for flags, attr, takes_value, help_ in ROOT_OPTIONS:
        if not any(f in taken for f in flags):
            visit_group.append(
                click.Option(
                    list(flags),
                    is_flag=not takes_value,
                    expose_value=False,
                    callback=setter(attr),
                    help=help_,
                )
            )


def quiet_broken_pipe() -> None:
    """The reader of our stdout left (`bonito keys list -q | head -1`): that is not a
    failure. Point stdout at /dev/null so the interpreter's last flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def closed_pipe() -> bool:
    """Whether Click or Rich met EPIPE on stdout: Click then wraps stdout, Rich turns its
    console quiet, and both exit 1."""
    from .output import console

    return console.quiet or isinstance(sys.stdout, getattr(click.utils, "PacifyFlushWrapper", ()))
