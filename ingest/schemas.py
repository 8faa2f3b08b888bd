"""Message contracts (JSON on the bus, schema version 1) and their batched, validated codecs.

Every message carries ``"v": 1``. Decoding is strict: a message that is not JSON, has another
version, misses a field, carries a wrong type, a non-finite number, a signal the profile does not
know, or a value outside the profile's plausible range is rejected with a named :class:`Reason`;
the caller routes it to the dead-letter topic. Nothing raises out of a decode.

>>> from ingest.profiles import load_profile
>>> raw = encode(Reading(asset_id="m1", ts=10.0, values={"current_a": 12.5}))
>>> raw
b'{"v":1,"asset_id":"m1","ts":10.0,"values":{"current_a":12.5}}'
>>> batch, rejects = decode_readings([raw, b"oops"], load_profile("motor"))
>>> batch.asset_id, rejects[0].reason
(['m1'], <Reason.NOT_JSON: 'not_json'>)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import compress, repeat
from typing import Literal, Protocol, TypeVar

import msgspec
import numpy as np

from ingest.profiles import Profile

SCHEMA_VERSION = 1


class Reason(StrEnum):
    """Why a message was dead-lettered. Bounded set: safe as a Prometheus label."""

    NOT_JSON = "not_json"
    WRONG_VERSION = "wrong_version"
    MISSING_FIELD = "missing_field"
    INVALID_TYPE = "invalid_type"
    NON_FINITE = "non_finite"
    UNKNOWN_SIGNAL = "unknown_signal"
    OUT_OF_RANGE = "out_of_range"
    LATE = "late"


class _Message(msgspec.Struct, kw_only=True, omit_defaults=False):
    v: int = SCHEMA_VERSION


class Reading(_Message, kw_only=True):
    """One sample of an asset's signals. Key: asset id. ``ts``: event time (epoch s, or cycle)."""

    asset_id: str
    ts: float
    values: dict[str, float]


class Features(_Message, kw_only=True):
    """Feature vector of an asset at event time ``ts``. ``stale``: the asset went silent."""

    asset_id: str
    ts: float
    features: dict[str, float]
    stale: bool = False


class Driver(msgspec.Struct, kw_only=True):
    """A feature behind a risk: its value now and the asset's healthy baseline for it."""

    feature: str
    value: float
    baseline: float
    contribution: float


class Score(_Message, kw_only=True):
    """Risk of failure within the profile's horizon, and remaining useful life (``rul_unit``)."""

    asset_id: str
    ts: float
    risk: float
    rul: float
    rul_unit: str
    model_version: str


class Alert(_Message, kw_only=True):
    """An operator alert. ``alert_id`` is deterministic: the same input stream gives the same ids.

    ``reason`` says why a ``cleared`` alert cleared: the risk fell below the off-thresholds
    (``risk_low``), maintenance was recorded (``maintenance``), or a flood ended (``flood_over``)."""

    alert_id: str
    asset_id: str
    ts: float
    state: Literal["raised", "updated", "cleared"]
    priority: Literal["low", "medium", "high"]
    kind: Literal["risk", "no_data", "flood"] = "risk"
    risk: float
    rul: float
    rul_unit: str
    drivers: list[Driver] = []
    model_version: str
    reason: Literal["", "risk_low", "maintenance", "flood_over"] = ""


class MaintenanceJob(_Message, kw_only=True):
    """A planned maintenance job. ``fits`` is False when no crew slot precedes the deadline.

    ``status`` "cancelled": the job left the plan (its alert cleared), so its order must not run."""

    job_id: str
    asset_id: str
    planned_ts: float
    deadline_ts: float
    priority: Literal["low", "medium", "high"]
    risk: float
    fits: bool
    model_version: str
    status: Literal["planned", "cancelled"] = "planned"


class MaintenanceEvent(_Message, kw_only=True):
    """Maintenance performed on an asset (restores its health)."""

    asset_id: str
    ts: float
    action: str = "repair"


class DeadLetter(_Message, kw_only=True):
    """A rejected message: where it came from, why, and its original bytes (base64 in JSON)."""

    topic: str
    partition: int
    offset: int
    reason: Reason
    detail: str = ""
    raw: bytes


class _HandedOver(Protocol):
    row: int


V = TypeVar("V")
R = TypeVar("R", bound=_HandedOver)
S = TypeVar("S")
M = TypeVar("M", bound=_Message)

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    """One message as JSON bytes."""
    return _encoder.encode(message)


