"""Verify a data directory: read every shard in full and check it against ``manifest.json``.

Usage::

    python -m beam_jobs.verify runs/synthetic/data [--threads 4]
    python -m beam_jobs.verify gs://BUCKET/criteo/data      # needs apache-beam[gcp]

For every shard the manifest lists, and every other ``<split>/part-*.tfrecord.gz`` found: that it
is there, its size, the SHA-256 of its bytes, the gzip stream (each member's CRC-32 and length, by
Python's ``gzip``), the TFRecord framing (each record's CRC-32C, :func:`beam_jobs.tfrecord.read_record_batches`)
and its record count. Then the per-split record totals against ``stats.json`` and the ``_SUCCESS``
marker. Prints one line per shard, ``ok`` or ``BAD`` with the path and everything wrong with it,
then one summary line, and exits 0 when everything is good, 1 otherwise. (The cheap checks, presence
and sizes, also run whenever a reader opens the directory: :func:`beam_jobs.manifest.check_shards`.)

A directory without ``manifest.json`` (written before the jobs wrote one) is still read in full and
counted against ``stats.json``; the summary says that sizes and checksums could not be checked.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import gzip
import hashlib
import sys
import zlib
from typing import Any, Mapping, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_jobs import fileio
from beam_jobs.manifest import CHECKSUM, MANIFEST_FILE, STATS_FILE, read_manifest, shard_glob
from beam_jobs.tfrecord import read_record_batches
from zoo import cli
from zoo.spec import SPLITS

READ_BYTES = 1 << 20


@dataclasses.dataclass
class ShardReport:
    """What reading one shard found.

    Attributes:
      path: the shard's full path.
      split: its split.
      records: TFRecords read (all of them when ``problems`` is empty).
      size: bytes read.
      problems: everything wrong, each a short phrase; empty when the shard is good.
    """

    path: str
    split: str
    records: int = 0
    size: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.ok:
            return f"ok   {self.path}: {self.records} records, {self.size} bytes"
        return f"BAD  {self.path}: " + "; ".join(self.problems)


class _Digesting:
    """A readable file that hashes and counts the bytes read through it."""

    def __init__(self, fh):
        self._fh, self.sha256, self.size = fh, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


def verify_shard(path: str, split: str, entry: Mapping[str, Any] | None, has_manifest: bool) -> ShardReport:
    """Reads one shard in full and compares it with its manifest ``entry`` (None: not listed)."""
    report = ShardReport(path, split)
    if not FileSystems.exists(path):
        report.problems.append(f"missing (manifest.json lists it with {entry['records']} records, "
                               f"{entry['bytes']} bytes)")
        return report
    decoded = False
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        digest = _Digesting(raw)
        try:
            with gzip.GzipFile(fileobj=digest, mode="rb") as stream:
                for batch in read_record_batches(stream, READ_BYTES):
                    report.records += len(batch)
            decoded = True
        except EOFError:
            report.problems.append("truncated gzip stream (the file ends inside a gzip member)")
        except (OSError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            report.problems.append(f"corrupt gzip data ({err})")
        except ValueError as err:
            report.problems.append(f"corrupt TFRecord data ({err})")
        while digest.read(READ_BYTES):  # the rest of the bytes, for the size and checksum
            pass
    report.size = digest.size
    if entry is None:
        if has_manifest:
            report.problems.append("not in manifest.json (a stale or foreign shard)")
        return report
    if digest.size != entry["bytes"]:
        report.problems.append(f"expected {entry['bytes']} bytes, found {digest.size}")
    found = digest.sha256.hexdigest()
    if found != entry[CHECKSUM]:
        report.problems.append(f"{CHECKSUM} mismatch (expected {entry[CHECKSUM][:16]}.., found {found[:16]}..)")
    if decoded and report.records != entry["records"]:
        report.problems.append(f"expected {entry['records']} records, found {report.records}")
    return report


def verify(data_dir: str, threads: int = 4) -> tuple[list[ShardReport], list[str], bool]:
    """Verifies every shard of ``data_dir``.

    Returns:
      ``(shard reports in split and name order, problems of the directory itself, has a manifest)``.
    """
    data_dir = data_dir.rstrip("/") or "/"
    manifest = read_manifest(data_dir)
    jobs: list[tuple[str, str, dict | None]] = []
    for split in SPLITS:
        listed = manifest["splits"].get(split, {}).get("shards", {}) if manifest else {}
        found = fileio.match([FileSystems.join(data_dir, *shard_glob(split).split("/"))])
        names = {p.replace("\\", "/").rsplit("/", 1)[-1] for p in found} | set(listed)
        jobs.extend((FileSystems.join(data_dir, split, name), split, listed.get(name)) for name in sorted(names))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(int(threads), 1)) as pool:
        reports = list(pool.map(lambda job: verify_shard(*job, manifest is not None), jobs))
    problems = []
    if not fileio.is_complete(data_dir):
        problems.append(f"{FileSystems.join(data_dir, fileio.SUCCESS_MARKER)}: missing; the job has not "
                        "finished writing there")
    stats_path = FileSystems.join(data_dir, STATS_FILE)
    stats = fileio.read_json(stats_path) if FileSystems.exists(stats_path) else None
    for split in SPLITS:
        counted = [r for r in reports if r.split == split]
        if any(not r.ok for r in counted):
            continue  # the shard lines say what is wrong
        records = sum(r.records for r in counted)
        rows = (stats or {}).get("splits", {}).get(split, {}).get("rows")
        if rows is not None and int(rows) != records:
            problems.append(f"{stats_path}: split '{split}' has {rows} rows but its shards hold {records} records")
        listed = manifest["splits"].get(split, {}).get("records") if manifest else None
        if listed is not None and int(listed) != records:
            problems.append(f"{FileSystems.join(data_dir, MANIFEST_FILE)}: split '{split}' lists {listed} "
                            f"records but its shards hold {records}")
    return reports, problems, manifest is not None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beam_jobs.verify", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("data_dir", help="a data directory written by beam_jobs.build_tfrecords (local or gs://)")
    parser.add_argument("--threads", type=int, default=4, help="shards read at once (default 4)")
    cli.add_cli_flags(parser)
    args = parser.parse_args(argv)
    return cli.run_reporting_errors(parser.prog, lambda: _report(args), args.debug)


def _report(args: argparse.Namespace) -> int:
    reports, problems, has_manifest = verify(args.data_dir, args.threads)  # raises on a bad path or manifest
    for report in reports:
        print(report.line())
    for problem in problems:
        print(f"BAD  {problem}")
    bad = [r for r in reports if not r.ok]
    records, size = sum(r.records for r in reports), sum(r.size for r in reports)
    note = "" if has_manifest else (f"; no {MANIFEST_FILE} (written before the jobs wrote one): sizes and "
                                    "checksums not checked, re-run the Beam job to get one")
    verdict = "ok" if not bad and not problems else f"BAD ({len(bad)} bad shard(s), {len(problems)} other problem(s))"
    print(f"verify: {args.data_dir}: {verdict}: {len(reports) - len(bad)}/{len(reports)} shards good, "
          f"{records} records read, {size} bytes{note}")
    return 0 if not bad and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
