"""Symbolic links and the allowed data prefixes: every local file a Parquet source lists (a
directory's files, a glob's matches) is resolved and checked against the server's prefixes and
the submitting token's, at submit (``check_data_files``) and again when the driver plans the
read (``plan_read(access=...)``); a link that leaves a prefix is a 403 naming the file and the
field, one that stays inside is read. The driver also refuses a SQL connection the token was
not granted, and fails the job in its fetch phase.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from railyard.config import Settings
from railyard.data.allowed_paths import DataAccess, check_allowed_paths
from railyard.data.fetch import plan_read, read_table_arrow
from railyard.data.parquet_sources import locate
from railyard.data.read_plan import check_data_files
from railyard.errors import DataSourceError, ForbiddenError
from railyard.execution.driver import JobRun, job_access
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import Job, JobStatus
from railyard.spec import DataSpec, ParquetSource, parse_spec
from tests.data_cases import TABLE, make_spec

TEAM = "team-s"


def local(path) -> dict:
    return {"names": ["row", "i", "y"], "source": "local", "path": str(path)}


def spec_for(path):
    return parse_spec(make_spec([local(path)]))


def at_submit(spec, settings, access=None):
    check_data_files(spec.data, settings=settings, access=access)


def in_the_driver(spec, settings, access=None):
    plan_read(spec, settings=settings, access=access)


@pytest.fixture()
def tree(tmp_path) -> dict[str, Path]:
    """``allowed/`` with real data (``dir/real.parquet``, ``tree/a/x.parquet``) and
    ``outside/`` with a secret file and directory, nothing linked yet."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    for d in (allowed / "dir", allowed / "tree" / "a", outside / "deep"):
        d.mkdir(parents=True)
    pq.write_table(TABLE.slice(0, 100), allowed / "dir" / "real.parquet")
    pq.write_table(TABLE.slice(0, 100), allowed / "tree" / "a" / "x.parquet")
    pq.write_table(TABLE.slice(100), outside / "secret.parquet")
    pq.write_table(TABLE.slice(100), outside / "deep" / "secret.parquet")
    return {"allowed": allowed, "outside": outside}


def probes(tree) -> list[tuple[str, Path]]:
    """The three probe cases: (the spec's path, the file it must be refused for)."""
    allowed, outside = tree["allowed"], tree["outside"]
    os.symlink(outside / "secret.parquet", allowed / "dir" / "link.parquet")
    os.symlink(outside / "deep", allowed / "tree" / "sub")
    return [(str(allowed / "dir"), allowed / "dir" / "link.parquet"),
            (str(allowed / "dir" / "*.parquet"), allowed / "dir" / "link.parquet"),
            (str(allowed / "tree" / "**" / "*.parquet"),
             allowed / "tree" / "sub" / "secret.parquet")]


def test_links_out_of_the_server_prefixes_are_403_naming_the_file(tree):
    settings = Settings(allowed_data_prefixes=str(tree["allowed"]))
    for path, bad in probes(tree):
        spec = spec_for(path)
        check_allowed_paths(spec.data, settings.allowed_data_prefixes)   # the path alone passes
        for check in (at_submit, in_the_driver):
            with pytest.raises(ForbiddenError) as info:
                check(spec, settings)
            assert info.value.status_code == 403
            assert str(bad) in info.value.message, path
            assert "data.features.0.path" in info.value.message
            assert "RAILYARD_ALLOWED_DATA_PREFIXES" in info.value.message
            assert info.value.details[0]["field"] == "data.features.0.path"
            assert info.value.details[0]["file"] == str(bad)


def test_links_out_of_the_token_prefixes_are_403_naming_the_team(tree):
    settings = Settings()                       # the server allows every path
    access = DataAccess(team=TEAM, data_prefixes=(str(tree["allowed"]),))
    for path, bad in probes(tree):
        spec = spec_for(path)
        check_data_files(spec.data, settings=settings)       # no token: nothing narrows it
        for check in (at_submit, in_the_driver):
            with pytest.raises(ForbiddenError) as info:
                check(spec, settings, access)
            assert str(bad) in info.value.message and f"team {TEAM!r}" in info.value.message
            assert "railyard token create" in info.value.message


def test_a_single_file_that_is_a_link_out_is_403(tree):
    link = tree["allowed"] / "file-link.parquet"
    os.symlink(tree["outside"] / "secret.parquet", link)
    access = DataAccess(team=TEAM, data_prefixes=(str(tree["allowed"]),))
    with pytest.raises(ForbiddenError) as info:
        plan_read(spec_for(link), settings=Settings(), access=access)
    assert "data.features.0.path" in info.value.message


