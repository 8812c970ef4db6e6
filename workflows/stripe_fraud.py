"""The blog's StripeFraudModel: XGBoost on charges, label derived from the fraud dispute flag."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from railyard.training.builtin.xgboost import XGBoostWorkflow
from railyard.training.registry import register_workflow


@register_workflow
class StripeFraudModel(XGBoostWorkflow):
    """Predicts ``is_fraudulent`` (1 when the charge had a fraud dispute) from charge features."""

    name = "StripeFraudModel"
    derived_columns = {"is_fraudulent": ["has_fraud_dispute"]}

    def prepare(self, table: pa.Table) -> pa.Table:
        if "is_fraudulent" in table.column_names:
            return table
        flag = pc.fill_null(table["has_fraud_dispute"].cast(pa.int8()), 0)
        return table.append_column("is_fraudulent", flag)
