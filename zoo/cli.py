"""What every command-line entry point shares: a quiet start-up, ``--verbose`` and ``--debug``, and
errors as one line.

Quiet start-up. TensorFlow's C++ start-up lines ("oneDNN custom operations are on", "Could not find
cuda drivers", "failed call to cuInit", absl's "All log messages before absl::InitializeLog() is
called ...") are written to the process's stderr by absl before TensorFlow initializes its logging,
so ``TF_CPP_MIN_LOG_LEVEL`` does not hide them (an open absl issue). :func:`quiet_startup` therefore
imports TensorFlow and probes its devices once with file descriptor 2 pointed at ``/dev/null``, sets
``TF_CPP_MIN_LOG_LEVEL=2`` for what TensorFlow logs later, imports Apache Beam with the root logger
above its import-time warnings ("apitools not found ...") and keeps the ``apache_beam``, ``absl``
and ``tensorflow`` Python loggers at ``ERROR``. It runs when a package of the zoo is imported while
Python locates a ``python -m`` module of it (``sys.argv[0] == "-m"``, as the ``-m`` documentation
states; :func:`quiet_entry_point`), i.e. before any entry point's own imports, and never for a
library import. ``--verbose`` on the
command line (every entry point takes it, :func:`add_cli_flags`) skips it. Keras progress bars and
the entry points' own output are untouched; a Python exception raised while the imports are silenced
is still printed (after stderr is restored).

One-line errors. :func:`run_reporting_errors` turns the errors a user causes (a missing path, a bad YAML,
a spec or config error, a corrupt shard: :data:`USER_ERRORS`, and TensorFlow's ``OpError`` from
inside ``model.fit``) into ``<prog>: error: <message> (--debug for the traceback)`` on stderr and exit
status 1. ``--debug`` lets the exception through.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import re
import sys
import threading
from typing import Callable, Iterator, Sequence

VERBOSE_FLAG = "--verbose"
DEBUG_FLAG = "--debug"
QUIET_LOGGERS = ("apache_beam", "absl", "tensorflow")
# Errors a user causes; each of the zoo's checks raises one of these with a message naming the file,
# key or row (SpecError, ConfigError, IntegrityError, PlanError and FeatureError are ValueErrors).
USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError)
_started = False


def add_cli_flags(parser: argparse.ArgumentParser) -> None:
    """Adds ``--verbose`` (start-up and info logs of TensorFlow, absl and Beam) and ``--debug``."""
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="show TensorFlow, absl and Apache Beam start-up and info logs")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an error, not one line")


def launched_module() -> str | None:
    """The module of ``python -m <module>`` while Python locates it (``sys.argv[0] == "-m"``; the name
    from ``sys.orig_argv``), else None: an import by a library user or a script never matches."""
    if not sys.argv or sys.argv[0] != "-m":
        return None
    orig = list(getattr(sys, "orig_argv", []))
    return orig[orig.index("-m") + 1] if "-m" in orig[:-1] else None


def quiet_entry_point(package: str, **kwargs) -> None:
    """:func:`quiet_startup` when ``python -m`` launches a module of ``package`` (called by the
    package's ``__init__``, which Python imports before the module's own imports)."""
    module = launched_module()
    if module is not None and (module == package or module.startswith(package + ".")):
        quiet_startup(**kwargs)


def quiet_startup(argv: Sequence[str] | None = None, *, tensorflow: bool = True, beam: bool = True) -> bool:
    """Silences the start-up noise of TensorFlow, absl and Beam (see the module docstring).

    Args:
      argv: the command line; ``--verbose`` in it leaves everything as it is. Default ``sys.argv``.
      tensorflow: import TensorFlow (and probe its devices) silenced.
      beam: import Apache Beam silenced.

    Returns:
      Whether it silenced anything (False with ``--verbose``, or when it already ran).
    """
    global _started
    argv = sys.argv if argv is None else argv
    if _started or VERBOSE_FLAG in argv:
        return False
    _started = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if tensorflow and _importable("tensorflow"):  # JAX-only machines have none: nothing to silence
        with stderr_fd_silenced():
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe ("failed call to cuInit") happens here
    if beam and _importable("apache_beam"):
        with root_logger_at(logging.ERROR):
            import apache_beam  # noqa: F401
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return True


def _importable(module: str) -> bool:
    """Not imported yet, and installed."""
    return module not in sys.modules and importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def stderr_fd_silenced() -> Iterator[None]:
    """Points file descriptor 2 (what C++ libraries write to) at ``/dev/null`` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def root_logger_at(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


# Start-up lines of Beam's worker processes (the DirectRunner's multi_processing workers write them to
# the stderr they inherit, before any option of ours reaches them).
BEAM_WORKER_NOISE = ("apitools not found", "Logging handler created", "No semi_persistent_directory found",
                     "Discarding unparseable args")


_LOG_LINE = re.compile(rb"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):")
_ERROR_START = re.compile(rb"^(ERROR|CRITICAL):|^Traceback \(most recent call last\):")


class StderrFilter:
    """Which lines of the Beam workers' stderr pass (:func:`worker_noise_filtered`).

    A line containing one of ``patterns`` is dropped. So is a worker's error report: a line starting
    with ``ERROR:``/``CRITICAL:`` or ``Traceback (most recent call last):`` and every line after it up
    to the next ``LEVEL:`` log line (its traceback). The pipeline's failure itself is raised on the
    driver, where the entry point reports it (one line for a user error; a bug's traceback holds the
    worker's text), so the workers' copy is a repeat.
    """

    def __init__(self, patterns: Sequence[str] = ()):
        self.needles = [p.encode("utf-8") for p in patterns]
        self.in_error = False

    def passes(self, line: bytes) -> bool:
        if _ERROR_START.match(line):
            self.in_error = True
        elif _LOG_LINE.match(line):
            self.in_error = False
        return not self.in_error and not any(n in line for n in self.needles)


@contextlib.contextmanager
def worker_noise_filtered(patterns: Sequence[str] = BEAM_WORKER_NOISE) -> Iterator[None]:
    """While the block runs (a Beam pipeline), the lines on file descriptor 2, this process's and the
    worker processes' it starts, pass through a :class:`StderrFilter`, in order, and the driver's
    ``apache_beam`` loggers report nothing below CRITICAL (their errors repeat the failure the run
    raises). Only after :func:`quiet_startup` (else, and with ``--verbose``, a no-op)."""
    if not _started:
        yield
        return
    keep = StderrFilter(patterns)
    beam_logger = logging.getLogger("apache_beam")
    level = beam_logger.level
    beam_logger.setLevel(logging.CRITICAL)
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def pump() -> None:
        with os.fdopen(read_fd, "rb") as lines:
            for line in lines:
                if keep.passes(line):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # fd 2 no longer holds the pipe; the pump ends once the workers' copies close
        thread.join(timeout=10)
        if not thread.is_alive():
            os.close(saved)
        beam_logger.setLevel(level)


def error_line(err: BaseException) -> str:
    """An error as one line: its message with whitespace collapsed; TensorFlow's ``OpError`` without
    its graph, node and op context (its last message line, prefixed by the error class)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(err, tf.errors.OpError):
        text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", err.message)
        text = re.sub(r"\s*\[\[\{\{node [^]]*\]\]|\s*\[Op:[^]]*\].*", "", text, flags=re.S)
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return f"{type(err).__name__}: {lines[-1] if lines else type(err).__name__}"
    text = " ".join(str(err.args[0] if isinstance(err, KeyError) and err.args else err).split())
    return text or type(err).__name__


def is_user_error(err: BaseException) -> bool:
    """One of :data:`USER_ERRORS`, or TensorFlow's ``OpError`` (a failed read inside ``model.fit``)."""
    tf = sys.modules.get("tensorflow")
    return isinstance(err, USER_ERRORS) or (tf is not None and isinstance(err, tf.errors.OpError))


def data_loss_hint(data_dir: str) -> Callable[[BaseException], str | None]:
    """A ``hint`` for :func:`run_reporting_errors` of a command that reads ``data_dir`` with tf.data: a
    ``DataLossError`` (a corrupt or truncated shard whose size is right, so the manifest check passed)
    becomes one line naming the data directory and the command that finds the shard."""
    def hint(err: BaseException) -> str | None:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(err, tf.errors.DataLossError):
            return None
        from beam_jobs.manifest import VERIFY_COMMAND  # only on this error path: Beam is a heavy import

        return (f"{data_dir}: a shard could not be read ({error_line(err)}); run `{VERIFY_COMMAND} "
                f"{data_dir}` to find it, then re-copy it or re-run the Beam job")
    return hint


def run_reporting_errors(prog: str, body: Callable[[], int | None], debug: bool = False,
                         hint: Callable[[BaseException], str | None] | None = None) -> int:
    """Runs an entry point's ``body``; returns its exit status (``None`` counts as 0), or 1 after
    printing a user error (:func:`is_user_error`) as one line on stderr, unless ``debug``.

    Args:
      prog: the program name the line starts with (the parser's ``prog``, e.g. ``python -m zoo.train``).
      body: the work.
      debug: let the exception through (``--debug``).
      hint: optional ``hint(err) -> line or None``: a better line for some errors.
    """
    try:
        status = body()
    except Exception as err:  # noqa: BLE001 - sorted by is_user_error; anything else keeps its traceback
        if debug or not is_user_error(err):
            raise
        line = (hint(err) if hint else None) or error_line(err)
        print(f"{prog}: error: {line} ({DEBUG_FLAG} for the traceback)", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)
