"""The helm client: the real ``helm`` binary (v3), driven with keyword-only arguments.

    helm = Helm(kubeconfig="~/.kube/config", kube_context="staging", namespace="ml-platform")
    helm.repo_add("platform", "https://charts.example.com")
    docs = helm.template("ml", "platform/ml-platform", values_files=["values.yaml"])   # list of dicts
    release = helm.install("ml", "platform/ml-platform", values_files=["values.yaml"], wait=True)

Every command runs with ``-o json`` where helm offers it and the output is parsed. A failure raises
:class:`HelmError` (a :class:`~opsbook.errors.CommandFailed`, ``stderr`` verbatim) of the subclass that
says what went wrong, so callers can catch our generic errors::

    HelmError(CommandFailed)
    ├── HelmNotFound(NotFound)          release, chart or repository not found
    ├── HelmConflict(Conflict)          the release name is in use, the resource exists
    ├── HelmForbidden(Forbidden)        RBAC denied an operation
    ├── HelmInvalid(Invalid)            chart does not render, values break values.schema.json, lint fails
    ├── HelmUnreachable(Unreachable)    cluster or chart repository cannot be reached
    └── HelmTimedOut(TimedOut)          ``--wait``/``--timeout`` ran out, or helm itself did not finish

The binary is found by :class:`opsbook.clients.tools.Tools` (the venv's ``bin`` first). Repository
state can be kept private with ``repository_config``/``repository_cache`` (helm's own flags), e.g. in
tests or on a shared CI runner.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from opsbook.clients.tools import Tools
from opsbook.errors import CommandFailed, Conflict, Forbidden, Invalid, NotFound, TimedOut, Unreachable

__all__ = ["Helm", "HelmError", "HelmNotFound", "HelmConflict", "HelmForbidden", "HelmInvalid",
           "HelmUnreachable", "HelmTimedOut", "DRY_RUN_MODES"]

DRY_RUN_MODES = ("client", "server")


class HelmError(CommandFailed):
    """helm exited non-zero; ``stderr`` holds helm's message verbatim, ``stdout`` what it printed."""

    def __init__(self, message: str, *, command: list[str] | None = None, returncode: int | None = None,
                 stderr: str = "", stdout: str = ""):
        super().__init__(message, command=command, returncode=returncode, stderr=stderr)
        self.stdout = stdout


class HelmNotFound(HelmError, NotFound):
    pass


class HelmConflict(HelmError, Conflict):
    pass


class HelmForbidden(HelmError, Forbidden):
    pass


class HelmInvalid(HelmError, Invalid):
    pass


class HelmUnreachable(HelmError, Unreachable):
    pass


class HelmTimedOut(HelmError, TimedOut):
    pass


# (pattern on helm's stderr, error class), first match wins: order matters
_CLASSIFY: list[tuple[re.Pattern[str], type[HelmError]]] = [
    (re.compile(r"context deadline exceeded|timed out waiting for the condition|timed out waiting", re.I),
     HelmTimedOut),
    (re.compile(r"forbidden|unauthorized|is not allowed", re.I), HelmForbidden),
    (re.compile(r": 404\b|\b404 Not Found\b", re.I), HelmNotFound),
    (re.compile(r"cluster unreachable|connection refused|no such host|i/o timeout|dial tcp|"
                r"cannot be reached|network is unreachable|tls handshake timeout", re.I), HelmUnreachable),
    (re.compile(r"cannot re-use a name that is still in use|already exists", re.I), HelmConflict),
    (re.compile(r"not found|no such file or directory|no repo named|no repositories|failed to download",
                re.I), HelmNotFound),
    (re.compile(r"schema|parse error|execution error|chart\(s\) failed|unable to build kubernetes objects|"
                r"error converting yaml|invalid|YAML parse error|validation", re.I), HelmInvalid),
]


def classify(stderr: str) -> type[HelmError]:
    """The :class:`HelmError` subclass for helm's error text."""
    for pattern, cls in _CLASSIFY:
        if pattern.search(stderr):
            return cls
    return HelmError


