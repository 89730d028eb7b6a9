"""The A/B decision: a tie keeps the old version; p_new_better follows the evidence; a test is
judged once its planned slots are rated, and only a strictly better new version is promoted."""

from __future__ import annotations

import pytest

from gateway.domain.ab_tests import arm_of, decide, judge, p_new_better, student_t_cdf


def test_a_tie_keeps_the_old_version_at_even_odds() -> None:
    decision = decide([3, 4, 3, 4, 3, 4], [4, 3, 4, 3])
    assert decision.winner == "old"
    assert decision.p_new_better == pytest.approx(0.5, abs=1e-9)


def test_a_higher_new_mean_wins_and_more_evidence_means_more_certainty() -> None:
    assert decide([3, 3], [4, 4]).winner == "new"
    few = p_new_better([3, 3], [4, 4])
    many = p_new_better([3] * 6, [4] * 6)
    assert 0.5 < few < many < 1.0


def test_noisy_ratings_are_less_certain_than_consistent_ones() -> None:
    consistent = p_new_better([3, 3, 3, 3, 3, 3], [4, 4, 4, 4])
    noisy = p_new_better([1, 5, 2, 4, 3, 3], [5, 3, 2, 5])  # same means
    assert noisy < consistent


def test_the_probability_is_symmetric() -> None:
    old, new = [2, 3, 3, 2, 4, 3], [4, 5, 3, 4]
    assert p_new_better(old, new) == pytest.approx(1.0 - p_new_better(new, old))


def test_an_empty_arm_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one rating"):
        p_new_better([], [3])


@pytest.mark.parametrize("dof", [0.5, 1.0, 2.0, 3.5, 7.0, 30.0, 1000.0])
def test_student_t_cdf_matches_scipy(dof: float) -> None:
    from scipy.stats import t

    for x in (-40.0, -6.0, -2.0, -0.5, 0.0, 0.05, 0.7, 1.9, 4.0, 25.0):
        assert student_t_cdf(x, dof) == pytest.approx(float(t.cdf(x, dof)), abs=1e-10)


def test_odd_slots_render_with_the_old_version_and_even_slots_with_the_new() -> None:
    assert [arm_of(slot) for slot in range(1, 6)] == ["old", "new", "old", "new", "old"]


def test_a_test_is_not_judged_before_its_planned_experiments_are_rated() -> None:
    ratings = {"old": {"exp_1": [3, 4], "exp_3": [3, 3]}, "new": {"exp_2": [5, 5]}}
    assert judge(ratings, planned=4) is None  # 3 of 4 slot experiments rated
    assert judge(ratings, planned=3) is not None


def test_a_higher_new_mean_is_promoted_over_every_rated_option() -> None:
    ratings = {
        "old": {"exp_1": [3, 4], "exp_3": [3, 3], "exp_5": [4, 2]},
        "new": {"exp_2": [4, 4], "exp_4": [5, 3]},
    }
    verdict = judge(ratings, planned=5)
    assert verdict is not None and verdict.promote
    assert (verdict.old_samples, verdict.new_samples) == (3, 2)  # experiments, not options
    assert (verdict.decision.old_mean, verdict.decision.new_mean) == (3.1667, 4.0)
    assert verdict.decision.winner == "new" and verdict.decision.p_new_better > 0.5


def test_a_tie_or_a_lower_new_mean_is_rejected() -> None:
    tie = judge({"old": {"exp_1": [4, 3]}, "new": {"exp_2": [3, 4]}}, planned=2)
    worse = judge({"old": {"exp_1": [4, 4]}, "new": {"exp_2": [3, 4]}}, planned=2)
    assert tie is not None and not tie.promote and tie.decision.winner == "old"
    assert worse is not None and not worse.promote and worse.decision.p_new_better < 0.5
