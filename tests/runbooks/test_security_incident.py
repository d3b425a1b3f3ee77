"""The `security-incident-response` runbook against real things: the Kubernetes API test server (``kube``:
quarantine, account disable/restore, evidence, helm rollback), the real ``postgres`` (a dump restored),
the real ``prometheus`` (an always-firing rule read through the alerts API), and the notebook headless
through the real CLI on `local`, then `opsbook incident` / `opsbook evidence` on its record."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from opsbook import secrets
from opsbook.clients import Clients
from opsbook.clients.helm import Helm
from opsbook.clients.kube import Kube
from opsbook.clients.pgbackup import PgBackup
from opsbook.clients.prometheus import Prometheus
from opsbook.errors import NotFound
from opsbook.ops import security_incident_response as incident
from opsbook.targets import LOCAL
from opsbook.testing.kube import requires_test_server, wait_until
from opsbook.testing.runbook import make_context

from .conftest import CHART, NOTEBOOKS, manifests_of, values_for
from .rbac import CONTEXT, assert_applied, assert_not_forbidden, problems

RUNBOOK = "security-incident-response"


class Evidence:
    """Stands in for ``run.evidence``: writes files under a folder, returns name/bytes/sha256."""

    def __init__(self, root: Path):
        self.root = root
        self.saved: dict[str, bytes] = {}

    def __call__(self, name, content, *, description=""):
        import hashlib

        data = (json.dumps(content, indent=2, sort_keys=True).encode() if isinstance(content, (dict, list))
                else content.encode() if isinstance(content, str) else bytes(content))
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        self.saved[name] = data
        return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "description": description}


def make_incident(kube_client, tmp_path, *, applying=True, helm=None, prometheus=None, archive=None, **params):
    """The runbook's context with these clients (``None``: none) and an :class:`Evidence` that keeps
    what the steps saved: ``(ctx, evidence)``."""
    values = {"incident_id": "INC-7", "selector": "app=web", "timeout": 30.0, **params}
    given = {k: v for k, v in (("kube", kube_client), ("helm", helm), ("prometheus", prometheus)) if v is not None}
    evidence = Evidence(tmp_path / "evidence")
    ctx = make_context(RUNBOOK, mode="apply" if applying else "plan", target=LOCAL, clients=Clients(LOCAL, **given),
                       evidence=evidence, archive=archive, **values)
    return ctx, evidence


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def cluster(kube):
    """A namespace with a Deployment ``web`` (2 pods), two ServiceAccounts, RoleBindings naming the
    compromised one alone and alongside another account, a ClusterRoleBinding and a token Secret."""
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    ns = kube.namespace
    crb = f"{ns}-web-crb"
    objs = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web-sa"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "other"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"serviceAccountName": "web-sa",
                                        "containers": [{"name": "server", "image": "ghcr.io/ml/web:1.0"}]}}}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "web-only", "labels": {"team": "ml"}},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "web-sa", "namespace": ns}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "shared"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
         "subjects": [{"kind": "ServiceAccount", "name": "other", "namespace": ns},
                      {"kind": "ServiceAccount", "name": "web-sa", "namespace": ns},
                      {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": crb},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
         "subjects": [{"kind": "ServiceAccount", "name": "web-sa", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": "web-sa-token", "annotations": {"kubernetes.io/service-account.name": "web-sa"}},
         "data": {"token": base64.b64encode(b"leaked-token-value").decode()}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-web"},
         "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {}}]}]}},
    ]
    try:
        k.apply(objs, namespace=ns)
        wait_until(lambda: len([p for p in k.pod_objects(namespace=ns, selector="app=web")
                                if (p.get("status") or {}).get("phase") == "Running"]) == 2,
                   timeout=60, message="2 web pods Running")
        yield k, ns, crb
    finally:
        k.delete(kind="ClusterRoleBinding", name=crb)


def _rbac_state(k, ns, crb):
    out = {}
    for kind, name, nsx in (("RoleBinding", "web-only", ns), ("RoleBinding", "shared", ns),
                            ("ClusterRoleBinding", crb, None), ("Secret", "web-sa-token", ns)):
        try:
            obj = incident.clean(k.get(kind=kind, name=name, namespace=nsx))
        except NotFound:
            obj = None
        if obj is not None:
            obj.pop("data", None)  # a re-created token Secret gets a new token (never the leaked one)
            obj["metadata"].get("annotations", {}).pop("kubernetes.io/service-account.uid", None)
        out[f"{kind}/{name}"] = obj
    return out


# ------------------------------------------------------------------------------------------ kube tests


@pytest.mark.kube
def _release_at_revision_2(kube, k, ns: str, tmp_path) -> Helm:
    """The release eradication rolls back: ``ml`` at revision 2 (1 proposer replica) over the known-good
    revision 1, with the database Secret its pods read."""
    helm = Helm(kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=ns)
    values = tmp_path / "values.yaml"
    values.write_text(values_for(kube, "services:\n  critic:\n    enabled: false\n"))
    k.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ml-platform-db"},
              "stringData": {"username": "u", "password": "p4ssw0rd-test"}}], namespace=ns)
    helm.install("ml", str(CHART), values_files=[values], namespace=ns, wait=False)
    helm.upgrade("ml", str(CHART), values_files=[values], namespace=ns, set_values={"services.proposer.replicas": 1},
                 wait=False)
    return helm


def test_quarantine_applied_reapplied_idempotently_then_lifted(cluster, tmp_path):
    k, ns, _ = cluster
    inc, _ = make_incident(k, tmp_path, namespace=ns, lift_isolation=True)
    plan = incident.plan_isolate(inc)
    assert plan.outcome == "planned" and len(plan.rows) == 3  # 2 pods + the policy
    assert not k.list_objects(kind="NetworkPolicy", namespace=ns, selector=incident.QUARANTINE_LABEL)

    first = incident.isolate(inc)
    assert first.outcome == "changed"
    pods = k.pod_objects(namespace=ns, selector=f"{incident.QUARANTINE_LABEL}=INC-7")
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)  # they keep running
    pol = k.get(kind="NetworkPolicy", name="opsbook-quarantine-inc-7", namespace=ns)
    assert pol["spec"]["podSelector"] == {"matchLabels": {incident.QUARANTINE_LABEL: "INC-7"}}
    assert sorted(pol["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert not pol["spec"].get("ingress") and not pol["spec"].get("egress")
    assert incident.isolation_in_force(inc).outcome == "ok"
    rv = {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in pods}

    again = incident.isolate(inc)
    assert again.outcome == "ok" and "nothing changed" in again.summary
    pods2 = k.pod_objects(namespace=ns, selector=f"{incident.QUARANTINE_LABEL}=INC-7")
    assert {p["metadata"]["name"]: p["metadata"]["resourceVersion"] for p in pods2} == rv

    lifted = incident.lift_isolation(inc)
    assert lifted.outcome == "changed"
    assert not k.pod_objects(namespace=ns, selector=incident.QUARANTINE_LABEL)
    with pytest.raises(NotFound):
        k.get(kind="NetworkPolicy", name="opsbook-quarantine-inc-7", namespace=ns)
    assert k.get(kind="NetworkPolicy", name="allow-web", namespace=ns)  # other policies untouched
    assert incident.lift_isolation(inc).outcome == "ok"  # idempotent
    assert len(k.pod_objects(namespace=ns, selector="app=web")) == 2


@pytest.mark.kube
def test_accounts_disabled_and_restored_round_trip(cluster, tmp_path):
    k, ns, crb = cluster
    before = _rbac_state(k, ns, crb)
    inc, evidence = make_incident(k, tmp_path, namespace=ns, compromised_accounts=[f"{ns}/web-sa"])
    plan = incident.plan_disable_accounts(inc)
    assert {r["object"] for r in plan.rows} == {f"RoleBinding/{ns}/web-only", f"RoleBinding/{ns}/shared",
                                                f"ClusterRoleBinding/{crb}", f"Secret/{ns}/web-sa-token"}
    assert _rbac_state(k, ns, crb) == before  # the plan changed nothing

    res = incident.disable_accounts(inc)
    assert res.outcome == "changed"
    with pytest.raises(NotFound):
        k.get(kind="RoleBinding", name="web-only", namespace=ns)
    with pytest.raises(NotFound):
        k.get(kind="ClusterRoleBinding", name=crb)
    with pytest.raises(NotFound):
        k.get(kind="Secret", name="web-sa-token", namespace=ns)
    shared = k.get(kind="RoleBinding", name="shared", namespace=ns)
    assert [s["name"] for s in shared["subjects"]] == ["other", "alice"]
    # the copy in the record: every object as it was, the token Secret without its value
    copy_ = json.loads(evidence.saved[incident.ACCOUNTS_EVIDENCE])
    assert len(copy_["items"]) == 4
    assert b"leaked-token-value" not in evidence.saved[incident.ACCOUNTS_EVIDENCE]
    assert base64.b64encode(b"leaked-token-value") not in evidence.saved[incident.ACCOUNTS_EVIDENCE]

    assert incident.disable_accounts(inc).outcome == "ok"  # idempotent: nothing left to disable
    disabled = _rbac_state(k, ns, crb)

    # recovery in another run: only the copy saved in the containment run's record is known
    from opsbook.records.disk import Archive

    archive = Archive(tmp_path / "outputs", fsync=False)
    src = tmp_path / "record"
    (src / "evidence" / "containment").mkdir(parents=True)
    (src / "evidence" / incident.ACCOUNTS_EVIDENCE).write_bytes(evidence.saved[incident.ACCOUNTS_EVIDENCE])
    archive.record(runbook_id=RUNBOOK, run_id="20260101T000000Z-aaaaaa", source_dir=src,
                   manifest={"parameters": {"incident_id": "INC-7"}, "started": "2026-01-01T00:00:00Z",
                             "status": "succeeded", "mode": "apply"})
    inc2, _ = make_incident(k, tmp_path / "r", namespace=ns, compromised_accounts=[f"{ns}/web-sa"],
                            reenable_accounts=True, archive=archive)
    assert incident.plan_reenable_accounts(inc2).outcome == "planned"
    res2 = incident.reenable_accounts(inc2)
    assert res2.outcome == "changed"
    assert _rbac_state(k, ns, crb) == before
    assert incident.reenable_accounts(inc2).outcome == "ok"  # idempotent
    assert _rbac_state(k, ns, crb) == before

    # what `opsbook undo` does with their journals: the re-enable taken back (containment's own code),
    # then the disable (restore_item), each entry checked as the apply left it first
    from types import SimpleNamespace

    from opsbook.ops.security_incident_response.recover import ACCOUNTS

    undo_ctx = SimpleNamespace(kube=k)  # all the undo needs
    for journal, back_to in ((inc2.journal, disabled), (inc.journal, before)):
        assert len(journal.entries) == 4
        if journal is inc.journal:  # a binding changed since the apply: refused, with the difference
            k.patch(kind="RoleBinding", name="shared", namespace=ns, patch={"metadata": {"labels": {"x": "y"}}})
            st = ACCOUNTS.status(undo_ctx, next(e for e in journal.entries if e["name"] == "shared"))
            assert st.state == "drifted" and 'metadata.labels: (absent) -> {"x": "y"}' in st.detail, st
            k.patch(kind="RoleBinding", name="shared", namespace=ns, patch={"metadata": {"labels": None}})
        assert [ACCOUNTS.status(undo_ctx, e).state for e in journal.entries] == ["as-left"] * 4
        for e in reversed(journal.entries):
            ACCOUNTS.reverse(undo_ctx, e)
        assert [ACCOUNTS.back_as_before(undo_ctx, e).state for e in journal.entries] == ["restored"] * 4
        assert _rbac_state(k, ns, crb) == back_to


@pytest.mark.kube
@requires_test_server  # feed_logs: the test server's admin endpoint
def test_evidence_files_match_what_the_cluster_returned(cluster, tmp_path, kube):
    k, ns, crb = cluster
    pods = sorted(p["metadata"]["name"] for p in k.pod_objects(namespace=ns, selector="app=web"))
    kube.feed_logs(pods[0], "server", "GET /predict 200\nPOST /admin 403 from 10.9.9.9\n")
    kube.feed_logs(pods[0], "server", "crashed: segfault\n", previous=True)
    inc, evidence = make_incident(k, tmp_path, namespace=ns, compromised_accounts=[f"system:serviceaccount:{ns}:web-sa"],
                                  log_lines=2000)
    ident = incident.affected_pods(inc)
    assert {r["pod"] for r in ident.rows} == set(pods)
    assert all(r["digest"].startswith("ghcr.io/ml/web@sha256:") or "sha256:" in r["digest"] for r in ident.rows)
    res = incident.capture_evidence(inc)
    saved = evidence.saved
    assert res.details["files"] == list(saved)
    for name in pods:
        assert json.loads(saved[f"pods/{name}.json"]) == k.get(kind="Pod", name=name, namespace=ns)
    log_path = f"/api/v1/namespaces/{ns}/pods/{pods[0]}/log"
    current = saved[f"logs/{pods[0]}/server.log"].decode()
    assert current == k.request("GET", log_path, query={"container": "server", "tailLines": 2000}, raw=True)
    assert current.endswith("GET /predict 200\nPOST /admin 403 from 10.9.9.9\n")
    previous = saved[f"logs/{pods[0]}/server.previous.log"].decode()
    assert previous == k.request("GET", log_path, query={"container": "server", "previous": "true",
                                                          "tailLines": 2000}, raw=True)
    assert previous.endswith("crashed: segfault\n")
    bindings = json.loads(saved["rbac/bindings.json"])
    assert {(b["kind"], b["metadata"]["name"]) for b in bindings} == {
        ("ClusterRoleBinding", crb), ("RoleBinding", "shared"), ("RoleBinding", "web-only")}
    assert bindings == [k.get(kind=b["kind"], name=b["metadata"]["name"],
                              namespace=b["metadata"].get("namespace")) | {"kind": b["kind"],
                                                                           "apiVersion": b["apiVersion"]}
                        for b in bindings]
    tokens = json.loads(saved["rbac/token-secrets.json"])
    assert [t["metadata"]["name"] for t in tokens] == ["web-sa-token"] and "data" not in tokens[0]
    pols = json.loads(saved["networkpolicies.json"])
    assert [p["metadata"]["name"] for p in pols] == ["allow-web"]
    assert pols == k.list_objects(kind="NetworkPolicy", namespace=ns)
    sev = incident.assess_severity(inc)
    assert sev.details["severity"] == "sev1"  # bound cluster-wide
    events = incident.recent_events(inc)
    assert events.outcome is None and all(set(r) == {"time", "type", "reason", "object", "count", "message"}
                                          for r in events.rows)


@pytest.mark.kube
def test_helm_rollback_to_a_named_revision(kube, tmp_path):
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("build: good\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tiny-build\ndata:\n  build: {{ .Values.build | quote }}\n")
    ns = kube.namespace
    helm = Helm(kubeconfig=kube.kubeconfig, kube_context=kube.context, namespace=ns)
    helm.install("tiny", str(chart), namespace=ns)
    helm.upgrade("tiny", str(chart), namespace=ns, set_values={"build": "backdoored"})
    k = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    assert k.get(kind="ConfigMap", name="tiny-build", namespace=ns)["data"]["build"] == "backdoored"
    inc, _ = make_incident(k, tmp_path, namespace=ns, release="tiny", rollback_revision=1, helm=helm)
    changes = incident.recent_changes(inc)
    assert [r["revision"] for r in changes.rows if r["what"] == "helm tiny"] == [1, 2]
    plan = incident.plan_rollback(inc)
    assert plan.outcome == "planned" and "from revision 2 to 1" in plan.summary
    res = incident.rollback(inc)
    assert res.outcome == "changed", res.summary
    assert k.get(kind="ConfigMap", name="tiny-build", namespace=ns)["data"]["build"] == "good"
    assert incident.rollback_verified(inc).outcome == "ok"
    assert incident.rollback(inc).outcome == "ok"  # idempotent: revision 1's manifest is live
    assert len(helm.history("tiny", namespace=ns)) == 3


# ------------------------------------------------------------------------------------------ services


@pytest.mark.services
def test_database_restored_from_a_dump_rows_deleted_after_the_dump_are_back(postgres, tmp_path):
    import psycopg

    db = f"inc_{int(time.time() * 1000) % 10**9}"
    dsn = postgres.create_database(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE runs (id int primary key, name text)")
        conn.execute("INSERT INTO runs SELECT g, 'run-' || g FROM generate_series(1, 50) g")
        conn.execute("CREATE TABLE audit (id serial primary key, what text)")
        conn.execute("INSERT INTO audit (what) VALUES ('a'), ('b')")
    pg = PgBackup(host=postgres.host, port=postgres.port, user=postgres.user)
    dump = pg.dump(db, tmp_path / "good.dump")
    with psycopg.connect(dsn, autocommit=True) as conn:  # the attacker's damage
        conn.execute("DELETE FROM runs WHERE id > 10")
        conn.execute("INSERT INTO audit (what) VALUES ('evil')")
    params = dict(namespace="ml", backup_file=str(dump), db_host=postgres.host, db_port=postgres.port,
                  db_name=db, db_user=postgres.user, expected_rows={"public.runs": 50, "public.audit": 2},
                  phases=["eradication"])
    plan_inc, _ = make_incident(None, tmp_path, applying=False, **params)
    plan = incident.plan_restore_database(plan_inc)
    assert plan.outcome == "planned"
    assert {r["table"]: r["rows now (replaced)"] for r in plan.rows} == {"public.audit": 3, "public.runs": 10}
    inc, evidence = make_incident(None, tmp_path, **params)
    res = incident.restore_database(inc)
    assert res.outcome == "changed"
    assert {r["table"]: (r["rows before"], r["rows after"]) for r in res.rows} == {
        "public.runs": (10, 50), "public.audit": (3, 2)}
    assert incident.restore_verified(inc).outcome == "ok"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), max(name) FROM runs").fetchone() == (50, "run-9")
    saved = json.loads(evidence.saved["eradication/database-restore.json"])
    assert saved["rows_after"] == {"public.audit": 2, "public.runs": 50}
    # a wrong expectation fails the check
    bad, _ = make_incident(None, tmp_path, **{**params, "expected_rows": {"public.runs": 51}})
    assert incident.restore_verified(bad).outcome == "failed"


@pytest.mark.services
def test_a_database_restore_is_undone_from_the_dump_taken_before_it(postgres, tmp_path, monkeypatch):
    """Before restoring, the apply dumps the database as it is into ``.opsbook/undo/RUN_ID/`` (0700;
    never into the record, which keeps its path, sha256, the password's reference and the row counts
    before and after). The undo refuses while rows changed since the restore, says it cannot when the
    dump is gone, and otherwise restores that dump: the rows are those from before the apply."""
    import psycopg
    from opsbook.ops import undo
    from opsbook.ops.journal import Journal
    from opsbook.ops.security_incident_response.eradicate import DATABASE

    db = f"undo_{int(time.time() * 1000) % 10**9}"
    dsn = postgres.create_database(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE runs (id int primary key, name text)")
        conn.execute("INSERT INTO runs SELECT g, 'run-' || g FROM generate_series(1, 50) g")
    pg = PgBackup(host=postgres.host, port=postgres.port, user=postgres.user)
    good = pg.dump(db, tmp_path / "good.dump")
    with psycopg.connect(dsn, autocommit=True) as conn:  # what happened since the good dump (kept by the undo)
        conn.execute("DELETE FROM runs WHERE id > 10")
        conn.execute("UPDATE runs SET name = 'changed-after-the-dump' WHERE id = 1")
    monkeypatch.setenv("INC_DB_PASSWORD", "trust-auth-ignores-it")  # resolved by the undo from its reference
    params = dict(namespace="ml", backup_file=str(good), db_host=postgres.host, db_port=postgres.port, db_name=db,
                  db_user=postgres.user, db_password="env:INC_DB_PASSWORD", phases=["eradication"])
    ctx, _ = make_incident(None, tmp_path, project_dir=tmp_path / "project", run_id="20261205T000000Z-abcdef",
                           **params)
    ctx.journal = Journal()
    assert incident.restore_database(ctx).outcome == "changed"
    (entry,) = ctx.journal.entries
    dump = tmp_path / "project" / ".opsbook" / "undo" / "20261205T000000Z-abcdef" / f"{db}-before-restore.dump"
    assert entry["dump"] == str(dump) and (dump.stat().st_mode & 0o777, dump.parent.stat().st_mode & 0o777) == (
        0o600, 0o700)
    assert (entry["rows_before"], entry["rows_after"]) == ({"public.runs": 10}, {"public.runs": 50})
    assert entry["password_ref"] == "env:INC_DB_PASSWORD" and "password" not in entry
    undo_ctx = undo.Context(settings=SimpleNamespace(undo_of="r", target="local", mode="apply"),
                            clients=Clients(LOCAL), resolve=secrets.resolve)
    assert DATABASE.status(undo_ctx, entry).state == "as-left"
    with psycopg.connect(dsn, autocommit=True) as conn:  # someone adds a row after the restore: refused
        conn.execute("INSERT INTO runs VALUES (51, 'new')")
        st = DATABASE.status(undo_ctx, entry)
        assert st.state == "drifted" and "public.runs: 50 -> 51" in st.detail
        conn.execute("DELETE FROM runs WHERE id = 51")
    moved = dump.rename(tmp_path / "elsewhere.dump")  # not on this machine any more: cannot
    assert DATABASE.status(undo_ctx, entry).state == "cannot"
    moved.rename(dump)
    assert DATABASE.reverse(undo_ctx, entry).startswith("restored from the dump taken before the apply")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (10,)
        assert conn.execute("SELECT name FROM runs WHERE id = 1").fetchone() == ("changed-after-the-dump",)
    assert DATABASE.back_as_before(undo_ctx, entry).state == "restored"


@pytest.mark.services
def test_plain_sql_dump_is_restored_with_psql(postgres, tmp_path):
    import psycopg

    db = f"incp_{int(time.time() * 1000) % 10**9}"
    dsn = postgres.create_database(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int)")
        conn.execute("INSERT INTO items SELECT generate_series(1, 7)")
    pg = PgBackup(host=postgres.host, port=postgres.port, user=postgres.user)
    dump = tmp_path / "items.sql"
    pg.run("pg_dump", [*pg._conn_args(db), "-Fp", "--clean", "--if-exists", "--no-owner", "-f", str(dump)])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE items")
    assert pg.restore(db, dump)["tool"] == "psql"
    assert pg.row_counts(db) == {"public.items": 7}


@pytest.mark.services
def test_firing_alerts_are_read_from_prometheus(prometheus, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(json.dumps({"groups": [{"name": "incident-test", "rules": [
        {"alert": "OpsbookIncidentTest", "expr": "vector(1) > 0", "labels": {"severity": "critical"},
         "annotations": {"summary": "always firing, for the incident runbook test"}}]}]}))
    cfg = prometheus._config()
    cfg["rule_files"] = [str(rules)]
    prometheus.config_path.write_text(json.dumps(cfg))
    prometheus.reload()
    try:
        prom = Prometheus(prometheus.url)
        wait_until(lambda: any(a["alertname"] == "OpsbookIncidentTest" and a["state"] == "firing"
                               for a in prom.alerts()), timeout=30, message="the test alert firing")
        inc, evidence = make_incident(None, tmp_path, namespace="ml", prometheus_url=prometheus.url, prometheus=prom)
        res = incident.alerts(inc)
        row = next(r for r in res.rows if r["alert"] == "OpsbookIncidentTest")
        assert row["state"] == "firing" and row["severity"] == "critical"
        assert "OpsbookIncidentTest" in res.details["firing"]
        assert "OpsbookIncidentTest" in evidence.saved["identification/alerts.json"].decode()
        assert incident.assess_severity(inc).details["assessed"] == "sev2"  # critical alert, not production
        # recovery's error-rate check over a window, through the same API
        ok, _ = make_incident(None, tmp_path, namespace="ml", error_rate_query="vector(0.001)", error_rate_max=0.01,
                              monitor_seconds=10, prometheus_url=prometheus.url, prometheus=prom)
        assert incident.error_rate(ok).outcome == "ok"
        high, _ = make_incident(None, tmp_path, namespace="ml", error_rate_query="vector(0.5)", monitor_seconds=10,
                                prometheus_url=prometheus.url, prometheus=prom)
        assert incident.error_rate(high).outcome == "failed"
    finally:
        prometheus.write_config()
        prometheus.reload()


# ------------------------------------------------------------------------------------------ the CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opsbook", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180)


def test_notebook_plans_on_local_then_incident_and_evidence_bundle_via_the_cli(opsbook_run, tmp_path):
    res = opsbook_run(RUNBOOK, "-p", "incident_id", "INC-99", "-p", "responders", "[alice, bob]",
                      "-p", "compromised_accounts", "[ml-platform/proposer]", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert m["status"] == "succeeded" and m["mode"] == "plan" and m["parameters"]["incident_id"] == "INC-99"
    outcomes = {s["title"]: s["outcome"] for s in m["steps"]}
    assert outcomes["Quarantine the affected pods"] == "planned"
    assert outcomes["Disable the compromised accounts"] == "planned"
    assert outcomes["Severity assessment"] == "ok" and "failed" not in outcomes.values()
    # each step recorded under its declared id; a step that does not apply says why
    by_id = {s["id"]: s for s in m["steps"]}
    assert by_id["quarantine"]["outcome"] == "planned" and by_id["disable-accounts"]["outcome"] == "planned"
    assert by_id["alerts"]["outcome"] == "skipped" and by_id["alerts"]["summary"].startswith("no Prometheus URL")
    assert by_id["capture-evidence"]["summary"] == "no cluster on target local: nothing to read"
    assert by_id["lift-isolation"]["summary"].startswith("lift_isolation is false")

    out = str(opsbook_run.outputs)
    listing = _cli("incident", "INC-99", "--json", "--outputs", out, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert [json.loads(x)["run_id"] for x in listing.stdout.splitlines()] == [m["run_id"]]
    assert _cli("incident", "INC-404", "--outputs", out, cwd=tmp_path).returncode == 2  # no run of it

    bundle = tmp_path / "INC-99.tar.gz"
    exp = _cli("evidence", "INC-99", "--out", str(bundle), "--outputs", out, cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr
    ver = _cli("evidence", "--verify", str(bundle), cwd=tmp_path)
    assert ver.returncode == 0 and "OK" in ver.stdout, ver.stdout + ver.stderr
    with tarfile.open(bundle) as tar:
        pm = tar.extractfile("INC-99-evidence/POSTMORTEM.md").read().decode()
    assert "# Post-mortem (draft): INC-99" in pm and "alice, bob" in pm and "## Lessons learned" in pm
    # one byte changed in the record's notebook: caught
    tampered = tmp_path / "t.tar.gz"
    with tarfile.open(bundle) as src, tarfile.open(tampered, "w:gz") as dst:
        for mem in src.getmembers():
            data = src.extractfile(mem).read()
            if mem.name.endswith("notebook.ipynb"):
                data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
            dst.addfile(mem, __import__("io").BytesIO(data))
    bad = _cli("evidence", "--verify", str(tampered), cwd=tmp_path)
    assert bad.returncode == 1 and "notebook.ipynb" in bad.stdout, bad.stdout
    assert NOTEBOOKS.joinpath(f"{RUNBOOK}.ipynb").exists()


@pytest.mark.kube
def test_known_good_digest_redeployed_and_scale_down_restored(cluster, tmp_path, declared_rbac):
    """The steps act as the runbook's own ServiceAccount with exactly its declared RBAC (``rbac.py``: what
    the CLI test below cannot do in its runs without changing what it checks); the checks are the admin's."""
    k, ns, _ = cluster
    sa = declared_rbac(RUNBOOK, {"namespace": ns}).kube()
    good = "ghcr.io/ml/web@sha256:" + "ab" * 32
    inc, evidence = make_incident(sa, tmp_path, namespace=ns, known_good_image=f"web/server={good}", scale_down=True)
    plan = incident.plan_redeploy_image(inc)
    assert plan.rows == [{"container": "server", "image now": "ghcr.io/ml/web:1.0", "image after": good}]
    assert incident.redeploy_image(inc).outcome == "changed"
    dep = k.get(kind="Deployment", name="web", namespace=ns)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == good
    assert incident.redeploy_image(inc).outcome == "ok"  # idempotent
    wait_until(lambda: all(p["spec"]["containers"][0]["image"] == good
                           for p in k.pod_objects(namespace=ns, selector="app=web")), timeout=60,
               message="pods on the known-good digest")

    assert incident.plan_scale_down(inc).rows == [{"deployment": "web", "replicas now": 2}]
    assert incident.scale_down(inc).outcome == "changed"
    assert k.get(kind="Deployment", name="web", namespace=ns)["spec"]["replicas"] == 0
    assert json.loads(evidence.saved[incident.SCALE_EVIDENCE])["replicas"] == {"web": 2}
    assert incident.scale_back(inc).outcome == "changed"
    assert k.get(kind="Deployment", name="web", namespace=ns)["spec"]["replicas"] == 2
    assert incident.pods_ready(inc).outcome == "ok"


