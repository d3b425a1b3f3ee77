"""The collector the `centralized-logging` runbook renders: Fluent Bit's configuration parsed back and
checked for the inputs, filters and outputs that matter (not a string snapshot), and the manifests
(tolerations, host paths, least RBAC, credentials by Secret reference only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from opsbook.errors import Invalid
from opsbook.ops import centralized_logging as logcollect
from opsbook.ops.base import declaration
from opsbook.results import Code
from opsbook.targets import LOCAL, Target
from opsbook.testing.runbook import do, make_context

RUNBOOK = "centralized-logging"
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / f"{RUNBOOK}.ipynb"


def context(target: Target = LOCAL, *, mode: str = "plan", **params: Any) -> logcollect.Context:
    return make_context(RUNBOOK, mode=mode, target=target, **params)




def parsed_config(ctx: logcollect.Context) -> dict:
    """The configuration as Fluent Bit reads it: the ConfigMap's file, parsed."""
    (cm,) = [m for m in logcollect.render_manifests(ctx) if m["kind"] == "ConfigMap"]
    return yaml.safe_load(cm["data"][logcollect.CONFIG_FILE])


def test_tail_input_reads_every_container_log_with_the_cri_parser_and_a_disk_buffer():
    cfg = parsed_config(context())
    (tail,) = cfg["pipeline"]["inputs"]
    assert tail["name"] == "tail" and tail["path"] == "/var/log/containers/*.log"
    assert "cri" in [p.strip() for p in tail["multiline.parser"].split(",")]
    assert tail["storage.type"] == "filesystem"
    assert tail["db"].startswith(logcollect.STATE_DIR)  # read positions survive a restart
    assert cfg["service"]["storage.path"].startswith(logcollect.STATE_DIR)
    assert cfg["service"]["health_check"] == "on" and cfg["service"]["http_port"] == logcollect.HTTP_PORT


def test_kubernetes_filter_adds_namespace_pod_container_and_labels():
    cfg = parsed_config(context())
    (flt,) = cfg["pipeline"]["filters"]
    (tail,) = cfg["pipeline"]["inputs"]
    assert flt["name"] == "kubernetes" and flt["labels"] == "on"
    assert flt["match"] == tail["tag"] == "kube.*"
    assert flt["kube_tag_prefix"] == "kube.var.log.containers."  # tag prefix + file name -> pod metadata


@pytest.mark.parametrize("kind,plugin", [("opensearch", "opensearch"), ("elasticsearch", "es")])
def test_search_backend_output_with_daily_indices_buffer_and_unlimited_retries(kind, plugin):
    s = context(backend_kind=kind, backend_url="https://logs.example.test:9201", index_prefix="team-logs",
                buffer_size="2G")
    (out,) = parsed_config(s)["pipeline"]["outputs"]
    assert out["name"] == plugin and out["match"] == "kube.*"
    assert (out["host"], out["port"], out["tls"], out["tls.verify"]) == ("logs.example.test", 9201, "on", "on")
    assert out["logstash_format"] == "on" and out["logstash_prefix"] == "team-logs"
    assert out["suppress_type_name"] == "on" and out["replace_dots"] == "on"
    assert out["storage.total_limit_size"] == "2G" and out["retry_limit"] == "no_limits"
    assert "http_user" not in out and "http_passwd" not in out
    assert logcollect.index_for(s.settings.index_prefix).startswith("team-logs-20")


def test_loki_output_with_labels():
    s = context(backend_kind="loki", backend_url="http://loki.example.test:3100")
    (out,) = parsed_config(s)["pipeline"]["outputs"]
    assert out["name"] == "loki" and (out["host"], out["port"]) == ("loki.example.test", 3100)
    labels = dict(x.strip().split("=", 1) for x in out["labels"].split(","))
    assert labels["namespace"] == "$kubernetes['namespace_name']" and labels["pod"] == "$kubernetes['pod_name']"
    assert labels["container"] == "$kubernetes['container_name']"
    assert labels["app"] == "$kubernetes['labels']['app']"
    assert out["retry_limit"] == "no_limits" and out["storage.total_limit_size"] == "1G"
    assert "tls" not in out


def test_backend_kind_auto_follows_the_target_and_collector_url_wins_for_the_collectors():
    target = Target(name="t", log_store_url="http://search.example.test:9200", log_store_kind="loki")
    s = context(target)
    assert s.kind == "loki" and s.backend_url == "http://search.example.test:9200"
    s = context(target, collector_url="http://loki-gateway.logging.svc:80")
    (out,) = parsed_config(s)["pipeline"]["outputs"]
    assert (out["host"], out["port"]) == ("loki-gateway.logging.svc", 80)
    # nothing given at all: the usual in-cluster service name, said so
    assert context().sink_url == logcollect.IN_CLUSTER_DEFAULTS["opensearch"]


def test_invalid_buffer_size_is_refused():
    ctx = context(buffer_size="lots")
    with pytest.raises(Invalid, match="buffer_size"):
        logcollect.settings_report(ctx)  # the Settings step fails, before anything is rendered
    with pytest.raises(Invalid, match="buffer_size"):
        logcollect.render_config(ctx)
    (bad,) = [c for c in logcollect.preflight(ctx) if not c.passed]
    assert bad.name == "configuration renders" and "buffer_size 'lots'" in bad.reason


