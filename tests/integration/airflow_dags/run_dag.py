"""Run one DAG of a file with ``dag.test()`` and print, as the last line, a JSON summary of the
run: each task's state and its XComs. Used by tests/integration/test_airflow_provider.py, in the
Airflow virtualenv: ``python run_dag.py <dag file> <dag id>``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select


def main(dag_file: str, dag_id: str) -> None:
    spec = importlib.util.spec_from_file_location(Path(dag_file).stem, dag_file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = next(d for d in vars(module).values() if getattr(d, "dag_id", None) == dag_id)
    run = dag.test()
    summary: dict[str, Any] = {"state": str(run.state), "tasks": {}}
    with create_session() as session:
        for ti in run.get_task_instances(session=session):
            summary["tasks"][ti.task_id] = {"state": str(ti.state), "try_number": ti.try_number,
                                            "xcom": {}}
        rows = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id,
                                                       XComModel.run_id == run.run_id))
        for row in rows:
            summary["tasks"][row.task_id]["xcom"][row.key] = XComModel.deserialize_value(row)
    print("\nDAG-RUN-SUMMARY " + json.dumps(summary, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
