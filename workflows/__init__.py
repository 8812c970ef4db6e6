"""User-facing training workflows; every module here is registered on import."""
