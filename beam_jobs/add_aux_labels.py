"""Beam job: add C2AL auxiliary labels for a cohort pair to existing TFRecord shards.

Usage::

    python -m beam_jobs.add_aux_labels --data runs/synthetic/data --output runs/synthetic/data_aux \\
        [--axis user_value --head p95_100 --tail p00_05] [--dtype float32|int64] \\
        [--compression_level 6] [any Beam / Dataflow pipeline option]

On Dataflow::

    python -m beam_jobs.add_aux_labels --data gs://BUCKET/criteo/data --output gs://BUCKET/criteo/data_aux \
        --axis I1_level --head high --tail zero_or_blank \
        --runner DataflowRunner --project PROJECT --region REGION --temp_location gs://BUCKET/tmp \
        --setup_file ./setup.py

Reads every shard of ``--data`` (a directory written by ``beam_jobs.build_tfrecords``, checked
against its manifest first: :func:`beam_jobs.manifest.check_shards`) and writes
the same records with two more features, ``aux/head = y * 1[cohort == head]`` and
``aux/tail = y * 1[cohort == tail]`` (``y`` the label, the cohort the stored ``cohort/<axis>`` id;
float32 like the label, or int64), to ``--output``, shard for shard (same file names, so the same
sharding). The axis and the pair default to the spec's ``c2al`` block. Every record is streamed:
nothing has to fit in memory but one batch of one shard. Records keep all their features and are
re-serialized deterministically (keys sorted, as ``FeatureSpec.encode_example`` writes them).

``--output`` gets ``spec.json`` (the spec with ``aux_labels: {axis, head, tail, dtype}``, so
``FeatureSpec.parse_spec("all")`` parses the new keys), ``stats.json`` (the input's, plus
``aux_labels``: per split the rows and positives of each aux label), ``manifest.json`` (records,
bytes and SHA-256 of every new shard, :mod:`beam_jobs.manifest`), the input's ``vocab/`` files
and dead letters, and ``_SUCCESS`` last; like ``build_tfrecords`` it is staged in
``<output>/.tmp-<run id>/`` and promoted only when the pipeline succeeded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from beam_jobs import fileio, manifest
from beam_jobs.build_tfrecords import DEFAULT_COMPRESSION_LEVEL, OUTPUTS, _run_pipeline
from beam_jobs.manifest import MANIFEST_TAG, SHARD_SUFFIX
from beam_jobs.options import job_main, parse_job_args
from beam_jobs.progress import Progress
from beam_jobs.tfrecord import ReadTFRecordBatches, frame
from zoo.spec import AUX_KEY_PREFIX, COHORT_KEY_PREFIX, SPLITS, FeatureSpec, example_class

AUX_HEAD, AUX_TAIL = AUX_KEY_PREFIX + "head", AUX_KEY_PREFIX + "tail"


def aux_spec(spec: FeatureSpec, axis: str, head: str, tail: str, dtype: str = "float32") -> FeatureSpec:
    """The spec of the output: ``spec`` with ``aux_labels`` (validated against its axes)."""
    return FeatureSpec.from_dict({**spec.to_dict(), "aux_labels": {"axis": axis, "head": head, "tail": tail,
                                                                    "dtype": dtype}})


class AddAuxLabels(beam.DoFn):
    """``(shard file, [records])`` -> ``(relative shard path, (records, gzip member))``; tag ``counts``: aux label counts."""

    def __init__(self, spec: FeatureSpec, data_dir: str, compression_level: int = DEFAULT_COMPRESSION_LEVEL):
        self.spec = spec
        self.data_dir = data_dir.rstrip("/")
        self.compression_level = compression_level

    def setup(self):
        aux = self.spec.aux_labels
        axis = self.spec.axis(aux["axis"])
        self._cohort_key = COHORT_KEY_PREFIX + axis.name
        self._head, self._tail = axis.index(aux["head"]), axis.index(aux["tail"])
        self._int = aux.get("dtype", "float32") == "int64"
        self._example = example_class()
        self._progress = Progress("add_aux_labels")

    def teardown(self):
        self._progress.log()

    def process(self, element):
        path, records = element
        rel = path[len(self.data_dir):].lstrip("/")
        split = rel.split("/")[0]
        label = self.spec.label
        out = []
        n = head_pos = tail_pos = head_rows = tail_rows = 0
        ex = self._example()
        for record in records:
            ex.ParseFromString(record)
            feature = ex.features.feature
            y = feature[label].float_list.value[0]
            cohort = feature[self._cohort_key].int64_list.value[0]
            in_head, in_tail = cohort == self._head, cohort == self._tail
            h, t = (y if in_head else 0.0), (y if in_tail else 0.0)
            if self._int:
                feature[AUX_HEAD].int64_list.value[:] = [int(h)]
                feature[AUX_TAIL].int64_list.value[:] = [int(t)]
            else:
                feature[AUX_HEAD].float_list.value[:] = [h]
                feature[AUX_TAIL].float_list.value[:] = [t]
            out.append(ex.SerializeToString(deterministic=True))
            n += 1
            head_rows += in_head
            tail_rows += in_tail
            head_pos += h == 1.0
            tail_pos += t == 1.0
        self._progress.add(n, n, 0)
        yield rel, (n, fileio.gzip_member(frame(out), self.compression_level))
        yield beam.pvalue.TaggedOutput("counts", (split, np.array([n, head_rows, head_pos, tail_rows, tail_pos])))


def _aux_stats(counts: Mapping[str, Any], aux: Mapping[str, Any]) -> dict[str, Any]:
    out = {"axis": aux["axis"], "head": aux["head"], "tail": aux["tail"], "dtype": aux.get("dtype", "float32"),
           "splits": {}}
    for split in SPLITS:
        n, hr, hp, tr, tp = (int(x) for x in counts.get(split, [0] * 5))
        out["splits"][split] = {"rows": n, "head": {"rows": hr, "positives": hp}, "tail": {"rows": tr, "positives": tp}}
    return out


def build_pipeline(pipeline: beam.Pipeline, spec: FeatureSpec, data_dir: str, output_dir: str,
                   shards: Sequence[str], compression_level: int = DEFAULT_COMPRESSION_LEVEL):
    """Adds the job; ``spec`` has ``aux_labels``; ``shards``: every input shard path (relative paths
    are the output names). Returns ``{"shards": (shard, (records, gzip member)), "aux_stats": one dict,
    "manifest": (shard, manifest entry)}``; the shards' ``manifest.json`` is written too."""
    data_dir = data_dir.rstrip("/")
    reads = [pipeline | f"Read_{s}" >> ReadTFRecordBatches(FileSystems.join(data_dir, s, f"part-*{SHARD_SUFFIX}"))
             for s in SPLITS]
    batches = reads | "Shards" >> beam.Flatten()
    added = batches | "AddAux" >> beam.ParDo(AddAuxLabels(spec, data_dir, compression_level)).with_outputs(
        "counts", main="shards")
    rel = [p[len(data_dir):].lstrip("/") for p in shards]
    seeds = pipeline | "EveryShard" >> beam.Create([(p, None) for p in rel])
    written = ((added.shards, seeds)
               | "AllShards" >> beam.Flatten()
               | "ByShard" >> beam.GroupByKey()
               | "Write" >> beam.ParDo(manifest.WriteShardFiles(output_dir)).with_outputs(MANIFEST_TAG, main="files"))
    _ = written[MANIFEST_TAG] | "Manifest" >> manifest.WriteManifest(output_dir)
    aux_stats = (added["counts"]
                 | "SumPerSplit" >> beam.CombinePerKey(sum)
                 | "ToDict" >> beam.combiners.ToDict()
                 | "AuxStats" >> beam.Map(_aux_stats, spec.aux_labels))
    return {"shards": added.shards, "aux_stats": aux_stats, "manifest": written[MANIFEST_TAG]}


