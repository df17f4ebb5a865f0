"""``shardnet completion bash|zsh|fish``: the shell's completion script, from click's own
completion machinery (``_SHARDNET_COMPLETE``), so it always matches the commands.

    eval "$(shardnet completion bash)"        # ~/.bashrc
    eval "$(shardnet completion zsh)"         # ~/.zshrc
    shardnet completion fish > ~/.config/fish/completions/shardnet.fish
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")
PROG_NAME = "shardnet"
COMPLETE_VAR = "_SHARDNET_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script of SHELL: eval "$(shardnet completion bash)" in
    ~/.bashrc (zsh likewise); fish: shardnet completion fish >
    ~/.config/fish/completions/shardnet.fish."""
    complete_class = get_completion_class(shell)
    if complete_class is None:  # click knows the three shells of SHELLS
        raise click.UsageError(f"no completion for {shell}")
    root = ctx.find_root().command
    click.echo(complete_class(root, {}, PROG_NAME, COMPLETE_VAR).source())
