"""How a job runs after its read is planned: one plan per mode.

    gathered  the rows read into the driver, one fit there             (plans.gathered)
    streamed  Ray Data feeding several Ray Train workers               (plans.streamed)
    sweep     train.tune: trials in the driver or on Ray Tune          (plans.sweep)
    fanout    train.partition_by: one model per partition, Ray tasks   (plans.fanout)

``choose_plan`` (plans.choice) picks one; railyard.execution.driver runs it.
"""

from railyard.execution.plans.base import JobServices, Plan
from railyard.execution.plans.choice import choose_plan, right_size

__all__ = ["JobServices", "Plan", "choose_plan", "right_size"]
