"""Agents: their configuration (service) and, with the engine, the Claude tool loop."""