def encode_many(messages: Sequence[msgspec.Struct]) -> list[bytes]:
    """Messages as JSON bytes, one each."""
    enc = _encoder.encode
    return [enc(m) for m in messages]


def _strict(cls: type[M], **types: object) -> type[msgspec.Struct]:
    """The decode twin of a message type: same fields (``types`` overrides some field types), but
    ``v`` is required and must be :data:`SCHEMA_VERSION`, so msgspec checks it in the batch call."""
    types["v"] = Literal[SCHEMA_VERSION]
    fields = [
        (f.name, types.get(f.name, f.type))
        if f.name == "v" or f.required
        else (f.name, types.get(f.name, f.type), f.default)
        for f in msgspec.structs.fields(cls)
    ]
    return msgspec.defstruct(f"{cls.__name__}In", fields, kw_only=True)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Message ``index`` of a decoded batch was rejected for ``reason``."""

    index: int
    reason: Reason
    detail: str


class _Versioned(msgspec.Struct):
    v: object = None


_version_of = msgspec.json.Decoder(_Versioned)


def _has_non_finite_words(raw: bytes) -> bool:
    """Whether ``raw`` is JSON but for NaN/Infinity words (as Python's json writes them), in UTF-8."""
    seen: list[str] = []
    try:
        json.loads(raw.decode(), parse_constant=seen.append)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False
    return bool(seen)


def _classify(raw: bytes, exc: Exception) -> tuple[Reason, str]:
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return (Reason.NON_FINITE if _has_non_finite_words(raw) else Reason.NOT_JSON), text
    try:  # another version may have other fields: its version is the reason, not its fields
        v = _version_of.decode(raw).v
    except msgspec.DecodeError:
        v = None
    if type(v) is int and v != SCHEMA_VERSION:
        return Reason.WRONG_VERSION, f"schema version {v}, expected {SCHEMA_VERSION}"
    if "missing required field" in text:
        return Reason.MISSING_FIELD, text
    if "unknown field" in text:  # only a reading's values forbid unknown names: its signals
        return Reason.UNKNOWN_SIGNAL, text
    if "Expected `float`, got `null`" in text or "Number out of range" in text:
        return Reason.NON_FINITE, text
    return Reason.INVALID_TYPE, text


class _Codec:
    """Batch decoder for one decode twin: one C call for a clean batch, per message otherwise."""

    def __init__(self, strict: type[msgspec.Struct]) -> None:
        self.one = msgspec.json.Decoder(strict)
        self.many = msgspec.json.Decoder(list[strict])

    def decode(self, raws: Sequence[bytes]) -> tuple[list[tuple[int, msgspec.Struct]], list[Rejection]]:
        try:
            # A clean batch (the common case) decodes in one call over a JSON array.
            items = self.many.decode(b"[" + b",".join(raws) + b"]") if raws else []
            if len(items) == len(raws):
                return list(enumerate(items)), []
        except msgspec.DecodeError:
            pass
        pairs, rejects = [], []
        for i, raw in enumerate(raws):
            try:
                pairs.append((i, self.one.decode(raw)))
            except msgspec.DecodeError as exc:
                reason, detail = _classify(raw, exc)
                rejects.append(Rejection(i, reason, detail))
        return pairs, rejects


_CODECS: dict[type, _Codec] = {}
_READING_CODECS: dict[tuple[str, ...], _Codec] = {}


def _reading_codec(profile: Profile) -> _Codec:
    """A reading twin whose ``values`` is a struct of the profile's signals: msgspec rejects unknown
    signals and fills absent ones with NaN, so the batch needs no Python loop over signals."""
    names = profile.signal_names
    codec = _READING_CODECS.get(names)
    if codec is None:
        codec = _READING_CODECS[names] = _Codec(_strict(Reading, values=named_floats(names)))
    return codec


def named_floats(names: Sequence[str]) -> type[msgspec.Struct]:
    """A struct of the float fields ``names`` in that order: absent ones NaN, unknown ones rejected
    (``msgspec.structs.astuple`` of a decoded one is a vector in ``names`` order)."""
    fields = [(f"s{j}", float, math.nan) for j in range(len(names))]
    rename = dict(zip((f for f, *_ in fields), names, strict=True))
    return msgspec.defstruct(
        "NamedFloats", fields, rename=rename, kw_only=True, forbid_unknown_fields=True, gc=False
    )


def batch_decoder(
    cls: type[M], **types: object
) -> Callable[[Sequence[bytes]], tuple[list[tuple[int, msgspec.Struct]], list[Rejection]]]:
    """:func:`decode_many` for ``cls`` with some field types replaced, e.g. ``features=named_floats(names)``
    to decode Features straight into vectors (an unknown name is then rejected as ``unknown_signal``)."""
    return _Codec(_strict(cls, **types)).decode


def decode_many(
    raws: Sequence[bytes], cls: type[M]
) -> tuple[list[tuple[int, msgspec.Struct]], list[Rejection]]:
    """Decode a batch of ``cls`` messages: ``([(index, message)], [rejection])``.

    Messages come back as ``cls``'s decode twin (same fields and attribute names)."""
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _Codec(_strict(cls))
    return codec.decode(raws)


@dataclass(slots=True)
class ReadingBatch:
    """Readings in columns: the form every stage computes on.

    ``values[i, j]`` is signal ``signals[j]`` of reading ``i``; NaN where that reading lacks it.
    ``index[i]`` is the reading's position in the batch it was decoded from.
    """

    signals: tuple[str, ...]
    asset_id: list[str]
    ts: np.ndarray
    values: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.asset_id)

    @classmethod
    def empty(cls, signals: Sequence[str]) -> ReadingBatch:
        return cls(tuple(signals), [], np.empty(0), np.empty((0, len(signals))), np.empty(0, dtype=np.int64))

    def take(self, rows: np.ndarray | Sequence[int]) -> ReadingBatch:
        """The sub-batch of the given row positions (a boolean mask or integer positions)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            ids = list(compress(self.asset_id, rows.tolist()))
            rows = np.flatnonzero(rows)
        else:
            ids = list(map(self.asset_id.__getitem__, rows.tolist()))
        return ReadingBatch(
            self.signals,
            ids,
            self.ts[rows],
            self.values[rows],
            self.index[rows],
        )

    def readings(self) -> list[Reading]:
        """Back to messages (missing signals omitted)."""
        out = []
        for aid, ts, row in zip(self.asset_id, self.ts.tolist(), self.values.tolist(), strict=True):
            vals = {s: v for s, v in zip(self.signals, row, strict=True) if not math.isnan(v)}
            out.append(Reading(asset_id=aid, ts=ts, values=vals))
        return out


def encode_readings(batch: ReadingBatch) -> list[tuple[bytes, bytes]]:
    """A columnar batch as ``(key, value)`` messages for the bus, keyed by asset id."""
    enc = _encoder.encode
    return [(r.asset_id.encode(), enc(r)) for r in batch.readings()]


def _columnar(
    asset_ids: Sequence[str],
    ts: np.ndarray,
    names: Sequence[str],
    values: np.ndarray,
    field: str,
    tail: bytes,
) -> list[tuple[bytes, bytes]]:
    """Messages ``{"v":..,"asset_id":..,"ts":..,"<field>":{name: value, ...}<tail>`` as msgspec writes
    them, keyed by asset id: floats are formatted a column at a time and each message is joined from
    its parts in compiled code (:mod:`ingest.jsonrows`); each distinct asset id is encoded once."""
    from ingest.jsonrows import join_rows  # numba: loaded on the first batch, not with the schemas

    distinct = list(dict.fromkeys(asset_ids))
    head = b'{"v":%d,"asset_id":' % SCHEMA_VERSION
    heads = [head + _encoder.encode(a) + b',"ts":' for a in distinct]
    index = {a: i for i, a in enumerate(distinct)}
    head_of = np.fromiter(map(index.__getitem__, asset_ids), dtype=np.int64, count=len(asset_ids))
    opening = b',"' + field.encode() + b'":{'
    separators = [b""]
    separators += [
        (opening if j == 0 else b",") + _encoder.encode(name) + b":" for j, name in enumerate(names)
    ]
    separators.append((b"}" if names else opening + b"}") + tail)
    columns = [np.asarray(ts, np.float64), *(values[:, j] for j in range(len(names)))]
    messages = join_rows(heads, head_of, columns, separators)
    keys = [a.encode() for a in distinct]
    return list(zip(map(keys.__getitem__, head_of.tolist()), messages, strict=True))


def encode_readings_columnar(batch: ReadingBatch) -> list[tuple[bytes, bytes]]:
    """:func:`encode_readings`, byte for byte, about 3x faster (see :func:`_columnar`). Rows lacking
    a signal fall back to :func:`encode_readings`, which omits it."""
    if len(batch) == 0:
        return []
    values = np.asarray(batch.values, dtype=np.float64)
    out = _columnar(batch.asset_id, batch.ts, batch.signals, values, "values", b"}")
    gaps = np.flatnonzero(np.isnan(values).any(axis=1))
    if len(gaps):
        for row, pair in zip(gaps.tolist(), encode_readings(batch.take(gaps)), strict=True):
            out[row] = pair
    return out


def encode_features(
    asset_ids: Sequence[str], ts: np.ndarray, names: Sequence[str], values: np.ndarray
) -> list[tuple[bytes, bytes]]:
    """Feature vectors (``values[i]`` of ``asset_ids[i]`` at ``ts[i]``, columns ``names``) as
    :class:`Features` ``(key, value)`` messages keyed by asset id, byte for byte as :func:`encode`
    writes them, a column at a time. Non-finite features are left out of their message (undefined:
    the scorer fills them)."""
    if len(asset_ids) == 0:
        return []
    values = np.asarray(values, dtype=np.float64)
    out = _columnar(asset_ids, ts, names, values, "features", b',"stale":false}')
    for row in np.flatnonzero(~np.isfinite(values).all(axis=1)).tolist():
        feats = {k: v for k, v in zip(names, values[row].tolist(), strict=True) if math.isfinite(v)}
        out[row] = (out[row][0], encode(Features(asset_id=asset_ids[row], ts=float(ts[row]), features=feats)))
    return out


@dataclass(frozen=True, slots=True, eq=False)
class FeatureBlock:
    """Feature messages in columns, for a stage in the same process: the in-process bus can carry
    :class:`FeatureRow` values (:meth:`rows`) instead of JSON, so neither side formats or parses 41
    floats per vector. Row ``i`` is the :class:`Features` message ``asset_id[i]`` at ``ts[i]`` with
    the finite ``values[i]`` (columns ``names``), or a stale marker (no features) when ``stale``;
    :meth:`messages` gives the JSON, byte for byte as :func:`encode_features` writes it."""

    asset_id: Sequence[str]
    ts: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray  # (n, len(names)) float64
    stale: bool = False

    def rows(self) -> list[tuple[bytes, FeatureRow]]:
        """Every row as a ``(key, FeatureRow)`` bus message."""
        return _keyed(self.asset_id, list(map(FeatureRow, repeat(self), range(len(self.ts)))))

    def messages(self) -> list[tuple[bytes, bytes]]:
        """Every row as a ``(key, JSON)`` bus message."""
        if not self.stale:
            return encode_features(self.asset_id, self.ts, self.names, self.values)
        markers = (
            Features(asset_id=a, ts=t, features={}, stale=True)
            for a, t in zip(self.asset_id, self.ts.tolist(), strict=True)
        )
        return _keyed(self.asset_id, encode_many(list(markers)))


class FeatureRow(msgspec.Struct, frozen=True, gc=False):
    """Row ``row`` of ``block``: a bus value in place of that row's JSON. ``gc=False`` (a block never
    refers back to its rows, so they form no cycle): a million of them cost the collector nothing."""

    block: FeatureBlock
    row: int

    def message(self) -> bytes:
        """This row's JSON."""
        b, i = self.block, self.row
        one = FeatureBlock(b.asset_id[i : i + 1], b.ts[i : i + 1], b.names, b.values[i : i + 1], b.stale)
        return one.messages()[0][1]


