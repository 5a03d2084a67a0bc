"""The `skn` command: a thin Click shell over the Python API in `skn`.

Each subcommand lives in its own module and is registered here. Any `SknError` becomes one red
line on stderr and its exit code (2 for usage and data errors, 1 for internal ones); anything
unexpected is one red line too (see `skn.cli.errors`), its traceback with `--debug`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from skn.cli.errors import debug_requested, handle
from skn.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skn")
@click.option("--debug", is_flag=True, help="Print the traceback of any failure (also SKN_DEBUG=1).")
def cli(debug: bool) -> None:
    """skn: find the neurons of a language model that carry a skill."""


def _register() -> None:
    # Imported here, not at module top, so `skn --help` stays fast and each command stays in its file.
    from skn.cli.compare_cmd import compare_command
    from skn.cli.ablate_cmd import ablate_command
    from skn.cli.activations_cmd import activations_command
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
    cli.add_command(activations_command)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = list(argv) if argv is not None else sys.argv[1:]
    code = handle(lambda: _run(args), debug_requested(args))
    if code:
        sys.exit(code)


def _run(args: list[str]) -> None:
    code = cli.main(args=args, standalone_mode=False)
    if isinstance(code, int) and code:
        sys.exit(code)
