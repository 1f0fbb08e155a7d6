"""The context window and token budget rule (pure logic)."""

import pytest

from transforms.core.windows import TOO_MANY_TOKENS, Skip, Window, plan_windows


def windows_of(plan):
    return [(item.start, item.target) if isinstance(item, Window) else ("skip", item.turn_index) for item in plan]


def test_max_history_limits_context_to_the_previous_turns():
    plan = plan_windows([10] * 5, max_history=2, max_tokens=1000)
    assert windows_of(plan) == [(0, 0), (0, 1), (0, 2), (1, 3), (2, 4)]
    assert [item.num_context_turns for item in plan] == [0, 1, 2, 2, 2]
    assert [item.num_tokens for item in plan] == [10, 20, 30, 30, 30]


def test_no_max_history_takes_every_previous_turn():
    assert windows_of(plan_windows([1] * 4, max_history=None, max_tokens=100)) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_zero_history_gives_single_turn_samples():
    assert windows_of(plan_windows([5, 5, 5], max_history=0, max_tokens=100)) == [(0, 0), (1, 1), (2, 2)]


def test_budget_drops_the_oldest_context_turns_first():
    plan = plan_windows([40, 30, 20, 10], max_history=None, max_tokens=65)
    # turn 1 with turn 0 is 70 > 65; turn 3 with turns 1-2 is 60, with turn 0 too 100
    assert windows_of(plan) == [(0, 0), (1, 1), (1, 2), (1, 3)]
    assert all(item.num_tokens <= 65 for item in plan)


def test_a_turn_too_long_alone_is_skipped_and_never_used_as_context():
    plan = plan_windows([10, 10, 500, 10, 10], max_history=None, max_tokens=100)
    assert windows_of(plan) == [(0, 0), (0, 1), ("skip", 2), (3, 3), (3, 4)]
    skip = plan[2]
    assert isinstance(skip, Skip) and skip.reason == TOO_MANY_TOKENS and skip.num_tokens == 500


def test_a_skipped_turn_also_stops_a_max_history_window():
    plan = plan_windows([10, 500, 10, 10], max_history=5, max_tokens=100)
    assert windows_of(plan) == [(0, 0), ("skip", 1), (2, 2), (2, 3)]


def test_negative_history_is_refused():
    with pytest.raises(ValueError, match="max_history"):
        plan_windows([1], max_history=-1)
