"""The review queue's Block Kit: filters read back from a view's state, the bulk button's
value and its confirm dialog within Slack's limits."""

from __future__ import annotations

from bot.slack import review_blocks as review
from tests.unit.test_admin_blocks import agent, check_slack_limits, output


def test_filters_come_back_from_the_selects_state_and_any_means_none():
    state = {
        review.FILTERS_BLOCK: {
            review.FILTER_AGENT: {"selected_option": {"value": "agt_01"}},
            review.FILTER_SKILL: {"selected_option": {"value": "any"}},
            review.FILTER_AGE: {"selected_option": {"value": "1d"}},
        }
    }
    chosen = review.ReviewFilters.from_state(state)
    assert chosen == review.ReviewFilters("agt_01", None, "1d")
    assert chosen.older_than is not None and chosen.older_than.days == 1
    forged = {review.FILTERS_BLOCK: {review.FILTER_AGE: {"selected_option": {"value": "99y"}}}}
    assert review.ReviewFilters.from_state(forged).age == "any"


def test_the_bulk_button_names_each_output_and_revision_and_reads_back_safely():
    shown = [output(id=f"out_{i:02}", revision=i + 1) for i in range(3)]
    button = review.approve_shown_button(shown, [agent()])
    assert button["value"] == "out_00:1,out_01:2,out_02:3"
    assert review.read_shown(button["value"] + ",junk,out_x:0,out_y:-1") == [
        ("out_00", 1),
        ("out_01", 2),
        ("out_02", 3),
    ]


def test_the_confirm_dialog_lists_them_within_slacks_300_characters():
    many = [output(id=f"out_{i:02}", skill="a_rather_long_skill_name_x") for i in range(10)]
    text = review.approve_shown_button(many, [agent()])["confirm"]["text"]["text"]
    assert len(text) <= 300
    assert text.startswith("Each is decided on its own:\n• A rather long skill name x")
    assert text.endswith("more")


def test_the_queue_stays_within_slacks_limits_and_says_when_filters_hide_everything():
    blocks = review.queue_blocks(
        [output(id=f"out_{i:02}") for i in range(10)],
        40,
        filters=review.ReviewFilters(),
        agents=[agent()],
        skills=["draft_email"],
    )
    check_slack_limits(blocks, most=100)
    empty = review.queue_blocks(
        [], 0, filters=review.ReviewFilters(age="7d"), agents=[agent()], skills=[]
    )
    assert empty[-1]["elements"][0]["text"] == "Nothing matches these filters."