@pytest.mark.kube
@pytest.mark.slow
def test_contain_then_recover_through_the_cli_with_approvals_and_a_verified_bundle(cluster, kube, opsbook_run, tmp_path,
                                                                                    declared_rbac):
    """The whole path on a cluster target, as the runbook's own ServiceAccount with exactly its declared
    RBAC (``rbac.py``; the set-up and the checks are the admin's): plan and approved apply of
    identification, evidence and containment; then plan and approved apply of eradication (a helm rollback
    of the ml-platform release to its known-good revision) and recovery, which re-enables the accounts from
    the copy in the containment record; then the incident's runs listed and its bundle exported and
    verified."""
    k, ns, crb = cluster
    before = _rbac_state(k, ns, crb)
    _release_at_revision_2(kube, k, ns, tmp_path)
    given = {"incident_id": "INC-E2E", "namespace": ns, "selector": "app=web", "responders": "[alice, bob]",
             "compromised_accounts": f"[{ns}/web-sa]"}
    grant = declared_rbac(RUNBOOK, given)
    targets = tmp_path / "targets.yaml"
    targets.write_text(json.dumps({"kt": {"kubeconfig": str(grant.kubeconfig), "kube_context": CONTEXT,
                                          "namespace": ns}}))
    env = {"OPSBOOK_TARGETS": str(targets), "OPSBOOK_OPERATOR": "alice"}
    common = ["--target", "kt", *[x for key, v in given.items() for x in ("-p", key, v)], "--quiet"]

    def run_pair(*extra):
        plan = opsbook_run(RUNBOOK, *common, *extra, env=env)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        pm = manifests_of(opsbook_run.outputs, RUNBOOK)[-1]
        assert_not_forbidden(pm)
        apply = opsbook_run(RUNBOOK, *common, *extra, "--mode", "apply", "--approve", pm["run_id"], env=env)
        assert apply.returncode == 0, apply.stdout + apply.stderr
        m = manifests_of(opsbook_run.outputs, RUNBOOK)[-1]
        assert_applied(m, apply)  # succeeded, and no step was forbidden
        return m

    contained = run_pair("-p", "phases", "[identification, evidence, containment]")
    steps = {s["title"]: s for s in contained["steps"]}
    assert steps["Quarantine the affected pods"]["outcome"] == "changed"
    assert steps["Disable the compromised accounts"]["outcome"] == "changed"
    assert steps["Quarantine in force"]["outcome"] == "ok"
    names = {e["name"] for e in contained["evidence"]}
    assert {incident.ACCOUNTS_EVIDENCE, "rbac/bindings.json", "networkpolicies.json", "events.json"} <= names
    assert all(f"evidence/{n}" in contained["files"] for n in names)
    assert len(k.pod_objects(namespace=ns, selector=f"{incident.QUARANTINE_LABEL}=INC-E2E")) == 2
    with pytest.raises(NotFound):
        k.get(kind="RoleBinding", name="web-only", namespace=ns)

    recovered = run_pair("-p", "phases", "[eradication, recovery, post-incident]", "-p", "release", "ml",
                         "-p", "rollback_revision", "1", "-p", "timeout", "60", "-p", "reenable_accounts", "true",
                         "-p", "lift_isolation", "true")
    by_id = {s["id"]: s["outcome"] for s in recovered["steps"]}
    assert by_id["rollback"] == "changed" and by_id["rollback-confirmed"] == "ok", problems(recovered)
    steps = {s["title"]: s for s in recovered["steps"]}
    assert steps["Lift the isolation"]["outcome"] == "changed"
    assert steps["Re-enable the accounts"]["outcome"] == "changed"
    assert steps["Pods Ready"]["outcome"] == "ok"
    assert len(steps["Runs of this incident"]["rows"]) == 3  # the three runs before this one
    assert _rbac_state(k, ns, crb) == before
    assert not k.pod_objects(namespace=ns, selector=incident.QUARANTINE_LABEL)

    out = str(opsbook_run.outputs)
    listing = _cli("incident", "INC-E2E", "--json", "--outputs", out, cwd=tmp_path)
    runs = [json.loads(x) for x in listing.stdout.splitlines()]
    assert [(r["mode"], r["status"]) for r in runs] == [("plan", "succeeded"), ("apply", "succeeded")] * 2
    bundle = tmp_path / "e2e.tar.gz"
    assert _cli("evidence", "INC-E2E", "--out", str(bundle), "--outputs", out, cwd=tmp_path).returncode == 0
    ver = _cli("evidence", "--verify", str(bundle), cwd=tmp_path)
    assert ver.returncode == 0, ver.stdout
    with tarfile.open(bundle) as tar:
        pm = tar.extractfile("INC-E2E-evidence/POSTMORTEM.md").read().decode()
    actions = pm.split("## Actions taken")[1].split("### Planned")[0]
    for title in ("Quarantine the affected pods", "Disable the compromised accounts", "Lift the isolation",
                  "Re-enable the accounts"):
        assert title in actions
    assert "containment/accounts-removed.json" in pm
    # the leaked token is nowhere in the records nor in the bundle
    leaked = [b"leaked-token-value", base64.b64encode(b"leaked-token-value")]
    for f in [*Path(out).rglob("*"), bundle]:
        if f.is_file():
            data = f.read_bytes() if f != bundle else __import__("gzip").decompress(f.read_bytes())
            assert not any(x in data for x in leaked), f