# Score with positional fields (same names, order and JSON): built and encoded by map() in C, ~3x
# cheaper per message than keyword construction in a Python loop.
_ScorePositional = msgspec.defstruct(
    "ScorePositional", [(f.name, f.type) for f in msgspec.structs.fields(Score)]
)


@dataclass(frozen=True, slots=True, eq=False)
class ScoreBlock:
    """Score messages in columns, as :class:`FeatureBlock` is for features: a reader in the same
    process (offline scoring, the demo's console) takes :class:`ScoreRow` values instead of JSON.
    Row ``i`` is the :class:`Score` of ``asset_id[i]`` at ``ts[i]``."""

    asset_id: Sequence[str]
    ts: np.ndarray
    risk: np.ndarray
    rul: np.ndarray
    rul_unit: str
    model_version: str

    def rows(self) -> list[tuple[bytes, ScoreRow]]:
        """Every row as a ``(key, ScoreRow)`` bus message."""
        return _keyed(self.asset_id, list(map(ScoreRow, repeat(self), range(len(self.ts)))))

    def messages(self) -> list[tuple[bytes, bytes]]:
        """Every row as a ``(key, JSON)`` bus message, byte for byte as :func:`encode` writes a Score."""
        n = len(self.asset_id)
        scores = map(
            _ScorePositional,
            repeat(SCHEMA_VERSION, n),
            self.asset_id,
            self.ts.tolist(),
            self.risk.tolist(),
            self.rul.tolist(),
            repeat(self.rul_unit, n),
            repeat(self.model_version, n),
        )
        return _keyed(self.asset_id, list(map(_encoder.encode, scores)))


