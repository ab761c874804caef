"""Outputs: what agents propose to do, stored for a human decision."""
