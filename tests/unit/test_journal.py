"""``opsbook.ops.journal`` against the Kubernetes API (the ``kube`` fixture: the test server, or a
real cluster with ``OPSBOOK_TEST_KUBECONFIG``): what an apply keeps for its undo, and how the undo
checks and reverses it. The end-to-end undo of each runbook is in ``tests/runbooks``."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
from opsbook.clients import Clients
from opsbook.clients.kube import Kube
from opsbook.errors import NotFound, OpsbookError
from opsbook.ops import undo
from opsbook.ops.journal import JOURNAL, Journal, comparable, undoer_named

SECRET_VALUE = "s3cr3t-value-that-never-goes-into-a-record"


@pytest.fixture
def k(kube):
    client = Kube(kubeconfig=kube.kubeconfig, context=kube.context)
    yield client
    client.close()


def _undo_ctx(k: Kube) -> undo.Context:
    """The undo runbook's context, as its notebook builds it, with this test's client."""
    return undo.Context(settings=SimpleNamespace(undo_of="r", target="t", mode="apply"), clients=Clients(None, kube=k))


def _cm(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _with_record(ctx: undo.Context, *steps: list[dict]) -> undo.Context:
    """``ctx`` reading an apply record whose change steps made ``steps``' entries (in order)."""
    ctx.__dict__["applied"] = {"steps": [{"kind": "change", "id": f"s{n}", "title": f"S{n}", "outcome": "changed",
                                          "undo": {"by": JOURNAL.name, "entries": e}} for n, e in enumerate(steps)]}
    return ctx


def test_an_apply_keeps_each_object_before_and_after_and_never_a_secrets_values(kube, k):
    k.create(_cm("changed", a="1"), namespace=kube.namespace)
    j = Journal()
    j.apply(k, [_cm("created", a="1"), _cm("changed", a="2"), _cm("same", a="1")], namespace=kube.namespace)
    j.apply(k, [_cm("same", a="1")], namespace=kube.namespace)  # applied again unchanged: nothing kept
    j.apply(k, [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                 "stringData": {"password": SECRET_VALUE}}], namespace=kube.namespace)
    by = {e["name"]: e for e in j.entries}
    assert [e["name"] for e in j.entries] == ["created", "changed", "same", "db"]
    assert by["created"]["before"] is None and by["created"]["after"]["data"] == {"a": "1"}
    assert by["changed"]["before"]["data"] == {"a": "1"} and by["changed"]["after"]["data"] == {"a": "2"}
    assert by["changed"]["resourceVersion"] == k.get(kind="ConfigMap", name="changed",
                                                     namespace=kube.namespace)["metadata"]["resourceVersion"]
    for e in j.entries:  # a copy that can be created again: no server-set fields
        assert not {"uid", "resourceVersion", "managedFields", "creationTimestamp"} & set(e["after"]["metadata"])
    assert "data" not in by["db"]["after"] and set(by["db"]["after"]["dataSha256"]) == {"password"}
    assert SECRET_VALUE not in json.dumps(j.entries)


