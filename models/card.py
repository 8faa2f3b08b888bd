"""The model card: what a registered version is, how it was trained, and how well it did (JSON).

Written beside every version as ``card.json``: parameters, metrics, SHA-256 of the data files, library
versions, training time, the feature spec and its fingerprint, and the split's asset ids.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

CARD_FILE = "card.json"
LIBRARIES = ("numpy", "pandas", "scikit-learn", "tensorflow", "keras", "onnx", "onnxruntime", "skl2onnx")


@dataclass(frozen=True)
class ModelCard:
    profile: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    data_files: dict[str, str]  # path -> sha256
    feature_spec: dict[str, Any]
    fingerprint: str
    split: dict[str, Any]
    training_time_s: float
    libraries: dict[str, str] = field(default_factory=lambda: library_versions())
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    version: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_jsonable) + "\n"

    def write(self, path: Path, version: str) -> None:
        data = asdict(self) | {"version": version}
        path.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        return cls(**json.loads(path.read_text()))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_data(path: Path) -> dict[str, str]:
    """SHA-256 of a data file, or of every file in a log directory."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): sha256_file(p) for p in files}