class ScoreRow(msgspec.Struct, frozen=True, gc=False):
    """Row ``row`` of ``block``: a bus value in place of that score's JSON. See :class:`FeatureRow`."""

    block: ScoreBlock
    row: int

    def message(self) -> bytes:
        """This score's JSON."""
        b, i = self.block, slice(self.row, self.row + 1)
        return ScoreBlock(
            b.asset_id[i], b.ts[i], b.risk[i], b.rul[i], b.rul_unit, b.model_version
        ).messages()[0][1]


@dataclass(frozen=True, slots=True)
class ScoreColumns:
    """Scores read off the bus, in columns (:func:`score_columns`)."""

    asset_id: list[str]
    ts: np.ndarray
    risk: np.ndarray
    rul: np.ndarray
    model_version: list[str]


def score_columns(values: Sequence[bytes | ScoreRow]) -> ScoreColumns:
    """The scores among bus ``values`` (JSON or :class:`ScoreRow`) as columns, in order; JSON that
    is not a valid Score is left out."""
    if values and all(type(v) is ScoreRow for v in values):
        n = len(values)
        ts, risk, rul = np.empty(n), np.empty(n), np.empty(n)
        groups = by_source(values, lambda v: v.block)
        for block, at, rows in groups:
            ts[at], risk[at], rul[at] = block.ts[rows], block.risk[rows], block.rul[rows]
        asset_id = ids_of_groups(groups, lambda block: block.asset_id, n)
        return ScoreColumns(asset_id, ts, risk, rul, [v.block.model_version for v in values])
    scores = [s for _, s in decode_many(list(map(raw, values)), Score)[0]]
    return ScoreColumns(
        [s.asset_id for s in scores],
        np.array([s.ts for s in scores], dtype=np.float64),
        np.array([s.risk for s in scores], dtype=np.float64),
        np.array([s.rul for s in scores], dtype=np.float64),
        [s.model_version for s in scores],
    )


