"""Checks of the deployment files: Dockerfile, deploy/compose.yaml, deploy/k8s, Prometheus rules and
their unit tests, Alertmanager, Grafana.

There is no container engine or cluster here, so the files are checked statically: they parse,
defacto containers' arguments parse with the real CLI parser, images are pinned, published ports are
bound to 127.0.0.1, every metric a rule or a dashboard panel uses is one the worker exports, and
``promtool`` / ``amtool`` (Debian packages ``prometheus`` and ``prometheus-alertmanager``) accept
the configurations and pass the alert rules' unit tests. Nothing listens on any address.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from setuptools import find_packages

from stream.cli import build_parser
from stream.publish.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
PROM = DEPLOY / "prometheus"
RULES = PROM / "rules" / "defacto.rules.yml"
RULE_TESTS = PROM / "tests" / "defacto.rules_test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "defacto.json"

DEBIAN_PACKAGE = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}
EXPECTED_ALERTS = {"DefactoRegistryGap", "DefactoPipelineStalled", "DefactoNeverPublished",
                   "DefactoWorkerDown", "DefactoMigrationSurge",
                   "DefactoConsumerLagGrowing", "DefactoRejectRateHigh",
                   "DefactoPartitionStopped", "DefactoPublishRefused", "DefactoRedisDataLost",
                   "DefactoWindowSkipped", "DefactoRedisMayEvict"}
# Series Prometheus itself writes (scrape health, alert state): allowed in expressions.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
                       "scrape_samples_post_metric_relabeling", "scrape_series_added",
                       "ALERTS", "ALERTS_FOR_STATE"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                   "or", "unless", "offset", "inf", "nan"}


def run_tool(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run promtool/amtool; a missing binary is a failure that says what to install."""
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} not found on PATH: install the Debian package "
                    f"`{DEBIAN_PACKAGE[name]}` (apt-get install {DEBIAN_PACKAGE[name]})")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          check=False)


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (f"{' '.join(proc.args)} exited {proc.returncode}\n"
                                  f"{proc.stdout}\n{proc.stderr}")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                docs.append((path, doc))
    return docs


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def is_defacto_service(svc: dict[str, Any]) -> bool:
    return "build" in svc or str(svc.get("image", "")).split(":")[0] == "defacto"


def parse_cli(argv: list[Any], where: str) -> Any:
    """Parse a container's arguments with the real ``defacto`` parser (SystemExit = unknown option
    or bad value)."""
    assert isinstance(argv, list) and argv, f"{where}: command/args must be a non-empty list"
    assert all(isinstance(a, str) for a in argv), f"{where}: every argument must be a string: {argv}"
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `defacto {' '.join(argv)}` does not parse (exit {exc.code})")


# --- every file parses ------------------------------------------------------------------------


def test_every_yaml_file_under_deploy_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    names = {p.relative_to(DEPLOY).as_posix() for p in files}
    assert {"compose.yaml", "prometheus/prometheus.yml", "prometheus/rules/defacto.rules.yml",
            "prometheus/tests/defacto.rules_test.yml", "alertmanager/alertmanager.yml",
            "grafana/provisioning/datasources/prometheus.yml",
            "grafana/provisioning/dashboards/defacto.yml", "k8s/kustomization.yaml"} <= names
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


