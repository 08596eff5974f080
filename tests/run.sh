#!/usr/bin/env bash
# The test command (CI runs it through .ci/run):
#   1. cargo fmt --check and cargo clippy with warnings as errors;
#   2. cargo test: unit tests and the black-box API suite on SQLite;
#   3. the API suite again on a throwaway PostgreSQL 15 (started here, removed on exit);
#   4. the end-to-end tests with outside clients (grpcurl, Envoy, Python grpcio, pyotp,
#      standardwebhooks, an OTLP collector, Prometheus and promtool, headless Chromium) against
#      the real binary, in a virtualenv at target/e2e-venv; the webhook, observability and browser
#      ones on SQLite and on the throwaway PostgreSQL. Debian `prometheus` and `chromium` are
#      installed with apt-get when missing.
# Every step runs even when an earlier one failed; a summary closes the output, and the exit
# status is non-zero when any step failed. Without PostgreSQL the run skips that step loudly,
# except under CI=true, where it fails.
#
# Environment: PGBIN (folder of initdb/pg_ctl, default /usr/lib/postgresql/15/bin),
# SKIP_E2E=1 (leave out step 4), CARGO_TARGET_DIR (honoured).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CI=${CI:-false}
PG_VERSION=15
PGBIN=${PGBIN:-/usr/lib/postgresql/$PG_VERSION/bin}

LOGS=$(mktemp -d)
PG_DIR=""
AS_POSTGRES=()

cleanup() {
    if [ -n "$PG_DIR" ]; then
        "${AS_POSTGRES[@]}" "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
    rm -rf "$LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SUMMARY=()
FAILED_STEPS=0
TESTS_PASSED=0
TESTS_FAILED=0

banner() {
    printf '\n========== %s ==========\n' "$*"
}

# Adds the counts of cargo's "test result:" lines, or of a plain "N passed, M failed" line, in
# log $1 to the totals, and leaves them in COUNTED.
COUNTED=""
count_tests() {
    local log=$1 passed failed
    read -r passed failed < <(
        grep -Eo '[0-9]+ passed; [0-9]+ failed' "$log" | awk '{p += $1; f += $3} END {print p + 0, f + 0}'
    )
    if [ "$passed" = 0 ] && [ "$failed" = 0 ]; then
        read -r passed failed < <(
            grep -E '^[[:space:]]*([A-Za-z]+:[[:space:]]*)?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 |
                grep -Eo '[0-9]+ passed, [0-9]+ failed' | awk '{print $1 + 0, $3 + 0} END {if (NR == 0) print 0, 0}'
        )
    fi
    TESTS_PASSED=$((TESTS_PASSED + passed))
    TESTS_FAILED=$((TESTS_FAILED + failed))
    COUNTED="$passed passed, $failed failed"
}

# step NAME COUNT(yes|no) COMMAND...: runs COMMAND, keeps its output in a log, records the result.
step() {
    local name=$1 count=$2 started=$SECONDS log status detail=""
    shift 2
    log="$LOGS/step-${#SUMMARY[@]}.log"
    banner "$name"
    if "$@" 2>&1 | tee "$log"; then status=PASS; else status=FAIL; fi
    if [ "$count" = yes ]; then
        count_tests "$log"
        detail="  [$COUNTED]"
    fi
    [ "$status" = PASS ] || FAILED_STEPS=$((FAILED_STEPS + 1))
    SUMMARY+=("$(printf '%-4s  %-44s %5ss%s' "$status" "$name" $((SECONDS - started)) "$detail")")
}

skip() {
    SUMMARY+=("$(printf '%-4s  %-44s        %s' SKIP "$1" "$2")")
}

fail() {
    FAILED_STEPS=$((FAILED_STEPS + 1))
    SUMMARY+=("$(printf '%-4s  %-44s        %s' FAIL "$1" "$2")")
}

# ------------------------------------------------------------------------------ PostgreSQL

find_pgbin() {
    if [ -x "$PGBIN/initdb" ]; then return 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "PostgreSQL $PG_VERSION is not installed; installing postgresql-$PG_VERSION with apt-get"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_VERSION" >/dev/null || true
    fi
    [ -x "$PGBIN/initdb" ]
}

free_port() {
    python3 - <<'EOF' 2>/dev/null || echo 55432
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
EOF
}

# Starts a throwaway cluster as DESIGN.md shows; sets PG_URL.
start_postgres() {
    find_pgbin || { echo "no initdb in $PGBIN"; return 1; }
    PG_DIR=$(mktemp -d)
    if [ "$(id -u)" = 0 ]; then
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$PG_DIR"
        AS_POSTGRES=(runuser -u postgres --)
    fi
    local port
    port=$(free_port)
    "${AS_POSTGRES[@]}" "$PGBIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust >"$PG_DIR/initdb.log" 2>&1 || {
        cat "$PG_DIR/initdb.log"
        return 1
    }
    # Durability is pointless for a cluster that is deleted at the end.
    "${AS_POSTGRES[@]}" "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start || {
        tail -n 30 "$PG_DIR/log" 2>/dev/null || true
        return 1
    }
    PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') is up at $PG_URL (data in $PG_DIR)"
}

