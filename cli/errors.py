"""The top-level handler of the `skn` command: every failure is one red line on stderr.

    SknError            its message, exit 2 for what the user can fix (usage, data, model, run directory),
                        1 for internal errors; a `StageFailure` names the stage and its error.log
    OSError             the file and the reason ("cannot write RUN/x: Permission denied"), exit 2
    anything else       "unexpected ...", exit 1
    KeyboardInterrupt   "aborted", exit 130

With `--debug` (or SKN_DEBUG=1) the traceback is printed too. Messages are printed as text, never as
Rich markup (they hold paths, metric values and data).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable

import click
from rich.console import Console

from skn.console import error_line
from skn.errors import SknError
from skn.stage import StageFailure


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("SKN_DEBUG", "") not in ("", "0")


def _os_message(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or str(err)
    return f"{where}{reason}"


def handle(run: Callable[[], None], debug: bool) -> int:
    """Run the command; returns the exit code, after printing one line for any failure."""
    console = Console(stderr=True, highlight=False, emoji=False)
    try:
        run()
        return 0
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        console.print(error_line("interrupted", "aborted"), soft_wrap=True)
        return 130
    except click.exceptions.Abort:
        console.print(error_line("interrupted", "aborted"), soft_wrap=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except StageFailure as err:
        _print(console, str(err), err.error if debug else None)
        return err.exit_code
    except SknError as err:
        _print(console, str(err), err if debug else None)
        return err.exit_code
    except OSError as err:
        _print(console, _os_message(err), err if debug else None)
        return 2
    except Exception as err:  # the promise: one line, never a bare traceback
        hint = "" if debug else " (run with --debug for the traceback)"
        _print(console, f"unexpected {type(err).__name__}: {err}{hint}", err if debug else None)
        return 1


def _print(console: Console, message: str, error: BaseException | None) -> None:
    if error is not None:
        console.print("".join(traceback.format_exception(type(error), error, error.__traceback__)),
                      markup=False, highlight=False, soft_wrap=True)
    console.print(error_line(message), soft_wrap=True)
