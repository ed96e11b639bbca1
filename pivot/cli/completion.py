"""`pivot completion bash|zsh|fish`: the shell's completion script (click's)."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")


@click.command(short_help="Print the shell completion script (bash, zsh, fish).")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script of SHELL. Commands and options complete, and so do
    stage ids and pipeline names (from lock files and the cached scan) and remote names.

    \b
    bash:  eval "$(pivot completion bash)"   in ~/.bashrc
    zsh:   eval "$(pivot completion zsh)"    in ~/.zshrc
    fish:  pivot completion fish > ~/.config/fish/completions/pivot.fish
    """
    from click.shell_completion import get_completion_class

    from pivot.cli.main import PROG, cli

    script = get_completion_class(shell)(cli, {}, PROG, COMPLETE_VAR).source()
    click.echo(script)


COMPLETE_VAR = "_PIVOT_COMPLETE"
