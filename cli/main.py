"""The `skn` command: a thin Click shell over the Python API in `skn`.

Each subcommand lives in its own module and is registered here. Any `SknError` becomes one red
line on stderr and its exit code (2 for usage and data errors, 1 for internal ones).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from rich.console import Console

from skn.errors import SknError
from skn.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skn")
def cli() -> None:
    """skn: find the neurons of a language model that carry a skill."""


def _register() -> None:
    # Imported here, not at module top, so `skn --help` stays fast and each command stays in its file.
    from skn.cli.compare_cmd import compare_command
    from skn.cli.ablate_cmd import ablate_command
    from skn.cli.plot_cmd import plot_command
    from skn.cli.probe_cmd import probe_command
    from skn.cli.report_cmd import report_command
    from skn.cli.show_cmd import show_command
    from skn.cli.tasks_cmd import tasks_command
    from skn.cli.train_cmd import train_command

    cli.add_command(train_command)
    cli.add_command(probe_command)
    cli.add_command(show_command)
    cli.add_command(plot_command)
    cli.add_command(report_command)
    cli.add_command(tasks_command)
    cli.add_command(compare_command)
    cli.add_command(ablate_command)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except SknError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        Console(stderr=True).print("[bold red]aborted[/]")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
