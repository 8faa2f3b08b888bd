"""Alert policy: on-delay, hysteresis, dedup, priorities, clears, no-data, flood, deterministic ids."""

from __future__ import annotations

import pytest

from ingest.profiles import load_profile
from scoring.config import AlertConfig
from scoring.policy import FLEET, AlertPolicy

CFG = AlertConfig(
    on_risk=0.7,
    off_risk=0.5,
    on_rul=48,
    off_rul=72,
    on_delay=3,
    high_risk=0.85,
    high_rul=24,
    medium_risk=0.75,
    medium_rul=36,
    flood_limit=3,
    flood_window=600,
)


def feed(policy: AlertPolicy, rows: list[tuple], version: str = "v1") -> list:
    """rows: (asset, ts, risk, rul[, stale]) -> the alerts, as (state, asset, priority, kind)."""
    ids = [r[0] for r in rows]
    out = policy.observe(
        ids,
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] if len(r) > 4 else False for r in rows],
        version,
    )
    return [a for _, a in out]


def brief(alerts) -> list[tuple]:
    return [(a.state, a.asset_id, a.priority, a.kind) for a in alerts]


def test_on_delay_needs_k_consecutive_scores_above():
    p = AlertPolicy(CFG, "h")
    # two above, one below resets the count, then three above raise at the third.
    assert feed(p, [("m1", 1, 0.8, 100), ("m1", 2, 0.8, 100), ("m1", 3, 0.3, 100)]) == []
    assert feed(p, [("m1", 4, 0.8, 100), ("m1", 5, 0.8, 100)]) == []
    alerts = feed(p, [("m1", 6, 0.8, 100)])
    assert brief(alerts) == [("raised", "m1", "medium", "risk")]
    assert alerts[0].ts == 6 and alerts[0].model_version == "v1" and alerts[0].rul_unit == "h"


def test_low_rul_alone_raises_with_priority_from_rul():
    p = AlertPolicy(CFG, "h")
    alerts = feed(p, [("m1", t, 0.1, 20.0) for t in range(3)])
    assert brief(alerts) == [("raised", "m1", "high", "risk")]


def test_hysteresis_holds_between_off_and_on_then_clears_below_off():
    p = AlertPolicy(CFG, "h")
    feed(p, [("m1", t, 0.72, 100) for t in range(3)])
    # Between off (0.5) and on (0.7): stays active, no new alert, no clear.
    assert feed(p, [("m1", t, x, 100) for t, x in [(3, 0.6), (4, 0.55), (5, 0.69), (6, 0.51)]]) == []
    assert "m1" in p.active()
    # RUL still short keeps it open even with a low risk.
    assert feed(p, [("m1", 7, 0.2, 60)]) == []
    alerts = feed(p, [("m1", 8, 0.49, 100)])
    assert brief(alerts) == [("cleared", "m1", "low", "risk")] and alerts[0].reason == "risk_low"
    assert p.active() == {}


def test_one_alert_per_asset_updates_only_on_priority_change():
    p = AlertPolicy(CFG, "h")
    raised = feed(p, [("m1", t, 0.72, 100) for t in range(3)])
    assert brief(raised) == [("raised", "m1", "low", "risk")]
    # Same priority again and again: nothing.
    assert feed(p, [("m1", t, 0.73, 100) for t in range(3, 10)]) == []
    # Escalation is immediate and keeps the id.
    up = feed(p, [("m1", 10, 0.9, 100)])
    assert brief(up) == [("updated", "m1", "high", "risk")]
    assert up[0].alert_id == raised[0].alert_id
    # De-escalation needs on_delay consecutive lower scores (no chatter at the boundary).
    assert feed(p, [("m1", 11, 0.72, 100), ("m1", 12, 0.72, 100), ("m1", 13, 0.9, 100)]) == []
    down = feed(p, [("m1", t, 0.76, 100) for t in (14, 15, 16)])
    assert brief(down) == [("updated", "m1", "medium", "risk")]