def _parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise HelmInvalid(f"helm {what}: output is not JSON", stderr="", stdout=text[:2000]) from exc


def parse_manifests(text: str) -> list[dict[str, Any]]:
    """The documents of a multi-document YAML stream (helm template output), empty ones dropped."""
    import yaml

    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d]


class Helm:
    """The ``helm`` binary, bound to one cluster (kubeconfig + context) and a default namespace."""

    def __init__(self, *, kubeconfig: str | os.PathLike[str] | None = None, kube_context: str | None = None,
                 namespace: str | None = None, tools: Tools | None = None, timeout: float = 600.0,
                 repository_config: str | os.PathLike[str] | None = None,
                 repository_cache: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None):
        self.kubeconfig = str(Path(kubeconfig).expanduser()) if kubeconfig else None
        self.kube_context = kube_context
        self.namespace = namespace
        self.tools = tools or Tools()
        self.timeout = timeout
        self.repository_config = str(repository_config) if repository_config else None
        self.repository_cache = str(repository_cache) if repository_cache else None
        self.env = dict(env) if env else None

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        path = self.tools.which("helm")
        if path is None:
            raise HelmNotFound("helm is not installed (not on PATH nor in the virtualenv's bin)",
                               command=["helm"], stderr="")
        return path

    def _globals(self, *, namespace: str | None = None, cluster: bool = True) -> list[str]:
        args: list[str] = []
        if cluster:
            if self.kubeconfig:
                args += ["--kubeconfig", self.kubeconfig]
            if self.kube_context:
                args += ["--kube-context", self.kube_context]
            ns = namespace or self.namespace
            if ns:
                args += ["--namespace", ns]
        if self.repository_config:
            args += ["--repository-config", self.repository_config]
        if self.repository_cache:
            args += ["--repository-cache", self.repository_cache]
        return args

    def run(self, *args: str, namespace: str | None = None, cluster: bool = True,
            timeout: float | None = None, stdin: str | None = None) -> str:
        """Run ``helm ARGS`` with this client's global flags; stdout on success, a HelmError otherwise."""
        argv = [self.path, *args, *self._globals(namespace=namespace, cluster=cluster)]
        env = {**os.environ, **self.env} if self.env else None
        limit = timeout or self.timeout
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit, env=env, input=stdin)
        except subprocess.TimeoutExpired as exc:
            raise HelmTimedOut(f"helm {' '.join(args[:2])} did not finish in {limit:g} s", command=argv,
                               stderr=(exc.stderr or b"").decode() if isinstance(exc.stderr, bytes)
                               else (exc.stderr or "")) from exc
        if proc.returncode != 0:
            cls = classify(proc.stderr + ("\n" + proc.stdout if "lint" in args[:1] else ""))
            raise cls(f"helm {' '.join(a for a in args[:2])} exited {proc.returncode}", command=argv,
                      returncode=proc.returncode, stderr=proc.stderr, stdout=proc.stdout)
        return proc.stdout

    @staticmethod
    def _values_args(values_files: Iterable[str | os.PathLike[str]] = (),
                     set_values: Mapping[str, Any] | None = None) -> list[str]:
        args: list[str] = []
        for f in values_files:
            args += ["--values", str(f)]
        for k, v in (set_values or {}).items():
            args += ["--set-json", f"{k}={json.dumps(v)}"]
        return args

    # -- the tool ------------------------------------------------------------------------------
    def version(self) -> str:
        """helm's version, e.g. ``v3.17.2+gcc0bbbd``."""
        return self.run("version", "--short", cluster=False).strip()

    # -- repositories --------------------------------------------------------------------------
    def repo_add(self, name: str, url: str, *, force_update: bool = True, username: str | None = None,
                 password: str | None = None) -> None:
        """``helm repo add`` (fetches the index: a bad URL raises HelmUnreachable or HelmNotFound)."""
        args = ["repo", "add", name, url]
        if force_update:
            args.append("--force-update")
        if username:
            args += ["--username", username]
        if password:  # on stdin: never in argv (nor in `ps`, nor in an error message)
            args.append("--password-stdin")
        self.run(*args, cluster=False, stdin=password)

    def repo_update(self, *names: str) -> None:
        self.run("repo", "update", *names, cluster=False)

    def repo_list(self) -> list[dict[str, Any]]:
        try:
            return _parse_json(self.run("repo", "list", "-o", "json", cluster=False), "repo list") or []
        except HelmError as exc:  # helm says "no repositories to show" with exit 1
            if "no repositories" in exc.stderr:
                return []
            raise

    def search_repo(self, chart: str, *, version: str | None = None) -> list[dict[str, Any]]:
        args = ["search", "repo", chart, "-o", "json"]
        if version:
            args += ["--version", version]
        return _parse_json(self.run(*args, cluster=False), "search repo") or []

    # -- charts (no cluster needed) --------------------------------------------------------------
    def lint(self, chart: str | os.PathLike[str], *, values_files: Iterable[str | os.PathLike[str]] = (),
             set_values: Mapping[str, Any] | None = None, strict: bool = False) -> str:
        """``helm lint``: its report on success; HelmInvalid (report in ``stdout``) on failure."""
        args = ["lint", str(chart), *self._values_args(values_files, set_values)]
        if strict:
            args.append("--strict")
        return self.run(*args, cluster=False)

    def template(self, release: str, chart: str | os.PathLike[str], *, version: str | None = None,
                 values_files: Iterable[str | os.PathLike[str]] = (), set_values: Mapping[str, Any] | None = None,
                 namespace: str | None = None, kube_version: str | None = None,
                 validate: bool = False) -> list[dict[str, Any]]:
        """``helm template``: the rendered manifests as a list of dicts. ``validate`` checks them
        against the cluster (needs one); otherwise nothing touches a cluster."""
        args = ["template", release, str(chart), *self._values_args(values_files, set_values)]
        if version:
            args += ["--version", version]
        if kube_version:
            args += ["--kube-version", kube_version]
        if validate:
            args.append("--validate")
        ns = namespace or self.namespace
        if ns and not validate:
            args += ["--namespace", ns]
        return parse_manifests(self.run(*args, namespace=namespace, cluster=validate))

    def show_values(self, chart: str | os.PathLike[str], *, version: str | None = None) -> dict[str, Any]:
        """The chart's default values (its values.yaml) as a dict."""
        import yaml

        args = ["show", "values", str(chart)]
        if version:
            args += ["--version", version]
        return yaml.safe_load(self.run(*args, cluster=False)) or {}

    def package(self, chart_dir: str | os.PathLike[str], *, destination: str | os.PathLike[str]) -> Path:
        """``helm package``: the path of the .tgz written into ``destination``."""
        out = self.run("package", str(chart_dir), "--destination", str(destination), cluster=False)
        return Path(out.strip().rsplit(":", 1)[-1].strip())

    # -- releases (cluster) --------------------------------------------------------------------
    def _release_args(self, *, version: str | None, values_files: Iterable[str | os.PathLike[str]],
                      set_values: Mapping[str, Any] | None, wait: bool, timeout: float,
                      dry_run: str | None, atomic: bool, description: str | None) -> list[str]:
        args = [*self._values_args(values_files, set_values), "-o", "json", "--timeout", f"{int(timeout)}s"]
        if version:
            args += ["--version", version]
        if dry_run:
            if dry_run not in DRY_RUN_MODES:
                raise ValueError(f"dry_run={dry_run!r}: expected one of {', '.join(DRY_RUN_MODES)} or None")
            args.append(f"--dry-run={dry_run}")
        elif wait:
            args.append("--wait")
        if atomic and not dry_run:
            args.append("--atomic")
        if description:
            args += ["--description", description]
        return args

    def install(self, release: str, chart: str | os.PathLike[str], *, version: str | None = None,
                values_files: Iterable[str | os.PathLike[str]] = (), set_values: Mapping[str, Any] | None = None,
                namespace: str | None = None, create_namespace: bool = False, wait: bool = True,
                timeout: float = 300, dry_run: str | None = None, atomic: bool = False,
                description: str | None = None) -> dict[str, Any]:
        """``helm install``; returns the release (``-o json``: name, version, info, manifest...).
        ``dry_run="server"`` renders and validates against the cluster without installing."""
        args = ["install", release, str(chart), *self._release_args(
            version=version, values_files=values_files, set_values=set_values, wait=wait, timeout=timeout,
            dry_run=dry_run, atomic=atomic, description=description)]
        if create_namespace:
            args.append("--create-namespace")
        return _parse_json(self.run(*args, namespace=namespace, timeout=timeout + 60), "install") or {}

    def upgrade(self, release: str, chart: str | os.PathLike[str], *, version: str | None = None,
                values_files: Iterable[str | os.PathLike[str]] = (), set_values: Mapping[str, Any] | None = None,
                namespace: str | None = None, install: bool = False, reuse_values: bool = False,
                wait: bool = True, timeout: float = 300, dry_run: str | None = None, atomic: bool = False,
                description: str | None = None) -> dict[str, Any]:
        """``helm upgrade`` (``install=True``: ``--install``); returns the release as JSON."""
        args = ["upgrade", release, str(chart), *self._release_args(
            version=version, values_files=values_files, set_values=set_values, wait=wait, timeout=timeout,
            dry_run=dry_run, atomic=atomic, description=description)]
        if install:
            args.append("--install")
        if reuse_values:
            args.append("--reuse-values")
        return _parse_json(self.run(*args, namespace=namespace, timeout=timeout + 60), "upgrade") or {}

    def status(self, release: str, *, namespace: str | None = None) -> dict[str, Any]:
        """``helm status -o json``; HelmNotFound when there is no such release."""
        return _parse_json(self.run("status", release, "-o", "json", namespace=namespace), "status") or {}

    def release_exists(self, release: str, *, namespace: str | None = None) -> bool:
        try:
            self.status(release, namespace=namespace)
        except HelmNotFound:
            return False
        return True

    def history(self, release: str, *, namespace: str | None = None, max_revisions: int = 256) -> list[dict[str, Any]]:
        return _parse_json(self.run("history", release, "-o", "json", "--max", str(max_revisions),
                                    namespace=namespace), "history") or []

    def get_values(self, release: str, *, namespace: str | None = None, all_values: bool = False) -> dict[str, Any]:
        args = ["get", "values", release, "-o", "json"]
        if all_values:
            args.append("--all")
        return _parse_json(self.run(*args, namespace=namespace), "get values") or {}

    def get_manifest(self, release: str, *, namespace: str | None = None) -> list[dict[str, Any]]:
        return parse_manifests(self.run("get", "manifest", release, namespace=namespace))

    def rollback(self, release: str, revision: int | None = None, *, namespace: str | None = None,
                 wait: bool = True, timeout: float = 300) -> None:
        """``helm rollback`` to ``revision`` (None: the previous one)."""
        args = ["rollback", release]
        if revision is not None:
            args.append(str(revision))
        args += ["--timeout", f"{int(timeout)}s"]
        if wait:
            args.append("--wait")
        self.run(*args, namespace=namespace, timeout=timeout + 60)

    def uninstall(self, release: str, *, namespace: str | None = None, wait: bool = True, timeout: float = 300,
                  keep_history: bool = False) -> None:
        args = ["uninstall", release, "--timeout", f"{int(timeout)}s"]
        if wait:
            args.append("--wait")
        if keep_history:
            args.append("--keep-history")
        self.run(*args, namespace=namespace, timeout=timeout + 60)

    def list_releases(self, *, namespace: str | None = None, all_namespaces: bool = False,
                      filter: str | None = None, all_states: bool = False) -> list[dict[str, Any]]:  # noqa: A002
        args = ["list", "-o", "json"]
        if all_namespaces:
            args.append("--all-namespaces")
        if filter:
            args += ["--filter", filter]
        if all_states:
            args.append("--all")
        return _parse_json(self.run(*args, namespace=namespace), "list") or []