@pytest.mark.kube
def test_an_apply_that_stops_at_the_database_restore_is_undone_from_its_record(cluster, kube, opsbook_run, tmp_path,
                                                                                 declared_rbac):
    """As the runbook's own ServiceAccount (the set-up and the checks are the admin's): an approved apply of
    evidence, containment and eradication quarantines the pods, disables web-sa, scales ``web`` to zero,
    rolls ``ml`` back to its known-good revision and sets ``web``'s known-good digest, then stops at the
    database restore: nothing listens at db_host:db_port (the plan lists the dump's tables, and rows it
    cannot count; only the restore needs the server). Its record keeps what each change did (the
    bindings and token Secret as the saved copies, never the token; nothing for the restore, which changed
    nothing), the CLI names the undo command, and the approved undo puts everything back, newest first:
    ``web``'s two changes as one, the release rolled back to the revision before, the accounts
    re-enabled through ``restore_item``, the policy deleted. The namespace, the ClusterRoleBinding and
    the release are compared with their state before the apply, object by object; a second undo of
    the same apply is refused."""
    import socket

    from opsbook.ops.journal import TOKEN_TYPE

    from .undo import assert_second_undo_refused, assert_undone, differences, helm_state, snapshot, undo

    k, ns, crb = cluster
    _release_at_revision_2(kube, k, ns, tmp_path)
    dump = tmp_path / "app.sql"
    dump.write_text("CREATE TABLE public.runs (id integer);\nCOPY public.runs (id) FROM stdin;\n1\n\\.\n")
    with socket.socket() as sock:  # a port nothing listens on once closed: the database server is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    good = "ghcr.io/ml/web@sha256:" + "cd" * 32
    given = {"incident_id": "INC-UNDO", "namespace": ns, "selector": "app=web", "compromised_accounts": f"[{ns}/web-sa]",
             "phases": "[evidence, containment, eradication]", "scale_down": "true", "release": "ml",
             "rollback_revision": "1", "known_good_image": f"web/server={good}", "backup_file": str(dump),
             "db_host": "127.0.0.1", "db_port": str(port), "db_name": "app", "timeout": "60"}
    grant = declared_rbac(RUNBOOK, {"incident_id": "INC-UNDO", "namespace": ns})
    env = {"OPSBOOK_TARGETS": str(grant.targets(tmp_path / "targets.yaml", kube)), "OPSBOOK_OPERATOR": "alice"}
    args = ["--target", "kt", *[x for key, v in given.items() for x in ("-p", key, v)]]

    plan = opsbook_run(RUNBOOK, *args, env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    pm = manifests_of(opsbook_run.outputs, RUNBOOK)[-1]
    assert_not_forbidden(pm)
    cluster_names = [f"ClusterRoleBinding/{crb}"]
    before, release_before = snapshot(kube, [ns], cluster_names=cluster_names), helm_state(kube, "ml", ns)
    apply = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", pm["run_id"], env=env)
    am = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"][-1]
    assert apply.returncode == 1 and am["status"] == "failed", apply.stdout + apply.stderr
    assert_not_forbidden(am)
    steps = {s["id"]: s for s in am["steps"]}
    assert {i: steps[i]["outcome"] for i in ("quarantine", "disable-accounts", "scale-down", "rollback",
                                             "redeploy-image", "restore-database")} == {
        "quarantine": "changed", "disable-accounts": "changed", "scale-down": "changed", "rollback": "changed",
        "redeploy-image": "changed", "restore-database": "failed"}, problems(am)
    accounts = steps["disable-accounts"]["undo"]
    assert accounts["by"] == "opsbook.ops.security_incident_response.recover:accounts"
    assert sorted((e["kind"], e["name"], e["action"]) for e in accounts["entries"]) == [
        ("ClusterRoleBinding", crb, "delete"), ("RoleBinding", "shared", "remove_subjects"),
        ("RoleBinding", "web-only", "delete"), ("Secret", "web-sa-token", "delete")]
    shared = next(e for e in accounts["entries"] if e["name"] == "shared")
    assert [x["name"] for x in shared["after"]["subjects"]] == ["other", "alice"] and shared["resourceVersion"]
    assert steps["rollback"]["undo"]["entries"] == [
        {"type": "helm", "release": "ml", "namespace": ns, "before": 2, "after": 3}]
    (scaled,) = steps["scale-down"]["undo"]["entries"]
    assert (scaled["before"]["spec"]["replicas"], scaled["after"]["spec"]["replicas"]) == (2, 0)
    assert {e["kind"] for e in steps["quarantine"]["undo"]["entries"]} == {"Pod", "NetworkPolicy"}
    assert steps["restore-database"]["undo"] is None  # the server was down: nothing changed, nothing to undo
    assert base64.b64encode(b"leaked-token-value").decode() not in json.dumps(am)
    out = apply.stdout + apply.stderr  # what it changed, and the exact command that takes it back
    assert f"disable-accounts: RoleBinding/{ns}/web-only disabled" in out and "restore-database: " not in out
    assert f"opsbook undo {am['run_id']}" in out

    undo_plan, undo_apply = undo(opsbook_run, am["run_id"], env, cwd=tmp_path)
    rows = next(s for s in undo_plan["steps"] if s["id"] == "reverse")["rows"]
    (web,) = [r for r in rows if r["what"] == f"Deployment/{ns}/web"]
    assert (web["step"], web["now"]) == ("scale-down+redeploy-image", "as-left")  # web's two changes as one
    assert {r["what"]: r["now"] for r in rows if not r["what"].startswith(("Pod/", "Deployment/"))} == {
        f"Secret/{ns}/web-sa-token": "as-left", f"RoleBinding/{ns}/web-only": "as-left",
        f"RoleBinding/{ns}/shared": "as-left", f"ClusterRoleBinding/{crb}": "as-left",
        f"helm release {ns}/ml": "as-left", f"NetworkPolicy/{ns}/opsbook-quarantine-inc-undo": "as-left"}
    assert_undone(undo_apply, am["run_id"])
    assert differences(before, snapshot(kube, [ns], cluster_names=cluster_names)) == []
    assert helm_state(kube, "ml", ns) == release_before
    assert k.get(kind="Secret", name="web-sa-token", namespace=ns)["type"] == TOKEN_TYPE  # re-created, empty
    assert not k.pod_objects(namespace=ns, selector=incident.QUARANTINE_LABEL)
    assert_second_undo_refused(opsbook_run, am["run_id"], env, undo_apply["run_id"], cwd=tmp_path)
