"""File I/O shared by the Beam jobs: chunked line reading, blob writing, atomic output directories.

* :class:`ReadLineChunks` reads text files as ``(file name, chunk)`` elements, a chunk being about
  ``chunk_bytes`` of whole lines, with exactly the lines Beam's ``ReadFromText`` would yield (``\\n``
  or ``\\r\\n`` terminated, header lines skipped per file, files split into ranges for parallel
  reading). A Beam element per chunk instead of per line is what lets the jobs parse and encode
  in batches. For multiline CSV (quoted fields holding line breaks) chunks end only outside
  quotes and :func:`chunk_records` joins a chunk's lines into records. Compressed files are read
  strictly (:func:`open_decompressed`): a corrupt or truncated one raises :class:`InputError` naming
  it, which :func:`worker_input_errors` re-raises as itself on the driver.
* :class:`WriteBlobs` writes ``bytes`` elements as they are to sharded files (Beam's file sink:
  temporary files, renamed into place when the write finalizes).
* :class:`OutputDir` makes a job's output directory appear all at once: the pipeline writes under
  ``<output>/.tmp-<run id>/``; only after it succeeds are the previous outputs removed, the new
  files renamed into place and ``_SUCCESS`` written last. A failed run leaves the previous outputs
  (and their ``_SUCCESS``) untouched and removes its staging directory; a run killed mid-way leaves
  a ``.tmp-*`` directory, which readers never look at and the next run removes.

Everything goes through ``apache_beam.io.filesystems.FileSystems``, so local paths and ``gs://``
work alike; no DoFn writes a file itself.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import re
import secrets
import time
import zlib
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io import filebasedsink, filebasedsource
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

SUCCESS_MARKER = "_SUCCESS"
_DESCRIPTIONS = ("stats.json", "spec.json", "manifest.json")  # promoted after the files they describe
STAGING_PREFIX = ".tmp-"
DEFAULT_CHUNK_BYTES = 1 << 20
# Compressed raw inputs read by Python's own readers, which raise EOFError on a file that ends inside
# a compressed stream (Beam's CompressedFile stops there silently, dropping the rest of the file).
_STRICT_READERS = {CompressionTypes.GZIP: lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
                   CompressionTypes.BZIP2: lambda raw: bz2.BZ2File(raw, mode="rb"),
                   CompressionTypes.LZMA: lambda raw: lzma.LZMAFile(raw, mode="rb")}
READ_ERRORS = (zlib.error, EOFError, OSError, lzma.LZMAError)  # gzip.BadGzipFile is an OSError


class InputError(ValueError):
    """An input file cannot be read (corrupt or truncated compressed data, a corrupt TFRecord); the
    message names it.

    Raised inside a Beam worker; :func:`worker_input_errors` re-raises it on the driver from the
    runner's error (a portable runner reports a worker's exception as the text of its traceback).
    """


_INPUT_ERROR_LINE = re.compile(r"^(?:beam_jobs\.fileio\.)?InputError: (.+)$", re.M)


def input_error_of(err: BaseException) -> InputError | None:
    """The :class:`InputError` a failed pipeline run reports in ``err`` (itself, or the last such line of
    its message, as a portable runner reports a worker's traceback), else None."""
    if isinstance(err, InputError):
        return err
    found = _INPUT_ERROR_LINE.findall(str(err))
    return InputError(found[-1].strip()) if found else None


@contextlib.contextmanager
def worker_input_errors() -> Iterator[None]:
    """Around a pipeline run: a worker's :class:`InputError`, however the runner wraps it, is raised as
    itself (one line naming the file); every other error passes unchanged."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - only an unreadable input file is re-raised as itself
        unreadable = input_error_of(err)
        if unreadable is None or unreadable is err:
            raise
        raise unreadable from err


def unreadable(file_name: str, err: BaseException, advice: str) -> InputError:
    """The :class:`InputError` of a file whose decompression (or record framing) failed with ``err``."""
    if isinstance(err, EOFError):
        what = "truncated (it ends inside a compressed stream)"
    else:
        kind = "zlib.error" if isinstance(err, zlib.error) else type(err).__name__
        what = f"corrupt ({kind}: {' '.join(str(err).split())})"
    return InputError(f"{file_name}: cannot read the file: it is {what}; {advice}")


@contextlib.contextmanager
def open_decompressed(file_name: str, open_file) -> Iterator[Any]:
    """A file's bytes, decompressed by extension: gzip, bzip2 and xz by Python's readers, which raise
    EOFError on a file that ends inside a compressed stream (Beam's CompressedFile stops there
    silently, dropping the rest of the file); others by ``open_file`` (a FileBasedSource's)."""
    reader = _STRICT_READERS.get(CompressionTypes.detect_compression_type(file_name))
    if reader is None:
        with open_file(file_name) as fh:
            yield fh
        return
    with FileSystems.open(file_name, compression_type=CompressionTypes.UNCOMPRESSED) as raw, reader(raw) as fh:
        yield fh


# ---------------------------------------------------------------------------------------------------
# Reading lines in chunks
# ---------------------------------------------------------------------------------------------------
class _LineChunkSource(filebasedsource.FileBasedSource):
    """Text files as ``(file name, bytes of whole lines)``; splittable like Beam's text source.

    A line belongs to the range its first byte lies in. Each chunk's last line start is claimed
    before the chunk is emitted (so every line in it is inside the range, even after a dynamic
    split); when that claim fails, the lines starting before the range's end are emitted and
    reading stops.
    """

    def __init__(self, file_pattern: str, skip_header_lines: int, chunk_bytes: int, quote: bytes | None = None):
        # Multiline CSV: a line break may lie inside a quoted field, which a reader starting in the
        # middle of a file cannot tell, so each file is read whole by one reader.
        super().__init__(file_pattern, compression_type=CompressionTypes.AUTO, splittable=quote is None)
        self._skip = skip_header_lines
        self._chunk_bytes = max(int(chunk_bytes), 1)
        self._quote = quote

    def read_records(self, file_name: str, range_tracker) -> Iterator[tuple[str, bytes]]:
        if CompressionTypes.detect_compression_type(file_name) == CompressionTypes.UNCOMPRESSED:
            yield from self._read_records(file_name, range_tracker)
            return
        try:
            yield from self._read_records(file_name, range_tracker)
        except READ_ERRORS as err:  # the decompression failed: the file, not the job, is at fault
            raise unreadable(file_name, err, "re-copy it or leave it out of --input") from None

    def _read_records(self, file_name: str, range_tracker) -> Iterator[tuple[str, bytes]]:
        start = range_tracker.start_position()
        with open_decompressed(file_name, self.open_file) as fh:
            pos, buf = 0, b""  # pos: file offset of buf[0]
            eof = False

            def fill() -> bool:
                nonlocal buf, eof
                data = fh.read(self._chunk_bytes)
                if not data:
                    eof = True
                    return False
                buf += data
                return True

            for _ in range(self._skip):  # header lines
                while b"\n" not in buf and fill():
                    pass
                cut = buf.find(b"\n")
                if cut < 0:
                    return  # the file is all header
                pos, buf = pos + cut + 1, buf[cut + 1:]
            if start > pos:
                # Skip to the first line starting at or after `start` (the line starting exactly at
                # `start` is ours: look for the newline from start - 1).
                fh.seek(start - 1)
                pos, buf, eof = start - 1, b"", False
                while b"\n" not in buf and fill():
                    pass
                cut = buf.find(b"\n")
                if cut < 0:
                    return
                pos, buf = pos + cut + 1, buf[cut + 1:]
            while True:
                while not eof and len(buf) < self._chunk_bytes and fill():
                    pass
                if not buf:
                    return
                cut = buf.rfind(b"\n") if self._quote is None else _last_record_end(buf, self._quote)
                if cut < 0 and not eof:
                    fill()  # a line (record) longer than the chunk size: keep reading
                    continue
                end = len(buf) if (eof and cut < len(buf) - 1) else cut + 1  # unterminated last line
                chunk = buf[:end]
                last_start = chunk.rfind(b"\n", 0, len(chunk) - 1) + 1
                if not range_tracker.try_claim(pos + last_start):
                    stop = range_tracker.stop_position()
                    if stop > pos:  # lines starting before `stop` are still ours
                        tail = chunk.find(b"\n", stop - 1 - pos)
                        chunk = chunk if tail < 0 else chunk[:tail + 1]
                        yield file_name, chunk
                    return
                yield file_name, chunk
                pos, buf = pos + end, buf[end:]


def _last_record_end(buf: bytes, quote: bytes) -> int:
    """The last line break of ``buf`` outside quoted fields (an even number of quote bytes before
    it; ``buf`` starts at a record start), or -1. One backward pass over ``buf``."""
    odd = buf.count(quote) & 1  # parity of the quotes before position `pos`
    pos = len(buf)
    while True:
        cut = buf.rfind(b"\n", 0, pos)
        if cut < 0:
            return -1
        odd ^= buf.count(quote, cut + 1, pos) & 1
        if not odd:
            return cut
        pos = cut


def chunk_records(chunk: bytes, quote: bytes | None = None) -> list[bytes]:
    """The records of a chunk without terminators: its lines (:func:`chunk_lines`), or with
    ``quote`` (multiline CSV) the lines joined by ``\n`` while a quoted field is open, i.e. while
    the count of quote bytes so far is odd (a doubled quote inside a field counts twice). A line
    break inside a quoted field is kept as ``\n`` (a ``\r\n`` there becomes ``\n``). A quote left
    open at the end of the chunk makes the rest one record, which the row parser dead-letters.
    """
    lines = chunk_lines(chunk)
    if quote is None or quote not in chunk:
        return lines
    records: list[bytes] = []
    held: list[bytes] = []
    odd = False
    for line in lines:
        odd ^= bool(line.count(quote) & 1)
        if odd or held:
            held.append(line)
            if not odd:
                records.append(b"\n".join(held))
                held = []
        else:
            records.append(line)
    if held:
        records.append(b"\n".join(held))
    return records


def chunk_lines(chunk: bytes) -> list[bytes]:
    """The lines of a chunk without terminators (``\\n``, or ``\\r\\n`` as Beam's text source)."""
    lines = chunk.split(b"\n")
    terminated = lines[-1] == b""
    if terminated:
        lines.pop()
    if b"\r" in chunk:
        last = len(lines) - (0 if terminated else 1)
        lines = [ln[:-1] if i < last and ln.endswith(b"\r") else ln for i, ln in enumerate(lines)]
    return lines


class ReadLineChunks(beam.PTransform):
    """Reads text files matching a pattern as ``(file name, chunk of whole lines)`` elements.

    With ``quote`` (multiline CSV, ``format.multiline``) a chunk ends only at a line break outside
    quoted fields, so no record is cut in two (split it with :func:`chunk_records`), and each file
    is read by one reader (not split into ranges).
    """

    def __init__(self, file_pattern: str, skip_header_lines: int = 0, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 quote: str | None = None):
        super().__init__()
        self._source = _LineChunkSource(file_pattern, skip_header_lines, chunk_bytes,
                                        quote.encode("utf-8") if quote else None)

    def expand(self, pbegin):
        return pbegin | beam.io.Read(self._source)


def raw_chunks(spec: FeatureSpec, file_pattern: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> ReadLineChunks:
    """Reads a spec's raw files: the header line skipped when ``format.header``, records kept whole
    when ``format.multiline``."""
    fmt = spec.raw_format
    return ReadLineChunks(file_pattern, skip_header_lines=1 if fmt.header else 0, chunk_bytes=chunk_bytes,
                          quote=fmt.quote if fmt.multiline else None)


# ---------------------------------------------------------------------------------------------------
# Writing blobs
# ---------------------------------------------------------------------------------------------------
EMPTY_GZIP = (lambda c: c.compress(b"") + c.flush())(zlib.compressobj(6, zlib.DEFLATED, 31))


def gzip_member(data: bytes, level: int = 6) -> bytes:
    """``data`` as one gzip member; members concatenate into a valid gzip file."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


class _Handle:
    """A sink file handle that can write a placeholder into files that got no data."""

    def __init__(self, handle, empty: bytes):
        self._handle, self._empty, self._written = handle, empty, False

    def write(self, data: bytes) -> None:
        if data:
            self._written = True
            self._handle.write(data)

    def close(self) -> None:
        if not self._written and self._empty:
            self._handle.write(self._empty)
        self._handle.close()


class _BlobSink(filebasedsink.FileBasedSink):
    def __init__(self, file_path_prefix: str, file_name_suffix: str, num_shards: int,
                 shard_name_template: str | None, empty: bytes):
        super().__init__(file_path_prefix, coder=beam.coders.BytesCoder(), file_name_suffix=file_name_suffix,
                         num_shards=num_shards, shard_name_template=shard_name_template,
                         mime_type="application/octet-stream", compression_type=CompressionTypes.UNCOMPRESSED)
        self._empty = empty

    def open(self, temp_path: str):
        return _Handle(super().open(temp_path), self._empty)

    def write_encoded_record(self, file_handle, value: bytes) -> None:
        file_handle.write(value)


class WriteBlobs(beam.PTransform):
    """Writes ``bytes`` elements as they are to ``<prefix>-SSSSS-of-NNNNN<suffix>`` files.

    ``num_shards=0`` lets the runner choose; with a fixed count, shards that get no element still
    exist (holding ``empty``, e.g. an empty gzip member). ``single_file=True`` writes exactly
    ``<prefix><suffix>``.
    """

    def __init__(self, file_path_prefix: str, file_name_suffix: str = "", num_shards: int = 0,
                 empty: bytes = b"", single_file: bool = False):
        super().__init__()
        self._sink = _BlobSink(file_path_prefix, file_name_suffix, 1 if single_file else num_shards,
                               "" if single_file else None, empty)

    def expand(self, pcoll):
        return pcoll | beam.io.Write(self._sink)


def write_gzip_blobs(file_path_prefix: str, file_name_suffix: str, num_shards: int) -> WriteBlobs:
    """:class:`WriteBlobs` for elements that are gzip members (empty shards get an empty member)."""
    return WriteBlobs(file_path_prefix, file_name_suffix, num_shards, empty=EMPTY_GZIP)


class WriteGroupedFiles(beam.DoFn):
    """``(relative path, [bytes or None, ...])`` -> the file ``<base>/<path>`` holding the joined bytes.

    The last stage of a job that routes all its outputs through one ``GroupByKey`` keyed by file
    (instead of one Beam file sink per output, each adding its own stages). Files are written
    through FileSystems into the run's staging directory (see :class:`OutputDir`), which the driver
    promotes only after the pipeline succeeded; a retried bundle rewrites the same files whole.
    ``None`` values only make sure a file exists; a file with no bytes gets ``empty`` (e.g. an empty
    gzip member for ``*.gz``).
    """

    def __init__(self, base: str):
        self.base = base

    def process(self, element):
        path, values = element
        data = b"".join(v for v in values if v)
        if not data and path.endswith(".gz"):
            data = EMPTY_GZIP
        write_bytes(FileSystems.join(self.base, path), data)
        yield path


# ---------------------------------------------------------------------------------------------------
# Small files through FileSystems
# ---------------------------------------------------------------------------------------------------
def read_bytes(path: str) -> bytes:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path).decode("utf-8"))


def write_bytes(path: str, data: bytes, mime_type: str = "application/octet-stream") -> str:
    with FileSystems.create(path, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        fh.write(data)
    return path


def write_json(path: str, obj: Any) -> str:
    return write_bytes(path, json.dumps(obj, indent=2).encode("utf-8"), "application/json")


def match(patterns: Sequence[str]) -> list[str]:
    return list(match_sizes(patterns))


def match_sizes(patterns: Sequence[str]) -> dict[str, int]:
    """``{path: size in bytes}`` of the files matching ``patterns`` (sizes come with the listing)."""
    found = {}
    for result in FileSystems.match(list(patterns)):
        for m in result.metadata_list:
            found[m.path] = int(m.size_in_bytes)
    return found


def _mkdirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except IOError:
        pass  # exists (local) / not needed (object stores)


def _delete(paths: Iterable[str]) -> None:
    paths = list(paths)
    if paths:
        try:
            FileSystems.delete(paths)
        except Exception:  # noqa: BLE001 - best effort: some may already be gone
            for p in paths:
                try:
                    FileSystems.delete([p])
                except Exception:  # noqa: BLE001
                    pass


# ---------------------------------------------------------------------------------------------------
# Atomic output directories
# ---------------------------------------------------------------------------------------------------
class OutputDir:
    """A job's output directory, written through a staging directory and promoted at the end.

    Args:
      output: the final directory (local or e.g. ``gs://``).
      outputs: glob patterns, relative to a directory, of every file the job owns there
        (previous copies of these are deleted when the new ones are promoted).
    """

    def __init__(self, output: str, outputs: Sequence[str], run_id: str | None = None):
        self.output = output.rstrip("/") or "/"
        self.outputs = list(outputs)
        self.run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        self.staging = FileSystems.join(self.output, STAGING_PREFIX + self.run_id)

    def path(self, *parts: str) -> str:
        """A path inside the staging directory (where the pipeline writes)."""
        return FileSystems.join(self.staging, *parts)

    def final(self, *parts: str) -> str:
        return FileSystems.join(self.output, *parts)

    def prepare(self) -> list[str]:
        """Creates the staging directory; removes stale staging directories of killed runs."""
        patterns = [FileSystems.join(self.output, STAGING_PREFIX + "*", *["*"] * depth) for depth in range(1, 5)]
        stale_dirs = sorted({self._staging_root(p) for p in match(patterns)} - {self.staging})
        for d in stale_dirs:
            _delete_tree(d)
        _mkdirs(self.output)
        _mkdirs(self.staging)
        return stale_dirs

    def _staging_root(self, path: str) -> str:
        rel = path[len(self.output):].lstrip("/")
        return FileSystems.join(self.output, rel.split("/")[0])

    def staged_files(self) -> list[str]:
        return match([FileSystems.join(self.staging, p) for p in self.outputs])

    def promote(self) -> list[str]:
        """Replaces the previous outputs by the staged ones; writes ``_SUCCESS`` last. Returns them."""
        marker = self.final(SUCCESS_MARKER)
        _delete(match([marker]))  # from here on, readers see "not done"
        _delete(match([FileSystems.join(self.output, p) for p in self.outputs]))
        staged = self.staged_files()
        # Shards first, then the files describing them.
        staged.sort(key=lambda p: (p.endswith(_DESCRIPTIONS), p))
        finals = [self.final(p[len(self.staging):].lstrip("/")) for p in staged]
        for d in sorted({f.rsplit("/", 1)[0] for f in finals}):
            _mkdirs(d)
        if staged:
            FileSystems.rename(staged, finals)
        write_bytes(marker, json.dumps({"run_id": self.run_id, "files": len(finals),
                                        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode("utf-8"))
        self.discard()
        return finals

    def discard(self) -> None:
        """Removes the staging directory (after a failure, or what is left after promotion)."""
        _delete_tree(self.staging)


def _delete_tree(path: str) -> None:
    """Deletes a directory and everything under it (local, or every object under the prefix)."""
    if FileSystems.get_scheme(path) in (None, "file"):
        _delete(match([path]))
    else:
        _delete(match([path.rstrip("/") + "/**"]))


def is_complete(data_dir: str) -> bool:
    """True when a job finished writing ``data_dir`` (its ``_SUCCESS`` marker exists)."""
    return FileSystems.exists(FileSystems.join(data_dir.rstrip("/"), SUCCESS_MARKER))


def require_complete(data_dir: str) -> None:
    """Raises FileNotFoundError naming ``data_dir`` unless a job finished writing it (``_SUCCESS``)."""
    if not is_complete(data_dir):
        local = FileSystems.get_scheme(data_dir) in (None, "file")
        if local and not FileSystems.exists(data_dir):  # object stores have no directories to look for
            raise FileNotFoundError(f"{data_dir}: no such data directory")
        raise FileNotFoundError(f"{data_dir}: no _SUCCESS marker; the ingest job has not finished there")


