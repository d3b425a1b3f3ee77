"""The kubelet of every simulated node: runs (simulates) the containers of the pods bound to it:
image pulls, exits and restarts with back-off, probes, readiness, init containers, and their logs;
and gives each pod the credentials a real kubelet mounts: a token of the pod's own ServiceAccount."""

from __future__ import annotations

import copy
import re
import time
import uuid

from ..authz import issue_token
from ..meta import now_iso
from ..resources import res
from .common import (
    CRASH_RUN_SECONDS,
    NODES,
    PODS,
    PULL_FAIL_SECONDS,
    READY_DELAY_ANNOTATION,
    RUN_SECONDS_ANNOTATION,
    RUN_TO_COMPLETION_SECONDS,
    ControllerBase,
    _cond,
    _set_cond,
    _shell_cmd,
    _terminal,
    fnv32a,
)

SERVICE_ACCOUNTS = res("v1", "serviceaccounts")


def _container_image_host(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first.split(":")[0]
    return ""


def image_never_pulls(image: str) -> bool:
    """Images from a registry under .invalid (RFC 2606) fail to pull, as they do on a real cluster."""
    return _container_image_host(image or "").endswith(".invalid")


# Test-only pod annotation: the exit code of a container that runs to completion (the "any other
# command, restartPolicy Never/OnFailure" case), e.g. "1" to fail a Job's pod. Inert on a real cluster.
EXIT_CODE_ANNOTATION = "opsbook.test/exit-code"


def container_behaviour(container: dict, restart_policy: str, pod_annotations: dict) -> dict:
    """What the simulated container does: pull failure, exit code after a while, or run forever."""
    if image_never_pulls(container.get("image") or ""):
        return {"pull": False}
    cmd = _shell_cmd(container)
    script = None
    if len(cmd) >= 3 and cmd[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and cmd[1] == "-c":
        script = cmd[2].strip()
    exit_code, run_for = None, None
    if cmd in (["false"], ["/bin/false"], ["/usr/bin/false"]) or script == "false":
        exit_code, run_for = 1, CRASH_RUN_SECONDS
    elif cmd in (["true"], ["/bin/true"], ["/usr/bin/true"]) or script == "true":
        exit_code, run_for = 0, CRASH_RUN_SECONDS
    elif script is not None and re.fullmatch(r"exit\s+(\d+)", script):
        exit_code, run_for = int(script.split()[1]), CRASH_RUN_SECONDS
    elif (len(cmd) == 2 and cmd[0] in ("sleep", "/bin/sleep") and re.fullmatch(r"\d+(\.\d+)?", cmd[1])) or (
            script and re.fullmatch(r"sleep\s+\d+(\.\d+)?", script)):
        secs = float(cmd[1] if script is None else script.split()[1])
        exit_code, run_for = 0, secs
    if exit_code is None and restart_policy != "Always":
        code = str(pod_annotations.get(EXIT_CODE_ANNOTATION) or "0").strip()
        exit_code = int(code) if code.isdigit() and int(code) <= 255 else 0
        run_for = float(pod_annotations.get(RUN_SECONDS_ANNOTATION) or RUN_TO_COMPLETION_SECONDS)
    probe = container.get("readinessProbe") or {}
    never_ready = _probe_fails(probe)
    killed_by = None
    for kind in ("startupProbe", "livenessProbe"):
        p = container.get(kind) or {}
        if _probe_fails(p):
            # the kubelet kills the container once the probe has failed failureThreshold times
            kill_after = float(p.get("initialDelaySeconds") or 0) + float(p.get("periodSeconds") or 10) * float(
                p.get("failureThreshold") or 3)
            if run_for is None or kill_after < run_for:
                exit_code, run_for, killed_by = 137, kill_after, kind
    return {"pull": True, "exit": exit_code, "run_for": run_for, "never_ready": bool(never_ready),
            "initial_delay": float(probe.get("initialDelaySeconds") or 0) if probe else 0.0, "killed_by": killed_by}


def _probe_fails(probe: dict) -> bool:
    """The probe patterns that fail on a real cluster too: exec `false`, `exit N` (N != 0)."""
    pcmd = ((probe or {}).get("exec") or {}).get("command") or []
    return pcmd in (["false"], ["/bin/false"]) or bool(
        len(pcmd) >= 3 and pcmd[1] == "-c" and re.fullmatch(r"false|exit\s+[1-9]\d*", pcmd[2].strip()))


class Kubelet(ControllerBase):
    def sync(self) -> None:
        c = self.c
        now = time.time()
        nodes = {n["metadata"]["name"]: n for n in c.objects(NODES)}
        for p in list(c.objects(PODS)):
            spec = p.get("spec") or {}
            node = spec.get("nodeName")
            if not node or node not in nodes or _terminal(p):
                continue
            uid = p["metadata"]["uid"]
            if p["metadata"].get("deletionTimestamp"):
                term = c.sim.get(uid, {}).get("terminate_at")
                if term is not None and now >= term:
                    if p["metadata"].get("finalizers"):
                        c.sim[uid].pop("terminate_at", None)
                    else:
                        c.drop(PODS, p)
                continue
            node_ready = _cond((nodes[node].get("status") or {}).get("conditions") or [], "Ready")
            if not node_ready or node_ready.get("status") != "True":
                # the kubelet is gone: the node lifecycle controller marks its pods not ready
                new = copy.deepcopy(p)
                conds = new.setdefault("status", {}).setdefault("conditions", [])
                if _cond(conds, "Ready"):
                    _set_cond(conds, "Ready", "False", None, None, with_probe_time=True)
                    if new != p:
                        self._update(PODS, new, "status")
                continue
            sim = c.sim.setdefault(uid, {"created": now})
            if "start" not in sim:
                sim["start"] = now
                sim["containers"] = {}
                self.ip_for(p, sim, nodes[node])
                self.mount_service_account(p, sim, nodes[node])
            new = copy.deepcopy(p)
            st = new.setdefault("status", {})
            ann = p["metadata"].get("annotations") or {}
            ready_delay = float(ann.get(READY_DELAY_ANNOTATION) or c.ready_delay)
            policy = spec.get("restartPolicy", "Always")
            statuses = []
            all_ready = True
            all_done = True
            any_failed = False
            any_running = False
            init_ok = True
            init_statuses = []
            init_failed = False
            for ic in spec.get("initContainers") or []:
                if not init_ok:
                    init_statuses.append(self._cstatus(ic, {"waiting": {"reason": "PodInitializing"}}, 0, False, {}))
                    continue
                s, ok, failed = self._init_container(p, ic, sim, now, policy)
                init_statuses.append(s)
                if not ok:
                    init_ok = False
                    init_failed = failed
            for ctr in spec.get("containers") or []:
                if not init_ok:
                    statuses.append(self._cstatus(ctr, {"waiting": {"reason": "PodInitializing"}}, 0, False, {}))
                    all_ready = False
                    all_done = False
                    continue
                s, info = self._container(p, ctr, sim, now, policy, ready_delay)
                statuses.append(s)
                if not s["ready"]:
                    all_ready = False
                term = (s["state"] or {}).get("terminated")
                if info == "done":
                    if term and term.get("exitCode"):
                        any_failed = True
                else:
                    all_done = False
                if (s["state"] or {}).get("running"):
                    any_running = True
            if init_failed:
                phase = "Failed"
            elif all_done and statuses:
                phase = "Failed" if any_failed else "Succeeded"
                if policy == "OnFailure" and any_failed:
                    phase = "Running"
            elif any_running or any(int(s.get("restartCount") or 0) > 0 for s in statuses) or \
                    any((s["state"] or {}).get("terminated") for s in statuses):
                phase = "Running"
            else:
                phase = "Pending"
            st["phase"] = phase
            st["hostIP"] = sim["hostIP"]
            st["hostIPs"] = [{"ip": sim["hostIP"]}]
            st["podIP"] = sim["podIP"]
            st["podIPs"] = [{"ip": sim["podIP"]}]
            st.setdefault("startTime", now_iso(sim["start"]))
            st["containerStatuses"] = statuses
            if init_statuses:
                st["initContainerStatuses"] = init_statuses
            conds = st.setdefault("conditions", [])
            _set_cond(conds, "PodReadyToStartContainers", "True", with_probe_time=True)
            _set_cond(conds, "Initialized", "True" if init_ok else "False",
                      None if init_ok else "ContainersNotInitialized",
                      None if init_ok else "containers with incomplete status: [" + " ".join(
                          ic.get("name", "") for ic in spec.get("initContainers") or []) + "]",
                      with_probe_time=True)
            not_ready = [s["name"] for s in statuses if not s["ready"]]
            if phase in ("Succeeded", "Failed"):
                reason = "PodCompleted"
                _set_cond(conds, "Ready", "False", reason, None, with_probe_time=True)
                _set_cond(conds, "ContainersReady", "False", reason, None, with_probe_time=True)
            elif all_ready:
                _set_cond(conds, "Ready", "True", with_probe_time=True)
                _set_cond(conds, "ContainersReady", "True", with_probe_time=True)
            else:
                msg = f"containers with unready status: [{' '.join(not_ready)}]"
                _set_cond(conds, "Ready", "False", "ContainersNotReady", msg, with_probe_time=True)
                _set_cond(conds, "ContainersReady", "False", "ContainersNotReady", msg, with_probe_time=True)
            _set_cond(conds, "PodScheduled", "True", with_probe_time=True)
            order = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
            conds.sort(key=lambda x: order.index(x["type"]) if x.get("type") in order else 99)
            if new != p:
                self._update(PODS, new, "status")

    def mount_service_account(self, pod, sim, node) -> None:
        """What a real kubelet puts at /var/run/secrets/kubernetes.io/serviceaccount (the projected
        ``kube-api-access-*`` volume): a token of the pod's ServiceAccount asked for with TokenRequest
        semantics (bound to the pod and its node, 3607 s, as the kubelet asks), the cluster's CA and the
        namespace; none when automounting is off (the pod's ``automountServiceAccountToken``, else its
        ServiceAccount's). Kept in the pod's simulation state as ``sim["serviceaccount"]``: never the
        admin's credentials."""
        spec = pod.get("spec") or {}
        ns = pod["metadata"]["namespace"]
        sa = self.c.raw(SERVICE_ACCOUNTS, ns, spec.get("serviceAccountName") or "default")
        automount = spec.get("automountServiceAccountToken")
        if sa is None or (sa.get("automountServiceAccountToken") if automount is None else automount) is False:
            return
        token, _ = issue_token(self.c, sa, seconds=3607, bound=pod, node=node)
        sim["serviceaccount"] = {"token": token, "namespace": ns, "ca.crt": getattr(self.c, "root_ca_pem", "")}

    def ip_for(self, pod, sim, node) -> None:
        c = self.c
        c.ip_counter += 1
        idx = int(node["spec"]["podCIDR"].split(".")[2])
        sim["podIP"] = f"10.244.{idx}.{c.ip_counter % 250 + 2}"
        sim["hostIP"] = next((a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"), "")

    def _cstatus(self, ctr, state, restarts, ready, last, started=None) -> dict:
        image = ctr.get("image") or ""
        s = {"name": ctr.get("name"), "state": state, "lastState": last or {}, "ready": ready,
             "restartCount": restarts, "image": image if ":" in image.rsplit("/", 1)[-1] or "@" in image
             else image + ":latest",
             "imageID": ""}
        if started is not None:
            s["started"] = started
        else:
            s["started"] = bool(state.get("running"))
        if "waiting" not in state or restarts:
            s["imageID"] = image.split("@")[0] + "@sha256:" + ("%064x" % (fnv32a(image.encode()) * 7919))[-64:]
        cid = state.get("_cid")
        if cid:
            s["containerID"] = "containerd://" + cid
            state.pop("_cid")
        return s

    def _start_logs(self, p, ctr) -> None:
        c = self.c
        key = (p["metadata"]["namespace"], p["metadata"]["name"], ctr["name"])
        if key in c.logs:
            c.prev_logs[key] = c.logs[key]
        lines = [f"opsbook-kubeapi: container {ctr['name']} starting (image {ctr.get('image')})"]
        for port in ctr.get("ports") or []:
            lines.append(f"listening on port {port.get('containerPort')}/{port.get('protocol', 'TCP')}")
        lines.append(f"{ctr['name']} started")
        now = time.time()
        c.logs[key] = [(now, line) for line in lines]
        c.cond.notify_all()

    def _container(self, p, ctr, sim, now, policy, ready_delay, key=None):
        """Advance one container's state machine; returns (status, 'running'|'done'|'waiting')."""
        ann = p["metadata"].get("annotations") or {}
        beh = container_behaviour(ctr, policy, ann)
        cs = sim["containers"].setdefault(key or ctr["name"], {"restarts": 0, "phase": "new", "since": now,
                                                        "cid": uuid.uuid4().hex, "last": {}})
        name = ctr["name"]

        def event(reason: str, message: str, typ: str = "Normal") -> None:  # about this container
            self._event(p, reason, message, typ, container=name)

        if not beh["pull"]:
            # ErrImagePull, then ImagePullBackOff, alternating
            if cs["phase"] == "new":
                cs["phase"], cs["since"] = "pullerr", now
                event("Pulling", f'Pulling image "{ctr.get("image")}"')
                event("Failed", f'Failed to pull image "{ctr.get("image")}": failed to resolve reference '
                      f'"{ctr.get("image")}": failed to do request: Head "https://'
                      f'{ctr.get("image").split("/")[0]}/v2/": dial tcp: lookup '
                      f'{ctr.get("image").split("/")[0]}: no such host', "Warning")
                event("Failed", "Error: ErrImagePull", "Warning")
            elif cs["phase"] == "pullerr" and now - cs["since"] > PULL_FAIL_SECONDS:
                cs["phase"], cs["since"] = "backoff", now
                event("BackOff", f'Back-off pulling image "{ctr.get("image")}"', "Normal")
                event("Failed", "Error: ImagePullBackOff", "Warning")
            elif cs["phase"] == "backoff" and now - cs["since"] > 3 * PULL_FAIL_SECONDS:
                cs["phase"], cs["since"] = "pullerr", now
            if cs["phase"] == "pullerr":
                w = {"reason": "ErrImagePull", "message": f'failed to pull and unpack image "{ctr.get("image")}": '
                                                          f'failed to resolve reference: no such host'}
            else:
                w = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{ctr.get("image")}": '
                                                              f'ErrImagePull: no such host'}
            return self._cstatus(ctr, {"waiting": w}, 0, False, {}), "waiting"
        if cs["phase"] == "new":
            cs["phase"], cs["since"] = "running", now
            self._start_logs(p, ctr)
            if cs["restarts"] == 0:
                event("Pulled", f'Container image "{ctr.get("image")}" already present on machine')
            event("Created", f"Created container: {name}")
            event("Started", f"Started container {name}")
        if cs["phase"] == "running" and beh["exit"] is not None and now - cs["since"] >= beh["run_for"]:
            code = beh["exit"]
            if beh.get("killed_by"):
                probe = "Liveness" if beh["killed_by"] == "livenessProbe" else "Startup"
                event("Unhealthy", f"{probe} probe failed: ", "Warning")
                event("Killing", f"Container {name} failed {probe.lower()} probe, will be restarted")
            cs["last"] = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                         "startedAt": now_iso(cs["since"]), "finishedAt": now_iso(now),
                                         "containerID": "containerd://" + cs["cid"]}}
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if restart:
                backoff = min(1.0 * (2 ** cs["restarts"]), 10.0)
                cs["phase"], cs["since"], cs["until"] = "crashloop", now, now + backoff
                if code != 0:
                    event("BackOff", f"Back-off restarting failed container {name} in pod "
                          f"{p['metadata']['name']}_{p['metadata']['namespace']}({p['metadata']['uid']})",
                          "Warning")
            else:
                cs["phase"], cs["since"] = "done", now
        if cs["phase"] == "crashloop" and now >= cs.get("until", now):
            cs["restarts"] += 1
            cs["cid"] = uuid.uuid4().hex
            cs["phase"], cs["since"] = "running", now
            self._start_logs(p, ctr)
            event("Created", f"Created container: {name}")
            event("Started", f"Started container {name}")
        if cs["phase"] == "done":
            term = dict(cs["last"]["terminated"])
            return self._cstatus(ctr, {"terminated": term}, cs["restarts"], False, {}, started=False), "done"
        if cs["phase"] == "crashloop":
            w = {"reason": "CrashLoopBackOff",
                 "message": f"back-off {int(min(10 * 2 ** max(cs['restarts'], 0), 300))}s restarting failed "
                            f"container={name} pod={p['metadata']['name']}_{p['metadata']['namespace']}"
                            f"({p['metadata']['uid']})"}
            return self._cstatus(ctr, {"waiting": w, "_cid": cs["cid"]}, cs["restarts"], False, cs["last"],
                                 started=False), "waiting"
        if beh["never_ready"] and not cs.get("unready_reported"):
            cs["unready_reported"] = True
            event("Unhealthy", "Readiness probe failed: ", "Warning")
        delay = max(ready_delay, beh.get("initial_delay") or 0.0)
        started = beh.get("killed_by") != "startupProbe"  # a failing startup probe never lets it start
        ready = started and not beh["never_ready"] and now - cs["since"] >= delay
        return self._cstatus(ctr, {"running": {"startedAt": now_iso(cs["since"])}, "_cid": cs["cid"]},
                             cs["restarts"], ready, cs["last"], started=started), "running"

    def _init_container(self, p, ctr, sim, now, policy):
        """Init containers run to completion, one after the other; a failing one restarts (unless the
        pod's restartPolicy is Never, which fails the pod). Returns (status, succeeded, failed)."""
        st, info = self._container(p, ctr, sim, now, "Never" if policy == "Never" else "OnFailure", 0.0,
                                   key="init:" + ctr["name"])
        term = (st.get("state") or {}).get("terminated") or {}
        ok = info == "done" and term.get("exitCode") == 0
        st["ready"] = ok
        return st, ok, info == "done" and not ok

