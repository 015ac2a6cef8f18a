"""The shard manifest of a data directory: what every shard holds, and the cheap check before reading.

The Beam jobs that write shards (:mod:`beam_jobs.build_tfrecords`, :mod:`beam_jobs.add_aux_labels`)
write ``manifest.json`` next to them, staged and promoted with them (:class:`beam_jobs.fileio.OutputDir`)::

    {"version": 1, "checksum": "sha256",
     "splits": {"train": {"records": 161, "bytes": 9101, "shards": {
                    "part-00000-of-00004.tfrecord.gz": {"records": 41, "bytes": 2331, "sha256": "9f2c..."},
                    ...}},
                "valid": {...}, "test": {...}}}

Shard names are relative to the split directory; ``records`` counts the TFRecords (rows), ``bytes``
is the size of the file and ``sha256`` the SHA-256 of its bytes. The writer computes each entry from
the bytes it is about to write (they are in memory there, so the checksum costs one pass over them
and no re-read of the output).

:func:`check_shards` is the cheap check every reader runs (:func:`zoo.data.read_split`,
:func:`beam_jobs.fileio.open_data_dir`, ``zoo.train`` before training): one listing per split, no
shard opened. Every shard of the manifest must be there with its size, no other shard may be there,
the per-split totals must add up and agree with ``stats.json``. A problem raises
:class:`IntegrityError`, one line naming the shard, what is wrong and what to do. ``python -m
beam_jobs.verify DIR`` reads every shard in full (checksums, gzip, TFRecord framing, record counts).

A directory without ``manifest.json`` (written before the jobs wrote one, or by hand, e.g. the
tests' ``write_data_dir``) is read as before: its shards are globbed and only ``stats.json``'s row
counts, when present, are checked (as the length of the dataset). Re-run the Beam job to get a manifest.

Writing: :class:`WriteShardFiles` (the grouped file writer that also describes every shard it
writes) and :class:`WriteManifest` (those descriptions -> ``manifest.json``). Everything goes through
Beam's ``FileSystems``, so local paths and ``gs://`` work alike; no TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from typing import Any, Iterable, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs import fileio
from zoo.spec import SPLITS, FeatureSpec, load_spec

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
CHECKSUM = "sha256"
SHARD_SUFFIX = ".tfrecord.gz"
STATS_FILE = "stats.json"
VERIFY_COMMAND = "python -m beam_jobs.verify"
MANIFEST_TAG = "manifest"


class IntegrityError(ValueError):
    """A data directory's shards disagree with its manifest (the message is one line naming the file)."""


@dataclasses.dataclass(frozen=True)
class SplitShards:
    """The shards of one split as a reader should open them.

    Attributes:
      files: full paths of the split's shards, sorted.
      records: the rows of the split according to the manifest; None without a manifest.
    """

    files: list[str]
    records: int | None


def shard_glob(split: str) -> str:
    """``<split>/part-*.tfrecord.gz``: the shards of a split, relative to the data directory."""
    return f"{split}/part-*{SHARD_SUFFIX}"


def shard_entry(data: bytes, records: int) -> dict[str, Any]:
    """The manifest entry of a shard file holding ``data`` (``records`` TFRecords)."""
    return {"records": int(records), "bytes": len(data), CHECKSUM: hashlib.sha256(data).hexdigest()}


