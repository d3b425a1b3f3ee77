"""Notifications when a run ends: who to tell (``--notify``), what to say (Slack or generic JSON).

Destinations are written ``[FORMAT:]DEST``:

* FORMAT is ``slack`` (Slack incoming-webhook JSON: ``text`` plus ``blocks``) or ``generic`` (our
  versioned JSON, :data:`SCHEMA`); without it, ``generic``;
* DEST is a secret reference, ``env:NAME`` or ``file:PATH``, resolved (with :mod:`opsbook.secrets`)
  only when the notification is sent, or a literal ``https://`` URL for a generic receiver.

``--notify slack:env:SLACK_WEBHOOK --notify generic:https://hooks.example.com/opsbook``; the
environment variable ``OPSBOOK_NOTIFY`` holds the same, separated by whitespace (``--notify`` wins).

Why a webhook URL is handled as a secret: Slack's (and many others') URL path *is* the token that
lets anyone post. So a Slack destination must be a reference, never a literal; a URL is only ever
shown masked (``https://hooks.slack.com/…``) or by its reference (``slack:env:SLACK_WEBHOOK``); and
any delivery error text is redacted of the URL before it is shown.

Everything here but :func:`deliver` is pure: the payloads are built from the record's manifest (already
redacted, so a payload cannot carry a secret the record does not), and :func:`deliver` takes the
webhook client as an argument. Notifications are sent after the record is sealed and never change
the record nor the run's exit code.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from opsbook import secrets
from opsbook.clients.webhook import Delivery, check_url, masked
from opsbook.errors import Invalid, SecretError, UsageError

__all__ = ["ENV_NOTIFY", "FORMATS", "SCHEMA", "NotifyTarget", "Sent", "check_available", "check_counts", "deliver",
           "failed_checks", "failing_step", "generic_payload", "parse_target", "slack_payload", "targets"]

SCHEMA = "opsbook.notification/v1"
FORMATS = ("slack", "generic")
ENV_NOTIFY = "OPSBOOK_NOTIFY"
SYNTAX = "[slack:|generic:]DEST with DEST env:NAME, file:PATH or https://URL"
_ICON = {"succeeded": ":white_check_mark:", "failed": ":x:", "aborted": ":warning:"}
_EMOJI = {"succeeded": "✅", "failed": "❌", "aborted": "⚠️"}


@dataclass(frozen=True)
class NotifyTarget:
    """One destination: a format and where its URL comes from."""

    format: str  # slack | generic
    dest: str  # env:NAME, file:PATH, or a literal URL

    @property
    def is_ref(self) -> bool:
        return self.dest.startswith(("env:", "file:"))

    def __str__(self) -> str:
        """How the destination is shown: the reference, or the URL masked. Never the URL."""
        return f"{self.format}:{self.dest if self.is_ref else masked(self.dest)}"

    def resolve(self) -> str:
        """The URL. Raises SecretError (reference unresolvable) or Invalid (not an https URL)."""
        url = secrets.resolve(self.dest) if self.is_ref else self.dest
        url = url.strip()
        check_url(url)
        return url


def parse_target(text: str) -> NotifyTarget:
    """Parse ``[FORMAT:]DEST``; UsageError (shown before anything runs) with the expected syntax."""
    fmt, rest = "generic", text.strip()
    head, sep, tail = rest.partition(":")
    if sep and head in FORMATS:
        fmt, rest = head, tail
    if rest.startswith(("env:", "file:", "k8s:")):
        if rest.startswith("k8s:"):
            raise UsageError(f"--notify {fmt}:{rest}: k8s: references are not supported here (no cluster client "
                             "at that point); use env:NAME or file:PATH")
        try:
            secrets.parse_ref(rest)
        except ValueError as exc:
            raise UsageError(f"--notify {fmt}:{rest}: {exc}") from None
        return NotifyTarget(fmt, rest)
    if rest.startswith(("https://", "http://")):
        shown = f"{fmt}:{masked(rest)}"
        if fmt == "slack":
            raise UsageError(f"--notify {shown}: a Slack webhook URL is a secret (its path is the token); "
                             "pass it as a reference, e.g. --notify slack:env:SLACK_WEBHOOK")
        if secrets.looks_secret(rest):
            raise UsageError(f"--notify {shown}: the URL carries credentials; pass it as env:NAME or file:PATH")
        try:
            check_url(rest)
        except Invalid as exc:
            raise UsageError(f"--notify: {exc}") from None
        return NotifyTarget(fmt, rest)
    shown = f"{fmt}:{masked(rest)}" if "://" in rest else text  # never echo what may be a URL's secret path
    raise UsageError(f"--notify {shown}: expected {SYNTAX}")


def targets(cli: Iterable[str] | None, env: Mapping[str, str] | None = None) -> list[NotifyTarget]:
    """The destinations: ``--notify`` values if any were given, else ``$OPSBOOK_NOTIFY`` (whitespace
    separated). Raises UsageError for any that does not parse, or whose reference cannot be resolved
    (``env:NAME`` unset or empty in ``env``, default the environment; ``file:PATH`` not a readable
    file): refused before the run, not found out when it ends."""
    environ = env if env is not None else os.environ
    values = list(cli or [])
    if not values:
        try:
            values = shlex.split(environ.get(ENV_NOTIFY, ""))
        except ValueError as exc:  # an unbalanced quote
            raise UsageError(f"{ENV_NOTIFY}: {exc}; expected destinations separated by spaces") from None
    out = [parse_target(v) for v in values if v.strip()]
    for t in out:
        check_available(t, environ)
    return out


def check_available(t: NotifyTarget, env: Mapping[str, str] | None = None) -> None:
    """UsageError (one line, naming the reference, never a value) if ``t``'s reference cannot give a URL
    now: an unset or empty environment variable, a file that does not exist or is not a readable file.
    The URL itself is read only when the notification is sent."""
    where = f"--notify {t}"
    if t.dest.startswith("env:"):
        name = t.dest[4:]
        if not (env if env is not None else os.environ).get(name, "").strip():
            raise UsageError(f"{where}: environment variable {name} is not set (or empty); set it or drop "
                             "this --notify")
    elif t.dest.startswith("file:"):
        path = os.path.expanduser(t.dest[5:])
        if not os.path.isfile(path):
            what = "is not a file" if os.path.exists(path) else "does not exist"
            raise UsageError(f"{where}: {os.path.abspath(path)} {what}")
        if not os.access(path, os.R_OK):
            raise UsageError(f"{where}: {os.path.abspath(path)} is not readable")


# -- facts about a finished run, read from its manifest (shared with opsbook.cireport) -----------------

def failed_checks(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, reason) of every failed check; a failed preflight gives one entry per failed prerequisite."""
    out: list[tuple[str, str]] = []
    for step in manifest.get("steps") or []:
        if step.get("outcome") != "failed":
            continue
        if step.get("kind") == "check":
            out.append((str(step.get("title", "")), str(step.get("summary") or "")))
        elif step.get("kind") == "preflight":
            rows = [r for r in step.get("rows") or [] if str(r.get("status", "")).upper() == "FAIL"]
            if not rows:
                out.append((str(step.get("title", "Preflight")), str(step.get("summary") or "")))
            for r in rows:
                out.append((f"{step.get('title', 'Preflight')}: {r.get('prerequisite', '?')}", str(r.get("reason", ""))))
    return out


