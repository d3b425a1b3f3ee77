"""Following a run's Job: its status from the Job and its pod, and the pod's log as it is written."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opsbook.errors import ClientError, NotFound, OpsbookError, TimedOut
from opsbook.oncluster.job import CONTAINER, EXIT_MEANING, FATAL_REASONS, TIMEOUT_GRACE, JobRequest


@dataclass
class JobStatus:
    """Where a run's Job is: ``pending``, ``running``, ``succeeded`` or ``failed`` (with the reason)."""

    state: str
    reason: str = ""
    message: str = ""
    pod: str = ""
    exit_code: int | None = None
    detail: str = ""  # one line for the operator: the pod's phase and why it waits

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")

    def describe(self) -> str:
        parts = [self.reason] if self.reason else []
        if self.exit_code is not None and self.pod:
            meaning = EXIT_MEANING.get(self.exit_code)
            parts.append(f"pod {self.pod} exited with code {self.exit_code}" + (f" ({meaning})" if meaning else ""))
        if self.message:
            parts.append(self.message)
        return "; ".join(parts) or self.state


def _container_state(pod: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(waiting, terminated) of the runbook's container."""
    for c in ((pod.get("status") or {}).get("containerStatuses") or []):
        if c.get("name") == CONTAINER or len((pod.get("spec") or {}).get("containers") or []) <= 1:
            state = c.get("state") or {}
            return state.get("waiting") or {}, state.get("terminated") or {}
    return {}, {}


def assess(job: Mapping[str, Any], pods: list[dict[str, Any]]) -> JobStatus:
    """Decide the run's state from the Job and its pods. Final: the Job's Complete/Failed condition,
    or a pod waiting for a reason that will not fix itself (ImagePullBackOff, ErrImagePull, a missing
    Secret: CreateContainerConfigError...), reported at once instead of waiting for the deadline."""
    pod = pods[-1] if pods else {}
    pod_name = str((pod.get("metadata") or {}).get("name") or "")
    waiting, terminated = _container_state(pod) if pod else ({}, {})
    code = terminated.get("exitCode")
    exit_code = int(code) if code is not None else None
    conds = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conds:
        return JobStatus("succeeded", pod=pod_name, exit_code=exit_code)
    if "Failed" in conds:
        c = conds["Failed"]
        msg = str(c.get("message") or "")
        if waiting.get("reason"):
            msg = f"pod {pod_name} was {waiting['reason']}: {waiting.get('message', '')}".strip(": ")
        return JobStatus("failed", reason=str(c.get("reason") or "Failed"), message=msg, pod=pod_name,
                         exit_code=exit_code)
    if waiting.get("reason") in FATAL_REASONS:
        return JobStatus("failed", reason=str(waiting["reason"]), pod=pod_name,
                         message=f"pod {pod_name}: {waiting.get('message') or waiting['reason']}")
    if not pod:
        return JobStatus("pending", detail="waiting for the Job's pod")
    phase = str((pod.get("status") or {}).get("phase") or "Pending")
    why = waiting.get("reason") or next(
        (f"{c.get('reason')}: {c.get('message', '')}" for c in (pod.get("status") or {}).get("conditions") or []
         if c.get("type") == "PodScheduled" and c.get("status") == "False"), "")
    detail = f"pod {pod_name}: {phase}" + (f" ({why})" if why else "")
    return JobStatus("running" if phase == "Running" or terminated else "pending", pod=pod_name, detail=detail,
                     exit_code=exit_code)


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z$")


def _ts_key(ts: str) -> tuple[str, int] | None:
    """A log timestamp (RFC 3339, any number of fraction digits) as a sortable key; None if it is not one."""
    m = _TS.match(ts)
    return (m.group(1), int((m.group(2) or "").ljust(9, "0"))) if m else None


class _LogFollower(threading.Thread):
    """Streams one container's log to ``on_line``. A stream that ends while the container still runs
    (idle, dropped, the server's own limit) is resumed from the last line's timestamp without
    repeating lines; while the container has not started (400 "waiting to start") it retries."""

    def __init__(self, kube: Any, namespace: str, pod: str, on_line: Callable[[str], None]):
        super().__init__(daemon=True, name=f"logs-{pod}")
        self.kube, self.namespace, self.pod, self.on_line = kube, namespace, pod, on_line
        self.finished = threading.Event()  # set by the waiter: the container has terminated
        self.halt = threading.Event()
        self.lines = 0

    def run(self) -> None:
        last_key: tuple[str, int] | None = None
        shown_at_last: list[str] = []  # texts shown with the timestamp last_key
        while not self.halt.is_set():
            done_before = self.finished.is_set()
            repeat = list(shown_at_last)  # a resumed stream repeats these: skip them once
            try:
                # sinceTime has a precision of seconds: resume from that second, skip what was shown
                since = f"{last_key[0]}Z" if last_key is not None else None
                for raw in self.kube.stream_logs(namespace=self.namespace, pod=self.pod, container=CONTAINER,
                                                 since_time=since, timestamps=True, idle_timeout=30.0):
                    ts, _, text = raw.partition(" ")
                    key = _ts_key(ts)
                    if key is None:  # not timestamped as asked: show it as it is
                        self._emit(raw)
                        continue
                    if last_key is not None and key < last_key:
                        continue
                    if key == last_key and text in repeat:
                        repeat.remove(text)
                        continue
                    if key != last_key:
                        last_key, shown_at_last = key, []
                    shown_at_last.append(text)
                    self._emit(text)
                    if self.halt.is_set():
                        return
                if done_before:
                    return  # the container had ended before this stream began: it held the whole log
                if not self.finished.is_set():
                    self.halt.wait(0.2)
            except NotFound:
                return  # the pod is gone
            except ClientError:
                self.halt.wait(0.5)  # not started yet ("waiting to start"), or a hiccup: try again

    def _emit(self, text: str) -> None:
        self.lines += 1
        self.on_line(text)


def follow(kube: Any, req: JobRequest, *, on_line: Callable[[str], None] | None = None,
           on_status: Callable[[JobStatus], None] | None = None, timeout: float | None = None,
           poll: float = 1.0) -> JobStatus:
    """Wait for the run's Job, streaming its pod's log to ``on_line`` and every change of state to
    ``on_status``. Ends on the Job's Complete/Failed condition, on a pod that cannot start, or after
    ``timeout`` (default ``--job-timeout`` plus a grace for the cluster's own deadline): then a
    ``failed`` status with reason ``Timeout`` (the caller decides what happens to the Job)."""
    limit = timeout if timeout is not None else req.job_timeout + TIMEOUT_GRACE
    seen: dict[str, Any] = {"pods": [], "last": None}
    follower: _LogFollower | None = None

    def watch(job: dict[str, Any], pods: list[dict[str, Any]]) -> bool:
        nonlocal follower
        seen["pods"] = pods
        st = assess(job, pods)
        if on_line is not None and st.pod and (follower is None or follower.pod != st.pod):
            if follower is not None:
                follower.halt.set()
            follower = _LogFollower(kube, req.namespace, st.pod, on_line)
            follower.start()
        if follower is not None and (st.exit_code is not None or st.done):
            follower.finished.set()
        key = (st.state, st.detail, st.reason)
        if on_status is not None and key != seen["last"]:
            on_status(st)
        seen["last"] = key
        return st.done

    try:
        try:
            job = kube.wait_job(namespace=req.namespace, name=req.name, timeout=limit, poll=poll, on_status=watch)
        except TimedOut:
            st = JobStatus("failed", reason="Timeout", message=f"the Job did not finish within --job-timeout "
                           f"{req.job_timeout} s (+{TIMEOUT_GRACE:g} s grace)")
            if on_status is not None:
                on_status(st)
            return st
        except NotFound as exc:
            raise OpsbookError(f"Job {req.namespace}/{req.name} was deleted while it was followed ({exc})") from None
        st = assess(job, seen["pods"])
        if st.exit_code is None and st.pod:  # the final pod state may lag the Job's condition by a poll
            try:
                st = assess(job, kube.job_pods(namespace=req.namespace, job=req.name))
            except ClientError:
                pass
        if follower is not None:
            follower.finished.set()
            follower.join(timeout=5.0)  # the container has ended: its stream ends with its last line
        return st
    finally:
        if follower is not None:
            follower.halt.set()