def _keyed(asset_ids: Sequence[str], values: list[V]) -> list[tuple[bytes, V]]:
    """``values`` as bus messages keyed by their asset id (each distinct id encoded once)."""
    keys = {a: a.encode() for a in set(asset_ids)}
    return list(zip(map(keys.__getitem__, asset_ids), values, strict=True))


class ReadingRow(msgspec.Struct, frozen=True, gc=False):
    """Row ``row`` of ``batch``: a bus value in place of that reading's JSON, for a feature worker in
    the same process (a replay scoring a log offline). See :class:`FeatureRow`."""

    batch: ReadingBatch
    row: int

    def message(self) -> bytes:
        """This reading's JSON, as :func:`encode_readings_columnar` writes it."""
        return encode_readings_columnar(self.batch.take([self.row]))[0][1]


def raw(value: bytes | FeatureRow | ReadingRow | ScoreRow) -> bytes:
    """A bus value's bytes: a row handed over in one process gives its JSON."""
    return value if type(value) is bytes else value.message()


def reading_rows(batch: ReadingBatch) -> list[tuple[bytes, ReadingRow]]:
    """Every reading of ``batch`` as a ``(key, ReadingRow)`` bus message."""
    return _keyed(batch.asset_id, list(map(ReadingRow, repeat(batch), range(len(batch)))))


def by_source(refs: Sequence[R], source: Callable[[R], S]) -> list[tuple[S, list[int], list[int]]]:
    """Handed-over rows (``FeatureRow``, ``ReadingRow``, ``ScoreRow``) by the batch they come from:
    each batch, the positions of its rows among ``refs``, and their row numbers in it."""
    groups: dict[int, tuple[S, list[int], list[int]]] = {}
    last = group = None
    for i, ref in enumerate(refs):
        src = source(ref)
        if src is not last:  # rows come in runs from one batch: look the batch up once a run
            group = groups.get(id(src))
            if group is None:
                group = groups[id(src)] = (src, [], [])
            last = src
        group[1].append(i)
        group[2].append(ref.row)
    return list(groups.values())


