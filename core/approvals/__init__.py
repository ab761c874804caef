"""Approvals: first-write-wins decisions, who may decide, tokens, events, audit."""