# ------------------------------------------------------------------------------- e2e (Python)

E2E_TEST=tests/e2e/test_outside_clients.py
E2E_TOTP_TEST=tests/e2e/test_totp_pyotp.py
E2E_WEBHOOKS_TEST=tests/e2e/test_webhooks.py
E2E_OBSERVABILITY_TEST=tests/e2e/test_observability.py
E2E_BROWSER_TEST=tests/e2e/test_browser.py
E2E_MANIFESTS_TEST=tests/e2e/test_manifests.py
E2E_REQUIREMENTS=tests/e2e/requirements.txt
E2E_VENV=$TARGET_DIR/e2e-venv

# Runs inside `step` (an `if` context, where set -e does not act): every failure returns.
prepare_e2e_venv() {
    if [ ! -x "$E2E_VENV/bin/python" ]; then
        rm -rf "$E2E_VENV"
        if ! python3 -m venv "$E2E_VENV"; then
            [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
            apt-get update -qq || true
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null || return 1
            rm -rf "$E2E_VENV"
            python3 -m venv "$E2E_VENV" || return 1
        fi
    fi
    # Install only when the requirements changed since the last install.
    local wanted stamp="$E2E_VENV/.requirements.sha256"
    wanted=$(sha256sum "$E2E_REQUIREMENTS" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        "$E2E_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$E2E_REQUIREMENTS" || return 1
        echo "$wanted" >"$stamp"
    fi
}

run_e2e() {
    prepare_e2e_venv || return 1
    cargo build --bin roster || return 1
    ROSTER_BIN="$TARGET_DIR/debug/roster" "$E2E_VENV/bin/python" "$E2E_TEST"
}

# Two-factor authentication against pyotp (an independent TOTP implementation).
run_e2e_totp() {
    prepare_e2e_venv || return 1
    cargo build --bin roster || return 1
    ROSTER_BIN="$TARGET_DIR/debug/roster" "$E2E_VENV/bin/python" "$E2E_TOTP_TEST"
}

# Webhooks against standardwebhooks (an independent implementation); on PostgreSQL when $1 is
# a database URL, else on SQLite.
run_e2e_webhooks() {
    prepare_e2e_venv || return 1
    cargo build --bin roster || return 1
    E2E_DATABASE_URL=${1:-} ROSTER_BIN="$TARGET_DIR/debug/roster" "$E2E_VENV/bin/python" "$E2E_WEBHOOKS_TEST"
}

# Traces, logs and metrics against an OTLP collector, Prometheus and promtool (Debian
# `prometheus`, installed here when missing); on PostgreSQL when $1 is a database URL.
run_e2e_observability() {
    prepare_e2e_venv || return 1
    if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Prometheus is not installed; installing the Debian package prometheus with apt-get"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null || true
    fi
    cargo build --bin roster || return 1
    E2E_DATABASE_URL=${1:-} ROSTER_BIN="$TARGET_DIR/debug/roster" "$E2E_VENV/bin/python" "$E2E_OBSERVABILITY_TEST"
}

# The mail-link pages and gRPC-Web in headless Chromium (Debian `chromium`, installed here when
# missing; Playwright drives it); on PostgreSQL when $1 is a database URL.
run_e2e_browser() {
    prepare_e2e_venv || return 1
    if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Chromium is not installed; installing the Debian package chromium with apt-get"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null || true
    fi
    cargo build --bin roster || return 1
    E2E_DATABASE_URL=${1:-} ROSTER_BIN="$TARGET_DIR/debug/roster" "$E2E_VENV/bin/python" "$E2E_BROWSER_TEST"
}

# The Kubernetes manifests: kustomize (kubectl's; Debian's kubernetes-client is installed when
# there is no kubectl) and kubernetes-validate --strict.
run_manifests() {
    prepare_e2e_venv || return 1
    if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "kubectl is not installed; installing the Debian package kubernetes-client with apt-get"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null || true
    fi
    cargo build --bin roster || return 1
    ROSTER_BIN="$TARGET_DIR/debug/roster" "$E2E_VENV/bin/python" "$E2E_MANIFESTS_TEST"
}

# ------------------------------------------------------------------------------------ steps

echo "roster tests: $(cargo --version), CI=$CI"

step "cargo fmt --check" no cargo fmt --all -- --check --color never
step "cargo clippy -D warnings" no cargo clippy --workspace --all-targets -- -D warnings
step "cargo test (SQLite)" yes env -u ROSTER_TEST_DATABASE_URL cargo test --workspace --no-fail-fast

banner "starting a throwaway PostgreSQL $PG_VERSION"
if start_postgres; then
    step "cargo test --test api (PostgreSQL)" yes env ROSTER_TEST_DATABASE_URL="$PG_URL" cargo test --test api --no-fail-fast
else
    if [ "$CI" = true ]; then
        fail "cargo test --test api (PostgreSQL)" "PostgreSQL did not start (required under CI=true)"
    else
        skip "cargo test --test api (PostgreSQL)" "PostgreSQL did not start"
        cat <<'EOF'

################################################################################
#  SKIP: PostgreSQL did not start, so the API suite did NOT run on PostgreSQL.  #
#  Install postgresql-15 (apt-get install postgresql-15) or set PGBIN.          #
################################################################################

EOF
    fi
fi

if [ "${SKIP_E2E:-}" = 1 ]; then
    skip "e2e: outside clients" "SKIP_E2E=1"
elif [ -f "$E2E_TEST" ]; then
    step "e2e: outside clients" yes run_e2e
else
    skip "e2e: outside clients" "$E2E_TEST does not exist yet"
fi
if [ "${SKIP_E2E:-}" = 1 ]; then
    skip "e2e: two-factor with pyotp" "SKIP_E2E=1"
else
    step "e2e: two-factor with pyotp" yes run_e2e_totp
    step "e2e: webhooks with standardwebhooks (SQLite)" yes run_e2e_webhooks
    if [ -n "${PG_URL:-}" ]; then
        step "e2e: webhooks with standardwebhooks (PostgreSQL)" yes run_e2e_webhooks "$PG_URL"
    fi
    step "e2e: traces and metrics (SQLite)" yes run_e2e_observability
    if [ -n "${PG_URL:-}" ]; then
        step "e2e: traces and metrics (PostgreSQL)" yes run_e2e_observability "$PG_URL"
    fi
    step "deploy: kustomize + kubernetes-validate" yes run_manifests
    step "e2e: mail-link pages in Chromium (SQLite)" yes run_e2e_browser
    if [ -n "${PG_URL:-}" ]; then
        step "e2e: mail-link pages in Chromium (PostgreSQL)" yes run_e2e_browser "$PG_URL"
    fi
fi

banner "summary"
printf '%s\n' "${SUMMARY[@]}"
echo
if [ "$FAILED_STEPS" -gt 0 ]; then
    echo "FAILED: $FAILED_STEPS step(s) failed"
else
    echo "all steps passed"
fi
echo "total: $TESTS_PASSED passed, $TESTS_FAILED failed"
[ "$FAILED_STEPS" -eq 0 ]
