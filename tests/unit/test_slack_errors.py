"""The one mapping from core's typed errors to what people read in Slack."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.slack.errors import form_error, slack_message
from core.errors import NotAllowedToDecide, NotFound, OutputAlreadyDecided, StaleRevision


def test_a_detail_quoting_a_chosen_name_is_shown_not_acted_on() -> None:
    said = slack_message(NotFound("agent", "<!channel> & <@U0BOSS0001>"))
    assert said == "⚠️ agent '&lt;!channel&gt; &amp; &lt;@U0BOSS0001&gt;' does not exist"


def test_typed_errors_become_mentions_dates_and_links() -> None:
    at = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    decided = slack_message(OutputAlreadyDecided("out_1", "approved", "U0LEAD0001", at))
    assert decided.startswith("Too late: this was already approved by <@U0LEAD0001>")
    assert f"<!date^{int(at.timestamp())}^" in decided

    stale = slack_message(StaleRevision("out_1", 1, 3), latest="https://x.slack.com/p1")
    assert "<https://x.slack.com/p1|review the latest>" in stale and "revision 3" in stale

    refused = NotAllowedToDecide("only …", agent_name="sales-bot", approvers=["U0A", "S0GRP"])
    assert slack_message(refused) == (
        "⚠️ Only *sales-bot*'s approvers may decide its outputs: <@U0A>, <!subteam^S0GRP>."
    )
    assert slack_message(NotAllowedToDecide("not yours")) == "⚠️ not yours"


def test_what_did_not_happen_comes_first() -> None:
    said = slack_message(NotFound("output", "out_9"), prefix="Nothing was saved: ")
    assert said == "⚠️ Nothing was saved: output 'out_9' does not exist"


def test_a_form_field_gets_plain_text() -> None:
    assert form_error(NotFound("agent", "<a>")) == "agent '<a>' does not exist"
    assert "revision 4 is current" in form_error(StaleRevision("out_1", 2, 4))
    assert form_error(NotFound("output", "o"), prefix="Nothing was saved: ").startswith(
        "Nothing was saved: output"
    )
