"""Historical log readers: CSV, Parquet and NASA C-MAPSS text, streamed in bounded columnar chunks.

A log is never loaded whole: each reader yields :class:`Chunk` s of at most ``chunk_rows`` rows, each a
validated :class:`~ingest.schemas.ReadingBatch` plus the rows it rejected. The profile's ``[columns]``
table names the asset id and time columns; a signal column is found by the signal's own name, or by a
plant's column name mapped in ``[columns.signals]``, so a plant's export is read without editing it.

A bad row (a wrong number of fields, a cell that is not a number, no asset id, a non-finite time, a
value outside the profile's plausible range) never stops a read: it becomes a :class:`BadRow` naming
the file and line, and the read goes on. Blank lines are not readings and are passed over.

>>> import io, tempfile, pathlib
>>> from ingest.profiles import load_profile
>>> log = pathlib.Path(tempfile.mkdtemp()) / "plant.csv"
>>> _ = log.write_text("asset_id,ts,current_a\\nm1,10,12.5\\nm1,11,-3\\n")
>>> [chunk] = read_chunks(log, load_profile("motor"))
>>> chunk.batch.asset_id, chunk.batch.values[:, 2].tolist()
(['m1'], [12.5])
>>> chunk.bad[0].line, str(chunk.bad[0].reason), chunk.bad[0].detail
(3, 'out_of_range', 'current_a=-3.0 outside [0.0, 5000.0]')
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from ingest.profiles import Profile
from ingest.schemas import ReadingBatch, check_readings

DEFAULT_CHUNK_ROWS = 65_536
FORMATS = ("csv", "parquet", "cmapss")
# C-MAPSS text: one engine cycle per line, space separated, no header.
CMAPSS_COLUMNS = (
    "unit",
    "cycle",
    *(f"setting_{i}" for i in range(1, 4)),
    *(f"sensor_{i}" for i in range(1, 22)),
)
SIMULATOR_LOG = "readings.parquet"  # a simulator log is a directory holding this file

logger = logging.getLogger(__name__)
LOGGED_BAD_ROWS = 5  # read_log logs this many bad rows one by one, then only counts


class RowError(StrEnum):
    """Why a log row was skipped, besides the decoder's own reasons (``non_finite``, ``out_of_range``)."""

    UNPARSEABLE = "unparseable"
    MISSING_ASSET_ID = "missing_asset_id"


@dataclass(frozen=True, slots=True)
class BadRow:
    """A skipped row: ``line`` is 1-based (a Parquet log counts rows, from 1)."""

    path: str
    line: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Valid readings in file order (``batch.index``: 0-based row number in the file) and bad rows."""

    batch: ReadingBatch
    bad: tuple[BadRow, ...]


@dataclass(frozen=True, slots=True)
class _Raw:
    """A slice of a log before conversion: source columns (any type) and each row's 1-based line."""

    table: pa.Table
    first_row: int
    lines: np.ndarray
    bad: tuple[BadRow, ...]


def resolve(path: str | Path) -> Path:
    """A simulator log directory stands for its ``readings.parquet``."""
    path = Path(path)
    return path / SIMULATOR_LOG if path.is_dir() else path


def detect_format(path: str | Path) -> str:
    """``parquet`` or ``csv`` by suffix; ``cmapss`` for NASA's ``*.txt`` files."""
    suffix = resolve(path).suffix.lower()
    found = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".txt": "cmapss"}.get(suffix)
    if found is None:
        raise ValueError(f"{path}: cannot tell the log format from {suffix!r}; pass one of {FORMATS}")
    return found


@dataclass(frozen=True, slots=True)
class _Columns:
    """Which source column feeds the asset id, the time, and each signal (by signal position)."""

    asset_id: str
    ts: str
    signals: tuple[tuple[str, int], ...]

    @classmethod
    def find(cls, available: Sequence[str], profile: Profile, path: Path) -> _Columns:
        asset_id = profile.columns.get("asset_id", "asset_id")
        ts = profile.columns.get("ts", "ts")
        missing = [c for c in (asset_id, ts) if c not in available]
        if missing:
            raise ValueError(
                f"{path}: no column {missing} (profile {profile.name} [columns]); it has {list(available)}"
            )
        index = profile.signal_index
        names = {**{s: s for s in index}, **profile.signal_columns}
        signals = tuple((c, index[names[c]]) for c in available if c in names)
        if not signals:
            raise ValueError(f"{path}: no column names a signal of profile {profile.name}: {list(available)}")
        return cls(asset_id, ts, signals)