def test_the_undo_refuses_a_change_made_since_then_puts_everything_back_newest_first(kube, k):
    ns = kube.namespace
    k.create(_cm("changed", a="1"), namespace=ns)
    before = comparable(k.get(kind="ConfigMap", name="changed", namespace=ns))
    first, second = Journal(), Journal()  # two change steps
    first.apply(k, [_cm("created", a="1"), _cm("changed", a="2"), _cm("temporary", a="1")], namespace=ns)
    second.delete(k, kind="ConfigMap", name="temporary", namespace=ns)  # made and removed by the apply: nothing
    second.apply(k, [_cm("created", a="9"), _cm("later", a="1")], namespace=ns)  # changed again by a later step
    ctx = _with_record(_undo_ctx(k), first.entries, second.entries)
    # one item per thing, newest first; "created" is one item: before as the first step found it
    assert [(i.step_id, i.entry["name"]) for i in ctx.items] == [("s1", "later"), ("s0+s1", "created"), ("s0", "changed")]
    assert ctx.items[1].entry["before"] is None and ctx.items[1].entry["after"]["data"] == {"a": "9"}
    assert [ctx.status(i).state for i in ctx.items] == ["as-left"] * 3
    # someone edits what the apply left: refused, with the difference
    kube.kubectl("patch", "configmap", "changed", "--type=merge", "-p", '{"data": {"a": "3"}}')
    st = ctx.status(ctx.items[2])
    assert st.state == "drifted" and 'data.a: "2" -> "3"' in st.detail and "resourceVersion" in st.detail
    kube.kubectl("patch", "configmap", "changed", "--type=merge", "-p", '{"data": {"a": "2"}}')
    assert ctx.status(ctx.items[2]).state == "as-left"  # the same content again: as the apply left it
    assert [JOURNAL.reverse(ctx, i.entry) for i in ctx.items] == ["deleted", "deleted", "put back as before"]
    for name in ("created", "later"):
        with pytest.raises(NotFound):
            k.get(kind="ConfigMap", name=name, namespace=ns)
    assert comparable(k.get(kind="ConfigMap", name="changed", namespace=ns)) == before
    assert all(JOURNAL.back_as_before(ctx, i.entry).state == "restored" for i in ctx.items)
    assert all(ctx.status(i).state == "restored" for i in ctx.items)  # a second pass has nothing to do


def test_a_deleted_object_is_re_created_from_its_copy(kube, k):
    ns = kube.namespace
    k.create(_cm("gone", a="1"), namespace=ns)
    before = comparable(k.get(kind="ConfigMap", name="gone", namespace=ns))
    j = Journal()
    j.delete(k, kind="ConfigMap", name="gone", namespace=ns)
    (e,) = j.entries
    assert e["after"] is None and JOURNAL.status(_undo_ctx(k), e).state == "as-left"
    assert JOURNAL.reverse(_undo_ctx(k), e) == "re-created"
    assert comparable(k.get(kind="ConfigMap", name="gone", namespace=ns)) == before
    # re-created by someone else in between: not the apply's state any more
    j2 = Journal()
    j2.delete(k, kind="ConfigMap", name="gone", namespace=ns)
    k.create(_cm("gone", a="other"), namespace=ns)
    st = JOURNAL.status(_undo_ctx(k), j2.entries[0])
    assert st.state == "drifted" and "exists again" in st.detail


def test_a_secret_the_apply_changed_cannot_be_put_back_one_it_created_is_deleted(kube, k):
    ns = kube.namespace
    k.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "old"}, "stringData": {"p": "one"}},
             namespace=ns)
    j = Journal()
    j.apply(k, [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "old"}, "stringData": {"p": SECRET_VALUE}},
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "new"}, "stringData": {"p": SECRET_VALUE}}],
            namespace=ns)
    changed, created = j.entries
    ctx = _undo_ctx(k)
    st = JOURNAL.status(ctx, changed)
    assert st.state == "cannot" and "values are never recorded" in st.detail
    assert JOURNAL.status(ctx, created).state == "as-left"
    assert JOURNAL.reverse(ctx, created) == "deleted"
    assert SECRET_VALUE not in json.dumps(j.entries)


def test_a_pods_labels_are_put_back_and_a_pod_that_is_gone_needs_nothing(kube, k):
    ns = kube.namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "x"}},
           "spec": {"containers": [{"name": "c", "image": "registry.example/x:1"}]}}
    k.create(pod, namespace=ns)
    j = Journal()
    with j.object(k, kind="Pod", name="p", namespace=ns):
        k.patch(kind="Pod", name="p", namespace=ns, patch={"metadata": {"labels": {"quarantine": "inc-1", "app": "y"}}})
    (e,) = j.entries
    ctx = _undo_ctx(k)
    assert JOURNAL.reverse(ctx, e) == "labels and annotations put back"
    assert k.get(kind="Pod", name="p", namespace=ns)["metadata"]["labels"] == {"app": "x"}
    k.delete(kind="Pod", name="p", namespace=ns, propagation="Foreground")
    kube.kubectl("wait", "--for=delete", "pod/p", "--timeout=20s", check=False)
    assert JOURNAL.status(ctx, e).state == "restored"