def test_maintenance_clears_and_restarts_on_delay():
    p = AlertPolicy(CFG, "h")
    raised = feed(p, [("m1", t, 0.9, 100) for t in range(3)])
    cleared = [a for _, a in p.maintenance("m1", 5.0, "v1")]
    assert brief(cleared) == [("cleared", "m1", "high", "risk")]
    assert cleared[0].alert_id == raised[0].alert_id and cleared[0].ts == 5.0
    assert cleared[0].reason == "maintenance", "operators see it cleared because of the repair"
    assert p.maintenance("m1", 6.0, "v1") == []  # nothing open: nothing to clear
    assert feed(p, [("m1", 7, 0.9, 100), ("m1", 8, 0.9, 100)]) == []
    again = feed(p, [("m1", 9, 0.9, 100)])
    assert brief(again) == [("raised", "m1", "high", "risk")]
    assert again[0].alert_id != raised[0].alert_id


def test_stale_raises_no_data_once_and_fresh_data_clears_it():
    p = AlertPolicy(CFG, "h")
    a = feed(p, [("m1", 1, 0.1, 500, True), ("m1", 2, 0.1, 500, True)])
    assert brief(a) == [("raised", "m1", "medium", "no_data")]
    assert brief(feed(p, [("m1", 3, 0.1, 500)])) == [("cleared", "m1", "medium", "no_data")]


def test_silent_asset_with_risk_alert_turns_no_data_then_back():
    p = AlertPolicy(CFG, "h")
    raised = feed(p, [("m1", t, 0.9, 100) for t in range(3)])
    silent = feed(p, [("m1", 4, 0.9, 100, True)])
    assert brief(silent) == [("updated", "m1", "high", "no_data")]
    back = feed(p, [("m1", 5, 0.8, 100)])
    assert brief(back) == [("updated", "m1", "medium", "risk")]
    assert {x.alert_id for x in raised + silent + back} == {raised[0].alert_id}


def test_flood_raises_one_summary_suppresses_then_releases():
    p = AlertPolicy(CFG, "h")  # flood_limit=3 within 600 s
    rows = [(f"m{j}", 100 + j, 0.9, 100) for j in range(6) for _ in range(3)]
    alerts = feed(p, rows)
    assert brief(alerts) == [("raised", f"m{j}", "high", "risk") for j in range(3)] + [
        ("raised", FLEET, "high", "flood")
    ]
    assert p.suppressed_total == 3 and p.floods_total == 1 and len(p.active()) == 6
    # Suppressed alerts that clear during the flood never page.
    assert feed(p, [("m5", 200, 0.1, 500)]) == []
    # Event time moves past the window: the flood clears; still-active suppressed alerts are published.
    later = feed(p, [("m0", 800, 0.9, 100)])
    assert brief(later) == [
        ("cleared", FLEET, "high", "flood"),
        ("raised", "m3", "high", "risk"),
        ("raised", "m4", "high", "risk"),
    ]
    assert [a.reason for a in later] == ["flood_over", "", ""]
    assert p.flood is None


def test_alert_ids_are_deterministic_and_version_bound():
    rows = [(f"m{j}", t, 0.9 if t % 7 else 0.1, 100) for t in range(40) for j in range(4)]
    runs = []
    for _ in range(2):
        p = AlertPolicy(CFG, "h")
        runs.append([(a.alert_id, a.state) for a in feed(p, rows[:50]) + feed(p, rows[50:])])
    assert runs[0] == runs[1] and runs[0]
    p = AlertPolicy(CFG, "h")
    other = [(a.alert_id, a.state) for a in feed(p, rows, version="v2")]
    assert [s for _, s in other] == [s for _, s in runs[0]]
    assert not {i for i, _ in other} & {i for i, _ in runs[0]}


def test_profiles_carry_valid_alert_sections():
    for name in ("motor", "cmapss"):
        cfg = AlertConfig.from_profile(load_profile(name))
        assert cfg.off_risk < cfg.on_risk and cfg.on_rul < cfg.off_rul
    with pytest.raises(ValueError, match="unknown keys"):
        AlertConfig.from_section({"on_risc": 0.5})
    with pytest.raises(ValueError, match="off_risk < on_risk"):
        AlertConfig(on_risk=0.4, off_risk=0.5)


