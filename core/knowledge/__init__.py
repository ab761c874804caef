"""Knowledge bases: documents agents search and cite (see `service.KnowledgeService`).

The `KnowledgeIndex` port (`port`) is where chunks and vectors live; `embedded` is the
default provider (our database plus exact in-process search).
"""
