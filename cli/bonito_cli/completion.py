"""`bonito completion`: shell completion scripts (Click's), printed or installed."""

import os
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from .params import HelpGroup

SHELLS = ("bash", "zsh", "fish")


def script(shell: str) -> str:
    from .main import cli

    return get_completion_class(shell)(cli, {}, "bonito", "_BONITO_COMPLETE").source()


def _printer(shell):
    @click.command(
        shell,
        help=f"Print the {shell} completion script.\n\n\b\nExamples:\n  bonito completion {shell}",
    )
    def show():
        click.echo(script(shell))

    return show


@click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
def completion():
    """Shell completion for bash, zsh and fish.

    \b
    Examples:
      bonito completion install
      bonito completion bash > /etc/bash_completion.d/bonito
      eval "$(bonito completion zsh)"
    """


for _shell in SHELLS:
    completion.add_command(_printer(_shell))


@completion.command("install")
@click.option("--shell", type=click.Choice(SHELLS), help="Default: from $SHELL.")
def install(shell):
    """Install completion for your shell (writes the script, sources it from the rc file).

    \b
    Examples:
      bonito completion install
      bonito completion install --shell fish
    """
    from .client import USAGE, CliError
    from .profiles import config_dir

    shell = shell or Path(os.environ.get("SHELL", "")).name
    if shell not in SHELLS:
        raise CliError(
            f"Cannot tell your shell ({shell or 'no $SHELL'}): pass --shell bash|zsh|fish.", USAGE
        )
    home = Path.home()
    if shell == "fish":
        target = (
            Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
            / "fish/completions/bonito.fish"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(script(shell))
        click.echo(f"Wrote {target}; new fish sessions complete bonito.")
        return
    target = config_dir() / f"completion.{shell}"
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.write_text(script(shell))
    rc = home / (".bashrc" if shell == "bash" else ".zshrc")
    line = f'[ -f "{target}" ] && . "{target}"  # bonito completion'
    # Bytes: a shell's rc file may hold text in another encoding than UTF-8 (Latin-1).
    existing = rc.read_bytes() if rc.exists() else b""
    if line.encode() not in existing:
        with rc.open("ab") as f:
            lead = b"\n" if existing and not existing.endswith(b"\n") else b""
            f.write(lead + line.encode() + b"\n")
    click.echo(f"Wrote {target} and sourced it from {rc}; open a new shell.")
