"""The one ASGI app: Slack, the REST API, the approval webhook, health."""

from bot.server.app import create_app

__all__ = ["create_app"]
