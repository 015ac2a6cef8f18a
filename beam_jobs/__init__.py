"""Apache Beam jobs of the zoo (DirectRunner locally, DataflowRunner for real logs).

* :mod:`beam_jobs.build_tfrecords`: raw CSV/TSV/libFM rows -> GZIP TFRecord shards per split, with
  vocabularies (two passes), dead letters, ``stats.json`` and the resolved ``spec.json``.
* :mod:`beam_jobs.cohort_stats`: per cohort and axis counts, base rates, feature marginals and
  quantile-based top/bottom cohorts of a data directory, as JSON.
* :mod:`beam_jobs.add_aux_labels`: existing shards -> the same shards with ``aux/head`` and
  ``aux/tail`` labels of a cohort pair.

* :mod:`beam_jobs.verify`: reads every shard of a data directory in full against its manifest
  (checksums, gzip and TFRecord integrity, record counts); exit status 0 or 1.

Shared building blocks: :mod:`beam_jobs.columnar` (batched parsing with the spec's semantics),
:mod:`beam_jobs.tfrecord` (batched TFRecord framing and reading), :mod:`beam_jobs.fileio` (chunked
line reading, grouped file writing, atomic output directories), :mod:`beam_jobs.manifest` (the
shards' ``manifest.json``: writing it, and the cheap check every reader runs).
"""

from zoo.cli import quiet_entry_point

quiet_entry_point("beam_jobs", tensorflow=False)  # `python -m beam_jobs.<job>`: Beam's start-up noise
