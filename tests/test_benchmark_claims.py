"""The method's claims on the synthetic benchmark, on seeds not used to develop it.

Two benchmark draws x six training seeds x every relation variant, trained with the default
protocol by the plain loop (see :mod:`ablate.report.claims`); the final epoch's test AUC is
compared, averaged over the training seeds of each draw. A claim the reconstruction does not
reach stays here as an expected failure naming the finding: the benchmark is justified by its
oracles (``test_synth_oracles.py``), not tuned until a variant wins.
"""

from __future__ import annotations

import pytest

from ablate.report.claims import HELD_OUT_BENCHMARKS, ClaimResults, measure_claims

pytestmark = pytest.mark.slow

# Findings, measured on the held-out draws (benchmarks 3 and 4, seeds 10-15; full minus the
# variant, mean ± standard error of the paired difference, in AUC points). A claim whose margin is
# within noise, or whose sign is against it, is an expected failure: not strict, because another
# machine's floating point reorders the seeds' training and a claim within noise may then pass.
NOT_ESTABLISHED = {
    "-temporal": "the temporal relation adds nothing measurable to the full model "
                 "(-0.7 ± 0.7 on benchmark 3, +1.5 ± 1.6 on benchmark 4)",
    "-motion": "the motion relation adds nothing measurable to the full model "
               "(-1.6 ± 1.7 on benchmark 3, +0.5 ± 1.9 on benchmark 4)",
}
CONTEXT_MOTION_ON_3 = ("the interrelation's gain over temporal + context + motion is within noise "
                       "on benchmark 3 (+0.7 ± 0.8; +4.2 ± 1.7 on benchmark 4)")
INTERRELATION_VS_CONTEXT = ("the interrelation alone loses to context alone (-7.1 ± 0.6 on "
                            "benchmark 3, -3.4 ± 1.7 on benchmark 4): reading the scene in the "
                            "light of a snippet's motion, alone, learns less than pooling the "
                            "scene; it helps only next to the other relations")


def _expected_failure(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(reason=reason, strict=False)


LEAVE_ONE_OUT = [
    *(pytest.param(v, b, marks=_expected_failure(NOT_ESTABLISHED[v]))
      for v in NOT_ESTABLISHED for b in HELD_OUT_BENCHMARKS),
    *(pytest.param("-context", b) for b in HELD_OUT_BENCHMARKS),
    pytest.param("-context_motion", 3, marks=_expected_failure(CONTEXT_MOTION_ON_3)),
    pytest.param("-context_motion", 4),
]
SINGLE_FACTORS = [
    *(pytest.param("context", b, marks=_expected_failure(INTERRELATION_VS_CONTEXT))
      for b in HELD_OUT_BENCHMARKS),
    *(pytest.param("motion", b) for b in HELD_OUT_BENCHMARKS),
]


@pytest.fixture(scope="module")
def results() -> ClaimResults:
    measured = measure_claims()
    print("\n" + measured.table())
    return measured


@pytest.mark.parametrize(("variant", "benchmark"), LEAVE_ONE_OUT)
def test_full_is_at_least_each_leave_one_relation_out_variant(results: ClaimResults,
                                                               variant: str,
                                                               benchmark: int) -> None:
    assert results.mean(benchmark, "full") >= results.mean(benchmark, variant)


@pytest.mark.parametrize(("single", "benchmark"), SINGLE_FACTORS)
def test_the_interrelation_alone_beats_each_single_factor(results: ClaimResults, single: str,
                                                          benchmark: int) -> None:
    assert results.mean(benchmark, "context_motion") > results.mean(benchmark, single)


@pytest.mark.parametrize("benchmark", HELD_OUT_BENCHMARKS)
def test_full_beats_the_baseline_by_ten_points(results: ClaimResults, benchmark: int) -> None:
    assert results.mean(benchmark, "full") >= results.mean(benchmark, "baseline") + 0.10