def test_daemonset_lands_on_every_node_and_mounts_the_host_logs_read_only():
    ms = {m["kind"]: m for m in logcollect.render_manifests(context())}
    assert set(ms) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
    pod = ms["DaemonSet"]["spec"]["template"]["spec"]
    effects = {t.get("effect") for t in pod["tolerations"] if t["operator"] == "Exists" and "key" not in t}
    assert effects == {"NoSchedule", "NoExecute"}  # control-plane and any other tainted node
    hostpaths = {v["hostPath"]["path"]: v["name"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/var/log/containers", "/var/log/pods"} <= set(hostpaths)
    (ctr,) = pod["containers"]
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    assert mounts[hostpaths["/var/log/containers"]]["readOnly"] and mounts[hostpaths["/var/log/pods"]]["readOnly"]
    assert pod["serviceAccountName"] == ms["ServiceAccount"]["metadata"]["name"]
    assert ctr["args"] == ["-c", f"/fluent-bit/etc/{logcollect.CONFIG_FILE}"]
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/api/v1/health"


def test_rbac_is_read_only_on_pods_and_namespaces_and_bound_to_the_collector():
    s = context(namespace="obs")
    ms = {m["kind"]: m for m in logcollect.render_manifests(s)}
    (rule,) = ms["ClusterRole"]["rules"]
    assert rule == {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}
    binding = ms["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == ms["ClusterRole"]["metadata"]["name"] == "fluent-bit-read-obs"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fluent-bit", "namespace": "obs"}]


@pytest.mark.parametrize("ref,secret,key", [
    ("env:LOG_STORE_PASSWORD", "log-store-credentials", "password"),
    ("k8s:logging/opensearch-admin/pass", "opensearch-admin", "pass"),
    ("k8s:elsewhere/opensearch-admin/pass", "log-store-credentials", "password"),  # not readable by the pod
])
def test_credentials_reach_the_collector_only_by_secret_reference(ref, secret, key):
    s = context(backend_url="https://os.example.test", backend_user="fluent", backend_password=ref)
    ms = {m["kind"]: m for m in logcollect.render_manifests(s)}
    (ctr,) = ms["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in ctr["env"]}
    assert env["LOG_STORE_PASSWORD"] == {"name": "LOG_STORE_PASSWORD",
                                         "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
    assert env["LOG_STORE_USER"]["value"] == "fluent"
    (out,) = parsed_config(s)["pipeline"]["outputs"]
    assert out["http_user"] == "${LOG_STORE_USER}" and out["http_passwd"] == "${LOG_STORE_PASSWORD}"
    assert ref not in yaml.safe_dump_all(list(ms.values()))  # rendering never resolves the reference


def test_a_new_configuration_rolls_the_collectors():
    a = logcollect.render_manifests(context(buffer_size="1G"))[-1]
    b = logcollect.render_manifests(context(buffer_size="3G"))[-1]
    key = "opsbook.io/config-sha256"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]


def test_on_local_everything_plans_or_skips_without_a_cluster_or_a_store():
    ctx = context()
    assert logcollect.settings_report(ctx).summary == "opensearch at (no URL); no cluster (plan only)"
    checks = do(logcollect.preflight, ctx)
    assert all(c.passed for c in checks), checks
    assert do(logcollect.deploy, ctx).outcome == "planned"  # the rendered manifests, without a cluster
    assert do(logcollect.collectors_on_every_node, ctx).outcome == "skipped"
    assert do(logcollect.emit_marker, ctx).details["pod"]["spec"]["restartPolicy"] == "Never"
    marker = do(logcollect.marker_searchable, ctx)
    assert (marker.outcome, marker.summary) == ("skipped", "no marker was emitted (plan mode): not checked")
    assert do(logcollect.counts_per_service, ctx).outcome == "skipped"
    assert do(logcollect.search, ctx).outcome == "skipped"
    # apply on a target without a cluster: the changes do not apply here, and say why
    applying = context(mode="apply")
    assert do(logcollect.deploy, applying).summary == "no cluster on target local: nothing to change"
    assert do(logcollect.emit_marker, applying).summary == "target local has no cluster: no marker pod"
    assert do(logcollect.marker_searchable, applying).summary == (
        "no marker was emitted (target local has no cluster): not checked")
    searching = context(search_service="critic")
    assert do(logcollect.search, searching).summary == "target local has no log store URL: nothing to search"


def test_unpinned_collector_image_fails_the_preflight():
    ctx = context(collector_image="fluent/fluent-bit:latest")
    (bad,) = [c for c in logcollect.preflight(ctx) if not c.passed]
    assert bad.name == "collector image pinned"


def test_configuration_and_manifests_are_shown_as_yaml_not_displayed():
    ctx = context()
    cfg = logcollect.configuration(ctx)
    (code,) = cfg.show
    assert isinstance(code, Code) and code.lang == "yaml" and yaml.safe_load(code.text) == cfg.value
    ms = logcollect.manifests(ctx)
    (code,) = ms.show
    assert [m["kind"] for m in yaml.safe_load_all(code.text)] == [m["kind"] for m in ms.value]


def test_every_cell_runs_one_declared_step_with_a_stable_id():
    """The notebook calls each step through ``run.do``; ids are unique (plan records are keyed by them)
    and the titles are the ones the records have always carried."""
    cells = ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    calls = [c.removeprefix("run.do(centralized_logging.").removesuffix(")") for c in cells if c.startswith("run.do(")]
    decls = [declaration(getattr(logcollect, name)) for name in calls]
    assert all(decls), calls
    assert [(d.id, d.title) for d in decls if d] == [
        ("settings", "Settings"), ("preflight", "Preflight"), ("collector-configuration", "Collector configuration"),
        ("render-manifests", "Render the manifests"), ("deploy-collectors", "Deploy the collectors"),
        ("collector-on-every-node", "A collector on every node"), ("emit-marker", "Emit a marker line"),
        ("marker-searchable", "Marker line is searchable"), ("logs-from-every-service", "Logs from every service"),
        ("search", "Search")]
