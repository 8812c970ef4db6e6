"""The Python SDK: ``RailyardClient`` talks to the REST API over httpx."""

from railyard.client.sdk import RailyardClient

__all__ = ["RailyardClient"]