def build_manifest(entries: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The manifest of ``(shard path relative to the data directory, shard_entry)`` pairs.

    Every split gets an entry (empty when it has no shard), shards sorted by name.
    """
    splits: dict[str, dict[str, Any]] = {s: {} for s in SPLITS}
    for rel, entry in entries:
        split, name = rel.split("/", 1)
        if split not in splits or "/" in name:
            raise ValueError(f"{rel}: not a shard path <split>/<file> of a split in {SPLITS}")
        splits[split][name] = dict(entry)
    out = {"version": MANIFEST_VERSION, "checksum": CHECKSUM, "splits": {}}
    for split, shards in splits.items():
        out["splits"][split] = {"records": sum(e["records"] for e in shards.values()),
                                "bytes": sum(e["bytes"] for e in shards.values()),
                                "shards": {name: shards[name] for name in sorted(shards)}}
    return out


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """``manifest.json``'s contents (indented like ``stats.json``)."""
    return (json.dumps(manifest, indent=2) + "\n").encode("utf-8")


def read_manifest(data_dir: str) -> dict[str, Any] | None:
    """``<data_dir>/manifest.json``, validated; None when the directory has none.

    Raises:
      IntegrityError: the file is not a manifest of this version (naming it).
    """
    path = FileSystems.join(data_dir.rstrip("/"), MANIFEST_FILE)
    if not FileSystems.exists(path):
        return None
    try:
        manifest = fileio.read_json(path)
    except ValueError as err:
        raise IntegrityError(f"{path}: not valid JSON ({err}); re-run the Beam job that wrote {data_dir}") from None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    if version != MANIFEST_VERSION or not isinstance(manifest.get("splits"), dict):
        raise IntegrityError(f"{path}: not a version {MANIFEST_VERSION} shard manifest (version {version!r}); "
                             f"re-run the Beam job that wrote {data_dir}")
    return manifest


def _found_shards(data_dir: str, split: str) -> dict[str, int]:
    """``{file name: size in bytes}`` of the shards in a split directory (one listing)."""
    sizes = fileio.match_sizes([FileSystems.join(data_dir, *shard_glob(split).split("/"))])
    return {posixpath.basename(path.replace("\\", "/")): size for path, size in sizes.items()}


def check_shards(data_dir: str, splits: Sequence[str] = SPLITS) -> dict[str, SplitShards]:
    """The cheap integrity check of a data directory: presence and sizes of every shard, record totals.

    Lists each split directory once (sizes come with the listing); opens no shard. With a manifest,
    every shard it lists must exist with its byte size, no other ``part-*.tfrecord.gz`` may be there,
    each split's record total must be the sum of its shards' and equal ``stats.json``'s rows of the
    split (when there is a ``stats.json``). Without a manifest, the shards found are returned as they are.

    Args:
      data_dir: a data directory (local or any Beam filesystem, e.g. ``gs://``).
      splits: the splits to check.

    Returns:
      ``{split: SplitShards}``.

    Raises:
      IntegrityError: one line naming the first bad shard (or file), what is wrong, what to do, and
        how many more problems there are.
    """
    data_dir = data_dir.rstrip("/") or "/"
    manifest = read_manifest(data_dir)
    out: dict[str, SplitShards] = {}
    problems: list[str] = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split '{split}': must be one of {SPLITS}")
        found = _found_shards(data_dir, split)
        join = lambda name, s=split: FileSystems.join(data_dir, s, name)  # noqa: E731
        if manifest is None:
            out[split] = SplitShards(sorted(join(n) for n in found), None)
            continue
        listed = manifest["splits"].get(split, {"records": 0, "shards": {}})
        shards = listed["shards"]
        for name, entry in shards.items():
            if name not in found:
                problems.append(f"{join(name)}: shard missing (manifest.json lists it with {entry['records']} "
                                f"records, {entry['bytes']} bytes)")
            elif found[name] != entry["bytes"]:
                what = "truncated" if found[name] < entry["bytes"] else "longer than written"
                problems.append(f"{join(name)}: expected {entry['bytes']} bytes (manifest.json), found "
                                f"{found[name]}: the shard is {what}")
        for name in sorted(set(found) - set(shards)):
            problems.append(f"{join(name)}: not in manifest.json (a stale or foreign shard)")
        total = sum(e["records"] for e in shards.values())
        if total != listed["records"]:
            problems.append(f"{FileSystems.join(data_dir, MANIFEST_FILE)}: split '{split}' lists {listed['records']} "
                            f"records but its shards sum to {total}")
        out[split] = SplitShards(sorted(join(n) for n in shards), total)
    stats_path = FileSystems.join(data_dir, STATS_FILE)
    if manifest is not None and not problems and FileSystems.exists(stats_path):
        stats = fileio.read_json(stats_path)
        for split in splits:
            rows = stats.get("splits", {}).get(split, {}).get("rows")
            if rows is not None and int(rows) != out[split].records:
                problems.append(f"{stats_path}: split '{split}' has {rows} rows but manifest.json lists "
                                f"{out[split].records} records")
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise IntegrityError(f"{problems[0]}{more}; re-copy the directory or re-run the Beam job that wrote "
                             f"{data_dir}, and check it with `{VERIFY_COMMAND} {data_dir}`")
    return out


def open_data_dir(path: str) -> tuple[str, FeatureSpec]:
    """``(data_dir, spec)`` of a finished job's output, after :func:`check_shards`.

    Raises:
      FileNotFoundError: no ``_SUCCESS`` (the job has not finished there) or no ``spec.json``.
      IntegrityError: a shard is missing, has the wrong size or is not in the manifest.
    """
    data_dir = path.rstrip("/")
    fileio.require_complete(data_dir)
    spec = load_spec(data_dir)
    check_shards(data_dir)
    return data_dir, spec


# ---------------------------------------------------------------------------------------------------
# Writing (Beam)
# ---------------------------------------------------------------------------------------------------
class WriteShardFiles(fileio.WriteGroupedFiles):
    """:class:`~beam_jobs.fileio.WriteGroupedFiles` that also describes every shard it writes.

    For a path ending in ``.tfrecord.gz`` the values are ``(records, gzip member of framed
    records)`` pairs (or None); the members are joined in sorted order, so the file's bytes do not
    depend on the order the group arrived in (a retried bundle rewrites the same bytes the manifest
    describes); a shard that got no member holds an empty gzip member. Each shard written yields
    ``(path, shard_entry)`` with tag ``manifest``. Other files are written as by the base class.
    The main output is the relative path of every file written.
    """

    def process(self, element):
        path, values = element
        if not path.endswith(SHARD_SUFFIX):
            yield from super().process(element)
            return
        parts = sorted(v for v in values if v is not None)
        data = b"".join(member for _, member in parts) or fileio.EMPTY_GZIP
        fileio.write_bytes(FileSystems.join(self.base, path), data)
        yield beam.pvalue.TaggedOutput(MANIFEST_TAG, (path, shard_entry(data, sum(r for r, _ in parts))))
        yield path


class _WriteManifestFile(beam.DoFn):
    def __init__(self, output_dir: str):
        self.output_dir = output_dir

    def process(self, element):
        name, entries = element
        fileio.write_bytes(FileSystems.join(self.output_dir, name), manifest_bytes(build_manifest(entries)),
                           "application/json")
        yield name


class WriteManifest(beam.PTransform):
    """``(shard path, shard_entry)`` pairs -> ``<output_dir>/manifest.json`` (one GroupByKey on the file name)."""

    def __init__(self, output_dir: str):
        super().__init__()
        self.output_dir = output_dir

    def expand(self, entries):
        return (entries
                | "KeyByFile" >> beam.Map(lambda entry: (MANIFEST_FILE, entry))
                | "GroupByFile" >> beam.GroupByKey()
                | "WriteFile" >> beam.ParDo(_WriteManifestFile(self.output_dir)))