def parse_args(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(prog="python -m beam_jobs.add_aux_labels", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--data", required=True, help="input data directory (local or gs://)")
    parser.add_argument("--output", required=True, help="output data directory (local or gs://)")
    parser.add_argument("--axis", default=None, help="cohort axis (default: the spec's c2al.axis)")
    parser.add_argument("--head", default=None, help="head cohort (default: c2al.head)")
    parser.add_argument("--tail", default=None, help="tail cohort (default: c2al.tail)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "int64"))
    parser.add_argument("--compression_level", type=int, default=DEFAULT_COMPRESSION_LEVEL)
    return parse_job_args(parser, argv)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the job; returns ``{"output", "spec", "stats"}``."""
    args, pipeline_args = parse_args(argv)
    data_dir, spec = manifest.open_data_dir(args.data)  # the cheap shard check first
    c2al = spec.c2al or {}
    axis, head, tail = (args.axis or c2al.get("axis"), args.head or c2al.get("head"), args.tail or c2al.get("tail"))
    if not (axis and head and tail):
        raise ValueError("give --axis, --head and --tail (the spec has no c2al block to default to)")
    out_spec = aux_spec(spec, axis, head, tail, args.dtype)
    shards = fileio.match([FileSystems.join(data_dir, s, f"part-*{SHARD_SUFFIX}") for s in SPLITS])
    out = fileio.OutputDir(args.output, OUTPUTS)
    out.prepare()
    try:
        holder: dict[str, Any] = {}

        def build(p):
            holder.update(build_pipeline(p, out_spec, data_dir, out.staging, shards, args.compression_level))
            _ = (holder["aux_stats"]
                 | "AuxJson" >> beam.Map(lambda s: json.dumps(s).encode("utf-8"))
                 | "WriteAuxStats" >> fileio.WriteBlobs(out.path("aux_stats"), ".json", single_file=True))

        _run_pipeline(pipeline_args, build)
        aux = fileio.read_json(out.path("aux_stats.json"))
        FileSystems.delete([out.path("aux_stats.json")])
        stats = {**fileio.read_json(FileSystems.join(data_dir, "stats.json")), "aux_labels": aux}
        fileio.write_json(out.path("stats.json"), stats)
        fileio.write_bytes(out.path("spec.json"), out_spec.to_json().encode("utf-8"), "application/json")
        for path in fileio.match([FileSystems.join(data_dir, "vocab", "*"),
                                  FileSystems.join(data_dir, "dead_letter", "part-*.jsonl")]):
            rel = path[len(data_dir):].lstrip("/")
            fileio.write_bytes(out.path(rel), fileio.read_bytes(path))
        out.promote()
    except BaseException:
        out.discard()
        raise
    for split in SPLITS:
        s = aux["splits"][split]
        print(f"add_aux_labels: {split:<5} rows {s['rows']:>9d}  aux/head positives {s['head']['positives']:>7d} "
              f"({head})  aux/tail positives {s['tail']['positives']:>7d} ({tail})")
    print(f"add_aux_labels: wrote {out.output} ({len(shards)} shards, spec.json with aux_labels, manifest.json, _SUCCESS)")
    return {"output": out.output, "spec": out_spec, "stats": stats}


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    # Import through the package so pickled DoFns reference beam_jobs.add_aux_labels, not __main__.
    from beam_jobs.add_aux_labels import run as _run

    sys.exit(job_main("python -m beam_jobs.add_aux_labels", _run))