def test_a_namespace_the_apply_created_is_deleted_last_and_only_without_others_objects(kube, k):
    name = f"undo-{uuid.uuid4().hex[:8]}"
    j = Journal()
    try:
        assert j.namespace(k, name) is True
        assert j.namespace(k, name) is False  # there already: nothing more kept
        j.apply(k, [_cm("mine", a="1")], namespace=name)
        k.create(_cm("theirs", a="1"), namespace=name)  # made by someone else after the apply
        ctx = _with_record(_undo_ctx(k), j.entries)
        assert [(i.entry["kind"], i.entry["name"]) for i in ctx.items] == [("ConfigMap", "mine"), ("Namespace", name)]
        assert ctx.namespace_leftovers(name) == ["ConfigMap/theirs"]
        with pytest.raises(OpsbookError, match=f"namespace {name} holds objects the apply did not create: "
                           "ConfigMap/theirs"):
            for item in ctx.items:
                JOURNAL.reverse(ctx, item.entry)
        assert k.namespace_exists(name=name)
        k.delete(kind="ConfigMap", name="theirs", namespace=name)
        assert JOURNAL.reverse(ctx, ctx.items[-1].entry) == "deleted"
        assert JOURNAL.back_as_before(ctx, ctx.items[-1].entry).state == "restored"
    finally:
        k.delete(kind="Namespace", name=name)


@pytest.mark.parametrize("name", ["os:system", "subprocess:run", "opsbook.ops.nosuchmodule:x", "opsbook.ops.journal:nope"])
def test_a_record_can_only_name_a_registered_undoer_of_opsbook_ops(name):
    with pytest.raises(OpsbookError, match="undo by"):
        undoer_named(name)
    assert undoer_named(JOURNAL.name) is JOURNAL


def test_a_copy_that_was_redacted_is_not_put_back_and_a_secrets_labels_are(kube, k):
    from opsbook import secrets
    from opsbook.ops.journal import REDACTED

    assert REDACTED == secrets.MASK
    ns = kube.namespace
    k.create(_cm("holds-a-secret", url="postgres://u:pw@db/x"), namespace=ns)
    k.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": {"a": "1"}},
              "stringData": {"p": "one"}}, namespace=ns)
    j = Journal()
    j.apply(k, [_cm("holds-a-secret", url="postgres://u:other@db/x")], namespace=ns)
    with j.object(k, kind="Secret", name="s", namespace=ns):
        k.patch(kind="Secret", name="s", namespace=ns, patch={"metadata": {"labels": {"a": "2", "b": "x"}}})
    cm, sec = j.entries
    cm["before"]["data"]["url"] = cm["before"]["data"]["url"].replace("pw", REDACTED)  # as the redactor leaves it
    ctx = _undo_ctx(k)
    st = JOURNAL.status(ctx, cm)
    assert st.state == "cannot" and "redacted" in st.detail
    assert JOURNAL.status(ctx, sec).state == "as-left"  # the values did not change: its metadata can go back
    JOURNAL.reverse(ctx, sec)
    now = k.get(kind="Secret", name="s", namespace=ns)
    assert now["metadata"]["labels"] == {"a": "1"} and now["data"] == {"p": "b25l"}  # the values untouched


def test_the_listing_counts_what_an_apply_can_undo_and_names_what_it_cannot():
    manifest = {"steps": [
        {"kind": "step", "id": "read", "undo": None},
        {"kind": "change", "id": "deploy", "undo": {"by": JOURNAL.name, "entries": [
            {"type": "object"}, {"type": "helm"}, {"type": "none", "what": "x", "why": "y"}]}},
        {"kind": "change", "id": "start-embedded", "undo": {"none": "a local process"}},
        {"kind": "change", "id": "nothing", "undo": None}]}
    assert undo._changes(manifest) == (2, ["start-embedded"])
