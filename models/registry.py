"""The model registry: a directory of versions ``v0001``, ``v0002``, ... and a ``latest`` pointer.

Each version directory holds the bundle (ONNX graphs, arrays, ``model.json`` with the feature spec) and
``card.json``. A version is written into a hidden temporary directory and renamed into place, so a reader
never sees half a version; ``latest`` is a one-line file replaced atomically (``os.replace``), so the
scorer can poll :meth:`Registry.latest_version` cheaply for hot reload.

>>> import tempfile
>>> Registry(Path(tempfile.mkdtemp())).latest_version() is None
True
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from models.card import CARD_FILE, ModelCard
from models.inference import META_FILE, ModelBundle, Predictor

if TYPE_CHECKING:
    from features.spec import FeatureSpec

LATEST = "latest"
_VERSION = re.compile(r"^v(\d{4,})$")


class SpecMismatchError(ValueError):
    """The running feature spec differs from the one a model was trained with."""


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Registered versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if p.is_dir() and _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def latest_version(self) -> str | None:
        try:
            text = (self.root / LATEST).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def pinned(self, version: str) -> Registry:
        """This registry with ``version`` as its latest, whatever is registered after: for processes
        that must all load one model."""
        return _Pinned(self.root, version)

    def path(self, version: str) -> Path:
        return self.root / version

    def card(self, version: str | None = None) -> ModelCard:
        return ModelCard.read(self.path(self._resolve(version)) / CARD_FILE)

    def save(self, bundle: ModelBundle, card: ModelCard) -> str:
        """Register a new version and point ``latest`` at it. Returns the version name."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            bundle.write(tmp)
            while True:
                existing = self.versions()
                version = f"v{(int(existing[-1][1:]) + 1) if existing else 1:04d}"
                card.write(tmp / CARD_FILE, version)
                try:
                    os.rename(tmp, self.path(version))  # fails if another writer took the name
                    break
                except OSError:
                    if not self.path(version).exists():
                        raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with tempfile.NamedTemporaryFile("w", dir=self.root, prefix=".latest-", delete=False) as pointer:
            pointer.write(version + "\n")
        os.replace(pointer.name, self.root / LATEST)
        return version

    def load(
        self, version: str | None = None, spec: FeatureSpec | None = None, threads: int = 1
    ) -> Predictor:
        """A :class:`Predictor` for ``version`` (default: latest), refusing a feature spec mismatch."""
        version = self._resolve(version)
        directory = self.path(version)
        if not (directory / META_FILE).is_file():
            raise FileNotFoundError(f"model registry {self.root}: no version {version}")
        bundle = ModelBundle.read(directory)
        if spec is not None and spec.fingerprint() != bundle.fingerprint:
            raise SpecMismatchError(
                f"model {version} in {self.root} was trained with feature spec {bundle.fingerprint}, "
                f"but the running spec is {spec.fingerprint()}: retrain (motorwatch train) or run the "
                "feature spec the model was trained with"
            )
        return Predictor(bundle, version=version, threads=threads)

    def _resolve(self, version: str | None) -> str:
        if version is None:
            version = self.latest_version()
            if version is None:
                raise FileNotFoundError(f"model registry {self.root} is empty: run `motorwatch train` first")
        return version


class _Pinned(Registry):
    def __init__(self, root: Path, version: str) -> None:
        super().__init__(root)
        self.version = version

    def latest_version(self) -> str | None:
        return self.version
