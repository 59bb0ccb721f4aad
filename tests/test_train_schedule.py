"""The schedule of a run as pure functions of step and elapsed time (mobilenets.train.schedule)."""

import math

import pytest

from mobilenets.train.schedule import budget_lr_factor, run_progress, stage_size


def test_progress_by_steps_and_by_whichever_of_clock_and_steps_is_further():
    assert run_progress(0, 100) == 0.0
    assert run_progress(25, 100) == 0.25
    assert run_progress(150, 100) == 1.0  # never past the end
    assert run_progress(25, 100, elapsed=30.0, time_budget=60.0) == 0.5  # the clock is further along
    assert run_progress(75, 100, elapsed=30.0, time_budget=60.0) == 0.75  # the steps are
    assert run_progress(10, 100, elapsed=90.0, time_budget=60.0) == 1.0
    assert run_progress(3, 0) == 1.0  # no steps at all: done, not a division by zero


def test_budget_factor_warms_up_then_follows_a_cosine_to_zero_at_the_first_limit():
    kw = dict(warmup_steps=10, total_steps=1000, time_budget=100.0)
    # warmup by steps: step 4 of 10, the clock at 1% of the budget (its own ramp at 10%), cosine barely begun
    assert budget_lr_factor(4, elapsed=1.0, **kw) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.01)))
    # the clock ends the warmup at 10% of the budget even though the steps have not
    assert budget_lr_factor(1, elapsed=10.0, **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    # half the budget spent: the cosine is at its middle
    assert budget_lr_factor(100, elapsed=50.0, **kw) == pytest.approx(0.5)
    # the budget is the nearer limit: zero when it is spent, whatever the steps say
    assert budget_lr_factor(100, elapsed=100.0, **kw) == pytest.approx(0.0, abs=1e-12)
    # the steps are the nearer limit: zero at the last step with most of the budget left
    assert budget_lr_factor(1000, elapsed=20.0, **kw) == pytest.approx(0.0, abs=1e-12)
    # no warmup: full rate at once
    assert budget_lr_factor(0, warmup_steps=0, total_steps=1000, elapsed=0.0, time_budget=100.0) == 1.0


def test_stage_size_gives_each_size_an_equal_share():
    sizes = (16, 24, 32)
    assert [stage_size(p, sizes) for p in (0.0, 0.33, 0.34, 0.66, 0.67, 0.99, 1.0)] == [16, 16, 24, 24, 32, 32, 32]
    assert stage_size(0.5, [28]) == 28
    with pytest.raises(ValueError, match="at least one size"):
        stage_size(0.5, [])
