"""The `initial-kubernetes-deployment` runbook headless through the real CLI: plan on the built-in
`local` target (no cluster, no network: part of `make demo`), and plan -> approved apply against a
Kubernetes API (the ``kube`` fixture) with the chart from a chart repository on loopback."""

from __future__ import annotations

import json
import os

from opsbook.records.disk import Archive

from .conftest import CHART, manifests_of, values_for
from .rbac import assert_applied, assert_not_forbidden

RUNBOOK = "initial-kubernetes-deployment"
DB_PASSWORD = "db-pass-for-the-runbook-test-7f3a"
STEP_IDS = ["connect", "preflight", "helm-repo", "values", "db-secret", "render", "access", "server-dry-run",
            "install", "pods-ready", "service-logs", "ingress", "events"]


def test_plan_on_local_needs_no_cluster_and_records_the_rendered_manifests(opsbook_run):
    # no network either: an unroutable proxy makes any attempt to reach out fail loudly
    env = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    r = opsbook_run(RUNBOOK, "-p", "values_overrides", "services:\n  critic:\n    replicas: 3\n", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert m["status"] == "succeeded" and m["mode"] == "plan" and m["target"] == "local"
    steps = {s["title"]: s for s in m["steps"]}
    by_id = {s["id"]: s for s in m["steps"]}
    assert list(by_id) == STEP_IDS  # each step recorded once, under its declared id
    assert by_id["connect"]["summary"] == "no cluster on this target: Kubernetes steps plan only"
    assert steps["Add the Helm repository"]["outcome"] == "skipped"
    assert steps["Add the Helm repository"]["summary"].startswith("chart is a local path (")
    assert by_id["access"]["outcome"] == "skipped" and "access not checked" in by_id["access"]["summary"]
    assert steps["Install the release"]["outcome"] == "planned"
    assert "helm install ml-platform" in steps["Install the release"]["summary"]
    assert steps["Create the database Secret if missing"]["outcome"] == "planned"
    assert steps["Server-side dry run"]["outcome"] == "skipped"
    assert all(steps[t]["outcome"] == "skipped" for t in ("Pods are Ready", "Ingress endpoints answer"))
    assert by_id["pods-ready"]["summary"] == "plan mode: nothing was installed, nothing to verify"
    rendered = steps["Render the manifests"]
    assert rendered["summary"] == "5 object(s): 2 Deployment, 1 Ingress, 2 Service"
    assert "kind: Deployment" in rendered["details"]["manifests"]
    assert "secretKeyRef" in rendered["details"]["manifests"]
    values = steps["Write values.yaml"]
    assert "services.critic.replicas" in json.dumps(values) and "+    replicas: 3" in values["details"]["diff"]
    record = opsbook_run.outputs / RUNBOOK / m["run_id"]
    nb = (record / "notebook.ipynb").read_text()
    assert "name: ml-platform-proposer" in nb and "would run: helm install" in nb
    assert Archive(opsbook_run.outputs).verify().ok


def test_plan_refuses_a_bad_release_name_before_any_kernel(opsbook_run):
    r = opsbook_run(RUNBOOK, "-p", "release", "ML_Platform")
    assert r.returncode == 2 and "release" in r.stderr and "DNS-1123" in r.stderr


def test_plan_then_approved_apply_installs_and_verifies(opsbook_run, kube, chart_repo, ingress, tmp_path,
                                                        declared_rbac):
    """As the runbook's own ServiceAccount with exactly its declared RBAC (``rbac.py``); the checks of
    what it installed are the admin's."""
    chart_repo.add_chart(CHART)
    overrides = values_for(kube, "services:\n  proposer:\n    replicas: 1\ningress:\n  host: ml.test\n")
    given = {"namespace": kube.namespace, "release": "ml", "chart": "ml-platform", "repo_name": "platform",
             "repo_url": chart_repo.url, "chart_version": "0.1.0", "db_password": "env:IKD_DB_PASSWORD",
             "ingress_base_url": ingress.url, "timeout_seconds": "60", "values_overrides": overrides}
    # the password comes from this machine's environment (env:), so it needs no rule (on the cluster,
    # --on-cluster would take it from a Secret given with --env-secret: the Job's, not the runbook's RBAC)
    grant = declared_rbac(RUNBOOK, {k: v for k, v in given.items() if k != "db_password"})
    targets = grant.targets(tmp_path / "targets.yaml", kube, name="kubetest", description="the kube test fixture",
                            requires_approval=False)
    env = {"OPSBOOK_TARGETS": str(targets), "OPSBOOK_OPERATOR": "alice",
           "IKD_DB_PASSWORD": DB_PASSWORD, **{k: v for k, v in chart_repo.helm_env.items() if k.startswith("HELM_")}}
    params = ["--target", "kubetest", *[x for k, v in given.items() for x in ("-p", k, v)]]
    plan = opsbook_run(RUNBOOK, *params, env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    (pm,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    assert_not_forbidden(pm)
    steps = {s["title"]: s for s in pm["steps"]}
    assert steps["Add the Helm repository"]["outcome"] == "ok"
    assert steps["Server-side dry run"]["outcome"] == "ok" and "dryRun=All" in steps["Server-side dry run"]["summary"]
    assert steps["Install the release"]["outcome"] == "planned"
    assert kube.kubectl("get", "deployments", "-o", "name").stdout.strip() == ""  # the plan changed nothing

    apply = opsbook_run(RUNBOOK, *params, "--mode", "apply", "--approve", pm["run_id"], env=env)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    am = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"][0]
    assert am["status"] == "succeeded" and am["approval"]["plan_run_id"] == pm["run_id"]
    assert_applied(am, apply)  # and no step was forbidden
    outcomes = {s["title"]: s["outcome"] for s in am["steps"]}
    assert [s["id"] for s in am["steps"]] == STEP_IDS
    assert {s["id"]: s["outcome"] for s in am["steps"]}["access"] == "ok"  # asked the API server this time
    assert outcomes["Create the database Secret if missing"] == "changed"
    assert outcomes["Install the release"] == "changed"
    assert outcomes["Pods are Ready"] == outcomes["Service logs have no errors"] == "ok"
    assert outcomes["Ingress endpoints answer"] == "ok"
    assert {("ml.test", "/proposer"), ("ml.test", "/critic")} <= set(ingress.seen)
    pods = json.loads(kube.kubectl("get", "pods", "-l", "app.kubernetes.io/instance=ml", "-o", "json").stdout)
    assert len(pods["items"]) == 3  # 1 proposer + 2 critic
    # the password went to the cluster only: never into the record or the terminal
    record = opsbook_run.outputs / RUNBOOK / am["run_id"]
    for f in record.iterdir():
        assert DB_PASSWORD not in f.read_text(errors="replace"), f.name
    assert DB_PASSWORD not in apply.stdout + apply.stderr

    # a second first-time install is refused by the preflight, which says how to upgrade instead
    again = opsbook_run(RUNBOOK, *params, env=env)
    assert again.returncode == 1
    last = manifests_of(opsbook_run.outputs, RUNBOOK)[-1]
    assert last["status"] == "failed"
    pre = next(s for s in last["steps"] if s["kind"] == "preflight")
    assert "release ml already exists" in pre["summary"] and "deploy-new-model" in pre["summary"]
    assert Archive(opsbook_run.outputs).verify().ok


def test_apply_on_an_unreachable_cluster_stops_at_the_preflight(opsbook_run, tmp_path):
    from opsbook.testing.services import free_port

    kc = tmp_path / "kubeconfig"
    kc.write_text("apiVersion: v1\nkind: Config\ncurrent-context: gone\n"
                  f"clusters: [{{name: gone, cluster: {{server: 'http://127.0.0.1:{free_port()}'}}}}]\n"
                  "users: [{name: gone, user: {token: x}}]\n"
                  "contexts: [{name: gone, context: {cluster: gone, user: gone}}]\n")
    targets = tmp_path / "targets.yaml"
    targets.write_text(f"gone:\n  kubeconfig: {kc}\n  kube_context: gone\n")
    r = opsbook_run(RUNBOOK, "--target", "gone", env={"OPSBOOK_TARGETS": str(targets)})
    assert r.returncode == 1
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    pre = next(s for s in m["steps"] if s["kind"] == "preflight")
    assert pre["outcome"] == "failed" and "cluster reachable" in pre["summary"]
    assert "cannot reach the Kubernetes API" in pre["summary"]
    assert os.path.exists(opsbook_run.outputs / RUNBOOK / m["run_id"] / "notebook.html")


def test_plan_leaves_nothing_in_tmpdir_and_shows_yaml_in_monospace(opsbook_run, tmp_path):
    """values.yaml is written for helm in a private folder of the kernel that is gone when the run
    ends; its text is in the record, shown as a monospace block, and no step echoes a raw value."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    r = opsbook_run(RUNBOOK, env={"TMPDIR": str(tmpdir)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("opsbook-deploy-")]
    assert not list(tmpdir.iterdir())  # nor the run's own staging folder
    (m,) = manifests_of(opsbook_run.outputs, RUNBOOK)
    record = opsbook_run.outputs / RUNBOOK / m["run_id"]
    nb = json.loads((record / "notebook.ipynb").read_text())
    echoed = ["".join(o["data"].get("text/plain", "")) for c in nb["cells"] for o in c.get("outputs", [])
              if o["output_type"] == "execute_result"]
    assert len(echoed) == 1 and echoed[0].startswith("(13 step record(s)")  # the summary's one line only
    assert not any(e.startswith("Result(") or e in ("True", "False") for e in echoed)  # skipped checks: no False
    page = (record / "notebook.html").read_text()
    block = page.split('<pre class="opsbook-code" data-lang="yaml" style="font-family:', 1)[1]
    assert "monospace" in block.split(">", 1)[0]  # the style survives the HTML export
    assert "existingSecret: ml-platform-db" in block.split("</pre>", 1)[0]



def test_a_failed_install_and_a_regretted_one_are_undone_from_their_records(opsbook_run, kube, chart_repo, ingress,
                                                                            tmp_path, declared_rbac):
    """As the runbook's ServiceAccount. (1) Between the plan and the apply someone creates a Service
    the chart also renders: the apply creates the database Secret, then stops before the install (its
    server-side dry run names the conflict). The CLI
    lists what it changed and the exact ``opsbook undo`` command; an undo plan refuses while the
    Secret differs from what the apply left (the difference named), then plans, and its approved
    apply deletes the Secret and nothing else. (2) A clean apply, regretted: its undo uninstalls the
    release and deletes the Secret, newest first. Each time the namespace is compared with its state
    before the apply, object by object; a second undo of the same apply is refused, an undo that
    stopped (its credentials may not delete Secrets) is not."""
    import dataclasses

    from opsbook.catalog import RbacSpec

    from .rbac import granted, runbook
    from .undo import (
        assert_second_undo_refused,
        assert_undone,
        differences,
        helm_state,
        snapshot,
        undo,
        undo_cli,
    )

    chart_repo.add_chart(CHART)
    kube.kubectl("create", "configmap", "already-there", "--from-literal=k=v")  # no undo touches it
    given = {"namespace": kube.namespace, "release": "ml", "chart": "ml-platform", "repo_name": "platform",
             "repo_url": chart_repo.url, "chart_version": "0.1.0", "db_password": "env:IKD_DB_PASSWORD",
             "timeout_seconds": "30", "ingress_base_url": ingress.url,
             "values_overrides": values_for(kube, "services:\n  proposer:\n    replicas: 1\ningress:\n  host: ml.test\n")}
    grant = declared_rbac(RUNBOOK, {k: v for k, v in given.items() if k != "db_password"})
    helm_env = {k: v for k, v in chart_repo.helm_env.items() if k.startswith("HELM_")}
    env = {"OPSBOOK_TARGETS": str(grant.targets(tmp_path / "targets.yaml", kube, name="kubetest",
                                                 requires_approval=False)),
           "OPSBOOK_OPERATOR": "alice", "IKD_DB_PASSWORD": DB_PASSWORD, **helm_env}
    args = ["--target", "kubetest", *[x for k, v in given.items() for x in ("-p", k, v)]]
    secret_ref = f"Secret/{kube.namespace}/ml-platform-db"

    # (1) the failed apply
    plan = opsbook_run(RUNBOOK, *args, env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    pm = manifests_of(opsbook_run.outputs, RUNBOOK)[-1]
    kube.kubectl("create", "service", "clusterip", "ml-ml-platform-critic", "--tcp=80:8080")  # someone else's
    before = snapshot(kube, [kube.namespace])
    apply = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", pm["run_id"], env=env)
    am = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"][-1]
    assert apply.returncode == 1 and am["status"] == "failed", apply.stdout + apply.stderr
    steps = {s["id"]: s for s in am["steps"]}
    assert steps["db-secret"]["outcome"] == "changed" and steps["server-dry-run"]["outcome"] == "failed"
    assert "ml-ml-platform-critic" in steps["server-dry-run"]["summary"] and "install" not in steps
    (secret,) = steps["db-secret"]["undo"]["entries"]  # the record keeps the Secret without its values
    assert secret["kind"] == "Secret" and secret["before"] is None and "data" not in secret["after"]
    assert set(secret["after"]["dataSha256"]) == {"username", "password"}
    assert DB_PASSWORD not in json.dumps(am)
    out = apply.stdout + apply.stderr  # what it changed, and the exact command that takes it back
    assert f"{secret_ref} created" in out and f"opsbook undo {am['run_id']}" in out

    kube.kubectl("label", "secret", "ml-platform-db", "touched=by-hand")  # changed since the apply
    refused = undo_cli(opsbook_run.outputs, tmp_path, am["run_id"], env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    rm = manifests_of(opsbook_run.outputs, "undo")[-1]
    check = next(s for s in rm["steps"] if s["id"] == "as-left")
    assert check["outcome"] == "failed" and secret_ref in check["summary"]
    assert 'metadata.labels.touched: (absent) -> "by-hand"' in check["summary"]
    kube.kubectl("label", "secret", "ml-platform-db", "touched-")  # back as the apply left it
    # an undo that stops (its credentials may not delete Secrets): it says so, and a new undo finishes it
    rb = runbook(RUNBOOK)
    assert rb.rbac is not None
    no_delete = dataclasses.replace(rb, rbac=RbacSpec(cluster_rules=rb.rbac.cluster_rules, rules=tuple(
        dataclasses.replace(r, verbs=tuple(v for v in r.verbs if v != "delete")) if r.resources == ("secrets",)
        else r for r in rb.rbac.rules)))
    (tmp_path / "weak").mkdir()
    with granted(kube, no_delete, {k: v for k, v in given.items() if k != "db_password"}, tmp_path / "weak") as g:
        weak = {**env, "OPSBOOK_TARGETS": str(g.targets(tmp_path / "weak" / "targets.yaml", kube, name="kubetest",
                                                         requires_approval=False))}
        _, stopped = undo(opsbook_run, am["run_id"], weak, cwd=tmp_path)
    kube.kubectl("delete", "serviceaccount", g.user.rsplit(":", 1)[1])  # the grant's RBAC is revoked, not its SA
    assert stopped["status"] == "failed" and "forbidden" in next(
        s for s in stopped["steps"] if s["id"] == "reverse")["summary"]
    said = stopped["_proc"].stdout
    assert "This undo stopped before everything was taken back" in said and f"opsbook undo {am['run_id']}" in said
    undo_plan, undo_apply = undo(opsbook_run, am["run_id"], env, cwd=tmp_path)  # a failed undo does not count
    rows = next(s for s in undo_plan["steps"] if s["id"] == "reverse")["rows"]
    assert [(r["what"], r["now"]) for r in rows] == [(secret_ref, "as-left")]
    assert_undone(undo_apply, am["run_id"])
    assert differences(before, snapshot(kube, [kube.namespace])) == []  # someone else's Service is still there
    assert_second_undo_refused(opsbook_run, am["run_id"], env, undo_apply["run_id"], cwd=tmp_path)

    # (2) a clean apply, regretted
    kube.kubectl("delete", "service", "ml-ml-platform-critic")
    before = snapshot(kube, [kube.namespace])
    plan = opsbook_run(RUNBOOK, *args, env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    pm = manifests_of(opsbook_run.outputs, RUNBOOK)[-1]
    apply = opsbook_run(RUNBOOK, *args, "--mode", "apply", "--approve", pm["run_id"], env=env)
    am = [m for m in manifests_of(opsbook_run.outputs, RUNBOOK) if m["mode"] == "apply"][-1]
    assert apply.returncode == 0, apply.stdout + apply.stderr
    (rel,) = next(s for s in am["steps"] if s["id"] == "install")["undo"]["entries"]
    assert rel == {"type": "helm", "release": "ml", "namespace": kube.namespace, "before": None, "after": 1}
    assert helm_state(kube, "ml", kube.namespace, helm_env)["status"] == "deployed"
    undo_plan, undo_apply = undo(opsbook_run, am["run_id"], env, cwd=tmp_path)
    rows = next(s for s in undo_plan["steps"] if s["id"] == "reverse")["rows"]
    assert [r["what"] for r in rows] == [f"helm release {kube.namespace}/ml", secret_ref]  # newest first
    assert_undone(undo_apply, am["run_id"])
    assert helm_state(kube, "ml", kube.namespace, helm_env) is None
    assert differences(before, snapshot(kube, [kube.namespace])) == []
    assert Archive(opsbook_run.outputs).verify().ok
