#!/usr/bin/env bash
# Scrape benchmark: the release exporter against a fake OpenRouter with N keys,
# side by side with nginx serving the very same bytes as static files.
#
# For each key count it
#   1. starts examples/fake_openrouter (the library's `sim` server) with N keys
#      and a matching exporter config,
#   2. runs target/release/openrouter-cost-exporter against it,
#   3. measures the CPU time of steady-state refreshes (utime+stime from
#      /proc/<pid>/stat across whole refreshes, counted exactly by the exporter's
#      own openrouter_upstream_requests_total{endpoint="credits"}), the upstream
#      calls per refresh, and idle and peak memory (VmRSS, VmHWM),
#   4. captures /metrics (identity and gzip) and serves those exact bytes from
#      nginx (gzip_static for the .gz),
#   5. runs wrk against the exporter and against nginx, alternating, several
#      rounds, per encoding, and keeps the medians,
#   6. optionally restarts the exporter with the two cardinality options and
#      counts the series each gives,
# then prints one table. Nothing is installed: missing tools are named with
# the apt-get command that provides them.
#
# Usage: bench/scrape.sh [--keys "1000 10000 100000"] [--rounds 5] [--duration 5]
#                        [--threads 2] [--connections 32] [--encodings "gzip identity"]
#                        [--refresh-interval auto|30s] [--no-build] [--no-cardinality]
#                        [--out DIR] [--port 19100] [--no-ledger]
#
# Each exporter keeps its statements ledger in its run's directory; with
# --no-ledger it runs without one (--storage.path /dev/null, which it reports
# as unusable and serves /metrics on), to show what the ledger costs.
set -euo pipefail

KEYS="1000 10000 100000"
ROUNDS=5
DURATION=5
THREADS=2
CONNECTIONS=32
ENCODINGS="gzip identity"
REFRESH=auto
BUILD=1
CARDINALITY=1
LEDGER=1
OUT=""
PORT=19100
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --encodings) ENCODINGS="$2"; shift 2 ;;
        --refresh-interval) REFRESH="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-cardinality) CARDINALITY=0; shift ;;
        --no-ledger) LEDGER=0; shift ;;
        --out) OUT="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
NGINX_PORT=$((PORT + 1))
MGMT_KEY="sk-or-v1-bench-$(date +%s)-not-a-real-key"

# --- prerequisites: say what is missing, install nothing -------------------
missing=()
command -v wrk >/dev/null || missing+=("wrk (apt-get install wrk)")
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=("nginx (apt-get install nginx-light)")
command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
command -v gzip >/dev/null || missing+=("gzip (apt-get install gzip)")
command -v cargo >/dev/null || [ "$BUILD" = 0 ] || missing+=("cargo (https://rustup.rs)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/scrape.sh needs tools that are not installed:" >&2
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
    exit 1
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ "$BUILD" = 1 ]; then
    echo "building release binaries..." >&2
    cargo build --release --bin openrouter-cost-exporter --example fake_openrouter >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
EXPORTER=$TARGET_DIR/release/openrouter-cost-exporter
FAKE=$TARGET_DIR/release/examples/fake_openrouter
for b in "$EXPORTER" "$FAKE"; do
    [ -x "$b" ] || { echo "missing $b: run without --no-build" >&2; exit 1; }
done

WORK=${OUT:-$(mktemp -d /tmp/orce-bench.XXXXXX)}
mkdir -p "$WORK"
echo "work directory: $WORK" >&2

PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# --- helpers ---------------------------------------------------------------
clk_tck=$(getconf CLK_TCK)
cpu_seconds() { # utime+stime of a pid, in seconds
    awk -v t="$clk_tck" '{ sub(/^.*\) /, ""); printf "%.3f\n", ($12 + $13) / t }' "/proc/$1/stat"
}
status_kb() { # a field of /proc/<pid>/status in kB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
# Memory the exporter holds: resident memory (anonymous, file-backed and
# shared pages alike), and its peak.
memory_kb() { status_kb "$1" VmRSS; }
peak_kb() { status_kb "$1" VmHWM; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
metric_sum() { # sum of samples of metric $1 whose line contains $2, from file $3
    awk -v m="$1" -v f="$2" 'index($0, m) == 1 && index($0, f) { s += $NF } END { print s + 0 }' "$3"
}
metric_value() { awk -v m="$1" '$1 == m { print $2 }' "$2"; }
wait_http() { # url, timeout seconds
    local deadline=$((SECONDS + $2))
    until curl -sf -o /dev/null "$1"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}
scrape_to() { curl -s -H "Accept-Encoding: gzip" "$1" | gzip -dc >"$2"; }
ms() { # wrk latency ("812.00us", "1.20ms", "2.01s") to milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
        else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
        else print "nan" }'
}
human_bytes() { awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.1f MiB", b / 1048576; else printf "%.1f KiB", b / 1024 }'; }

start_fake() { # keys, metrics yaml, dir -> sets FAKE_PID
    local keys=$1 metrics=$2 dir=$3
    "$FAKE" --keys "$keys" --management-key "$MGMT_KEY" --config-out "$dir/exporter.yaml" \
        --refresh-interval "$REFRESH_INTERVAL" --metrics-yaml "$metrics" >"$dir/fake.out" 2>"$dir/fake.err" &
    FAKE_PID=$!
    PIDS+=("$FAKE_PID")
    for _ in $(seq 1 600); do
        grep -q '^base_url=' "$dir/fake.out" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "fake OpenRouter did not start (see $dir/fake.err)" >&2
    exit 1
}
start_exporter() { # dir -> sets EXP_PID
    OPENROUTER_MANAGEMENT_KEY="$MGMT_KEY" "$EXPORTER" --config.file "$1/exporter.yaml" \
        --web.listen-address "127.0.0.1:$PORT" --storage.path "$([ "$LEDGER" = 1 ] && echo "$1/data" || echo /dev/null)" --log.level warn >"$1/exporter.log" 2>&1 &
    EXP_PID=$!
    PIDS+=("$EXP_PID")
    local deadline=$((SECONDS + 600))
    until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do
        if ! kill -0 "$EXP_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            echo "exporter not ready (see $1/exporter.log):" >&2
            tail -5 "$1/exporter.log" >&2
            exit 1
        fi
        sleep 0.1
    done
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

run_wrk() { # url, encoding, output file -> "req/s p99ms errors"
    local header=()
    [ "$2" = gzip ] && header=(-H "Accept-Encoding: gzip") || header=(-H "Accept-Encoding: identity")
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 30s --latency "${header[@]}" "$1" >"$3" 2>&1 || true
    local rps p99 non2xx sockerr
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$3")
    p99=$(ms "$(awk '$1 == "99%" { print $2 }' "$3")")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$3")
    sockerr=$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$3")
    echo "${rps:-0} ${p99:-nan} $(( ${non2xx:-0} + ${sockerr:-0} ))"
}

nginx_conf() { # dir
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes auto;
pid $1/nginx.pid;
error_log $1/nginx.error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65s;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    client_body_temp_path $1/tmp;
    proxy_temp_path $1/tmp;
    fastcgi_temp_path $1/tmp;
    uwsgi_temp_path $1/tmp;
    scgi_temp_path $1/tmp;
    types { }
    default_type "text/plain; version=0.0.4; charset=utf-8";
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $1/www;
        gzip_static on;
        gzip_vary on;
        location = /metrics { }
    }
}
EOF
}

# --- the runs ----------------------------------------------------------------
ROWS=()
CARD_ROWS=()
for N in $KEYS; do
    dir=$WORK/keys-$N
    mkdir -p "$dir/www" "$dir/tmp" "$dir/wrk"
    if [ "$REFRESH" = auto ]; then
        # Long enough that refreshes do not overlap the load rounds much.
        if [ "$N" -ge 50000 ]; then REFRESH_INTERVAL=30s; else REFRESH_INTERVAL=10s; fi
    else
        REFRESH_INTERVAL=$REFRESH
    fi
    interval_s=${REFRESH_INTERVAL%s}
    echo "== $N keys (refresh_interval $REFRESH_INTERVAL) ==" >&2
    start_fake "$N" "" "$dir"
    start_exporter "$dir"

    # Steady-state refresh cost: sample in the idle middle of two refresh
    # periods, count the refreshes in between with the credits counter.
    sleep "$(awk -v i="$interval_s" 'BEGIN { print i / 2 }')"
    scrape_to "http://127.0.0.1:$PORT/metrics" "$dir/m0.txt"
    cpu0=$(cpu_seconds "$EXP_PID")
    idle_rss=$(memory_kb "$EXP_PID")
    dur=$(metric_value openrouter_refresh_duration_seconds "$dir/m0.txt")
    periods=2
    sleep "$(awk -v i="$interval_s" -v d="${dur:-0}" -v k=$periods 'BEGIN { print k * (i + d) }')"
    cpu1=$(cpu_seconds "$EXP_PID")
    scrape_to "http://127.0.0.1:$PORT/metrics" "$dir/m1.txt"
    refreshes=$(( $(metric_sum openrouter_upstream_requests_total 'endpoint="credits"' "$dir/m1.txt") \
                - $(metric_sum openrouter_upstream_requests_total 'endpoint="credits"' "$dir/m0.txt") ))
    calls=$(( $(metric_sum openrouter_upstream_requests_total '' "$dir/m1.txt") \
            - $(metric_sum openrouter_upstream_requests_total '' "$dir/m0.txt") ))
    if [ "$refreshes" -gt 0 ]; then
        refresh_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$refreshes" 'BEGIN { printf "%.3f", (b - a) / n }')
        calls_per=$(awk -v c="$calls" -v n="$refreshes" 'BEGIN { printf "%g", c / n }')
    else
        refresh_cpu=nan; calls_per=nan
    fi
    ws_calls=$(( $(metric_sum openrouter_upstream_requests_total 'endpoint="workspaces"' "$dir/m1.txt") \
               - $(metric_sum openrouter_upstream_requests_total 'endpoint="workspaces"' "$dir/m0.txt") ))
    echo "   refreshes observed: $refreshes, CPU per refresh: ${refresh_cpu}s, upstream calls per refresh: $calls_per ($ws_calls workspace listings in $refreshes refreshes)" >&2

    # Capture the body, both encodings, within one refresh period (the status
    # lines change at every refresh), and check that they are the same bytes.
    for attempt in 1 2 3; do
        curl -s -H 'Accept-Encoding: identity' -o "$dir/www/metrics" "http://127.0.0.1:$PORT/metrics"
        curl -s -H 'Accept-Encoding: gzip' -o "$dir/www/metrics.gz" "http://127.0.0.1:$PORT/metrics"
        if gzip -dc "$dir/www/metrics.gz" | cmp -s - "$dir/www/metrics"; then break; fi
        echo "   captures differ (a refresh in between?), retrying" >&2
        sleep 1
    done
    plain_bytes=$(stat -c %s "$dir/www/metrics")
    gzip_bytes=$(stat -c %s "$dir/www/metrics.gz")
    series=$(grep -vc '^#' "$dir/www/metrics" || true)
    touch -r "$dir/www/metrics" "$dir/www/metrics.gz"

    nginx_conf "$dir"
    "$NGINX" -c "$dir/nginx.conf" -p "$dir" >"$dir/nginx.out" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_http "http://127.0.0.1:$NGINX_PORT/metrics" 10 || { echo "nginx did not start (see $dir/nginx.*)" >&2; exit 1; }
    curl -s -H 'Accept-Encoding: gzip' -o "$dir/nginx.gz" "http://127.0.0.1:$NGINX_PORT/metrics"
    cmp -s "$dir/nginx.gz" "$dir/www/metrics.gz" || echo "   warning: nginx does not serve the captured gzip bytes" >&2

    for enc in $ENCODINGS; do
        : >"$dir/exp.$enc"; : >"$dir/ngx.$enc"
        for r in $(seq 1 "$ROUNDS"); do
            # Alternate which server goes first.
            if [ $((r % 2)) = 1 ]; then order="exp ngx"; else order="ngx exp"; fi
            for who in $order; do
                if [ "$who" = exp ]; then url="http://127.0.0.1:$PORT/metrics"; else url="http://127.0.0.1:$NGINX_PORT/metrics"; fi
                res=$(run_wrk "$url" "$enc" "$dir/wrk/$who.$enc.$r.txt")
                echo "$res" >>"$dir/$who.$enc"
                echo "   $enc round $r $who: $res (req/s p99ms errors)" >&2
            done
        done
        e_rps=$(awk '{ print $1 }' "$dir/exp.$enc" | median)
        n_rps=$(awk '{ print $1 }' "$dir/ngx.$enc" | median)
        e_p99=$(awk '{ print $2 }' "$dir/exp.$enc" | median)
        n_p99=$(awk '{ print $2 }' "$dir/ngx.$enc" | median)
        e_err=$(awk '{ s += $3 } END { print s + 0 }' "$dir/exp.$enc")
        n_err=$(awk '{ s += $3 } END { print s + 0 }' "$dir/ngx.$enc")
        ratio=$(awk -v a="$e_rps" -v b="$n_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')
        [ "$enc" = gzip ] && size=$gzip_bytes || size=$plain_bytes
        peak_now=$(peak_kb "$EXP_PID")
        ROWS+=("$N|$enc|$(human_bytes "$size")|$series|$e_rps|$n_rps|$ratio|$e_p99|$n_p99|$e_err/$n_err|$refresh_cpu|$calls_per|$((idle_rss / 1024))|$((peak_now / 1024))")
    done
    # Scrapes never call OpenRouter: over the whole run, including every load
    # round, the calls are still exactly the refreshes' calls.
    scrape_to "http://127.0.0.1:$PORT/metrics" "$dir/m2.txt"
    all_refreshes=$(( $(metric_sum openrouter_upstream_requests_total 'endpoint="credits"' "$dir/m2.txt") ))
    all_calls=$(metric_sum openrouter_upstream_requests_total '' "$dir/m2.txt")
    scrapes=$(awk '{ s += $1 * '"$DURATION"' } END { printf "%d", s }' "$dir"/exp.*)
    echo "   whole run: ~$scrapes scrapes, $all_refreshes refreshes, $all_calls upstream calls ($(awk -v c="$all_calls" -v r="$all_refreshes" 'BEGIN { if (r > 0) printf "%g", c / r; else print "nan" }') per refresh)" >&2
    stop "$NGINX_PID"
    stop "$EXP_PID"
    stop "$FAKE_PID"
    echo "   body: $plain_bytes bytes plain, $gzip_bytes bytes gzip (ratio $(awk -v p="$plain_bytes" -v g="$gzip_bytes" 'BEGIN { printf "%.1f", p / g }')x), $series series" >&2

    if [ "$CARDINALITY" = 1 ]; then
        for opt in "per_key_byok: false" "per_key: false"; do
            cdir=$dir/card-${opt%%:*}
            mkdir -p "$cdir"
            start_fake "$N" "metrics: {$opt}" "$cdir"
            start_exporter "$cdir"
            curl -s -H 'Accept-Encoding: identity' -o "$cdir/metrics" "http://127.0.0.1:$PORT/metrics"
            cseries=$(grep -vc '^#' "$cdir/metrics" || true)
            cbytes=$(stat -c %s "$cdir/metrics")
            cgz=$(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$PORT/metrics" | wc -c)
            crss=$(peak_kb "$EXP_PID")
            stop "$EXP_PID"
            stop "$FAKE_PID"
            CARD_ROWS+=("$N|$opt|$cseries|$(human_bytes "$cbytes")|$(human_bytes "$cgz")|$((crss / 1024))")
        done
        CARD_ROWS+=("$N|(default: all families)|$series|$(human_bytes "$plain_bytes")|$(human_bytes "$gzip_bytes")|-")
    fi
done

# --- the table ---------------------------------------------------------------
{
    echo
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS alternating rounds, medians"
    echo
    echo "| keys | encoding | body | series | exporter req/s | nginx req/s | ratio | p99 exporter ms | p99 nginx ms | errors exp/nginx | refresh CPU s | upstream calls/refresh | idle memory MiB | peak memory MiB |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do echo "| ${row//|/ | } |"; done
    if [ ${#CARD_ROWS[@]} -gt 0 ]; then
        echo
        echo "| keys | metrics option | series | body plain | body gzip | peak memory MiB |"
        echo "|---:|---|---:|---:|---:|---:|"
        for row in "${CARD_ROWS[@]}"; do echo "| ${row//|/ | } |"; done
    fi
} | tee "$WORK/table.md"
