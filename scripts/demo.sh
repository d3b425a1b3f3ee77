#!/usr/bin/env bash
# `make demo`: the runbooks on embedded defaults (target `local`: no cluster, embedded MLflow).
# Each run leaves its record under outputs/; the last steps list them and verify the archive.
set -euo pipefail
OPSBOOK="${OPSBOOK:-.venv/bin/opsbook}"
PY="${PY:-.venv/bin/python}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
last_run() {  # the run id of the newest record of runbook $1
    "$OPSBOOK" history --runbook "$1" --limit 1 --json | "$PY" -c 'import json,sys; print(json.loads(sys.stdin.read())["run_id"])'
}

say "The runbook catalogue"
"$OPSBOOK" list

say "1. environment-check: can this machine run the runbooks?"
"$OPSBOOK" run environment-check

say "2. initial-kubernetes-deployment, plan: helm repo, values.yaml diff, rendered manifests (no cluster on local)"
"$OPSBOOK" run initial-kubernetes-deployment

say "3. mlflow-tracking-server, plan: manifests and prerequisites, nothing changed"
"$OPSBOOK" run mlflow-tracking-server
plan_id="$(last_run mlflow-tracking-server)"

say "4. mlflow-tracking-server, apply the approved plan $plan_id: embedded server, verified by logging a model"
"$OPSBOOK" run mlflow-tracking-server --mode apply --approve "$plan_id"
"$OPSBOOK" mlflow stop || true

say "5. deploy-new-model, plan: registry check planned, canary judged on a recorded metrics file"
"$OPSBOOK" run deploy-new-model -p version 2 -p serving_version 1
plan_id="$(last_run deploy-new-model)"
say "6. deploy-new-model, apply the approved plan $plan_id: the decision is read back from that plan's verdict"
"$OPSBOOK" run deploy-new-model -p version 2 -p serving_version 1 --mode apply --approve "$plan_id"

say "7. centralized-logging, plan: Fluent Bit configuration and manifests (no cluster, no log store on local)"
"$OPSBOOK" run centralized-logging

say "8. security-incident-response, plan: every phase planned, evidence captured, for incident INC-DEMO"
"$OPSBOOK" run security-incident-response -p incident_id INC-DEMO -p responders '[alice, bob]' \
    -p compromised_accounts '[ml-platform/proposer]' -p summary 'demo: proposer token seen in a public log'
say "9. post-incident: the incident's runs, and an evidence bundle verified without the archive"
"$OPSBOOK" incident INC-DEMO
mkdir -p .opsbook
"$OPSBOOK" evidence INC-DEMO --out .opsbook/INC-DEMO-evidence.tar.gz
"$OPSBOOK" evidence --verify .opsbook/INC-DEMO-evidence.tar.gz

say "10. undo: the applies on target local, and which can be taken back (opsbook undo RUN_ID)"
"$OPSBOOK" run undo

say "Run history"
"$OPSBOOK" history --limit 10
say "Archive verification (keep the chain head somewhere the runner cannot rewrite)"
"$OPSBOOK" verify
say "The archive as a static site, for reviewers who do not run a CLI"
"$OPSBOOK" site --out .opsbook/site
echo "open .opsbook/site/index.html in a browser"
