"""The API's routes, one router per resource, gathered into :data:`api_router`."""

from fastapi import APIRouter

from serve_app.routes import health, jobs, models, queue, teams, webhooks, workflows

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(jobs.router)
api_router.include_router(workflows.router)
api_router.include_router(teams.router)
api_router.include_router(queue.router)
api_router.include_router(models.router)
api_router.include_router(webhooks.router)