def read_chunks(
    path: str | Path, profile: Profile, fmt: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[Chunk]:
    """Stream a log as validated chunks of at most ``chunk_rows`` rows.

    Raises ValueError at once when the file lacks the profile's asset id or time column."""
    path = resolve(path)
    fmt = fmt or detect_format(path)
    cols = _Columns.find(_column_names(path, fmt), profile, path)
    needed = [cols.asset_id, cols.ts, *(c for c, _ in cols.signals)]
    for raw in _raw_tables(path, fmt, needed, chunk_rows):
        yield _convert(raw, cols, profile, path)


def scan_times(
    path: str | Path, profile: Profile, fmt: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[int, bool]:
    """Read only the time column: ``(rows, whether event time never decreases down the file)``."""
    path = resolve(path)
    fmt = fmt or detect_format(path)
    ts_col = _Columns.find(_column_names(path, fmt), profile, path).ts
    rows, last, ordered = 0, -math.inf, True
    for raw in _raw_tables(path, fmt, [ts_col], chunk_rows):
        rows += raw.table.num_rows
        ts, _ = _numbers(raw.table.column(ts_col), dates=True)
        ts = ts[~np.isnan(ts)]
        if ordered and len(ts):
            ordered = bool(ts[0] >= last and (np.diff(ts) >= 0).all())
            last = ts[-1]
    return rows, ordered


def read_log(path: str | Path, profile: Profile, fmt: str | None = None) -> pd.DataFrame:
    """A whole log as a DataFrame in file order, for training: ``asset_id`` (str), ``ts`` (float64) and one
    float64 column per profile signal (NaN where a row lacks it).

    Bad rows are skipped: the first few are logged one by one, then a summary by reason;
    ``df.attrs["bad_rows"]`` counts them by reason."""
    parts, bad = [], {}
    for chunk in read_chunks(path, profile, fmt):
        for row in chunk.bad:
            if sum(bad.values()) < LOGGED_BAD_ROWS:
                logger.warning("skipped %s", row)
            bad[str(row.reason)] = bad.get(str(row.reason), 0) + 1
        b = chunk.batch
        parts.append(
            pd.DataFrame(
                {"asset_id": b.asset_id, "ts": b.ts, **dict(zip(b.signals, b.values.T, strict=True))}
            )
        )
    columns = ["asset_id", "ts", *profile.signal_names]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    df = df.astype({"asset_id": "str", **{c: "float64" for c in columns[1:]}})
    df.attrs["bad_rows"] = bad
    if bad:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(bad.items()))
        logger.warning("%s: skipped %d bad rows (%s)", path, sum(bad.values()), counts)
    return df


# --- format-specific raw readers ------------------------------------------------------------------------


def _column_names(path: Path, fmt: str) -> list[str]:
    if fmt == "parquet":
        return pq.ParquetFile(path).schema_arrow.names
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return next(csv.reader(fh), [])
    if fmt == "cmapss":
        return list(CMAPSS_COLUMNS)
    raise ValueError(f"unknown log format {fmt!r}; expected one of {FORMATS}")


def _raw_tables(path: Path, fmt: str, columns: list[str], chunk_rows: int) -> Iterator[_Raw]:
    reader = {"parquet": _parquet_tables, "csv": _csv_tables, "cmapss": _cmapss_tables}[fmt]
    return reader(path, columns, chunk_rows)


def _parquet_tables(path: Path, columns: list[str], chunk_rows: int) -> Iterator[_Raw]:
    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns):
        n = batch.num_rows
        yield _Raw(pa.Table.from_batches([batch]), row, np.arange(row + 1, row + n + 1), ())
        row += n


