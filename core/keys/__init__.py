"""Per-tenant REST API keys and the roles they carry."""
