"""The Serve deployment's options and its reconciler's pacing, and the KubeRay RayService that
must carry the same options (imports Ray Serve, starts nothing)."""

from __future__ import annotations

import yaml

from railyard.cluster.kuberay import serve_config
from serve_app import deployment
from serve_app.deps import TokenCache


def test_deployment_is_sized_for_concurrent_requests():
    config = deployment.RailyardAPI._deployment_config       # type: ignore[attr-defined]
    assert config.max_ongoing_requests == deployment.MAX_ONGOING_REQUESTS >= 50
    assert config.num_replicas == 1
    options = deployment.RailyardAPI.ray_actor_options       # type: ignore[attr-defined]
    assert options["num_cpus"] == 0
    assert "runtime_env" not in options      # the application's env reaches the replica whole
    assert config.logging_config["enable_access_log"] is False
    assert isinstance(deployment.api.state.token_cache, TokenCache)


def test_rayservice_carries_the_deployments_options():
    config = yaml.safe_load(serve_config())
    assert config["proxy_location"] == "EveryNode"
    [app] = config["applications"]
    [options] = app["deployments"]
    assert options["name"] == deployment.DEPLOYMENT_NAME
    assert options["max_ongoing_requests"] == deployment.MAX_ONGOING_REQUESTS
    assert options["ray_actor_options"] == {"num_cpus": 0}
    assert options["logging_config"] == {"enable_access_log": False}
    # one replica: admission is serialised per team inside the API process
    assert options["num_replicas"] == 1 and "autoscaling_config" not in options


def test_a_slow_reconcile_pass_spaces_out_the_next():
    assert deployment.reconcile_pause(5.0, 0.1) == 5.0
    # a 4 s pass at a 20% duty waits 16 s: the reconciler takes at most a fifth of the time
    assert deployment.reconcile_pause(5.0, 4.0, duty=0.2) == 15.0     # capped at 3 intervals


def test_a_replica_freezes_what_it_holds_once_started(monkeypatch):
    """Full garbage collections then skip the replica's ~265k startup objects (a ~170 ms
    stall of the request being served every few hundred requests; benchmarks/README.md)."""
    import gc
    import threading

    monkeypatch.setattr(threading.Thread, "start", lambda self: None)   # no background loops
    gc.unfreeze()
    try:
        # Serve's ingress wrapper has an async __init__; run the class's own, as Serve does.
        wrapped = deployment.RailyardAPI.func_or_class            # type: ignore[attr-defined]
        own = wrapped.__mro__[1]          # the class as written; [0] is Serve's ingress copy
        assert own.__module__ == deployment.__name__ and own is not wrapped
        own.__init__(object.__new__(own))
        assert gc.get_freeze_count() > 10_000
        assert len(gc.get_objects(generation=2)) < gc.get_freeze_count()
    finally:
        gc.unfreeze()
