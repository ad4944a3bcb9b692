"""The method's registered claims, decided on held-out draws of the synthetic benchmark.

Every variant is trained on two benchmark draws and ten training seeds that were never used to
develop the benchmark or the model (see :mod:`ablate.report.claims`); each claim's decision must
be the one registered for it in :data:`~ablate.report.claims.CLAIMS`, whichever way that goes: a
registered *holds* that comes out undecided fails, and so does a registered *not established*
that comes out holding. The benchmark is justified by its oracles (``test_synth_oracles.py``),
not tuned until a variant wins. Under 30 minutes on 2 cores: run with ``pytest -m claims``.
"""

from __future__ import annotations

import pytest

from ablate.report.claims import (
    CLAIMS,
    ClaimOutcome,
    claims_table,
    decide_claims,
    measure_claims,
    variant_table,
)

pytestmark = pytest.mark.claims


@pytest.fixture(scope="module")
def outcomes() -> dict[str, ClaimOutcome]:
    results = measure_claims()
    decided = decide_claims(results)
    print("\n" + variant_table(results) + "\n\n" + claims_table(decided, results))
    return {o.claim.text: o for o in decided}


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.text for c in CLAIMS])
def test_each_claim_is_decided_as_registered(outcomes: dict[str, ClaimOutcome], claim) -> None:
    outcome = outcomes[claim.text]
    assert outcome.as_registered, (
        f"registered {claim.expected} ({claim.why}); decided {outcome.outcome}: mean "
        f"{100 * (outcome.pairs.mean or 0):+.2f} points over {outcome.pairs.n} pairs, p holds "
        f"{outcome.p_holds:.4f}, p refuted {outcome.p_refuted:.4f}, p equivalent "
        f"{outcome.p_equivalent}")
