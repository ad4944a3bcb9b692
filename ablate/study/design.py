"""How a study spends seeds and decides: fixed or adaptive seeds, the decision rule, and a
search's confirmation of its winners. The spec's ``seeds``, ``decision`` and ``confirm`` blocks.

::

    seeds: 6                                  # or [0, 1, 2, 3, 4, 5]: fixed seeds, one look
    seeds: {initial: 6, max: 16, step: 2}     # adaptive: seeds added where still undecided
    decision: {metric: auc, alpha: 0.05, delta: 0.01}
    confirm: {top_k: 3, seeds: 8}             # a search's best configurations on fresh seeds

A study with adaptive seeds runs its variants on the first ``initial`` seeds (0, 1, ...), then,
after each round, adds ``step`` seeds to every variant whose comparison with the base is still
undecided (and to the base, so pairs stay paired), until every comparison is decided or ``max``
seeds are reached. :class:`~ablate.stats.decide.Looks` splits ``alpha`` over the rounds so that
the decisions stay valid under this stopping rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ablate.config import MAX_SEED
from ablate.errors import ConfigError, short
from ablate.stats.decide import Looks, Rule
from ablate.typecheck import check, check_fields, mapping

MAX_SEEDS = 1000  # per study: each seed is a trial of every variant
SEEDS_FORM = "expected a count >= 1, a non-empty list of seeds, or {initial, max, step}"


@dataclass(frozen=True)
class AdaptiveSeeds:
    """The ``seeds: {initial, max, step}`` block: seeds 0 .. max-1, looked at in rounds."""

    initial: int
    max: int
    step: int = 2

    @property
    def rounds(self) -> tuple[int, ...]:
        """The seed counts after each round: ``initial``, ``initial + step``, ..., ``max``."""
        return tuple(range(self.initial, self.max, self.step)) + (self.max,)

    def looks(self, comparisons: int, alpha: float) -> Looks:
        return Looks.of(self.rounds, comparisons, alpha)


@dataclass(frozen=True)
class ConfirmSpec:
    """The ``confirm`` block: the search's ``top_k`` configurations by its metric run again on
    ``seeds``, which the search never used."""

    top_k: int
    seeds: tuple[int, ...]


def parse_seeds(raw: Any) -> tuple[tuple[int, ...], AdaptiveSeeds | None]:
    """The seeds a study may run, and its adaptive rounds (None: fixed seeds).

    Raises:
        ConfigError: Naming ``seeds`` and what is allowed.
    """
    if isinstance(raw, Mapping):
        body = dict(raw)
        for key in ("initial", "max"):
            if key not in body:
                raise ConfigError(f"seeds.{key}: missing; {SEEDS_FORM}")
        adaptive = AdaptiveSeeds(**check_fields(AdaptiveSeeds, body, "seeds"))
        within(adaptive.initial, "seeds.initial", 2, MAX_SEEDS)
        within(adaptive.max, "seeds.max", adaptive.initial, MAX_SEEDS)
        within(adaptive.step, "seeds.step", 1, MAX_SEEDS)
        return tuple(range(adaptive.max)), adaptive
    if isinstance(raw, int) and not isinstance(raw, bool):
        return tuple(range(within(raw, "seeds", 1, MAX_SEEDS))), None
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"seeds: {SEEDS_FORM}, got {short(raw)}")
    if len(raw) > MAX_SEEDS:
        raise ConfigError(f"seeds: at most {MAX_SEEDS} seeds, got {len(raw)}")
    seeds = tuple(within(check(int, s, f"seeds[{i}]"), f"seeds[{i}]", 0, MAX_SEED)
                  for i, s in enumerate(raw))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: duplicate seeds in {list(seeds)}")
    return seeds, None


def parse_decision(raw: Any) -> Rule | None:
    """The ``decision`` block; None when the spec leaves the defaults."""
    if raw is None:
        return None
    rule = Rule(**check_fields(Rule, mapping(raw, "decision"), "decision"))
    if not 0 < rule.alpha <= 0.5:
        raise ConfigError(f"decision.alpha: must be in (0, 0.5], got {rule.alpha}")
    if not 0 < rule.delta < 1:
        raise ConfigError(f"decision.delta: must be in (0, 1) (the metric's units), got "
                          f"{rule.delta}")
    return rule


def parse_confirm(raw: Any, searched: tuple[int, ...], search: bool) -> ConfirmSpec | None:
    """The ``confirm`` block of a search: fresh seeds, disjoint from the search's.

    Raises:
        ConfigError: Not a search, a bad ``top_k``, or seeds the search used.
    """
    if raw is None:
        return None
    if not search:
        raise ConfigError("confirm: confirms a search's best configurations; an ablation "
                          "compares its variants on the same seeds already (remove confirm)")
    body = mapping(raw, "confirm")
    unknown = set(body) - {"top_k", "seeds"}
    if unknown:
        raise ConfigError(f"confirm.{sorted(unknown)[0]}: unknown key; allowed: top_k, seeds")
    top_k = within(check(int, body.get("top_k", 3), "confirm.top_k"), "confirm.top_k", 1,
                    MAX_SEEDS)
    count = body.get("seeds", 8)
    if isinstance(count, int) and not isinstance(count, bool):
        start = max(searched) + 1
        seeds = tuple(range(start, start + within(count, "confirm.seeds", 2, MAX_SEEDS)))
    else:
        if not isinstance(count, list):
            raise ConfigError(f"confirm.seeds: expected a count >= 2 or a list of fresh "
                              f"seeds, got {short(count)}")
        seeds, _ = parse_seeds(count)
        reused = sorted(set(seeds) & set(searched))
        if reused:
            raise ConfigError(f"confirm.seeds: {reused} were the search's seeds; confirming on "
                              f"them would measure the search again (fresh seeds, or a count)")
    return ConfirmSpec(top_k, seeds)


def within(value: Any, key: str, low: int, high: int) -> int:
    """``value``, an int in ``[low, high]``; else an error naming ``key`` and the bound."""
    value = check(int, value, key)
    if value < low:
        raise ConfigError(f"{key}: must be >= {low}, got {value}")
    if value > high:
        raise ConfigError(f"{key}: must be <= {high}, got {value}")
    return value
