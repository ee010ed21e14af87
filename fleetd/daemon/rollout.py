"""Rollout waves across clusters: a new revision reaches wave 0 first, later waves only behind healthy ones.

Every cluster has a ``wave`` (0 by default). For each wave the rollout keeps
the revision that wave may apply. When the source has a new *target*
revision:

* the lowest wave gets it at once;
* each further wave gets it only when every cluster of the wave before it
  is *healthy at the target*: all of its syncs (suspended ones aside) are
  ready at that revision — with ``wait = true`` that includes workload health;
* so a revision that fails in the canary wave stops there: later waves keep
  applying (and correcting drift against) the revision they had, and the
  rollout reports itself halted. A fix, committed as a newer target, starts
  again from wave 0.

An operator can ``hold`` the rollout (no wave moves past its current
revision until ``resume``) or ``promote`` it (the next wave gets the target
even though the wave before is not healthy). The allowed revision of every
wave is persisted, so a restarted daemon does not push a held-back revision
into later waves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: (wave, revision) -> whether every cluster of the wave is healthy at the revision.
Healthy = Callable[[int, str], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    """Where the rollout of the target revision stands."""

    target: str | None
    allowed: dict[int, str]
    reached: int | None  # the highest wave that has the target; None before any
    halted_at: int | None  # the wave that holds the rollout back by failing; None if none
    held: bool

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "waves": {str(w): r for w, r in sorted(self.allowed.items())},
            "reached_wave": self.reached,
            "halted_at_wave": self.halted_at,
            "held": self.held,
        }


class Rollout:
    """Which revision each wave may apply; see the module docstring."""

    def __init__(self, waves: Iterable[int], allowed: dict[int, str], *, held: bool = False) -> None:
        self.waves = sorted(set(waves)) or [0]
        self.allowed: dict[int, str] = {w: r for w, r in allowed.items() if w in self.waves}
        self.held = held
        self.target: str | None = None
        self._promote = False

    def set_waves(self, waves: Iterable[int]) -> None:
        """The inventory changed: keep the revisions of the waves that still exist."""
        self.waves = sorted(set(waves)) or [0]
        self.allowed = {w: r for w, r in self.allowed.items() if w in self.waves}

    def revision_for(self, wave: int) -> str | None:
        return self.allowed.get(wave)

    def hold(self) -> None:
        self.held = True

    def resume(self) -> None:
        self.held = False

    def promote(self) -> None:
        """Let the next wave take the target even if the wave before it is not healthy."""
        self._promote = True

    def advance(self, target: str, healthy: Healthy) -> list[int]:
        """Move waves to ``target`` as far as health allows; return the waves that got it now."""
        self.target = target
        moved: list[int] = []
        for i, wave in enumerate(self.waves):
            if self.allowed.get(wave) == target:
                continue
            gate_open = i == 0 or (not self.held and healthy(self.waves[i - 1], target))
            if not gate_open and self._promote:
                log.warning("rollout: wave %d promoted to %s by the operator", wave, target[:12])
                gate_open, self._promote = True, False
            if gate_open:
                self.allowed[wave] = target
                moved.append(wave)
            break
        if moved:
            log.info("rollout: wave %d now applies %s", moved[0], target[:12])
        return moved

    def position(self, failing: Callable[[int, str], bool]) -> Position:
        """The rollout's state; ``failing(wave, revision)``: a cluster of the wave failed at it."""
        target = self.target
        reached = max((w for w in self.waves if target and self.allowed.get(w) == target), default=None)
        halted = next(
            (w for w in self.waves if target and self.allowed.get(w) == target and failing(w, target)),
            None,
        )
        return Position(
            target=target, allowed=dict(self.allowed), reached=reached, halted_at=halted, held=self.held
        )
