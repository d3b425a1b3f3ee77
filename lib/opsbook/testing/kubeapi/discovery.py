"""What the server says about itself: its version, the aggregated-discovery negotiation, and
minimal OpenAPI v3 documents (no schemas, see README Known gaps)."""

from __future__ import annotations

from . import resources as RS

VERSION = {
    "major": "1", "minor": "37", "emulationMajor": "1", "emulationMinor": "37",
    "minCompatibilityMajor": "1", "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.0+opsbook", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25.0",
    "compiler": "gc", "platform": "linux/amd64",
}


AGGREGATED_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> bool:
    """The client lists the v2 aggregated discovery type among the types it accepts."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip() for p in part.split(";")[1:] if "=" in p}
        if params.get("g") == "apidiscovery.k8s.io" and params.get("v") == "v2" and \
                params.get("as") == "APIGroupDiscoveryList":
            return True
    return False


def is_discovery(path: str) -> bool:
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        return len(parts) <= 2
    if parts[0] == "apis":
        return len(parts) <= 3
    return True


# ---------------------------------------------------------------- OpenAPI v3 stubs

def _gv_path(r: RS.Resource) -> str:
    return f"api/{r.version}" if not r.group else f"apis/{r.group}/{r.version}"


def openapi_v3_index() -> dict:
    paths = {}
    for r in RS.RESOURCES:
        gvp = _gv_path(r)
        paths[gvp] = {"serverRelativeURL": f"/openapi/v3/{gvp}?hash=opsbook{abs(hash(gvp)) % 10**8}"}
    return {"paths": paths}


def openapi_v3_doc(gv_path: str) -> dict | None:
    """A minimal OpenAPI v3 document per group-version: one PATCH operation per kind, carrying the
    x-kubernetes-group-version-kind extension and the fieldValidation / dryRun parameters, so that kubectl
    knows the server validates fields and does dry runs. No schemas (see Known gaps)."""
    rs = [r for r in RS.RESOURCES if _gv_path(r) == gv_path]
    if not rs:
        return None
    paths = {}
    for r in rs:
        base = "/" + gv_path + ("/namespaces/{namespace}" if r.namespaced else "") + f"/{r.plural}/{{name}}"
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                  {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                  {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}}]
        paths[base] = {
            "patch": {"operationId": f"patch{r.kind}", "x-kubernetes-action": "patch",
                      "x-kubernetes-group-version-kind": gvk, "parameters": params,
                      "responses": {"200": {"description": "OK"}}},
            "put": {"operationId": f"replace{r.kind}", "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk, "parameters": params,
                    "responses": {"200": {"description": "OK"}}},
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (opsbook test server)", "version": "v1.37.0"},
            "paths": paths, "components": {"schemas": {}}}

