"""API errors, rendered as the `Status` bodies a real API server returns."""

from __future__ import annotations

from .resources import Resource


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if not self.reason:  # metav1.StatusReasonUnknown is "" and omitted (omitempty)
            del body["reason"]
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(r: Resource, name: str | None) -> dict:
    d: dict = {}
    if name:
        d["name"] = name
    if r.group:
        d["group"] = r.group
    d["kind"] = r.plural
    return d


def not_found(r: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{r.qualified} "{name}" not found', _details(r, name))


def already_exists(r: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{r.qualified} "{name}" already exists', _details(r, name))


def conflict(r: Resource, name: str, why: str = "the object has been modified; please apply your changes to "
                                                 "the latest version and try again") -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {r.qualified} "{name}": {why}',
                    _details(r, name))


def invalid(r: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """causes: (field, reason, message) with reason FieldValueInvalid / FieldValueRequired / ..."""
    msgs = [f"{field}: {msg}" for field, _, msg in causes]
    joined = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
    kind = r.kind if not r.group else f"{r.kind}.{r.group}"
    details: dict = {"name": name}
    if r.group:
        details["group"] = r.group
    details["kind"] = r.kind
    details["causes"] = [{"reason": reason, "message": msg, "field": field} for field, reason, msg in causes]
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(message: str, r: Resource | None = None, name: str | None = None) -> ApiError:
    return ApiError(403, "Forbidden", message, _details(r, name) if r else None)


def method_not_allowed(message: str = "the server does not allow this method on the requested resource") -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media(ct: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted '
                    f'media types include: application/json-patch+json, application/merge-patch+json, '
                    f'application/apply-patch+yaml, application/strategic-merge-patch+json (got "{ct}")')


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}",
                    {"causes": [{"message": message}]})


def invalid_patch(value: str, message: str) -> ApiError:
    """A patched object that does not decode into its type: the patch handler's
    ``errors.NewInvalid(schema.GroupKind{}, "", field.ErrorList{field.Invalid(field.NewPath("patch"),
    value, err.Error())})`` (k8s.io/apiserver pkg/endpoints/handlers/patch.go): no kind, no name."""
    from .gotext import quote
    body = f"Invalid value: {quote(value)}: {message}"
    return ApiError(422, "Invalid", f' "" is invalid: patch: {body}',
                    {"causes": [{"reason": "FieldValueInvalid", "message": body, "field": "patch"}]})


def unknown_reason(message: str) -> ApiError:
    """An error the API server did not turn into a Status: 500 without a reason (apiserver
    pkg/endpoints/handlers/responsewriters/status.go ``ErrorToAPIStatus``); kubectl prints
    ``Error from server: <message>``."""
    return ApiError(500, "", message)