def _csv_tables(path: Path, columns: list[str], chunk_rows: int) -> Iterator[_Raw]:
    """pyarrow's streaming CSV reader, every column as text (converted later, cell by cell if need be).

    Rows with the wrong number of fields go to the invalid-row handler, which records their line; the
    line of any other row is then its position plus the skipped lines before it (header on line 1)."""
    skipped: list[int] = []
    pending: list[BadRow] = []

    def invalid(row: pcsv.InvalidRow) -> str:
        if row.text.strip():
            skipped.append(row.number)
            detail = f"{row.actual_columns} fields, expected {row.expected_columns}"
            pending.append(BadRow(str(path), row.number, RowError.UNPARSEABLE, detail))
        else:  # a blank line in a one-column file
            skipped.append(row.number)
        return "skip"

    block = min(max(chunk_rows * 128, 1 << 16), 1 << 26)
    reader = pcsv.open_csv(
        path,
        read_options=pcsv.ReadOptions(use_threads=False, block_size=block),
        parse_options=pcsv.ParseOptions(invalid_row_handler=invalid, ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(
            include_columns=columns,
            column_types=dict.fromkeys(columns, pa.string()),
            strings_can_be_null=True,
        ),
    )
    row = 0
    with reader:
        for batch in reader:
            for start in range(0, batch.num_rows, chunk_rows):
                part = batch.slice(start, chunk_rows)
                n = part.num_rows
                k = np.arange(row, row + n)
                # The k-th parsed row sits on line 2 + k + (number of skipped lines before it).
                shifted = np.asarray(skipped, dtype=np.int64) - np.arange(len(skipped))
                lines = 2 + k + np.searchsorted(shifted, 2 + k, side="right")
                yield _Raw(pa.Table.from_batches([part]), row, lines, tuple(pending))
                pending.clear()
                row += n
    if pending:
        yield _Raw(
            pa.table({c: pa.array([], pa.string()) for c in columns}), row, np.empty(0), tuple(pending)
        )


def _cmapss_tables(path: Path, columns: list[str], chunk_rows: int) -> Iterator[_Raw]:
    """Space-separated text, 26 fields a line (NASA's files end lines with spaces: any run of blanks
    separates fields)."""
    wanted = [CMAPSS_COLUMNS.index(c) for c in columns]
    width = len(CMAPSS_COLUMNS)
    row = 0
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        numbered = enumerate(fh, start=1)
        while block := list(itertools.islice(numbered, chunk_rows)):
            fields, lines, bad = [], [], []
            for number, text in block:
                parts = text.split()
                if len(parts) == width:
                    fields.append(parts)
                    lines.append(number)
                elif parts:
                    detail = f"{len(parts)} fields, expected {width}"
                    bad.append(BadRow(str(path), number, RowError.UNPARSEABLE, detail))
            by_column = list(zip(*fields, strict=True)) if fields else [()] * width
            table = pa.table(
                {c: pa.array(by_column[j], pa.string()) for c, j in zip(columns, wanted, strict=True)}
            )
            yield _Raw(table, row, np.asarray(lines, dtype=np.int64), tuple(bad))
            row += len(fields)


# --- conversion and validation --------------------------------------------------------------------------


def _numbers(column: pa.ChunkedArray, dates: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values of a column (NaN where empty) and a mask of cells that are not numbers.

    With ``dates``, timestamps and ISO 8601 text count too, as UTC epoch seconds (naive ones read as UTC)."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz=kind.tz)), pa.int64())
        return _to_numpy(pc.cast(micros, pa.float64())) / 1e6, np.zeros(len(column), bool)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        return _to_numpy(pc.cast(column, pa.float64())), np.zeros(len(column), bool)
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    try:
        return _to_numpy(pc.cast(text, pa.float64())), np.zeros(len(column), bool)
    except pa.ArrowInvalid:
        pass  # some cell is not a plain number: parse cell by cell
    parse = _parse_cell_date if dates else _parse_cell
    values = np.array([parse(s) for s in text.to_pylist()], dtype=np.float64)
    bad = np.isnan(values) & pc.is_valid(text).to_numpy(zero_copy_only=False)
    bad &= ~np.array([s is not None and s.lower() in ("", "nan") for s in text.to_pylist()], dtype=bool)
    return values, bad


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(column, math.nan).to_numpy(zero_copy_only=False)


def _parse_cell(text: str | None) -> float:
    try:
        return float(text) if text else math.nan
    except ValueError:
        return math.nan


def _parse_cell_date(text: str | None) -> float:
    value = _parse_cell(text)
    if math.isnan(value) and text:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return math.nan
        value = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return value


def _asset_ids(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Asset ids as an object array of str, and a mask of rows without one. Whole-number ids that a
    file stores as floats (``1.0``) read as ``"1"``, like C-MAPSS unit numbers."""
    if pa.types.is_floating(column.type):
        values = _to_numpy(column)
        empty = np.isnan(values)
        if np.all(empty | (values == np.round(values))):
            column = pa.array(np.where(empty, 0, values).astype(np.int64), mask=empty)
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    codes = pc.dictionary_encode(text)
    names = np.array([*codes.dictionary.to_pylist(), ""], dtype=object)
    index = pc.fill_null(codes.indices, len(names) - 1).to_numpy(zero_copy_only=False)
    ids = names[index]
    return ids, ids == ""


def _convert(raw: _Raw, cols: _Columns, profile: Profile, path: Path) -> Chunk:
    table = raw.table
    n = table.num_rows
    ids, no_id = _asset_ids(table.column(cols.asset_id))
    ts, unparsed = _numbers(table.column(cols.ts), dates=True)
    culprits = [(cols.ts, unparsed)]
    values = np.full((n, len(profile.signals)), np.nan)
    for name, j in cols.signals:
        values[:, j], bad = _numbers(table.column(name))
        culprits.append((name, bad))
        unparsed = unparsed | bad
    blank = np.ones(n, dtype=bool)
    for name in table.column_names:
        blank &= pc.is_null(table.column(name)).to_numpy(zero_copy_only=False)
    bad_rows = list(raw.bad)
    for row in np.flatnonzero(unparsed & ~blank):
        name = next(c for c, mask in culprits if mask[row])
        cell = table.column(name)[int(row)].as_py()
        bad_rows.append(
            BadRow(str(path), int(raw.lines[row]), RowError.UNPARSEABLE, f"{name}={cell!r} is not a number")
        )
    no_id &= ~unparsed & ~blank
    for row in np.flatnonzero(no_id):
        bad_rows.append(
            BadRow(str(path), int(raw.lines[row]), RowError.MISSING_ASSET_ID, f"empty {cols.asset_id}")
        )
    keep = ~(blank | unparsed | no_id)
    for r in check_readings(ts, values, np.arange(n), keep, profile):
        bad_rows.append(BadRow(str(path), int(raw.lines[r.index]), r.reason, r.detail))
    bad_rows.sort(key=lambda b: b.line)
    rows = np.flatnonzero(keep)
    batch = ReadingBatch(
        profile.signal_names, ids[rows].tolist(), ts[rows], values[rows], raw.first_row + rows
    )
    return Chunk(batch, tuple(bad_rows))
