"""Command-line options shared by the Beam jobs: a job's own flags, Beam's pipeline options, the
one-line error for a flag that is neither, and :func:`job_main` (a user error as one line).

Every job parses its own flags with argparse and hands the rest to Beam. Beam itself only warns
("Discarding unparseable args") about a flag it does not know, so a typo would silently change
nothing; :func:`parse_job_args` refuses it instead, naming the flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

from zoo import cli

# Runner options that mean "the user chose how to run"; without any of them DEFAULT_RUNNER_ARGS apply.
RUNNER_FLAGS = ("--runner", "--direct_running_mode", "--direct_num_workers")
DEFAULT_RUNNER_ARGS = (
    ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2",
     "--default_sdk_harness_log_level=WARNING",
     '--sdk_harness_log_level_overrides={"beam_jobs.progress": "INFO"}']  # the jobs' progress lines
    if (os.cpu_count() or 1) >= 2 else ["--runner=DirectRunner", "--direct_running_mode=in_memory"])


def with_default_runner(pipeline_args: list[str]) -> list[str]:
    """``pipeline_args`` with :data:`DEFAULT_RUNNER_ARGS` in front unless they name a runner option."""
    if any(a == flag or a.startswith(flag + "=") for a in pipeline_args for flag in RUNNER_FLAGS):
        return pipeline_args
    return DEFAULT_RUNNER_ARGS + pipeline_args


def unknown_pipeline_flags(args: Sequence[str]) -> list[str]:
    """The items of ``args`` that no Apache Beam pipeline option (of any ``PipelineOptions`` class) parses.

    Beam's own parser is taken from the public ``PipelineOptions.get_all_options`` hook
    ``add_extra_args_fn`` (it receives the parser holding every registered option class's flags), so
    runner options Beam adds in later versions are known without a list here.
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    parsers: list[argparse.ArgumentParser] = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append, retain_unknown_options=True)
    _, unknown = parsers[0].parse_known_args(list(args))
    return unknown


def first_flag(unknown: Sequence[str]) -> str:
    """The first flag among unparsed arguments (``--name`` of ``--name=value``), else the first item."""
    return next((item for item in unknown if item.startswith("-")), unknown[0]).split("=", 1)[0]


def parse_job_args(parser: argparse.ArgumentParser,
                   argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """``(the job's flags, Beam's pipeline args with the default runner)``.

    Exits with status 2 and one line naming the first argument that is neither the job's nor Beam's.
    """
    cli.add_cli_flags(parser)  # --verbose (start-up logs) and --debug (tracebacks)
    known, pipeline_args = parser.parse_known_args(argv)
    unknown = unknown_pipeline_flags(pipeline_args)
    if unknown:
        parser.error(f"unknown flag '{first_flag(unknown)}': not an option of this job nor of Apache Beam")
    return known, with_default_runner(pipeline_args)


def job_main(prog: str, run: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """A job's command line: ``run(argv)``; a user error (a missing input, a bad spec, a corrupt shard)
    is one line on stderr and exit status 1, the traceback only with ``--debug``
    (:func:`zoo.cli.run_reporting_errors`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return cli.run_reporting_errors(prog, lambda: run(argv) and None, debug=cli.DEBUG_FLAG in argv)
