"""Plain HTTP requests to endpoints that are not an API we know (an Ingress host/path a chart exposes),
through ``requests``, the one HTTP stack the package declares.

    http = Http(timeout=10)
    answer = http.get("http://10.0.0.5/proposer", headers={"Host": "ml.example.com"})
    answer.status, answer.reason                          # 200, "OK" (any status: the caller judges)

An answer, whatever its status, is returned: whether a 404 is a failure is the caller's call. Only a
request that gets no answer raises, as ours, with the original chained and named in the message
(``ConnectionError: ...``), so a table row can show why::

    ClientError                  any other failure of the request (invalid URL, too many redirects...)
    ├── Unreachable              connection refused, DNS, TLS handshake
    └── TimedOut                 no answer within ``timeout``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opsbook.errors import ClientError, TimedOut, Unreachable

__all__ = ["Answer", "Http"]


@dataclass(frozen=True)
class Answer:
    """What an endpoint answered: the HTTP status and its reason phrase."""

    url: str
    status: int
    reason: str


class Http:
    """HTTP requests with a bound on each (``timeout``, seconds). ``session`` is the side-effect seam
    (a ``requests.Session`` or anything with its ``request`` method)."""

    def __init__(self, *, timeout: float = 10.0, session: Any = None) -> None:
        self.timeout = float(timeout)
        if session is None:
            import requests

            session = requests.Session()
        self.session = session

    def __repr__(self) -> str:
        return f"Http(timeout={self.timeout:g})"

    def get(self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float | None = None,
            follow_redirects: bool = False) -> Answer:
        """``GET url``; a redirect is an answer (3xx) unless ``follow_redirects``. The body is not read."""
        import requests

        try:
            resp = self.session.request("GET", url, headers=dict(headers or {}), allow_redirects=follow_redirects,
                                        timeout=self.timeout if timeout is None else float(timeout), stream=True)
        except requests.exceptions.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            raise TimedOut(_named(exc)) from exc
        except requests.exceptions.ConnectionError as exc:
            raise Unreachable(_named(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise ClientError(_named(exc)) from exc
        try:
            return Answer(url=url, status=int(resp.status_code), reason=str(resp.reason or ""))
        finally:
            resp.close()

    def close(self) -> None:
        self.session.close()


def _named(exc: BaseException) -> str:
    """``ConnectionError: ...``: the failure as the library named it, for a row that says why."""
    return f"{type(exc).__name__}: {exc}"
