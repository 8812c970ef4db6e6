"""Apache Airflow provider for Railyard: submit training jobs to its REST API, wait for them (in
a worker or deferred to the triggerer) and sense jobs submitted elsewhere.

It imports nothing from Railyard: it talks HTTP with httpx, so it installs into an Airflow 3
environment without Ray or pyarrow. The modules follow Airflow's provider layout:
:mod:`railyard_airflow.hooks`, :mod:`~railyard_airflow.operators`,
:mod:`~railyard_airflow.triggers`, :mod:`~railyard_airflow.sensors`,
:mod:`~railyard_airflow.links`.
"""

__version__ = "0.1.0"
