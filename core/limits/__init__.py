"""Per-agent daily quotas that hold across replicas."""