def test_links_that_stay_inside_are_read(tree):
    allowed = tree["allowed"]
    os.symlink(allowed / "dir" / "real.parquet", allowed / "tree" / "a" / "again.parquet")
    os.symlink(allowed / "dir", allowed / "tree" / "linked-dir")
    settings = Settings(allowed_data_prefixes=str(allowed))
    access = DataAccess(team=TEAM, data_prefixes=(str(allowed),))
    spec = spec_for(allowed / "tree" / "**" / "*.parquet")
    check_data_files(spec.data, settings=settings, access=access)
    plan = plan_read(spec, settings=settings, access=access)
    assert plan.sources[0].scan.files_read == 3         # x, again (a link), linked-dir/real
    assert read_table_arrow(plan).num_rows == 300
    assert read_table_arrow(plan_read(spec_for(allowed / "tree"), settings=settings,
                                      access=access)).num_rows == 300


def test_a_directory_is_read_from_its_listed_files_as_pyarrow_would(tree, hive_dir):
    d = tree["allowed"] / "dir"
    (d / "_tmp").mkdir()
    pq.write_table(TABLE.slice(100), d / "_tmp" / "part.parquet")
    pq.write_table(TABLE.slice(100), d / ".hidden.parquet")
    where = locate(ParquetSource(names=["row"], source="local", path=str(d)))
    assert where.files == [str(d / "real.parquet")] and where.base_dir == str(d)
    # Hive partitions still come from the directories below the one read.
    plan = plan_read(parse_spec(make_spec([{**local(hive_dir), "names": ["row", "i", "y",
                                                                         "region", "year"]}])))
    assert plan.sources[0].scan.files_total == 6
    assert sorted(read_table_arrow(plan).column_names) == ["i", "region", "row", "y", "year"]


def test_a_nul_byte_in_a_path_is_a_422_not_a_crash(tree):
    source = ParquetSource.model_construct(names=["row"], source="local",
                                           path=f"{tree['allowed']}/a\0b")
    data = DataSpec.model_construct(features=[source])
    for check in (lambda: check_allowed_paths(data, [str(tree["allowed"])]),
                  lambda: check_allowed_paths(data, []),
                  lambda: locate(source)):
        with pytest.raises(DataSourceError) as info:
            check()
        assert info.value.status_code == 422 and "NUL" in info.value.message


def test_sql_connections_outside_the_token_grant_are_403():
    sql = {"names": ["i"], "source": "sql", "connection": "warehouse", "table": "charges"}
    spec = parse_spec(make_spec([sql]))
    settings = Settings(sql_connections={"warehouse": "postgresql://u@127.0.0.1:1/db",
                                         "other": "postgresql://u@127.0.0.1:1/other"})
    with pytest.raises(ForbiddenError) as info:
        plan_read(spec, settings=settings,
                  access=DataAccess(team=TEAM, sql_connections=("other",)))
    assert "data.features.0.connection" in info.value.message
    assert "'warehouse'" in info.value.message and f"team {TEAM!r}" in info.value.message


def test_job_access_comes_from_the_job_row():
    assert job_access(Job(id="j", owner=TEAM, spec={})) is None
    access = job_access(Job(id="j", owner=TEAM, submitted_by="ops", spec={},
                            data_prefixes=["/srv/a"], sql_connections=[]))
    assert access == DataAccess(team="ops", data_prefixes=("/srv/a",), sql_connections=())


def test_the_driver_fails_a_job_whose_link_was_swapped_after_submit(tree, tmp_path):
    """Submit-time checks passed (the link pointed inside); the link now points outside: the
    driver's fetch phase refuses the file and the job FAILS there, naming it."""
    allowed = tree["allowed"]
    link = allowed / "dir" / "link.parquet"
    os.symlink(allowed / "tree" / "a" / "x.parquet", link)
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/t.db")
    migrate(settings.resolved_database_url)
    engine = get_engine(settings.resolved_database_url)
    spec = spec_for(allowed / "dir")
    access = DataAccess(team=TEAM, data_prefixes=(str(allowed),))
    check_data_files(spec.data, settings=settings, access=access)       # submit: fine
    job = jobs.create_job(engine, spec=spec, submitted_by=TEAM, data_prefixes=[str(allowed)],
                          sql_connections=None)
    assert jobs.get_job(engine, job_id=job.id).data_prefixes == [str(allowed)]
    link.unlink()
    os.symlink(tree["outside"] / "secret.parquet", link)                # swapped meanwhile
    jobs.transition(engine, job_id=job.id, status=JobStatus.RUNNING,
                    allowed_from=frozenset({JobStatus.QUEUED}))
    run = JobRun(engine, settings, job.id)
    assert run._execute(jobs.get_job(engine, job_id=job.id)) == 1
    failed = jobs.get_job(engine, job_id=job.id)
    assert (failed.status, failed.error_phase) == (JobStatus.FAILED.value, "fetch")
    assert "ForbiddenError" in failed.error and str(link) in failed.error
