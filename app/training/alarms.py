"""Tool-use collapse alarms for an RL job, read from its metrics stream (pure functions).

A curiosity-driven run can fall into the learning trap: rollouts stop calling operations (RaPR near
zero) and the bonus no longer pulls them back, or every group gets the same reward and no step has a
gradient. The Train tab marks where either starts, so a trainer sees it while the run goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class AlarmSettings:
    H: float = 0.3  # the curiosity target RaPR (the run's `H`)
    floor: float | None = None  # RaPR below this counts as collapsed (default H/3)
    k: int = 5  # consecutive logged steps below the floor before the alarm fires
    zero_advantage: float = 0.8  # a step whose share of zero-advantage rollouts reaches this is flagged


@dataclass
class Alarm:
    kind: str  # "rapr" | "zero_advantage"
    step: int  # the step at which it fired
    message: str


def collapse_alarms(rows: Sequence[dict], settings: AlarmSettings = AlarmSettings()) -> list[Alarm]:
    """One alarm where RaPR has stayed below the floor for `k` logged steps (again only after it
    recovered), and one where the zero-advantage share first reaches its threshold in a stretch."""
    floor = settings.H / 3 if settings.floor is None else settings.floor
    alarms: list[Alarm] = []
    low, fired_low, high_before = 0, False, False
    for row in rows:
        step = row.get("step")
        rapr = row.get("rapr")
        if isinstance(rapr, (int, float)) and not isinstance(rapr, bool) and step is not None:
            low = low + 1 if rapr < floor else 0
            fired_low = fired_low and low > 0
            if low >= settings.k and not fired_low:
                fired_low = True
                alarms.append(Alarm("rapr", int(step), f"RaPR below {floor:.2g} (H/3 of H={settings.H:g}) for "
                                                       f"{settings.k} steps: tool use is collapsing"))
        share = row.get("frac_filtered")
        if isinstance(share, (int, float)) and not isinstance(share, bool) and step is not None:
            high = share >= settings.zero_advantage
            if high and not high_before:
                alarms.append(Alarm("zero_advantage", int(step), f"{share:.0%} of rollouts had zero advantage: "
                                                                  "most groups teach nothing"))
            high_before = high
    return alarms


def alarms_markdown(alarms: Sequence[Alarm]) -> str:
    return "\n".join(f"⚠️ step {a.step}: {a.message}" for a in alarms)
