"""The collector the `centralized-logging` runbook renders: Fluent Bit's configuration parsed back and
checked for the inputs, filters and outputs that matter (not a string snapshot), and the manifests
(tolerations, host paths, least RBAC, credentials by Secret reference only)."""

from __future__ import annotations

import pytest
import yaml
from opsbook.errors import Invalid
from opsbook.ops import centralized_logging as logcollect
from opsbook.targets import LOCAL, Target


def settings(target: Target = LOCAL, **params) -> logcollect.Settings:
    return logcollect.settings_from({"mode": "plan", **params}, target)


def parsed_config(s: logcollect.Settings) -> dict:
    """The configuration as Fluent Bit reads it: the ConfigMap's file, parsed."""
    (cm,) = [m for m in logcollect.render_manifests(s) if m["kind"] == "ConfigMap"]
    return yaml.safe_load(cm["data"][logcollect.CONFIG_FILE])


def test_tail_input_reads_every_container_log_with_the_cri_parser_and_a_disk_buffer():
    cfg = parsed_config(settings())
    (tail,) = cfg["pipeline"]["inputs"]
    assert tail["name"] == "tail" and tail["path"] == "/var/log/containers/*.log"
    assert "cri" in [p.strip() for p in tail["multiline.parser"].split(",")]
    assert tail["storage.type"] == "filesystem"
    assert tail["db"].startswith(logcollect.STATE_DIR)  # read positions survive a restart
    assert cfg["service"]["storage.path"].startswith(logcollect.STATE_DIR)
    assert cfg["service"]["health_check"] == "on" and cfg["service"]["http_port"] == logcollect.HTTP_PORT


def test_kubernetes_filter_adds_namespace_pod_container_and_labels():
    cfg = parsed_config(settings())
    (flt,) = cfg["pipeline"]["filters"]
    (tail,) = cfg["pipeline"]["inputs"]
    assert flt["name"] == "kubernetes" and flt["labels"] == "on"
    assert flt["match"] == tail["tag"] == "kube.*"
    assert flt["kube_tag_prefix"] == "kube.var.log.containers."  # tag prefix + file name -> pod metadata


@pytest.mark.parametrize("kind,plugin", [("opensearch", "opensearch"), ("elasticsearch", "es")])
def test_search_backend_output_with_daily_indices_buffer_and_unlimited_retries(kind, plugin):
    s = settings(backend_kind=kind, backend_url="https://logs.example.test:9201", index_prefix="team-logs",
                 buffer_size="2G")
    (out,) = parsed_config(s)["pipeline"]["outputs"]
    assert out["name"] == plugin and out["match"] == "kube.*"
    assert (out["host"], out["port"], out["tls"], out["tls.verify"]) == ("logs.example.test", 9201, "on", "on")
    assert out["logstash_format"] == "on" and out["logstash_prefix"] == "team-logs"
    assert out["suppress_type_name"] == "on" and out["replace_dots"] == "on"
    assert out["storage.total_limit_size"] == "2G" and out["retry_limit"] == "no_limits"
    assert "http_user" not in out and "http_passwd" not in out
    assert logcollect.index_for(s).startswith("team-logs-20")


def test_loki_output_with_labels():
    s = settings(backend_kind="loki", backend_url="http://loki.example.test:3100")
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
    s = settings(target)
    assert s.kind == "loki" and s.backend_url == "http://search.example.test:9200"
    s = settings(target, collector_url="http://loki-gateway.logging.svc:80")
    (out,) = parsed_config(s)["pipeline"]["outputs"]
    assert (out["host"], out["port"]) == ("loki-gateway.logging.svc", 80)
    # nothing given at all: the usual in-cluster service name, said so
    assert settings().sink_url == logcollect.IN_CLUSTER_DEFAULTS["opensearch"]


def test_invalid_buffer_size_is_refused():
    with pytest.raises(Invalid, match="buffer_size"):
        settings(buffer_size="lots")


def test_daemonset_lands_on_every_node_and_mounts_the_host_logs_read_only():
    ms = {m["kind"]: m for m in logcollect.render_manifests(settings())}
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
    s = settings(namespace="obs")
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
    s = settings(backend_url="https://os.example.test", backend_user="fluent", backend_password=ref)
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
    a = logcollect.render_manifests(settings(buffer_size="1G"))[-1]
    b = logcollect.render_manifests(settings(buffer_size="3G"))[-1]
    key = "opsbook.io/config-sha256"
    assert a["spec"]["template"]["metadata"]["annotations"][key] != b["spec"]["template"]["metadata"]["annotations"][key]


def test_on_local_everything_plans_or_skips_without_a_cluster_or_a_store():
    lc = logcollect.configure({"mode": "plan"}, LOCAL).value
    checks = logcollect.preflight(lc)
    assert all(c.passed for c in checks), checks
    assert logcollect.plan_deploy(lc).outcome == "planned"
    assert logcollect.deploy(lc).outcome == "skipped"
    assert logcollect.collectors_on_every_node(lc).outcome == "skipped"
    assert logcollect.plan_marker(lc).details["pod"]["spec"]["restartPolicy"] == "Never"
    assert logcollect.marker_searchable(lc, None).outcome == "skipped"
    assert logcollect.counts_per_service(lc).outcome == "skipped"
    assert logcollect.search(lc).outcome == "skipped"


def test_unpinned_collector_image_fails_the_preflight():
    lc = logcollect.configure({"mode": "plan", "collector_image": "fluent/fluent-bit:latest"}, LOCAL).value
    (bad,) = [c for c in logcollect.preflight(lc) if not c.passed]
    assert bad.name == "collector image pinned"
