"""Skills: the catalogue admins configure and (with the engine) the registry and executors."""
