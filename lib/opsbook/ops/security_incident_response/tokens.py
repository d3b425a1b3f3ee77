"""Token Secrets that come back. Clusters that still auto-create ServiceAccount token Secrets (before
v1.24, or v1.24-v1.25 with the feature gate ``LegacyServiceAccountTokenNoAutoGeneration=false``) run a
token controller in kube-controller-manager that gives every ServiceAccount a referenced
``<sa>-token-xxxxx`` Secret: delete it and the controller drops the reference and issues a new one,
about a second later. Containment that deletes a compromised account's token Secrets must look again,
and say so when a new one appeared: the account has a valid token again.

That controller leaves a mark: the Secrets it issues are listed in the ServiceAccount's ``secrets``
(a v1.24+ cluster references none it did not create before the upgrade). Only then is it worth
waiting for a re-issue, so a cluster without the controller is not slowed down.
"""

from __future__ import annotations

from typing import Any

from opsbook.clients.retry import Pending, wait_until
from opsbook.errors import NotFound, TimedOut
from opsbook.ops.base import Code
from opsbook.ops.security_incident_response.context import SA_ANNOTATION, TOKEN_TYPE, Context

#: seconds containment watches for a re-issued token (the controller acts within about a second)
REISSUE_WAIT = 5.0

Account = tuple[str, str]  # (namespace, ServiceAccount name)


def referenced(ctx: Context, secrets: list[dict[str, Any]]) -> set[Account]:
    """The ServiceAccounts that reference one of these token Secrets in their ``secrets`` list (read
    before the Secrets are deleted): the ones a legacy token controller would give a new token."""
    out: set[Account] = set()
    for sec in secrets:
        meta = sec["metadata"]
        account = (meta["namespace"], (meta.get("annotations") or {}).get(SA_ANNOTATION, ""))
        if account in out or not account[1]:
            continue
        try:
            sa = ctx.kube.get(kind="ServiceAccount", name=account[1], namespace=account[0])
        except NotFound:
            continue
        if meta["name"] in {r.get("name") for r in sa.get("secrets") or []}:
            out.add(account)
    return out


def token_names(ctx: Context, account: Account) -> list[str]:
    """The token Secrets of one ServiceAccount now, by name."""
    ns, name = account
    found = ctx.kube.list_objects(kind="Secret", namespace=ns, field_selector=f"type={TOKEN_TYPE}")
    return sorted(s["metadata"]["name"] for s in found if s.get("type") == TOKEN_TYPE
                  and (s["metadata"].get("annotations") or {}).get(SA_ANNOTATION) == name)


def reissued(ctx: Context, accounts: set[Account], deleted: set[str], *, wait: float = REISSUE_WAIT,
             poll: float = 0.5) -> dict[Account, list[str]]:
    """The token Secrets issued for ``accounts`` after ``deleted`` were deleted, watched for up to
    ``wait`` seconds (sooner when every account has one)."""
    seen: dict[Account, list[str]] = {}

    def every_account_has_one() -> Any:
        for account in accounts:
            new = [n for n in token_names(ctx, account) if n not in deleted]
            if new:
                seen[account] = new
        return True if len(seen) == len(accounts) else Pending(f"{len(seen)} of {len(accounts)} re-issued")

    if accounts:
        try:
            wait_until(every_account_has_one, timeout=wait, interval=poll, what="no token re-issued")
        except TimedOut:
            pass
    return seen


def advice(found: dict[Account, list[str]]) -> Code:
    """What to tell the operator when tokens came back: why, and how to stop it."""
    lines = [f"# ServiceAccount {ns}/{sa}: new token Secret(s) {', '.join(names)}" for (ns, sa), names in
             sorted(found.items())]
    lines += [
        "# Kubernetes' legacy token controller (kube-controller-manager of a cluster before v1.24, or v1.24-v1.25",
        "# with --feature-gates=LegacyServiceAccountTokenNoAutoGeneration=false) issued them: the account has",
        "# a valid token again. Deleting the Secret, or its reference in the ServiceAccount's `secrets`, makes",
        "# it issue another; automountServiceAccountToken: false does not stop it either.",
        "# To stop it: turn LegacyServiceAccountTokenNoAutoGeneration on (remove the =false; the default from",
        "# v1.24, locked on from v1.26) or upgrade the control plane. Until then, the one containment that",
        "# holds is to delete the ServiceAccount itself: the controller then deletes its token Secrets and",
        "# issues none, and every token issued for it stops authenticating (so do the pods running as it;",
        "# re-create it, with a new uid, at recovery). Save it first:",
    ]
    for ns, sa in sorted(found):
        lines += [f"kubectl -n {ns} get serviceaccount {sa} -o yaml > serviceaccount-{ns}-{sa}.yaml",
                  f"kubectl -n {ns} delete serviceaccount {sa}"]
    return Code("\n".join(lines), lang="bash")
