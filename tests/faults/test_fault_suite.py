"""The short fault run: real processes and services, broken on purpose."""

import pytest

from tests.faults.run import run_suite, summary_line
from tests.faults.suite import SHORT_FAULTS

pytestmark = pytest.mark.faults


@pytest.mark.timeout(900)
def test_fault_suite_short_run_loses_nothing():
    # given / when: the short preset of `python -m tests.faults` (every fault but a
    # PostgreSQL restart, which would cut this test run's own connection)
    result, lines = run_suite("--short", timeout=840)
    summary = summary_line(lines)
    # then: every invariant held, and every fault was injected at least once
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert summary.startswith("fault suite PASSED"), summary
    assert " lost=0 " in summary
    # and keyed streams were delivered, their lines in order
    assert " order_violations=0 " in summary
    assert " keyed_requests=0 " not in summary
    for fault in SHORT_FAULTS:
        assert f"{fault}:" in summary, f"{fault} was not injected: {summary}"
