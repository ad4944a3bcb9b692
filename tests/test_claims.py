"""How claims are paired and decided, on made-up results (the held-out measurement is
``test_benchmark_claims.py``, run with ``pytest -m claims``)."""

from __future__ import annotations

import json

import pytest

from ablate.report.claims import (
    ORACLE,
    VARIANTS,
    Claim,
    ClaimResults,
    decide_claims,
    variant_table,
)

SEEDS = 8


def _results(full_auc_a: float) -> ClaimResults:
    """Every variant at AUC 0.80 and AUC_A 0.70 on two draws, except full's AUC_A; per-seed
    noise of a tenth of a point so that the tests have a spread."""
    noise = [0.001 * (-1) ** i for i in range(SEEDS)]  # mean 0
    auc = {b: {v: [0.80 + n for n in noise] for v in VARIANTS} for b in (3, 4)}
    auc_a = {b: {v: [(full_auc_a if v == "full" else 0.70) + n for n in noise]
                 for v in VARIANTS} for b in (3, 4)}
    oracles = {3: {"per_snippet_mlp.auc_abnormal": 0.70, "per_snippet_mlp.auc": 0.75,
                   "video_label.auc": 0.79, "video_label.auc_abnormal": 0.5},
               4: {"per_snippet_mlp.auc_abnormal": 0.72, "per_snippet_mlp.auc": 0.75,
                   "video_label.auc": 0.78, "video_label.auc_abnormal": 0.5}}
    return ClaimResults(auc, auc_a, oracles)


BEATS_PROBE = Claim("full beats the probe's AUC_A by 5 points", "full",
                    f"{ORACLE}per_snippet_mlp", +1, 0.05, "holds", "", metric="auc_abnormal")


def test_an_oracle_is_paired_with_every_seed_of_its_draw() -> None:
    pairs = _results(0.80).pairs(BEATS_PROBE)
    assert pairs.n == 2 * SEEDS
    assert pairs.mean == pytest.approx(((0.80 - 0.70) + (0.80 - 0.72)) / 2)


@pytest.mark.parametrize(("full_auc_a", "outcome"), [(0.80, "holds"), (0.72, "refuted")])
def test_a_claim_against_an_oracle_is_decided_on_its_metric(full_auc_a: float,
                                                            outcome: str) -> None:
    (decided,) = decide_claims(_results(full_auc_a), [BEATS_PROBE])
    assert decided.outcome == outcome


def test_results_round_trip_through_json_and_show_the_oracles() -> None:
    results = _results(0.75)
    assert ClaimResults.from_json(json.loads(json.dumps(results.to_json()))) == results
    table = variant_table(results)
    assert "| oracle: video_label | 79.00 | 50.00 | 78.00 | 50.00 |" in table
    assert table.splitlines()[0] == ("| variant | AUC draw 3 | AUC_A draw 3 | AUC draw 4 | "
                                     "AUC_A draw 4 |")
