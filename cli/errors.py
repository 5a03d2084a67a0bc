"""The top-level handler of the `skn` command: every failure is one red line on stderr.

    SknError            its message, exit 2 for what the user can fix (usage, data, model, run directory),
                        1 for internal errors; a `StageFailure` names the stage and its error.log
    OSError             the file and the reason ("cannot write RUN/x: No space left on device"), exit 2;
                        so is a safetensors write the machine refused (skn.engine.stage.storage_error)
    anything else       "unexpected ...", exit 1
    KeyboardInterrupt   "aborted", exit 130

A message of several lines (a library's own, embedded in skn's: transformers' are 3 to 27 lines) is printed
as one: its lines joined with " | ", cut in the middle past ONE_LINE_LIMIT characters (`one_line`); the full
text is in the traceback `--debug` prints and, for a run that has a run directory, in its error.log.

With `--debug` (or SKN_DEBUG=1) the traceback is printed too. Messages are printed as text, never as
Rich markup (they hold paths, metric values and data), with their control characters shown as escapes
(skn.views.console.visible): click's own messages too, which quote the values given.
"""

from __future__ import annotations

import io
import os
import traceback
from collections.abc import Callable

import click
from rich.console import Console

from skn.views.console import error_line, visible
from skn.errors import SknError
from skn.engine.stage import StageFailure, storage_error


ONE_LINE_LIMIT = 400


def one_line(message: str) -> str:
    """`message` as one line: its non-blank lines stripped and joined with " | "; past ONE_LINE_LIMIT
    characters the middle is cut (" ... "), so the start (what failed) and the end (skn's hints) stay."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) <= 1:
        return message.strip()
    joined = " | ".join(lines)
    if len(joined) <= ONE_LINE_LIMIT:
        return joined
    tail = ONE_LINE_LIMIT // 4
    return f"{joined[: ONE_LINE_LIMIT - tail - 5].rstrip()} ... {joined[-tail:].lstrip()}"


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
        shown = io.StringIO()
        err.show(shown)
        click.echo(visible(shown.getvalue()), err=True, nl=False)
        return err.exit_code
    except StageFailure as err:
        _print(console, str(err), err.error if debug else None)
        return err.exit_code
    except SknError as err:
        _print(console, str(err), err if debug else None)
        return err.exit_code
    except OSError as err:
        refused = storage_error(err)
        _print(console, str(refused) if refused is not None else _os_message(err), err if debug else None)
        return 2
    except Exception as err:  # the promise: one line, never a bare traceback
        refused = storage_error(err)
        if refused is not None:
            _print(console, str(refused), err if debug else None)
            return refused.exit_code
        hint = "" if debug else " (run with --debug for the traceback)"
        _print(console, f"unexpected {type(err).__name__}: {one_line(str(err))}{hint}", err if debug else None)
        return 1


def _print(console: Console, message: str, error: BaseException | None) -> None:
    if error is not None:
        console.print(visible("".join(traceback.format_exception(type(error), error, error.__traceback__))),
                      markup=False, highlight=False, soft_wrap=True)
    console.print(error_line(one_line(message)), soft_wrap=True)
