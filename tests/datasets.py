"""Where the tests find NASA's C-MAPSS FD001 training log: ``shared/`` beside the repository (as on
a developer's machine and in CI), else ``/work/shared``. Missing, the tests that need it fail loud."""

from __future__ import annotations

from pathlib import Path

_RELATIVE = Path("shared") / "data" / "cmapss" / "train_FD001.txt"
_CANDIDATES = (Path(__file__).resolve().parents[2] / _RELATIVE, Path("/work") / _RELATIVE)

CMAPSS_FD001 = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])
