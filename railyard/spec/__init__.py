"""The training spec: what a team sends to ``POST /v1/jobs`` (pydantic, unknown fields refused).

``parse_spec`` turns a JSON payload into a ``TrainingSpec`` or raises a ``SpecError`` naming the
field and the fix. The models are split by the spec's sections: ``common`` (limits, the strict
base model), ``data`` (sources, filters, holdout), ``train`` (workflow, resources, sweeps) and
``training_spec`` (the whole request, its lifecycle and the parser); ``sql_guard`` checks a SQL
source's query.
"""

from railyard.spec.training_spec import *  # noqa: F403
