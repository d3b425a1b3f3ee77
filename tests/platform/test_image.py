"""The image, built for real and run the way the Kubernetes Job runs it.

`make image` (scripts/build-image.sh: buildah on a Debian 12 base made by debootstrap; no Docker engine,
no image registry) builds it, cached by a hash of its sources: CI builds it before the tests (.ci/run),
so here it is found up to date; on a machine without it, the fixture builds it (minutes).
scripts/run-image.py runs it from the Job's own pod spec (``oncluster.render``): UID 10001, a read-only
root filesystem, an empty writable /tmp, HOME=/tmp, no capabilities, no privilege escalation, the
ConfigMap mounted read-only at /etc/opsbook and the archive's keys from the --s3-secret Secret.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from opsbook import catalog, oncluster
from opsbook.ids import new_run_id
from opsbook.parameters import validate
from opsbook.targets import Target

pytestmark = [pytest.mark.slow, pytest.mark.image, pytest.mark.services, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
RUN_IMAGE = [sys.executable, str(ROOT / "scripts" / "run-image.py")]
OPSBOOK = [sys.executable, "-m", "opsbook"]
JOB_ENV = {"HOME": "/tmp", "TMPDIR": "/tmp", "PYTHONUNBUFFERED": "1"}  # as oncluster's _env sets them


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0:
        pytest.skip("building and running the image needs root (buildah's chroot isolation, mount namespaces)")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh")], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "HOST_PYTHON": sys.executable}, timeout=2300)
    assert r.returncode == 0, f"scripts/build-image.sh failed:\n{r.stderr[-4000:]}"
    found = re.search(r"^image: (\S+)$", r.stdout, re.M)
    assert found, r.stdout + r.stderr
    return found.group(1)  # its read-only container stays for the next run: build-image.sh replaces both


def run_image(image: str, *args: str, env: Mapping[str, str] = JOB_ENV, user: str | None = None,
              volumes: tuple[str, ...] = (), tmpfs: tuple[str, ...] = (), entrypoint: str | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    argv = [*RUN_IMAGE, *(x for k, v in env.items() for x in ("-e", f"{k}={v}")),
            *(x for v in volumes for x in ("-v", v)), *(x for t in tmpfs for x in ("--tmpfs", t))]
    if user:
        argv += ["--user", user]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return subprocess.run([*argv, image, *args], capture_output=True, text=True, timeout=timeout)


def run_pod(objs: list[dict[str, Any]], secrets: Mapping[str, Mapping[str, str]],
            workdir: Path) -> subprocess.CompletedProcess[str]:
    """What a kubelet would do with the rendered objects: the Job's one container, its env (values and
    Secret keys), its volumes (the ConfigMap read-only, emptyDirs as tmpfs), its user and arguments."""
    job = objs[-1]
    assert job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ctx, pod_ctx = container["securityContext"], pod["securityContext"]
    # what run-image.py reproduces and nothing less
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]} and pod_ctx["runAsNonRoot"] is True
    configmaps = {o["metadata"]["name"]: o["data"] for o in objs if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["key"] in secrets.get(ref["name"], {}) or not ref.get("optional"):
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
    volumes = {v["name"]: v for v in pod["volumes"]}
    binds, tmpfs = [], []
    for mount in container["volumeMounts"]:
        vol = volumes[mount["name"]]
        if "emptyDir" in vol:
            tmpfs.append(mount["mountPath"])
        else:
            folder = workdir / mount["name"]
            folder.mkdir()
            for key, text in configmaps[vol["configMap"]["name"]].items():
                (folder / key).write_text(text)
                (folder / key).chmod(vol["configMap"]["defaultMode"])
            binds.append(f"{folder}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}")
    return run_image(container["image"], *container["args"], env=env, volumes=tuple(binds), tmpfs=tuple(tmpfs),
                     user=f"{pod_ctx['runAsUser']}:{pod_ctx['runAsGroup']}")


def test_cli_runs_as_uid_10001_on_a_read_only_root(image: str) -> None:
    r = run_image(image)  # no arguments: the image's CMD, --help
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: opsbook") and re.search(r"^\s+run\s+run a runbook", r.stdout, re.M)
    r = run_image(image, "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"opsbook {version('opsbook')}", r.stdout + r.stderr
    r = run_image(image, "list", env={**JOB_ENV, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    ids = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert ids and "environment-check" in ids
    assert re.findall(r"^│ (\S+)", r.stdout, re.M) == ids, r.stdout
    assert "/app/notebooks" in r.stdout  # the image's own runbooks (OPSBOOK_NOTEBOOKS)

    # the image's numeric USER by default; the root filesystem cannot be written, /tmp can
    probe = ("id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs):' /proc/self/status; "
             "for f in /app/x /home/opsbook/x /opt/venv/x /x; do touch $f 2>&1; done; "
             "echo hi > /tmp/x && cat /tmp/x; helm version --short; kubectl version --client; psql --version")
    r = run_image(image, "-c", probe, entrypoint="/bin/sh")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == ["10001", "10001"]
    assert "CapEff:\t0000000000000000" in lines and "CapBnd:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    for path in ("/app/x", "/home/opsbook/x", "/opt/venv/x", "/x"):
        assert f"touch: cannot touch '{path}': Read-only file system" in lines
    assert "hi" in lines and any(line.startswith("v3.17.") for line in lines)
    assert any(line.startswith("Client Version: v1.") for line in lines) and "psql (PostgreSQL) 15" in r.stdout
    # root (uid 0) is refused too: the root filesystem itself is read-only, not only its permissions
    r = run_image(image, "-c", "id -u; touch /app/x", entrypoint="/bin/sh", user="0:0")
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stdout + r.stderr


def test_environment_check_plan_in_the_image_lands_in_s3(image: str, s3, tmp_path: Path) -> None:
    url = f"s3://{s3.bucket}/image/{uuid.uuid4().hex[:8]}"
    runbook = catalog.get("environment-check", NOTEBOOKS)
    target = Target(name="cluster", kubeconfig="/home/me/.kube/config", kube_context="admin",
                    namespace="ml-platform", source="test")
    run_id = new_run_id()
    req = oncluster.JobRequest(runbook=runbook, params=validate(runbook.spec, {"target": "cluster"}), target=target,
                               run_id=run_id, namespace="opsbook-jobs", image=image, outputs=url, operator="alice",
                               s3_secret="archive-creds")
    secrets = {"archive-creds": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                                 "AWS_ENDPOINT_URL_S3": s3.endpoint_url}}
    r = run_pod(oncluster.render(req), secrets, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"succeeded run {run_id}" in r.stdout, r.stdout
    assert f"record: {url}/records/environment-check/{run_id}" in r.stdout, r.stdout

    # the host's opsbook reads the record back from S3: it landed whole, in the ledger
    env = {**os.environ, **s3.env()}
    env.pop("OPSBOOK_S3_RETENTION", None)
    v = subprocess.run([*OPSBOOK, "verify", "--deep", "--outputs", url], capture_output=True, text=True, env=env,
                       timeout=120)
    assert v.returncode == 0 and "OK: 1 record(s)" in v.stdout, v.stdout + v.stderr
    h = subprocess.run([*OPSBOOK, "history", "--json", "--outputs", url], capture_output=True, text=True, env=env,
                       timeout=120)
    assert h.returncode == 0, h.stderr
    rows = [json.loads(line) for line in h.stdout.splitlines()]
    assert [(x["runbook_id"], x["run_id"], x["status"]) for x in rows] == [("environment-check", run_id, "succeeded")]
    keys = s3.list_keys(url.split("/", 3)[3] + f"/records/environment-check/{run_id}/")
    assert any(k.endswith("/manifest.json") for k in keys), keys
