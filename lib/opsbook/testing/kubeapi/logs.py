"""Pod logs (``pods/log``): container choice, previous instances, sinceSeconds / sinceTime,
tailLines, limitBytes, timestamps, and ``follow`` (streamed until the container stops, the pod goes
or ``--log-follow-seconds`` pass)."""

from __future__ import annotations

import time

from . import resources as RS
from .errors import bad_request, not_found
from .handler import HandlerBase, truthy
from .meta import micro_iso, parse_iso


class LogsHandler(HandlerBase):
    def _logs(self, ns: str, name: str) -> None:
        c = self.server.cluster
        pods = RS.res("v1", "pods")
        q = self.q
        with c.lock:
            pod = c.raw(pods, ns, name)
            if pod is None:
                raise not_found(pods, name)
            cnames = [x.get("name") for x in (pod.get("spec") or {}).get("containers") or []]
            inames = [x.get("name") for x in (pod.get("spec") or {}).get("initContainers") or []]
            container = q.get("container")
            if not container:
                if len(cnames) != 1:
                    raise bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                      f"[{' '.join(cnames)}]" + (f" or one of the init containers: "
                                                                  f"[{' '.join(inames)}]" if inames else ""))
                container = cnames[0]
            if container not in cnames + inames:
                raise bad_request(f"container {container} is not valid for pod {name}")
            previous = truthy(q.get("previous")) and "previous" in q
            statuses = {s.get("name"): s for s in ((pod.get("status") or {}).get("containerStatuses") or [])
                        + ((pod.get("status") or {}).get("initContainerStatuses") or [])}
            st = statuses.get(container) or {}
            key = (ns, name, container)
            if previous:
                if key not in c.prev_logs:
                    raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
                lines = list(c.prev_logs[key])
            else:
                if key not in c.logs:
                    waiting = (st.get("state") or {}).get("waiting") or {}
                    reason = waiting.get("reason") or "ContainerCreating"
                    msg = {"ImagePullBackOff": "trying and failing to pull image",
                           "ErrImagePull": "trying and failing to pull image"}.get(reason, reason)
                    raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {msg}')
                lines = list(c.logs[key])
        since_cut = None
        if q.get("sinceSeconds"):
            since_cut = time.time() - float(q["sinceSeconds"])
        elif q.get("sinceTime"):
            since_cut = parse_iso(q["sinceTime"])
        ts = truthy(q.get("timestamps")) and "timestamps" in q
        if since_cut is not None:
            lines = [x for x in lines if x[0] >= since_cut]
        if q.get("tailLines") not in (None, ""):
            n = int(q["tailLines"])
            lines = lines[-n:] if n > 0 else []

        def fmt(entries) -> bytes:
            out = []
            for t, line in entries:
                out.append((_nano(t) + " " + line) if ts else line)
            return ("\n".join(out) + ("\n" if out else "")).encode()

        follow = truthy(q.get("follow")) and "follow" in q and not previous
        data = fmt(lines)
        if q.get("limitBytes"):
            data = data[: int(q["limitBytes"])]
        if not follow:
            return self._send(200, data, "text/plain")
        self._start_stream("text/plain")
        try:
            if data:
                self._chunk(data)
            with c.lock:
                seen = len(c.logs.get(key, []))
            deadline = time.time() + self.server.log_follow_seconds
            while time.time() < deadline:
                with c.lock:
                    c.cond.wait(0.5)
                    pod = c.raw(pods, ns, name)
                    cur = c.logs.get(key)
                    if pod is None or cur is None or pod["metadata"]["uid"] != (pod or {}).get("metadata", {}).get(
                            "uid"):
                        break
                    new = cur[seen:]
                    seen = len(cur)
                    phase = (pod.get("status") or {}).get("phase")
                if new:
                    self._chunk(fmt(new))
                if phase in ("Succeeded", "Failed"):
                    break
            self._end_stream()
        except OSError:
            self.close_connection = True


def _nano(t: float) -> str:
    s = micro_iso(t)  # 2026-01-01T00:00:00.123456Z
    return s[:-1] + "000Z"

