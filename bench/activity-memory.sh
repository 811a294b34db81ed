#!/usr/bin/env bash
# Whole-process memory with activity collection on: the release exporter
# against a fake OpenRouter whose every key has spend on each of its 30
# completed days.
#
# For each key count it starts examples/fake_openrouter with
# `--activity-models M` (which also turns activity on in the exporter config,
# at --rate calls per second), starts the exporter, waits until every key's
# history is read (openrouter_activity_keys{state="complete"} = keys), lets
# --refreshes more refreshes run while a client scrapes /metrics (gzip) every
# few seconds, and prints the fill time, the idle memory (VmRSS) and the process's
# lifetime peak (VmHWM). Nothing is installed; needs curl and gzip.
#
# With --ledger DIR (a statements ledger, e.g. the 100k keys x 400 days one
# `cargo run --release --example bench_ledger -- 100000 400 DIR` writes), each
# run starts on a copy of that ledger (--storage.retention 600d keeps all of
# it) and, once the refreshes ran, fetches the months list, --month's
# statement (CSV and HTML) and one company's (company-7), timing each; the
# peak then includes them.
#
# Usage: bench/activity-memory.sh [--keys "10000 100000"] [--models 1]
#                                 [--rate 1000] [--refreshes 3] [--no-build] [--port 19200]
#                                 [--ledger DIR [--month 2026-07] | --no-ledger]
#
# --no-ledger points --storage.path at /dev/null: the exporter runs without
# a statements ledger (it says so and /metrics serves as before), which
# isolates what the ledger itself costs.
set -euo pipefail

KEYS="10000 100000"
MODELS=1
RATE=1000
REFRESHES=3
BUILD=1
PORT=19200
LEDGER=""
NO_LEDGER=0
MONTH=2026-07
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS="$2"; shift 2 ;;
        --models) MODELS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --refreshes) REFRESHES="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --port) PORT="$2"; shift 2 ;;
        --ledger) LEDGER="$2"; shift 2 ;;
        --month) MONTH="$2"; shift 2 ;;
        --no-ledger) NO_LEDGER=1; shift ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
MGMT_KEY="sk-or-v1-bench-$(date +%s)-not-a-real-key"
for tool in curl gzip; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }
done
if [ "$BUILD" = 1 ]; then
    cargo build --release --bin openrouter-cost-exporter --example fake_openrouter >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
EXPORTER=$TARGET_DIR/release/openrouter-cost-exporter
FAKE=$TARGET_DIR/release/examples/fake_openrouter
WORK=$(mktemp -d /tmp/orce-activity.XXXXXX)
echo "work directory: $WORK" >&2

PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

status_mib() { awk -v f="$2:" '$1 == f { printf "%.0f\n", $2 / 1024 }' "/proc/$1/status"; }
scrape() { curl -s -H "Accept-Encoding: gzip" "http://127.0.0.1:$PORT/metrics" | gzip -dc; }
metric() { # first sample of the series whose line starts with $1
    awk -v m="$1" 'index($0, m) == 1 { print $NF; exit }'
}

echo "| keys | models per key and day | fill | idle memory MiB | peak memory MiB |"
echo "|---:|---:|---:|---:|---:|"
for keys in $KEYS; do
    dir="$WORK/$keys"
    mkdir -p "$dir/data"
    storage=(--storage.path "$dir/data")
    if [ "$NO_LEDGER" = 1 ]; then
        storage=(--storage.path /dev/null)
    elif [ -n "$LEDGER" ]; then
        cp "$LEDGER/ledger.sqlite3" "$dir/data/"
        storage+=(--storage.retention 600d)
    fi
    "$FAKE" --keys "$keys" --management-key "$MGMT_KEY" --config-out "$dir/exporter.yaml" \
        --refresh-interval 60s --activity-models "$MODELS" --activity-rate "$RATE" \
        >"$dir/fake.out" 2>"$dir/fake.err" &
    PIDS+=("$!")
    until grep -q '^base_url=' "$dir/fake.out" 2>/dev/null; do sleep 0.1; done
    OPENROUTER_MANAGEMENT_KEY="$MGMT_KEY" "$EXPORTER" --config.file "$dir/exporter.yaml" \
        --web.listen-address "127.0.0.1:$PORT" "${storage[@]}" --log.level info >"$dir/exporter.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    started=$SECONDS
    until [ "$(scrape 2>/dev/null | metric 'openrouter_activity_keys{state="complete"}')" = "$keys" ]; do
        kill -0 "$pid" 2>/dev/null || { tail -5 "$dir/exporter.log" >&2; exit 1; }
        sleep 5
    done
    fill=$((SECONDS - started))
    credits() { # the registry orders labels by name: code, then endpoint
        scrape | awk 'index($0, "openrouter_upstream_requests_total{") == 1 && index($0, "endpoint=\"credits\"") { s += $NF } END { print s + 0 }'
    }
    first=$(credits)
    until [ "$(credits)" -ge $((first + REFRESHES)) ]; do sleep 2; done
    idle=$(status_mib "$pid" VmRSS)
    if [ -n "$LEDGER" ]; then
        for path in /statements "/statements/$MONTH.csv" "/statements/$MONTH" "/statements/$MONTH/company-7.csv"; do
            curl -s -o "$dir/statement.out" -w "   GET $path: %{http_code}, %{size_download} bytes in %{time_total} s\n" \
                "http://127.0.0.1:$PORT$path" >&2
        done
    fi
    peak=$(status_mib "$pid" VmHWM)
    echo "| $keys | $MODELS | ${fill} s | $idle | $peak |"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    kill "${PIDS[0]}" 2>/dev/null || true
    PIDS=()
done