def ids_of_groups(
    groups: list[tuple[S, list[int], list[int]]], ids: Callable[[S], Sequence[str]], n: int
) -> list[str]:
    """The asset id of each of ``n`` handed-over rows, from their :func:`by_source` groups."""
    if len(groups) == 1:  # one source batch (the usual case): its rows in order
        source, _, rows = groups[0]
        return list(map(ids(source).__getitem__, rows))
    out = [""] * n
    for source, at, rows in groups:
        of = ids(source)
        for a, r in zip(at, rows, strict=True):
            out[a] = of[r]
    return out


def decode_reading_rows(
    refs: Sequence[ReadingRow], profile: Profile
) -> tuple[ReadingBatch, list[Rejection]] | None:
    """:func:`decode_readings` of handed-over readings, without their JSON: the same batch and
    rejections. None when their JSON would decode otherwise than their columns (other signals than
    the profile's, or an infinite value, which JSON writes as null): decode that, then."""
    n = len(refs)
    values, ts = np.empty((n, len(profile.signals))), np.empty(n)
    groups = by_source(refs, lambda ref: ref.batch)
    for batch, at, rows in groups:
        if tuple(batch.signals) != tuple(profile.signal_names):
            return None
        values[at], ts[at] = batch.values[rows], batch.ts[rows]
    if np.isinf(values).any():
        return None
    asset_id = ids_of_groups(groups, lambda batch: batch.asset_id, n)
    return _checked(asset_id, ts, values, np.arange(n, dtype=np.int64), [], profile)


def check_readings(
    ts: np.ndarray, values: np.ndarray, index: np.ndarray, keep: np.ndarray, profile: Profile
) -> list[Rejection]:
    """Vectorised checks of columnar readings: ``ts`` finite, values within the profile's plausible range.

    Shared by the bus decoder and the log readers. Rows already cleared in ``keep`` are not checked;
    rejected rows are cleared in ``keep`` (in place) and returned, named by ``index``.
    """
    rejects = []
    finite = np.isfinite(ts)
    bad = keep & ~finite
    for row in np.flatnonzero(bad):
        rejects.append(Rejection(int(index[row]), Reason.NON_FINITE, "ts is not finite"))
    keep &= finite
    with np.errstate(invalid="ignore"):
        low = values < profile.lower
        high = values > profile.upper
    out = keep & (low | high).any(axis=1)
    names = profile.signal_names
    for row in np.flatnonzero(out):
        j = int(np.flatnonzero(low[row] | high[row])[0])
        rejects.append(
            Rejection(
                int(index[row]),
                Reason.OUT_OF_RANGE,
                f"{names[j]}={float(values[row, j])!r} outside [{profile.lower[j]}, {profile.upper[j]}]",
            )
        )
    keep &= ~out
    return rejects


def decode_readings(raws: Sequence[bytes], profile: Profile) -> tuple[ReadingBatch, list[Rejection]]:
    """Decode and validate readings against ``profile`` into one columnar batch.

    Every input is either a row of the batch (``batch.index``) or a :class:`Rejection`.
    """
    pairs, rejects = _reading_codec(profile).decode(raws)
    n = len(pairs)
    index = np.fromiter((i for i, _ in pairs), np.int64, n)
    messages = [m for _, m in pairs]
    asset_id = [m.asset_id for m in messages]
    ts = np.fromiter((m.ts for m in messages), np.float64, n)
    astuple = msgspec.structs.astuple
    values = np.array([astuple(m.values) for m in messages], dtype=np.float64)
    values = values.reshape(n, len(profile.signals))
    return _checked(asset_id, ts, values, index, rejects, profile)


def _checked(
    asset_id: list[str],
    ts: np.ndarray,
    values: np.ndarray,
    index: np.ndarray,
    rejects: list[Rejection],
    profile: Profile,
) -> tuple[ReadingBatch, list[Rejection]]:
    """Decoded readings through :func:`check_readings`: the batch of those that pass, and every
    rejection (``rejects`` from decoding, and the checks') in input order."""
    keep = np.ones(len(ts), dtype=bool)
    rejects.extend(check_readings(ts, values, index, keep, profile))
    batch = ReadingBatch(profile.signal_names, asset_id, ts, values, index)
    if not keep.all():
        batch = batch.take(keep)
    rejects.sort(key=lambda r: r.index)
    return batch, rejects
