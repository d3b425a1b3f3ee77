"""opsbook's exception tree. Every error we raise on purpose is one of these; the original cause,
where there is one, is chained (``raise ... from exc``).

    OpsbookError
    ├── UsageError                 bad input from the operator (CLI exit code 2)
    │   ├── ParameterError         one or more invalid runbook parameters (``problems`` lists each)
    │   ├── RunbookNotFound        no notebook with that id in the catalogue
    │   ├── TargetError            unknown target, or a target file that does not parse
    │   ├── ApprovalError          apply without a valid approval of a matching plan run
    │   │   └── PlanConsumed       the plan was already carried out by another apply (``used_by``)
    │   └── SigningError           a signing key or the allowed_signers file cannot be used
    ├── RunbookError               a notebook is not a valid runbook (no parameters cell, bad spec)
    │   ├── RunbookOutsideCatalogue  (also a UsageError) a copy outside the catalogue reuses its id
    │   └── InvalidRunbookId       (also a UsageError) a notebook stem that is not an id, or an id that is a path
    ├── SecretError                a secret reference cannot be resolved (never carries the value)
    ├── RunFailed                  the runbook ran and failed (CLI exit code 1)
    ├── PreflightFailed            a prerequisite is missing; raised inside the notebook
    ├── ArchiveError               the record could not be written or read
    │   ├── RecordExists           a record with that run id is already archived (never overwritten)
    │   ├── RecordNotUploaded      an S3 archive could not take the record: it is kept locally (`opsbook upload`)
    │   ├── ArchiveNotWritable     checked before a kernel starts: the archive cannot take a record
    │   │                          (read-only, no space for it); also a UsageError (CLI exit code 2)
    │   ├── ArchiveNotFound        a read verb (verify, history, incident, evidence) names an archive
    │   │                          folder that does not exist; also a UsageError (CLI exit code 2)
    │   ├── BundleUnreadable       evidence --verify: no such file, or not a tar.gz; also a UsageError
    │   └── LedgerError            the ledger cannot be parsed or appended
    └── ClientError                a call through ``opsbook.clients`` failed
        ├── NotFound
        ├── Conflict
        ├── Forbidden
        ├── Invalid
        ├── Unreachable            the service could not be reached (temporary)
        ├── TimedOut               a wait ran out of time (temporary)
        └── CommandFailed          a subprocess (helm, kubectl, ...) exited non-zero; ``stderr`` verbatim
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class OpsbookError(Exception):
    """Base of every error opsbook raises on purpose."""


class UsageError(OpsbookError):
    """The operator asked for something invalid. The CLI exits with code 2."""


@dataclass(frozen=True)
class Problem:
    """One invalid parameter: its name, the value as given (masked if secret), what was expected."""

    name: str
    value: str
    expected: str

    def __str__(self) -> str:
        return f"{self.name}={self.value}: {self.expected}"


class ParameterError(UsageError):
    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} invalid parameter(s):\n{lines}")


class RunbookNotFound(UsageError):
    pass


class TargetError(UsageError):
    pass


class ApprovalError(UsageError):
    pass


class PlanConsumed(ApprovalError):
    """The plan run was already carried out by the apply ``used_by``: a plan is consumed once."""

    def __init__(self, message: str, *, used_by: str):
        super().__init__(message)
        self.used_by = used_by


class SigningError(UsageError):
    """The signing key or the trusted signers file cannot be used (never names key material)."""


class RunbookError(OpsbookError):
    """The notebook does not follow the runbook contract."""


class RunbookOutsideCatalogue(RunbookError, UsageError):
    """A notebook outside the catalogue reuses a catalogue runbook's id (CLI exit code 2)."""


class InvalidRunbookId(RunbookError, UsageError):
    """A notebook whose file stem is not a valid runbook id, or an id given as a path; refused before
    any kernel starts (CLI exit code 2)."""


class SecretError(OpsbookError):
    """A secret reference cannot be resolved. The message names the reference, never a value."""


class RunFailed(OpsbookError):
    def __init__(self, message: str, *, run_id: str | None = None, record: str | None = None,
                 cell_index: int | None = None):
        super().__init__(message)
        self.run_id = run_id
        self.record = record
        self.cell_index = cell_index


class PreflightFailed(OpsbookError):
    """A prerequisite check failed: the run stops here with the reasons."""


class ArchiveError(OpsbookError):
    pass


class RecordExists(ArchiveError):
    pass


class RecordNotUploaded(ArchiveError):
    """The record could not be (completely) written to its S3 archive. It is kept in ``fallback`` (a
    local folder, ``None`` if even that failed); ``opsbook upload`` sends it later."""

    def __init__(self, message: str, *, fallback: Path | None):
        super().__init__(message)
        self.fallback = fallback


class LedgerError(ArchiveError):
    pass


class ArchiveNotWritable(ArchiveError, UsageError):
    """Before a kernel starts: the archive cannot take the run's record (a read-only or missing
    folder, a full disk, less free space than the record needs). Nothing was run; the CLI exits 2."""


class ArchiveNotFound(ArchiveError, UsageError):
    """A read verb (``verify``, ``history``, ``incident``, ``evidence``) names an archive folder that
    does not exist. Read verbs never create an archive; the message names the path and where it came
    from (--outputs, $OPSBOOK_OUTPUTS or the default). The CLI exits 2."""


class BundleUnreadable(ArchiveError, UsageError):
    """``evidence --verify FILE``: FILE does not exist, or is not a (gzip'd) tar archive. The CLI exits 2;
    a bundle that opens but fails its checks is exit 1."""


class ClientError(OpsbookError):
    """A call to an external system failed. ``temporary`` says whether a retry may help."""

    temporary = False


class NotFound(ClientError):
    pass


class Conflict(ClientError):
    pass


class Forbidden(ClientError):
    pass


class Invalid(ClientError):
    pass


class Unreachable(ClientError):
    temporary = True


class TimedOut(ClientError):
    temporary = True


class CommandFailed(ClientError):
    def __init__(self, message: str, *, command: list[str] | None = None, returncode: int | None = None,
                 stderr: str = ""):
        super().__init__(message + (f"\n{stderr.strip()}" if stderr.strip() else ""))
        self.command = command or []
        self.returncode = returncode
        self.stderr = stderr
