"""What an operator relies on in the image, compose file and Kubernetes manifests, read
statically (no Docker engine or cluster here): a pinned base image, labels, a locked
install, hardened containers sized from the benchmark, and manifests that agree with
the code (commands, settings, secret files, probes) and with each other.

The manifests' schemas are checked by ``kubernetes-validate`` in ``.ci/run``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import metrics
from service.config import FILE_BACKED, Settings
from tests.support.deployment import (
    SERVE_VARIABLES,
    Stage,
    container_environment,
    dockerfile_stages,
    image_environment,
    load_compose,
    parse_command,
)
from tests.support.processes import REPO_ROOT

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
REQUIREMENTS = REPO_ROOT / "requirements"
DIGEST_PINNED = re.compile(r"python:(?P<minor>3\.\d+)-slim-bookworm@sha256:[0-9a-f]{64}")
OCI_LABELS = ("title", "description", "source", "version", "revision", "created", "licenses")
# bench/README.md, peak RSS: supervisor 81 MB + helper 12 MB, and 105 MB per worker
# (107 MB under hostile clients, README "Reliability").
RSS_BASE_MB, RSS_PER_WORKER_MB = 93, 107
POSTGRES_MAX_CONNECTIONS = 100  # PostgreSQL's default
SECRET_KEYS_IN_SECRET = {"database_url", "secret_keys", "admin_token"}


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages()


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def megabytes(quantity: str) -> float:
    """``512M`` (compose) or ``512Mi`` / ``1Gi`` (Kubernetes) in MB."""
    match = re.fullmatch(r"(\d+)(M|G|Mi|Gi)", quantity)
    assert match, quantity
    factor = {"M": 1.0, "G": 1000.0, "Mi": 1.048576, "Gi": 1073.741824}[match[2]]
    return int(match[1]) * factor


def labels(stage: Stage) -> dict[str, str]:
    found: dict[str, str] = {}
    for instruction in stage.all("LABEL"):
        for name, value in re.findall(r'(\S+?)="([^"]*)"', instruction.arguments):
            found[name] = value
    return found


def arg_defaults(stage: Stage) -> dict[str, str]:
    return dict(i.arguments.split("=", 1) for i in stage.all("ARG"))


# --- the image -----------------------------------------------------------------------


def test_base_image_is_pinned_by_digest_to_the_locks_python(stages: list[Stage]) -> None:
    bases = {stage.base for stage in stages}
    assert len(bases) == 1, "one base image for every stage"
    base = bases.pop()
    match = DIGEST_PINNED.fullmatch(base)
    assert match, f"FROM {base}: pin the tag's digest"
    lock_script = (REPO_ROOT / ".ci" / "lock").read_text()
    assert f"--python-version {match['minor']} " in lock_script, "locks and image: one Python"
    assert labels(stages[-1])["org.opencontainers.image.base.digest"] == base.split("@")[1]


def test_image_carries_the_oci_labels_from_build_arguments(
    stages: list[Stage], pyproject: dict[str, Any]
) -> None:
    runtime = stages[-1]
    found = labels(runtime)
    for name in OCI_LABELS:
        assert found.get(f"org.opencontainers.image.{name}"), name
    assert found["org.opencontainers.image.licenses"] == pyproject["project"]["license"]
    defaults = arg_defaults(runtime)
    for name, arg in (("version", "VERSION"), ("revision", "REVISION"), ("created", "CREATED")):
        assert found[f"org.opencontainers.image.{name}"] == f"${{{arg}}}", "set at build time"
        assert arg in defaults
    assert found["org.opencontainers.image.source"] == "${SOURCE}"
    assert defaults["VERSION"] == pyproject["project"]["version"]
    # The revision reaches the running service too: action_links_build_info{revision}.
    assert image_environment(stages)[metrics.REVISION_ENV] == "${REVISION}"


def test_image_installs_exactly_the_lock(stages: list[Stage]) -> None:
    build, runtime = stages[0], stages[-1]
    build_runs = " ".join(i.arguments for i in build.all("RUN"))
    assert "--require-hashes --no-deps --wheel-dir /wheels -r requirements/runtime.txt" in (
        build_runs
    )
    assert "--require-hashes -r requirements/build.txt" in build_runs
    assert "--no-build-isolation" in build_runs, "the locked build backend, not the newest"
    (install,) = runtime.all("RUN")
    assert "--no-index --find-links=/wheels --require-hashes -r /requirements/runtime.txt" in (
        install.arguments
    )
    assert "pip install --no-index --no-deps /dist/" in install.arguments
    assert "pip check" in install.arguments


def test_image_command_and_health_check_follow_port_and_concurrency(
    stages: list[Stage],
) -> None:
    env = image_environment(stages)
    command = ["action-links", *stages[-1].last("CMD").exec_form()]
    args = parse_command(command, {**env, "PORT": "9123", "WEB_CONCURRENCY": "5"})
    assert (args.command, args.port, args.workers) == ("serve", 9123, 5)
    explicit = [*command, "--port", "8001", "--workers", "1"]
    args = parse_command(explicit, {**env, "PORT": "9123", "WEB_CONCURRENCY": "5"})
    assert (args.port, args.workers) == (8001, 1), "options win over the environment"
    health = stages[-1].last("HEALTHCHECK").arguments
    assert "/healthz" in health
    assert "/readyz" not in health, "readiness is the orchestrator's, not the restart's"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "not a TCP port: 'http'"),
        ({"PORT": "70000"}, "not a TCP port: '70000'"),
        ({"WEB_CONCURRENCY": "0"}, "not a positive integer: '0'"),
    ],
)
def test_serve_refuses_a_bad_port_or_worker_count_from_the_environment(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_command(["action-links", "serve"], env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# --- the locks ---------------------------------------------------------------------


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """name → (version, number of hashes) of a requirements file with hashes."""
    entries: dict[str, tuple[str, int]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert match, f"{path.name}: not an exact pin with hashes: {line[:80]}"
        entries[match[1].lower()] = (match[2], match[3].count("--hash"))
    return entries


def test_locks_pin_every_package_with_hashes_and_agree() -> None:
    runtime = locked(REQUIREMENTS / "runtime.txt")
    test = locked(REQUIREMENTS / "test.txt")
    build = locked(REQUIREMENTS / "build.txt")
    assert {"fastapi", "uvicorn", "asyncpg", "sqlalchemy", "itsdangerous"} <= set(runtime)
    for name, (version, _) in runtime.items():
        assert test[name][0] == version, (
            f"CI tests {name} {test[name][0]}, the image ships {version}"
        )
    for name, (version, _) in build.items():
        assert test[name][0] == version, name
    assert "hatchling" in build
    assert set(locked(REQUIREMENTS / "tools.txt")) == {"uv"}


# --- docker compose ----------------------------------------------------------------


def test_compose_runs_our_containers_locked_down_and_sized(stages: list[Stage]) -> None:
    services = load_compose()["services"]
    for name in ("app", "migrate"):
        service = services[name]
        assert service["read_only"] is True, name
        assert any(str(t).split(":")[0] == "/tmp" for t in service["tmpfs"]), name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) >= 1, name
        assert megabytes(limits["memory"]) > 0, name
    assert "no-new-privileges:true" in services["db"]["security_opt"]

    app = services["app"]
    env = container_environment(app, stages, Path("/run/secrets"))
    workers = int(env["WEB_CONCURRENCY"])
    limits = app["deploy"]["resources"]["limits"]
    needed = RSS_BASE_MB + RSS_PER_WORKER_MB * workers
    assert megabytes(limits["memory"]) >= needed * 1.3, "peak RSS plus headroom (and the tmpfs)"
    assert megabytes(app["deploy"]["resources"]["reservations"]["memory"]) >= needed
    assert float(limits["cpus"]) >= workers, "a core per worker"


# --- Kubernetes ----------------------------------------------------------------------


def manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for document in yaml.safe_load_all(path.read_text()):
                yield path, document


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests()}


def pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = resource["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any], configmap: dict[str, Any]) -> dict[str, str]:
    env = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
        env.update(configmap["data"])
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert [image["name"] for image in kustomization["images"]] == ["action-links"]


def test_every_pod_is_locked_down_like_the_compose_file(
    resources: dict[tuple[str, str], dict[str, Any]], stages: list[Stage]
) -> None:
    uid, gid = (int(part) for part in stages[-1].last("USER").arguments.split(":"))
    workloads = [r for (kind, _), r in resources.items() if kind in ("Deployment", "Job")]
    assert len(workloads) == 3, "web, dispatcher, migrate"
    for workload in workloads:
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid), name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        volumes = {v["name"]: v for v in spec["volumes"]}
        (container,) = spec["containers"]
        assert container["image"] == "action-links", "set by the kustomization"
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, name
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"], f"{name}: the root is read-only; /tmp is not"
        assert megabytes(container["resources"]["limits"]["memory"]) > 0, name
        assert container["resources"]["requests"], name


def test_containers_read_settings_and_secret_files_the_code_knows(
    resources: dict[tuple[str, str], dict[str, Any]],
) -> None:
    configmap = resources[("ConfigMap", "action-links")]
    settings = {
        (f.validation_alias if isinstance(f.validation_alias, str) else name).upper()
        for name, f in Settings.model_fields.items()
    }
    for (kind, name), workload in resources.items():
        if kind not in ("Deployment", "Job"):
            continue
        spec = pod_spec(workload)
        (container,) = spec["containers"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounted: dict[str, set[str]] = {}
        for mount in container["volumeMounts"]:
            secret = volumes[mount["name"]].get("secret")
            if secret is not None:
                assert mount["readOnly"] is True
                assert secret["secretName"] == "action-links"
                mounted[mount["mountPath"]] = {item["key"] for item in secret["items"]}
        env = env_of(container, configmap)
        read: set[str] = set()
        for variable, value in env.items():
            assert variable in settings | {f"{s}_FILE" for s in FILE_BACKED} | set(
                SERVE_VARIABLES
            ), f"{name}: {variable} is read by nothing"
            if variable.endswith("_FILE"):
                assert variable.removesuffix("_FILE") in FILE_BACKED
                directory, _, file = value.rpartition("/")
                assert file in mounted.get(directory, set()), f"{name}: {value} is not mounted"
                read.add(file)
        assert read == set().union(*mounted.values()), f"{name}: mounts only what it reads"
        assert read <= SECRET_KEYS_IN_SECRET
        assert "database_url" in read, name


def test_web_dispatcher_and_migration_run_the_right_commands(
    resources: dict[tuple[str, str], dict[str, Any]], stages: list[Stage]
) -> None:
    configmap = resources[("ConfigMap", "action-links")]
    entrypoint = stages[-1].last("ENTRYPOINT").exec_form()
    image_command = stages[-1].last("CMD").exec_form()
    commands = {}
    for name in ("action-links-web", "action-links-dispatcher"):
        (container,) = pod_spec(resources[("Deployment", name)])["containers"]
        argv = entrypoint + container.get("args", image_command)
        env = {**image_environment(stages), **env_of(container, configmap)}
        commands[name] = parse_command(argv, env), env
    (migrate,) = pod_spec(resources[("Job", "action-links-migrate")])["containers"]
    assert parse_command(entrypoint + migrate["args"], {}).command == "migrate"
    assert pod_spec(resources[("Job", "action-links-migrate")])["restartPolicy"] == "Never"

    web, web_env = commands["action-links-web"]
    assert web.command == "serve"
    dispatcher, _ = commands["action-links-dispatcher"]
    assert dispatcher.command == "dispatcher"
    # Its retries and failed deliveries are counted there: it serves /metrics, scraped.
    deployment = resources[("Deployment", "action-links-dispatcher")]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(dispatcher.metrics_port)
    assert dispatcher.metrics_host == "0.0.0.0"
    (container,) = pod_spec(deployment)["containers"]
    assert container["ports"][0]["containerPort"] == dispatcher.metrics_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The dispatcher runs on its own, so the web pods must not run one each.
    configured = Settings(webhook_dispatcher=web_env["WEBHOOK_DISPATCHER"])
    assert configured.webhook_dispatcher is False


def test_web_probes_ports_and_sizing(resources: dict[tuple[str, str], dict[str, Any]]) -> None:
    configmap = resources[("ConfigMap", "action-links")]
    (container,) = pod_spec(resources[("Deployment", "action-links-web")])["containers"]
    env = env_of(container, configmap)
    (port,) = container["ports"]
    assert port["name"] == "http"
    assert str(port["containerPort"]) == env["PORT"]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # /readyz waits up to 2 s for the database: the probe's timeout must be longer.
    assert container["readinessProbe"]["timeoutSeconds"] > 2
    workers = int(env["WEB_CONCURRENCY"])
    limits = container["resources"]["limits"]
    assert megabytes(limits["memory"]) >= (RSS_BASE_MB + RSS_PER_WORKER_MB * workers) * 1.3
    assert float(limits["cpu"]) >= workers


def test_service_budget_and_autoscaler_point_at_the_web_pods(
    resources: dict[tuple[str, str], dict[str, Any]],
) -> None:
    web = resources[("Deployment", "action-links-web")]
    pod_labels = web["spec"]["template"]["metadata"]["labels"]
    assert web["spec"]["selector"]["matchLabels"] == pod_labels
    service = resources[("Service", "action-links")]
    assert service["spec"]["selector"] == pod_labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    budget = resources[("PodDisruptionBudget", "action-links-web")]
    assert budget["spec"]["selector"]["matchLabels"] == pod_labels
    assert budget["spec"]["maxUnavailable"] < web["spec"]["replicas"]
    autoscaler = resources[("HorizontalPodAutoscaler", "action-links-web")]
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "action-links-web")
    assert autoscaler["spec"]["minReplicas"] > budget["spec"]["maxUnavailable"]
    dispatcher = resources[("Deployment", "action-links-dispatcher")]
    assert dispatcher["spec"]["template"]["metadata"]["labels"] != pod_labels, "not behind it"

    # At its ceiling, the web tier and the dispatchers stay within PostgreSQL's connections.
    configmap = resources[("ConfigMap", "action-links")]
    (container,) = pod_spec(web)["containers"]
    env = env_of(container, configmap)
    pool = int(configmap["data"]["DATABASE_POOL_SIZE"])
    connections = autoscaler["spec"]["maxReplicas"] * int(env["WEB_CONCURRENCY"]) * pool
    connections += dispatcher["spec"]["replicas"] * pool + 1  # + the migration
    assert connections < POSTGRES_MAX_CONNECTIONS
