"""The training spec: what a team sends to ``POST /v1/jobs`` (pydantic, unknown fields refused).

``parse_spec`` turns a decoded JSON payload into a ``TrainingSpec`` or raises a ``SpecError``
naming the field and the fix. The models are split by the spec's sections: ``common`` (name
types, limits, the strict base model), ``data`` (sources, filters, holdout), ``train``
(workflow, resources, sweeps), ``training_spec`` (the whole request, its lifecycle and the
parser); ``sql_guard`` checks a SQL source's query.
"""

from railyard.spec.common import parse_datetime
from railyard.spec.data import (
                                DataSpec,
                                DateRangeSampling,
                                FeatureSource,
                                FeatureValue,
                                Filter,
                                HashSampling,
                                HoldoutSampling,
                                LatestSampling,
                                ParquetSource,
                                Predicate,
                                RandomSampling,
                                SamplingFunction,
                                SqlSource,
)
from railyard.spec.train import ResourcesSpec, SearchDomain, TrainSpec, TuneSpec
from railyard.spec.training_spec import (
                                LifecycleSpec,
                                TrainingSpec,
                                parse_spec,
                                spec_error_from_validation,
)

__all__ = [
    "DataSpec", "DateRangeSampling", "FeatureSource", "FeatureValue", "Filter", "HashSampling",
    "HoldoutSampling", "LatestSampling", "LifecycleSpec", "ParquetSource", "Predicate",
    "RandomSampling", "ResourcesSpec", "SamplingFunction", "SearchDomain", "SqlSource",
    "TrainSpec", "TrainingSpec", "TuneSpec", "parse_datetime", "parse_spec",
    "spec_error_from_validation",
]