def check_counts(manifest: Mapping[str, Any]) -> dict[str, int]:
    """How many checks (verification checks, plus each preflight prerequisite) passed and failed."""
    passed = failed = 0
    for step in manifest.get("steps") or []:
        kind = step.get("kind")
        if kind == "check":
            if step.get("outcome") == "failed":
                failed += 1
            elif step.get("outcome") in ("ok", "changed", "planned"):
                passed += 1
        elif kind == "preflight":
            rows = step.get("rows") or []
            if rows:
                bad = sum(1 for r in rows if str(r.get("status", "")).upper() == "FAIL")
                failed, passed = failed + bad, passed + len(rows) - bad
            elif step.get("outcome") == "failed":
                failed += 1
            else:
                passed += 1
    return {"total": passed + failed, "passed": passed, "failed": failed}


def failing_step(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first failed step (kind, title, summary), or else the failing cell, or None."""
    for step in manifest.get("steps") or []:
        if step.get("outcome") == "failed":
            return {"kind": step.get("kind"), "title": step.get("title"), "summary": step.get("summary") or ""}
    fc = manifest.get("failed_cell") or None
    if fc:
        where = f"code cell {fc['code_cell']}" if fc.get("code_cell") else "a cell"
        what = f"{fc.get('ename', '')}: {fc.get('evalue', '')}".strip(": ")
        return {"kind": "cell", "title": where, "summary": what or (manifest.get("error") or ""),
                "source": (fc.get("source") or "").splitlines()[0][:200] if fc.get("source") else ""}
    return None


def generic_payload(manifest: Mapping[str, Any], *, record: str | None, link: str | None = None) -> dict[str, Any]:
    """Our JSON document (schema :data:`SCHEMA`). Fields are added in later versions, never renamed."""
    steps = manifest.get("steps") or []
    outcomes: dict[str, int] = {}
    for s in steps:
        outcomes[str(s.get("outcome"))] = outcomes.get(str(s.get("outcome")), 0) + 1
    return {
        "schema": SCHEMA,
        "event": "run.finished",
        "run_id": manifest.get("run_id"),
        "runbook": {"id": manifest.get("runbook_id"), "version": manifest.get("runbook_version"),
                    "title": manifest.get("runbook_title"), "risk": manifest.get("risk")},
        "target": manifest.get("target"),
        "mode": manifest.get("mode"),
        "status": manifest.get("status"),
        "failing_step": failing_step(manifest),
        "error": manifest.get("error"),
        "record": record,
        "link": link,
        "started": manifest.get("started"),
        "ended": manifest.get("ended"),
        "duration_seconds": manifest.get("duration_seconds"),
        "operator": manifest.get("operator"),
        "approved_plan": (manifest.get("approval") or {}).get("plan_run_id"),
        "checks": check_counts(manifest),
        "failed_checks": [{"name": n, "reason": r} for n, r in failed_checks(manifest)[:20]],
        "steps": {"total": len(steps), **outcomes},
    }


def _mrkdwn(text: Any, limit: int = 2000) -> str:
    """Slack mrkdwn escaping (&, <, >), cut to ``limit`` characters."""
    s = str(text if text is not None else "")
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def slack_payload(manifest: Mapping[str, Any], *, record: str | None, link: str | None = None) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification fallback) plus Block Kit ``blocks``."""
    status = str(manifest.get("status") or "unknown")
    rb, target, mode = manifest.get("runbook_id"), manifest.get("target"), manifest.get("mode")
    checks = check_counts(manifest)
    text = f"{_ICON.get(status, '')} opsbook {_mrkdwn(rb)} {status} ({mode} on {_mrkdwn(target)}), run {manifest.get('run_id')}"
    fields = [
        f"*Runbook*\n`{_mrkdwn(rb)}` v{_mrkdwn(manifest.get('runbook_version'))}",
        f"*Status*\n{_EMOJI.get(status, '')} {status}",
        f"*Target*\n{_mrkdwn(target)}",
        f"*Mode*\n{_mrkdwn(mode)}",
        f"*Run*\n`{_mrkdwn(manifest.get('run_id'))}`",
        f"*Checks*\n{checks['passed']} of {checks['total']} passed" if checks["total"] else "*Checks*\nnone",
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": f"{_EMOJI.get(status, '')} {rb}: {status}"[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    fs = failing_step(manifest)
    if fs:
        line = f"*Failing {_mrkdwn(fs['kind'])}*: {_mrkdwn(fs['title'], 300)}"
        if fs.get("summary"):
            line += f"\n```{_mrkdwn(fs['summary'], 1500)}```"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line}})
    bad = failed_checks(manifest)
    if len(bad) > 1 or (bad and (not fs or fs.get("kind") not in ("check", "preflight"))):
        lines = "\n".join(f"• {_mrkdwn(n, 200)}" + (f": {_mrkdwn(r, 300)}" if r else "") for n, r in bad[:10])
        more = f"\n…and {len(bad) - 10} more" if len(bad) > 10 else ""
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Failed checks*\n{lines}{more}"[:3000]}})
    ctx = []
    if record:
        ctx.append(f"Record: `{_mrkdwn(record, 500)}`")
    if link:
        ctx.append(f"<{link.replace('>', '%3E').replace('|', '%7C')}|CI job>")
    if manifest.get("operator"):
        ctx.append(f"by {_mrkdwn(manifest.get('operator'), 100)}")
    if ctx:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(ctx)[:3000]}]})
    return {"text": text, "blocks": blocks}


