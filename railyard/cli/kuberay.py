"""``railyard kuberay``: render the KubeRay manifests from the pools, and validate them.

Mounted in the main CLI with ``app.add_typer(kuberay_app, name="kuberay")``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from railyard.cluster.kuberay import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    stale_manifests,
    write_manifests,
)
from railyard.errors import RailyardError

kuberay_app = typer.Typer(help="KubeRay manifests (RayCluster, RayService, RayJob) from the "
                               "pool definitions.", no_args_is_help=True)


@kuberay_app.command("render")
def render(
    out: Path = typer.Option(Path("kuberay"), "--out", help="directory to write into"),
    image: str = typer.Option(DEFAULT_IMAGE, help="container image of every Ray pod"),
    namespace: str = typer.Option(DEFAULT_NAMESPACE, help="Kubernetes namespace"),
    cluster_name: str = typer.Option(DEFAULT_CLUSTER_NAME, help="RayCluster name"),
    pools_file: Path | None = typer.Option(
        None, "--pools-file", help="pools YAML (default: $RAILYARD_POOLS_FILE or built-ins)"),
    check: bool = typer.Option(False, "--check",
                               help="write nothing; exit 1 if the files differ from a render"),
) -> None:
    """Write raycluster.yaml, rayservice.yaml and rayjob.yaml."""
    from railyard.cluster.pools import load_pools

    try:
        pools = load_pools(pools_file)
    except RailyardError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from None
    options = {"image": image, "namespace": namespace, "cluster_name": cluster_name}
    if check:
        stale = stale_manifests(out, pools, **options)
        for name in stale:
            typer.echo(f"{out / name}: differs from a fresh render; run "
                       "`railyard kuberay render`", err=True)
        raise typer.Exit(code=1 if stale else 0)
    for path in write_manifests(out, pools, **options):
        typer.echo(f"wrote {path}")


@kuberay_app.command("validate")
def validate(
    directory: Path = typer.Argument(Path("kuberay"), help="directory of manifests"),
    crds: Path | None = typer.Option(
        None, "--crds", help="KubeRay CRD directory (default: $RAILYARD_KUBERAY_CRDS or "
                             "the CRDs shipped with railyard)"),
) -> None:
    """Validate the manifests in DIRECTORY against the KubeRay v1.7 CRDs (exit 1 on a problem)."""
    from railyard.cluster.kuberay_validation import crd_dir, validate_directory

    try:
        crd_path = crds or crd_dir()
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if not directory.is_dir():
        typer.echo(f"error: {directory} is not a directory", err=True)
        raise typer.Exit(code=2)
    results = validate_directory(directory, crds=crd_path)
    if not results:
        typer.echo(f"error: no *.yaml files in {directory}", err=True)
        raise typer.Exit(code=1)
    failed = 0
    for name, problems in results.items():
        if problems:
            failed += 1
            for problem in problems:
                typer.echo(f"{directory / name}: {problem}")
        else:
            typer.echo(f"{directory / name}: ok")
    raise typer.Exit(code=1 if failed else 0)
