"""``sdmesh completion``: the shell completion script, from click itself.

Printing it (rather than shipping files) keeps it in step with the installed commands and
options; pool names complete by asking the agent (sdmesh.cli.pools.complete_pool).
"""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")

#: The variable the ``sdmesh`` entry point looks for (click derives it from the program name).
COMPLETE_VAR = "_SDMESH_COMPLETE"


def completion_script(shell: str) -> str:
    """click's completion script for ``shell``, wired to the ``sdmesh`` command."""
    from click.shell_completion import get_completion_class

    from sdmesh.cli.main import cli

    completer = get_completion_class(shell)
    if completer is None:
        raise click.BadParameter(f"no completion for {shell!r}", param_hint="SHELL")
    return completer(cli, {}, "sdmesh", COMPLETE_VAR).source()


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Commands, options, files, and pool names (asked of the agent, as --agent or SDMESH_AGENT
    say) complete. To install it for your user:

    \b
      bash (4.4+): sdmesh completion bash > ~/.local/share/bash-completion/completions/sdmesh
                   (or add  eval "$(sdmesh completion bash)"  to ~/.bashrc)
      zsh:         sdmesh completion zsh > ~/.zfunc/_sdmesh
                   with  fpath+=~/.zfunc; autoload -Uz compinit; compinit  in ~/.zshrc
      fish:        sdmesh completion fish > ~/.config/fish/completions/sdmesh.fish

    Then open a new shell. For every user: the same files under
    /usr/share/bash-completion/completions, /usr/local/share/zsh/site-functions and
    /usr/share/fish/vendor_completions.d.
    """
    click.echo(completion_script(shell), nl=False)


__all__ = ["COMPLETE_VAR", "SHELLS", "completion", "completion_script"]