def payload(fmt: str, manifest: Mapping[str, Any], *, record: str | None, link: str | None = None) -> dict[str, Any]:
    build = slack_payload if fmt == "slack" else generic_payload
    return build(manifest, record=record, link=link)


# -- sending ----------------------------------------------------------------------------------------------

class Sender(Protocol):
    def post_all(self, items: list[tuple[str, Any]]) -> list[Delivery]: ...


@dataclass(frozen=True)
class Sent:
    """What happened to one destination; ``str(target)`` and ``delivery.reason`` are safe to show."""

    target: NotifyTarget
    delivery: Delivery

    def line(self) -> str:
        d = self.delivery
        if d.delivered:
            return f"notified {self.target} ({d.attempts} attempt{'s' if d.attempts != 1 else ''}, {d.seconds:.1f} s)"
        tried = f" after {d.attempts} attempt{'s' if d.attempts != 1 else ''}" if d.attempts else ""
        return f"notification {self.target} not delivered{tried}: {d.reason} (the run's status is unchanged)"


def _scrubber(url: str) -> secrets.Redactor:
    """A redactor for a URL and its secret parts (path, query), for error texts about it."""
    red = secrets.Redactor([url])
    try:
        parts = urlsplit(url)
    except ValueError:
        return red
    pieces = [parts.path, parts.query, parts.path.strip("/"), *parts.path.split("/"),
              *(kv.partition("=")[2] for kv in parts.query.split("&"))]
    for piece in pieces:  # a receiver may echo the token alone (one path segment or query value)
        if len(piece) >= 8:
            red.register(piece)
    return red


def deliver(to: Iterable[NotifyTarget], manifest: Mapping[str, Any], *, record: str | None, link: str | None,
            client: Sender) -> list[Sent]:
    """Resolve each destination, build its payload and send them all through ``client`` (concurrently,
    within the client's deadline). Never raises for a failed delivery: each :class:`Sent` says."""
    to = list(to)
    done: dict[int, Sent] = {}
    items: list[tuple[str, Any]] = []
    index: list[int] = []
    scrub: dict[int, secrets.Redactor] = {}
    for i, t in enumerate(to):
        try:
            url = t.resolve()
        except (SecretError, Invalid, ValueError) as exc:
            done[i] = Sent(t, Delivery(False, 0, None, str(exc)))
            continue
        scrub[i] = _scrubber(url)
        items.append((url, payload(t.format, manifest, record=record, link=link)))
        index.append(i)
    results = client.post_all(items) if items else []
    for i, d in zip(index, results, strict=True):
        reason = scrub[i].redact(d.reason)
        done[i] = Sent(to[i], Delivery(d.delivered, d.attempts, d.status, reason, d.seconds))
    return [done[i] for i in range(len(to))]
