"""app/states.py: the one table of job states and exit reasons, and the README's copy of it."""

from __future__ import annotations

from app.states import (
    FINAL_STATES,
    LIVE_STATES,
    REASONS,
    STATE_FOR_REASON,
    ExitReason,
    JobState,
    StartFailure,
    readme_table,
)

from .server import REPO


def test_the_readme_holds_the_generated_table_word_for_word():
    assert readme_table() in (REPO / "README.md").read_text()


def test_every_reason_leads_to_one_final_state():
    reasons = [info.reason for info in REASONS]
    assert len(reasons) == len(set(reasons))
    assert set(reasons) == set(ExitReason) | set(StartFailure)
    assert set(STATE_FOR_REASON.values()) <= FINAL_STATES
    assert {STATE_FOR_REASON[reason] for reason in StartFailure} == {JobState.FAILED_TO_START}


def test_states_are_live_or_final_and_every_final_state_is_reached():
    assert set(JobState) == LIVE_STATES | FINAL_STATES and not LIVE_STATES & FINAL_STATES
    assert set(STATE_FOR_REASON.values()) == FINAL_STATES
