"""Outbound webhooks: Standard Webhooks signing and the SSRF guard for their URLs."""
