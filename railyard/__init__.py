"""Railyard on Ray: send a training spec to one API; get a tracked job, a model, metrics and
logs."""

__version__ = "0.1.0"
