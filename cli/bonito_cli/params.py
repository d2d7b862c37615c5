"""Argument types and the root options every command also accepts after its name."""

import os
import sys

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


ID, NAME = IdType(), NameType()

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
