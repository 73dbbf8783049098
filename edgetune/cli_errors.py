"""How the command line reports a failure: one line on stderr, never a traceback by default.

- an :class:`EdgetuneError` (bad input, a busy run folder, a full disk): ``error: <message>``,
  exit code 2; so is a full disk anywhere else, and torch missing where a command needs it;
- anything else (a bug): ``error: <type>: <message> (run with --debug for the traceback)``,
  exit code 1;
- Ctrl-C: ``interrupted``, exit code 130.

With ``debug`` (``edgetune --debug``, or ``EDGETUNE_DEBUG=1``) every error propagates with its
traceback. Click's own usage errors and exits pass through untouched.
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from typing import NoReturn

import click

from edgetune.errors import EdgetuneError, is_disk_full

EXPORT_HINT = "this command needs the workstation extra: pip install 'edgetune[export]'"
DEBUG_HINT = "run with --debug for the traceback"
MAX_CHARS = 400


@contextlib.contextmanager
def reported_errors(debug: bool = False) -> Iterator[None]:
    try:
        yield
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
        raise
    except BaseException as e:
        if debug or not isinstance(e, (Exception, KeyboardInterrupt)):
            raise
        if isinstance(e, OSError) and e.errno == errno.EPIPE:
            raise  # click quietly ends a command piped into `head`
        code, line = describe(e)
        fail(line, code)


def describe(e: BaseException) -> tuple[int, str]:
    """The exit code and the one line for ``e``."""
    if isinstance(e, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(e, EdgetuneError):
        return 2, f"error: {one_line(str(e))}"
    if isinstance(e, ImportError) and e.name in ("torch", "onnx"):
        return 2, f"error: {EXPORT_HINT}"
    if is_disk_full(e):
        filename = getattr(e, "filename", None)
        where = f" while writing {filename}" if filename else ""
        return 2, f"error: no space left on device{where}: free space and run the command again"
    return 1, f"error: {type(e).__name__}: {one_line(str(e)) or '(no message)'} ({DEBUG_HINT})"


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS - 1] + "…"


def fail(line: str, code: int) -> NoReturn:
    click.echo(line, err=True)
    sys.exit(code)


class ReportingGroup(click.Group):
    """A click group whose commands report failures as :func:`reported_errors` says; the
    group's ``--debug`` flag decides."""

    def invoke(self, ctx: click.Context):
        with reported_errors(bool(ctx.params.get("debug"))):
            return super().invoke(ctx)
