"""The Slack adapter: request verification in front of Bolt, then Bolt listeners that call core."""