def test_k8s_documents_have_api_version_kind_and_name() -> None:
    docs = k8s_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
            "Kustomization"} <= kinds
    for path, doc in docs:
        for key in ("apiVersion", "kind"):
            assert doc.get(key), f"{path.name}: a document without {key}"
        assert (doc.get("metadata") or {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"


def test_kustomization_lists_the_manifests_but_not_the_secret_template() -> None:
    kust = load_yaml(K8S / "kustomization.yaml")
    listed = set(kust["resources"])
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists a missing file {name}"
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    secret_templates = {p.name for p in K8S.glob("*.secret.example.yaml")}
    assert secret_templates, "the pseudonymization key secret template is missing"
    assert listed == manifests - secret_templates
    for name in secret_templates:  # a template must never carry a key
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            assert doc["kind"] == "Secret"
            assert not any((doc.get("stringData") or {}).values()) and not doc.get("data")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: `kubectl kustomize deploy/k8s` not run")
    proc = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert_ok(proc)
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert all(d["metadata"].get("namespace") == "defacto" for d in rendered if d["kind"] != "Namespace")


# --- compose ----------------------------------------------------------------------------------


def test_compose_has_the_services_and_pins_images() -> None:
    services = compose()["services"]
    required = {"kafka", "kafka-init", "redis", "dashboard", "prometheus", "alertmanager", "grafana"}
    assert required <= set(services), f"missing services: {required - set(services)}"
    workers = [n for n, s in services.items() if is_defacto_service(s) and s["command"][0] == "worker"]
    assert len(workers) >= 2, f"two workers expected, got {workers}"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image (a built service must name its image too)"
        assert "@sha256:" in image or re.fullmatch(r"[\w./-]+:[\w.-]+", image), \
            f"{name}: image {image!r} is not pinned to a tag"
        tag = image.rsplit(":", 1)[-1]
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} has no version tag"


def test_compose_topics_and_dependencies() -> None:
    services = compose()["services"]
    init = re.sub(r"\s*\\\n\s*", " ", " ".join(services["kafka-init"]["command"]))
    partitions = re.search(r"--create --if-not-exists --topic pings --partitions (\d+)", init)
    assert partitions and int(partitions[1]) >= 2, init
    assert "--topic pings.dead --partitions 1" in init
    for name, svc in services.items():
        if is_defacto_service(svc) and svc["command"][0] == "worker":
            deps = svc["depends_on"]
            assert deps["kafka-init"]["condition"] == "service_completed_successfully", name
            assert deps["redis"]["condition"] == "service_healthy", name
            assert "healthcheck" in svc, name


def test_compose_publishes_ports_on_loopback_only() -> None:
    published = 0
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            published += 1
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", f"{name}: port {port} not on 127.0.0.1"
            else:
                assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+(/(tcp|udp))?", str(port)), \
                    f"{name}: port {port!r} must be published as 127.0.0.1:HOST:CONTAINER"
    assert published >= 4  # dashboard, prometheus, alertmanager, grafana at least


def test_compose_defacto_commands_parse_with_the_cli() -> None:
    doc = compose()
    services = doc["services"]
    secrets = doc["secrets"]
    seen = set()
    for name, svc in services.items():
        if not is_defacto_service(svc):
            continue
        args = parse_cli(svc["command"], f"compose service {name}")
        seen.add(args.command)
        if args.command == "worker":
            assert args.web_host == "0.0.0.0", f"{name}: the web port must be reachable by Prometheus"
            assert 0 < args.gap_threshold < 1
            secret = Path(args.key_file)
            assert secret.parent == Path("/run/secrets") and secret.name in svc["secrets"], name
            assert (COMPOSE.parent / secrets[secret.name]["file"]).parent.name == "secrets"
            mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
            for path in (args.regions, args.cells, args.registry, args.calibration):
                assert str(Path(path).parent) in mounts, f"{name}: {path} is not on a mounted volume"
        if args.command == "dashboard":
            assert args.host == "0.0.0.0"
            assert any(str(p).endswith(f":{args.port}") for p in svc["ports"])
    assert {"worker", "dashboard"} <= seen


def test_compose_mounts_what_exists() -> None:
    for name, svc in compose()["services"].items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                if src == "./data":  # created by the user (documented at the top of compose.yaml)
                    continue
                assert (COMPOSE.parent / src).exists(), f"{name}: mounts missing {src}"
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert {"/data/", "/secrets/"} <= set(ignored), "deploy/data and deploy/secrets must be git-ignored"
    text = COMPOSE.read_text(encoding="utf-8")
    head = text.split("\nname:", 1)[0]
    for needle in ("defacto simulate", "defacto calibrate", "pseudonym.key", "token_hex"):
        assert needle in head, f"compose.yaml's header must explain {needle!r}"


# --- kubernetes -------------------------------------------------------------------------------


def pod_specs() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for _, doc in k8s_docs():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc["metadata"]["name"], doc, doc["spec"]["template"]


def test_k8s_defacto_container_args_parse_with_the_cli() -> None:
    settings = {}
    for _, doc in k8s_docs():
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "defacto-settings":
            settings = doc["data"]
    seen = set()
    for name, _, template in pod_specs():
        for c in template["spec"]["containers"]:
            if not c["image"].startswith("defacto"):
                continue
            assert c["image"] != "defacto" and not c["image"].endswith(":latest")
            argv = [re.sub(r"\$\((\w+)\)", lambda m: settings.get(m[1], m[0]), a) for a in c["args"]]
            assert not any("$(" in a for a in argv), f"{name}: args use an undefined variable"
            args = parse_cli(argv, f"k8s {name}/{c['name']}")
            seen.add(args.command)
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            if args.command == "worker":
                assert args.web_port == 6066 and args.web_host == "0.0.0.0"
                mounts = {m["mountPath"] for m in c["volumeMounts"]}
                assert str(Path(args.key_file).parent) in mounts
                assert str(Path(args.regions).parent) in mounts
    assert {"worker", "dashboard"} <= seen


def test_k8s_worker_probes_scraping_and_disruption_budget() -> None:
    docs = [d for _, d in k8s_docs()]
    workers = [(d, t) for n, d, t in pod_specs() if t["spec"]["containers"][0]["args"][0] == "worker"]
    assert len(workers) == 1
    deploy, template = workers[0]
    # at most the partitions of the pings topic (the manifest's comment suggests creating 12)
    assert 1 <= deploy["spec"]["replicas"] <= 12
    labels = template["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ann = template["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "6066"
    assert ann["prometheus.io/path"] == "/metrics"
    c = template["spec"]["containers"][0]
    assert {"name": "http", "containerPort": 6066, "protocol": "TCP"} in c["ports"]
    # readiness on /healthz (503 while a partition is stopped); liveness on /livez, so that a
    # stopped partition, which a restart does not cure, does not restart the pod in a loop
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ("http", 6066)
    pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert len(pdbs) == 1 and pdbs[0]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    secret_vols = [v for v in template["spec"]["volumes"] if "secret" in v]
    assert secret_vols and secret_vols[0]["secret"]["secretName"] == "defacto-pseudonym-key"
    for svc in (d for d in docs if d["kind"] == "Service"):
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= t["metadata"]["labels"].items() for _, _, t in pod_specs()), \
            f"Service {svc['metadata']['name']} selects no pod template"


# --- Dockerfile -------------------------------------------------------------------------------


def dockerignore_excludes(rel: str) -> bool:
    """Whether ``.dockerignore`` keeps ``rel`` out of the build context (last match wins)."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pat = line.strip()
        if not pat or pat.startswith("#"):
            continue
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, pat) or fnmatch.fnmatchcase(p, pat.removeprefix("**/"))
               or fnmatch.fnmatchcase(p.rsplit("/", 1)[-1], pat.removeprefix("**/")) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerfile_pinned_non_root_with_defacto_entrypoint() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert froms and all(re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", f) for f in froms), froms
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entry = [ln for ln in lines if ln.upper().startswith("ENTRYPOINT ")]
    assert entry and json.loads(entry[-1].split(None, 1)[1]) == ["defacto"]
    assert re.search(r"pip (wheel|install)\b.*\s\.$", text, re.M), "the project is installed from pyproject"


def test_docker_build_context_has_what_the_image_installs() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = set()
    for m in re.finditer(r"^COPY\s+(?!--from)(.+)$", text, re.M):
        *sources, _ = m[1].split()
        copied.update(s.rstrip("/") for s in sources if not s.startswith("--"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", pyproject["project"]["readme"],
              *(p.rstrip("*").split(".")[0] for p in packages)}
    assert needed <= copied, f"the Dockerfile does not copy {needed - copied}"
    for rel in needed:
        assert (ROOT / rel).exists() and not dockerignore_excludes(rel), f"{rel} is not in the context"
    for rel in (".venv", ".git", "deploy/secrets/pseudonym.key", "deploy/data/pings.jsonl", "tests",
                "stream/__pycache__/cli.cpython-311.pyc"):
        assert dockerignore_excludes(rel), f".dockerignore lets {rel} into the build context"
    # the image installs a wheel, not the source tree: every data file must be package data
    data = pyproject["tool"]["setuptools"].get("package-data", {})
    dirs = sorted(find_packages(str(ROOT), include=packages), key=len, reverse=True)
    for path in (ROOT / "stream").rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in rel:
            continue
        owner = next(p for p in dirs if rel.startswith(p.replace(".", "/") + "/"))
        inner = rel.removeprefix(owner.replace(".", "/") + "/")
        globs = [*data.get(owner, []), *data.get("*", [])]
        assert any(fnmatch.fnmatchcase(inner, g) for g in globs), \
            f"{rel} is not package data in pyproject.toml: the image would lack it"


# --- Prometheus and Alertmanager --------------------------------------------------------------


@pytest.mark.integration
def test_promtool_check_config() -> None:
    proc = run_tool("promtool", "check", "config", "prometheus.yml", cwd=PROM)
    assert_ok(proc)
    assert "1 rule files found" in proc.stdout + proc.stderr
    conf = load_yaml(PROM / "prometheus.yml")
    jobs = {j["job_name"]: j for j in conf["scrape_configs"]}
    assert jobs["defacto"]["metrics_path"] == "/metrics"
    services = compose()["services"]
    workers = {n for n, s in services.items() if is_defacto_service(s) and s["command"][0] == "worker"}
    targets = {t for sc in jobs["defacto"]["static_configs"] for t in sc["targets"]}
    assert targets == {f"{w}:6066" for w in workers}
    am = conf["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am == ["alertmanager:9093"] and "alertmanager" in services


@pytest.mark.integration
def test_promtool_check_config_kubernetes_variant(tmp_path: Path) -> None:
    """prometheus-k8s.yml with its Kubernetes discovery swapped for an empty static list (Debian's
    promtool is built without Kubernetes service discovery); the relabelling is still checked."""
    conf = load_yaml(PROM / "prometheus-k8s.yml")
    job = next(j for j in conf["scrape_configs"] if j["job_name"] == "defacto")
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": []}]
    conf["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    assert_ok(run_tool("promtool", "check", "config", str(tmp_path / "prometheus.yml")))


@pytest.mark.integration
def test_promtool_check_rules() -> None:
    proc = run_tool("promtool", "check", "rules", str(RULES))
    assert_ok(proc)


@pytest.mark.integration
def test_promtool_rule_unit_tests() -> None:
    proc = run_tool("promtool", "test", "rules", str(RULE_TESTS))
    assert_ok(proc)
    assert "SUCCESS" in proc.stdout + proc.stderr


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def test_alert_rules_are_labelled_annotated_and_unit_tested() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert names >= EXPECTED_ALERTS, f"missing alerts: {EXPECTED_ALERTS - names}"
    tested = {t["alertname"] for case in load_yaml(RULE_TESTS)["tests"]
              for t in case.get("alert_rule_test", [])}
    firing_tested = {t["alertname"] for case in load_yaml(RULE_TESTS)["tests"]
                     for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert names <= tested and names <= firing_tested, f"alerts without unit tests: {names - firing_tested}"
    for r in rules:
        assert r["labels"]["severity"] in ("info", "warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_registry_gap_alert_uses_the_whole_interval_and_the_exported_threshold() -> None:
    gap = [r for r in alert_rules() if r["alert"] == "DefactoRegistryGap"]
    exprs = " ".join(r["expr"] for r in gap)
    # over: lower end above +threshold; under: upper end below -threshold
    assert re.search(r"defacto_gap_ratio_lower\)\s*>\s*scalar\(max\(defacto_gap_threshold_ratio\)\)", exprs)
    assert re.search(r"defacto_gap_ratio_upper\)\s*<\s*-scalar\(max\(defacto_gap_threshold_ratio\)\)", exprs)
    assert not re.search(r"[<>]\s*-?0?\.\d", exprs), "the threshold must come from the worker, not a literal"
    for r in gap:
        hours = re.fullmatch(r"(\d+)h", r["for"])
        assert hours and int(hours[1]) >= 2, "a gap must be sustained over several hourly snapshots"
        assert "by (region)" in r["expr"] and "region" in r["annotations"]["description"]


@pytest.mark.integration
def test_amtool_check_config_and_routing() -> None:
    assert_ok(run_tool("amtool", "check-config", str(ALERTMANAGER)))
    conf = load_yaml(ALERTMANAGER)
    assert {"alertname", "region"} <= set(conf["route"]["group_by"])
    assert any(r.get("webhook_configs") for r in conf["receivers"])
    proc = run_tool("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                    "alertname=DefactoRegistryGap", "region=astana")
    assert_ok(proc)
    assert proc.stdout.split() == ["planners"]
    proc = run_tool("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                    "alertname=DefactoPipelineStalled")
    assert proc.stdout.split() == ["operations"]


# --- Grafana ----------------------------------------------------------------------------------


def grafana_panels() -> list[dict[str, Any]]:
    out = []
    for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]:
        out.extend(p.get("panels", []) if p["type"] == "row" else [p])
    return out


def test_grafana_dashboard_panels_have_datasource_and_targets() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["uid"] and dash["title"]
    panels = grafana_panels()
    assert len(panels) >= 10
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for p in panels:
        ds = p.get("datasource") or {}
        assert ds.get("type") == "prometheus" and ds.get("uid"), f"panel {p['title']!r}: no datasource"
        assert p.get("targets"), f"panel {p['title']!r}: no targets"
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"panel {p['title']!r}: target without expr"
        for ref in re.findall(r"\$\{?(\w+)", json.dumps(p)):
            assert ref in variables or ref.startswith("__"), f"panel {p['title']!r} uses ${ref}"
    provisioned = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    uid = variables["datasource"]["current"]["value"]
    assert any(d["uid"] == uid and d["type"] == "prometheus" for d in provisioned)
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("present", "resident", "gap", "reject", "lag", "batch", "snapshot", "error"):
        assert word in titles, f"no panel about {word}"


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "defacto.yml")["providers"][0]
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    url = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]["url"]
    assert url == "http://prometheus:9090"


# --- metric names -----------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Sample names a worker exposes: every labelled metric gets one child, then collect()."""
    m = WorkerMetrics()
    for wrapper in vars(m).values():
        if isinstance(wrapper, MetricWrapperBase) and wrapper._labelnames:
            wrapper.labels(*("x" for _ in wrapper._labelnames))
    return {s.name for family in m.registry.collect() for s in family.samples}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, keywords, labels, durations and Grafana
    variables left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)\s*(\()?", s):
        if m[2] is None and m[1].lower() not in PROMQL_KEYWORDS:
            names.add(m[1])
    return names


def test_promql_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, instance) (rate(defacto_batch_duration_seconds_bucket'
            '{job="defacto", region=~"$region"}[$__rate_interval]))) > on () group_left () '
            '-scalar(max(defacto_gap_threshold_ratio)) and up offset 5m unless 1e3 * x_total')
    assert promql_metric_names(expr) == {"defacto_batch_duration_seconds_bucket",
                                         "defacto_gap_threshold_ratio", "up", "x_total"}


def all_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule, every query in a rule's annotations, and every panel target."""
    out = []
    for r in alert_rules():
        out.append((f"rule {r['alert']}", r["expr"]))
        for key, text in r["annotations"].items():
            for q in re.findall(r'"([^"]*\([^"]*)"', text):
                out.append((f"rule {r['alert']} annotation {key}", q.replace("%s", "x")))
    for p in grafana_panels():
        out.extend((f"panel {p['title']!r}", t["expr"]) for t in p["targets"])
    for v in json.loads(DASHBOARD.read_text(encoding="utf-8"))["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", v["definition"])
            assert m, f"variable {v['name']}: unexpected query {v['definition']!r}"
            out.append((f"variable {v['name']}", m[1]))
    return out


def test_every_metric_used_is_exported_by_the_worker() -> None:
    exported = exported_metric_names()
    assert {"defacto_pings_consumed_total", "defacto_batch_duration_seconds_bucket",
            "defacto_gap_ratio_lower", "defacto_present_population"} <= exported
    used: dict[str, str] = {}
    for where, expr in all_expressions():
        for name in promql_metric_names(expr):
            used.setdefault(name, where)
    assert {"defacto_gap_ratio_lower", "defacto_gap_ratio_upper", "defacto_gap_threshold_ratio",
            "defacto_window_seconds", "up"} <= set(used)
    unknown = {n: w for n, w in used.items() if n not in exported and n not in PROMETHEUS_BUILTINS}
    assert not unknown, f"metrics the worker does not export: {unknown}"


# --- lint -------------------------------------------------------------------------------------


def test_this_file_is_ruff_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", str(Path(__file__))],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert_ok(proc)
