"""What a runner hands to the kernel it starts, through the environment (a leaf module: the
engine sets these, the notebook API reads them)."""

ENV_RUN_ID = "OPSBOOK_RUN_ID"
ENV_EVENTS = "OPSBOOK_EVENTS"
ENV_SOURCE = "OPSBOOK_SOURCE"
ENV_OPERATOR = "OPSBOOK_OPERATOR"
ENV_APPROVED_PLAN = "OPSBOOK_APPROVED_PLAN"
ENV_EVIDENCE_DIR = "OPSBOOK_EVIDENCE_DIR"
