"""What the tests of a real `cosmo serve` (and `cosmo worker`) share: the environment that
points a process at the local fakes, and the sales team most of them configure (a CRM task
that needs approval, a webhook for its events)."""

from __future__ import annotations

from pathlib import Path

from tests.cosmo_process import cosmo, embedded_env
from tests.fakes.anthropic_api import FakeAnthropicAPI
from tests.fakes.slack_api import BOT_TOKEN, FakeSlackAPI
from tests.fakes.slack_requests import SIGNING_SECRET

LEAD = "U0LEAD0001"
HOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def process_env(
    data_dir: Path, slack: FakeSlackAPI, claude: FakeAnthropicAPI, **settings: str
) -> dict[str, str]:
    """The environment of a process on the fakes, its SQLite database in `data_dir` upgraded
    by `cosmo db upgrade`; `settings` (COSMO_API_TOKEN at least) are added last."""
    env = embedded_env(
        data_dir,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.base_url,
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=claude.base_url,
        **settings,
    )
    cosmo(env, "db", "upgrade")
    return env


def sales_team(
    crm_url: str,
    hook_url: str,
    *,
    credential: str = "CRM_TOKEN",
    hook_secret: str = HOOK_SECRET,
    drafts: bool = True,
) -> str:
    """A `sales-bot` whose automatable `create_task` POSTs to the CRM at `crm_url` with the
    operator's `credential` as its Authorization header, approved by LEAD, its events sent to
    `hook_url`; `drafts` adds a `draft_email` skill with no executor (approval only)."""
    draft_email = """
  - name: draft_email
    description: Draft an email for review.
    kind: action
    input_schema: {type: object, properties: {to: {type: string}, body: {type: string}},
                   required: [to, body]}"""
    return f"""
apiVersion: cosmo/v1
personas: [{{name: seller, role: Sales assistant}}]
skills:
  - name: create_task
    description: Create a follow-up task in the CRM.
    kind: action
    is_automatable: true
    input_schema: {{type: object, properties: {{title: {{type: string}}}}, required: [title]}}
    executor:
      type: http
      method: POST
      url: "{crm_url}"
      secret_headers: {{Authorization: {credential}}}
      body_template: {{title: "{{{{title}}}}", source: cosmo}}{draft_email if drafts else ""}
agents:
  - name: sales-bot
    persona: seller
    skills: [create_task{", draft_email" if drafts else ""}]
    approvers: [{LEAD}]
    webhook: {{url: "{hook_url}", secret: "{hook_secret}"}}
"""
