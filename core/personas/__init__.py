"""Personas: CRUD and (with the engine) the prompt builder."""