def _ids_after_clear(alerts) -> list[str]:
    """Alert ids that show up again in any message after the message that cleared them."""
    cleared: set[str] = set()
    again = []
    for a in alerts:
        if a.alert_id in cleared:
            again.append(a.alert_id)
        if a.state == "cleared":
            cleared.add(a.alert_id)
    return again


def test_maintenance_arriving_after_newer_scores_clears_once_in_time_order():
    """The demo's sequence: scores computed after a repair (10.6 h, 10.67 h) reach the scorer before the
    maintenance event (10.52 h) itself; then scores from before the repair still trickle in."""
    h = 3600.0
    p = AlertPolicy(CFG, "h")
    alerts = feed(p, [("m3", t * h, 0.8, 100) for t in (10.0, 10.1, 10.2)])
    alerts += feed(p, [("m3", 10.6 * h, 0.9, 100), ("m3", 10.67 * h, 0.9, 100)])
    assert brief(alerts) == [("raised", "m3", "medium", "risk"), ("updated", "m3", "high", "risk")]
    cleared = [a for _, a in p.maintenance("m3", 10.52 * h, "v1")]
    assert brief(cleared) == [("cleared", "m3", "high", "risk")]
    assert cleared[0].ts == 10.67 * h  # never stamped before the update it closes
    # Pre-repair scores delivered late, and redelivered post-repair ones, say nothing new.
    assert feed(p, [("m3", t * h, 0.9, 100) for t in (10.4, 10.5, 10.6, 10.67)]) == []
    # Still failing after the repair: a new alert under a new id, and the cleared one stays closed.
    later = feed(p, [("m3", t * h, 0.9, 100) for t in (10.7, 10.8, 10.9, 11.0)])
    assert brief(later) == [("raised", "m3", "high", "risk")]
    everything = alerts + cleared + later
    assert later[0].alert_id != alerts[0].alert_id and not _ids_after_clear(everything)
    for aid in {a.alert_id for a in everything}:
        stamps = [a.ts for a in everything if a.alert_id == aid]
        assert stamps == sorted(stamps)


def test_scores_older_than_a_no_data_marker_neither_clear_nor_reraise_it():
    """A stale marker carries its partition's watermark, newer than the asset's last scores still in
    flight: those must not clear the no-data alert (a clear stamped before its raise), and a second
    marker at the same watermark must not raise the same id again."""
    p = AlertPolicy(CFG, "h")
    raised = feed(p, [("m1", 500, 0.1, 500, True)])
    assert brief(raised) == [("raised", "m1", "medium", "no_data")]
    assert feed(p, [("m1", 420, 0.1, 500), ("m1", 440, 0.1, 500)]) == []
    assert feed(p, [("m1", 500, 0.1, 500, True)]) == []
    back = feed(p, [("m1", 560, 0.1, 500)])
    assert brief(back) == [("cleared", "m1", "medium", "no_data")] and back[0].ts == 560
    # Silent again later: a new alert, a new id; redelivered old markers change nothing.
    assert feed(p, [("m1", 500, 0.1, 500, True)]) == []
    again = feed(p, [("m1", 900, 0.1, 500, True)])
    assert brief(again) == [("raised", "m1", "medium", "no_data")]
    assert not _ids_after_clear(raised + back + again)


def test_a_models_operating_point_moves_the_thresholds_and_keeps_them_nested():
    low = CFG.at_operating_point(0.3)
    assert (low.on_risk, low.medium_risk, low.high_risk) == (0.3, CFG.medium_risk, CFG.high_risk)
    assert low.off_risk == pytest.approx(0.3 * CFG.off_risk / CFG.on_risk)
    high = CFG.at_operating_point(0.9)  # above medium and high: every alert is high priority
    assert (high.on_risk, high.medium_risk, high.high_risk) == (0.9, 0.9, 0.9)
