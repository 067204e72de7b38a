"""``grantbox completion bash|zsh|fish``: the shell completion script, from click itself."""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_GRANTBOX_COMPLETE"


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script for SHELL; load it from your shell's startup file.

    \b
    bash:  echo 'eval "$(grantbox completion bash)"' >> ~/.bashrc
    zsh:   echo 'eval "$(grantbox completion zsh)"' >> ~/.zshrc
    fish:  grantbox completion fish > ~/.config/fish/completions/grantbox.fish
    """
    from .app import cli

    complete = get_completion_class(shell)
    assert complete is not None
    click.echo(complete(cli, {}, "grantbox", COMPLETE_VAR).source())
