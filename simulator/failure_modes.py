"""Failure modes: how long a motor lives after a repair, how it dies, and what its sensors show meanwhile.

A life (the time between two repairs) is drawn at once: the mode, the running time until the
precursor starts (Weibull), how long the precursor grows until failure (log-normal) and the mode's
amplitudes. The precursor's severity ``s`` rises linearly in running time from 0 at onset to 1 at
failure; every mode acts on the signals through the same few effect terms, so the hot path has no
per-mode branching:

========== ===================================================================== ==================
mode       precursor (s: 0 at onset -> 1 at failure)                              amplitudes drawn
========== ===================================================================== ==================
bearing    vibration x exp(g s) (exponential growth, noisier); temperature rises   g = ln(6..14),
           late (+dT s^4)                                                         dT 5..15 degC
insulation temperature rise at a given load x (1 + k s^1.5): overheating drift    k 0.4..0.8
electrical current x (1 + c s^2) and erratic (noise sd + e s); vibration x 1.2..1.6  c 0.1..0.3
sudden     none: the motor stops without warning                                   -
========== ===================================================================== ==================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.config import MODES, FleetConfig

SUDDEN = MODES.index("sudden")

# Columns of a life's effect amplitudes (Lives.amp).
VIB_GAIN, VIB_NOISE, TEMP_LATE, RISE_GAIN, CUR_RISE, CUR_NOISE = range(6)
N_AMPS = 6

# Noise scales of a healthy motor, which the precursor noise amplitudes add to.
VIB_SD = 0.05  # log-normal sd of vibration
CUR_SD = 0.01  # relative sd of current


@dataclass(slots=True)
class Lives:
    """Lives drawn for ``len(mode)`` motors; times in ticks of running."""

    mode: np.ndarray  # int8 index into MODES
    onset: np.ndarray  # int64: running ticks after repair when the precursor starts (= fail for sudden)
    fail: np.ndarray  # int64: running ticks after repair when the motor fails
    repair: np.ndarray  # int64: calendar ticks a failed motor stays down before its corrective repair
    amp: np.ndarray  # (n, N_AMPS) float64 effect amplitudes
    age: np.ndarray  # int64: running ticks already lived (0 after a repair; random at the start)


def draw_lives(config: FleetConfig, rng: np.random.Generator, n: int, initial: bool) -> Lives:
    """Draw ``n`` lives. ``initial``: the fleet is already in service, so each motor starts at a
    uniformly random point of its life (some are already degrading at the start)."""
    ticks_per_h = 3600.0 / config.interval_s
    weights = np.asarray(config.mode_weights, dtype=np.float64)
    mode = rng.choice(len(MODES), size=n, p=weights / weights.sum()).astype(np.int8)
    scale_h = config.mean_onset_days * 24.0 / math.gamma(1.0 + 1.0 / config.onset_shape)
    onset_h = scale_h * rng.weibull(config.onset_shape, n)
    median_h = config.degradation_days * 24.0
    grow_h = np.clip(median_h * rng.lognormal(0.0, 0.45, n), 0.35 * median_h, 3.5 * median_h)
    fail = np.maximum(1, np.round((onset_h + grow_h) * ticks_per_h)).astype(np.int64)
    onset = np.round(onset_h * ticks_per_h).astype(np.int64)
    onset = np.where(mode == SUDDEN, fail, np.minimum(onset, fail - 1))
    lo, hi = config.repair_hours
    repair = np.maximum(1, np.round(rng.uniform(lo, hi, n) * ticks_per_h)).astype(np.int64)
    u = rng.random((n, 3))
    amp = np.zeros((n, N_AMPS))
    bearing, insulation, electrical = (
        mode == MODES.index(m) for m in ("bearing", "insulation", "electrical")
    )
    amp[bearing, VIB_GAIN] = np.log(6.0 + 8.0 * u[bearing, 0])
    amp[bearing, VIB_NOISE] = 0.1 + 0.2 * u[bearing, 1]
    amp[bearing, TEMP_LATE] = 5.0 + 10.0 * u[bearing, 2]
    amp[insulation, RISE_GAIN] = 0.4 + 0.4 * u[insulation, 0]
    amp[insulation, CUR_RISE] = 0.03 * u[insulation, 1]
    amp[electrical, CUR_RISE] = 0.1 + 0.2 * u[electrical, 0]
    amp[electrical, CUR_NOISE] = 0.03 + 0.05 * u[electrical, 1]
    amp[electrical, VIB_GAIN] = np.log(1.2 + 0.4 * u[electrical, 2])
    age = (rng.random(n) * fail).astype(np.int64) if initial else np.zeros(n, dtype=np.int64)
    return Lives(mode, onset, fail, repair, amp, age)


@dataclass(slots=True)
class Effects:
    """What degradation does to each reading of a block, shape (ticks, motors) each.

    ``vib_factor`` multiplies vibration, ``vib_sd`` is its log-normal noise; ``rise_factor`` multiplies
    the temperature rise from load, ``temp_add`` adds friction heat while running; ``cur_factor``
    multiplies current and ``cur_sd`` is its relative noise.
    """

    vib_factor: np.ndarray
    vib_sd: np.ndarray
    rise_factor: np.ndarray
    temp_add: np.ndarray
    cur_factor: np.ndarray
    cur_sd: np.ndarray

    @classmethod
    def healthy(cls, shape: tuple[int, int]) -> Effects:
        return cls(
            np.ones(shape), np.full(shape, VIB_SD), np.ones(shape), np.zeros(shape), np.ones(shape),
            np.full(shape, CUR_SD),
        )  # fmt: skip

    def set(self, rows: slice, cols: np.ndarray, severity: np.ndarray, amp: np.ndarray) -> None:
        """Effects at ``severity`` (rows x cols) of motors ``cols``, amplitudes ``amp`` (cols x N_AMPS)."""
        s = severity
        self.vib_factor[rows, cols] = np.exp(amp[:, VIB_GAIN] * s)
        self.vib_sd[rows, cols] = VIB_SD + amp[:, VIB_NOISE] * s
        self.rise_factor[rows, cols] = 1.0 + amp[:, RISE_GAIN] * s * np.sqrt(s)
        s2 = s * s
        self.temp_add[rows, cols] = amp[:, TEMP_LATE] * s2 * s2
        self.cur_factor[rows, cols] = 1.0 + amp[:, CUR_RISE] * s2
        self.cur_sd[rows, cols] = CUR_SD + amp[:, CUR_NOISE] * s
