"""Railyard's REST API: a FastAPI app (app.py) served by Ray Serve (deployment.py)."""
