"""Slack's AI-app surface ("Agents & AI Apps"): the assistant container.

* `assistant_thread_started` — greet in the new thread, naming the agent that will answer,
  and offer suggested prompts drawn from that agent's skills.
* `assistant_thread_context_changed` — acknowledged and ignored. In the container the user
  talks to the app in a DM, and a DM is answered by the workspace's default (or only) agent
  whatever channel the user is looking at, so the context would change nothing.
* Messages in the thread are ordinary DM `message` events: `conversations` records each as a
  durable turn (deduplicated, recovered after a crash) like any DM. What this module changes
  on that path is how a turn shows while it runs where replies do not stream natively
  (`COSMO_SLACK_STREAMING=false`, or Slack refused it): in DMs, Slack's "is thinking…"
  status stands in for the placeholder message (`SlackRuntime.reply_factory`); Slack clears
  the status when our first text is posted.

Bolt's `AsyncAssistant` middleware is not used: it hands the user's message to its own
listener, which would bypass the durable turn.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError

from bot.slack.reply import ThreadReply
from bot.slack.runtime import SlackRuntime
from bot.slack.text import escape, truncate
from core.concurrency import run_sync
from core.wiring import Container

log = logging.getLogger("cosmo.slack.assistant")

THINKING = "is thinking…"
MAX_PROMPTS = 4
_TITLE_CHARS = 40
_FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)", re.DOTALL)


@dataclass(frozen=True)
class SkillBrief:
    name: str
    description: str


@dataclass(frozen=True)
class AgentBrief:
    """What the greeting says about the agent that will answer."""

    name: str
    role: str
    skills: tuple[SkillBrief, ...] = ()


def register(app: AsyncApp, rt: SlackRuntime) -> None:
    rt.reply_factory = thread_reply

    async def on_thread_started(body: dict[str, Any], event: dict[str, Any], request: Any) -> None:
        if request.headers.get("x-slack-retry-num"):
            return  # the first delivery already scheduled the greeting before it was acked
        thread = event.get("assistant_thread") or {}
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not channel or not thread_ts:
            return
        team_id = body.get("team_id") or (thread.get("context") or {}).get("team_id")
        tenant = rt.tenant_for(team_id)
        rt.spawn(greet(rt, tenant, channel, thread_ts), name="assistant-greeting")

    async def on_context_changed() -> None:
        """Answered so Slack does not redeliver it; see the module docstring."""

    app.event("assistant_thread_started")(on_thread_started)
    app.event("assistant_thread_context_changed")(on_context_changed)


def thread_reply(client: Any, channel: str, thread_ts: str) -> ThreadReply:
    """DMs (where the assistant container lives) get the status; channels the placeholder."""
    if channel.startswith("D"):
        return StatusReply(client, channel, thread_ts)
    return ThreadReply(client, channel, thread_ts)


class StatusReply(ThreadReply):
    """Shows "is thinking…" as the thread's assistant status instead of posting a placeholder
    message; the first text then goes up as a new message, which clears the status. Where
    Slack refuses the status, it falls back to the placeholder."""

    async def start(self) -> None:
        try:
            await self.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=THINKING
            )
        except SlackApiError as exc:
            log.info(
                "no assistant status in %s (%s); posting a placeholder",
                self.channel,
                exc.response.get("error"),
            )
            await super().start()


async def greet(rt: SlackRuntime, tenant: str, channel: str, thread_ts: str) -> None:
    c = rt.container
    resolution = await run_sync(c.bindings.resolve, tenant, None)
    client = await rt.clients.for_tenant(tenant)
    if resolution.agent_id is None:
        text, prompts = no_agent_text(resolution.why), []
    else:
        agent = await run_sync(agent_brief, c, tenant, resolution.agent_id)
        text, prompts = greeting(agent), suggested_prompts(agent)
    await client.chat_postMessage(
        channel=channel, thread_ts=thread_ts, text=text, unfurl_links=False, unfurl_media=False
    )
    if prompts:
        await client.assistant_threads_setSuggestedPrompts(
            channel_id=channel, thread_ts=thread_ts, title="Try asking:", prompts=prompts
        )


def agent_brief(c: Container, tenant: str, agent_id: str) -> AgentBrief:
    agent = c.agents.get(tenant, agent_id)
    persona = c.personas.get(tenant, agent.persona_id)
    skills = tuple(
        SkillBrief(skill.name, skill.description)
        for skill in (c.skills.get(tenant, name) for name in agent.skills)
    )
    return AgentBrief(agent.name, persona.role, skills)


def greeting(agent: AgentBrief) -> str:
    role = f" ({escape(agent.role)})" if agent.role else ""
    return (
        f"Hi! I'm *{escape(agent.name)}*{role}. Ask me anything here, "
        "or start with one of the suggestions."
    )


def no_agent_text(why: str) -> str:
    if why == "none":
        return (
            "Hi! No agent is set up in this workspace yet. An admin can create one with "
            "`/agent create`."
        )
    return (
        "Hi! Several agents could answer here and none is the workspace default yet. "
        "An admin can choose one (see `/agent help`)."
    )


def suggested_prompts(agent: AgentBrief) -> list[dict[str, str]]:
    """2 to 4 prompts: "what can you do?", then one per skill, from its description's first
    sentence (what an admin wrote to tell Claude when to use it reads well to people too)."""
    prompts = [{"title": "What can you do?", "message": "What can you help me with?"}]
    seen = {prompts[0]["title"].lower()}
    for skill in agent.skills:
        if len(prompts) == MAX_PROMPTS:
            break
        sentence = first_sentence(skill.description)
        if not sentence or sentence.lower() in seen:
            continue
        seen.add(sentence.lower())
        prompts.append({"title": truncate(sentence, _TITLE_CHARS), "message": f"{sentence}."})
    if len(prompts) == 1:
        prompts.append({"title": "Introduce yourself", "message": "Hi! Who are you?"})
    return prompts


def first_sentence(text: str) -> str:
    """The first sentence on one line, without its closing punctuation."""
    flat = " ".join(text.split())
    found = _FIRST_SENTENCE.match(flat)
    return (found.group(1) if found else flat).rstrip(".!?").strip()
