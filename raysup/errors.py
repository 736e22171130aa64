"""How raysup's commands end on an error (``raysup`` and the ``experiments/*.py`` scripts): errors
the user can fix print one line on stderr and exit 2; anything else prints one line and exits 1.
Either way the traceback goes to a log file whose path is printed (``--debug``: shown). Below
:mod:`raysup.cli` and :mod:`raysup.sweep` (it imports neither), so both use it."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

from raysup.config import ConfigError
from raysup.data.storage import redact

# what a user can fix (bad config, bad input, missing or existing paths): exit 2
USER_ERRORS = (ConfigError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, ArithmeticError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (which echo a mistyped option's value, a URI with
    keys too) go through :func:`redact`."""

    def error(self, message: str):
        super().error(redact(message))


def log_path(name: str) -> str:
    """A new log file's path, named after ``name``, in raysup's log folder (``$RAYSUP_LOG_DIR``,
    default ``raysup-logs`` in the temp folder)."""
    folder = os.environ.get("RAYSUP_LOG_DIR") or os.path.join(tempfile.gettempdir(), "raysup-logs")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log")


def log_error(name: str) -> str:
    """Write the current exception's traceback, without credentials, to a log file
    (:func:`log_path`); return its path."""
    path = log_path(name)
    with open(path, "w") as f:
        f.write(redact(traceback.format_exc()))
    return path


def report_errors(prog: str, name: str, fn: Callable[[], Any], *, debug: bool = False) -> int:
    """Call ``fn`` and return the exit code: 0; 2 for an error the user can fix
    (:data:`USER_ERRORS`), 1 for any other, each printed as one line ``prog: error: …`` on stderr
    with the traceback in a log file named after ``name`` (``debug``: the traceback on stderr
    instead); 130 on Ctrl-C. Whatever is printed or logged goes through :func:`redact`."""
    try:
        fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 (the command's boundary: every error becomes one redacted line)
        code = 2 if isinstance(e, USER_ERRORS) else 1
        if debug:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
            return code
        where = log_error(name)
        lines = str(e).strip().splitlines() or [""]
        kind = "error" if code == 2 else f"internal error ({type(e).__name__})"
        print(f"{prog}: {kind}: {redact(lines[0])}  (details: {where})", file=sys.stderr)
        return code
    return 0
