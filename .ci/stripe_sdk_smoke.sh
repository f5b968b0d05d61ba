#!/usr/bin/env bash
# Runs the official Stripe Python SDK against a real `calmony serve` on a fresh database,
# webhooks included: the script registers a receiver it starts on loopback (allowed in test
# mode) and checks every delivery with `stripe.Webhook.construct_event`.
# Then validates the served /openapi.json with openapi-spec-validator.
# Needs: the calmony binary built, PostgreSQL on 127.0.0.1:5432, python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
calmony="${CARGO_TARGET_DIR:-target}/debug/calmony"
python3 -m pip install -q --disable-pip-version-check "stripe>=16,<17" openapi-spec-validator 2>&1 | grep -v "Running pip as the 'root'" || true

db="calmony_sdk_$$"
admin="postgres://postgres@127.0.0.1:5432/postgres"
psql "$admin" -qc "CREATE DATABASE $db"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export CALMONY_LOG=warn
log="$(mktemp)"
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  psql "$admin" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
  rm -f "$log"
}
trap cleanup EXIT

project="$("$calmony" projects create --name "SDK smoke")"
key="$("$calmony" keys create --project "$project" --mode test)"
"$calmony" serve --addr 127.0.0.1:0 >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$log" && break
  sleep 0.2
done
base_url="$(sed -n 's/^listening on //p' "$log" | head -n 1)"
[ -n "$base_url" ] || { cat "$log"; exit 1; }
python3 .ci/stripe_sdk_smoke.py "$base_url" "$key"

# The served OpenAPI document (read-api's docs::openapi) must validate as OpenAPI 3.1.
python3 - "$base_url" <<'PYTHON'
import json, sys, urllib.request
from openapi_spec_validator import validate
document = json.load(urllib.request.urlopen(sys.argv[1] + "/openapi.json"))
validate(document)
print("openapi.json: valid OpenAPI", document["openapi"], "with", len(document["paths"]), "paths")
PYTHON
