#!/usr/bin/env bash
# Wharf benchmark harness: wharf vs CNCF distribution (docker-registry 2.8) on
# loopback, with the machine's ceilings (openssl SHA-256, nginx sendfile)
# measured in the same run.  See bench/README.md.
#
#   bash bench/run.sh            full run (~10 min + the wharf build)
#   bash bench/run.sh --quick    smoke run (2 s per load scenario, 64 MiB blobs)
#
# Other options:
#   --no-build           don't run cargo; use $WHARF_BIN or $CARGO_TARGET_DIR/release/wharf
#   --only NAME          benchmark only one registry (wharf | distribution)
#   --keep               keep the temp dir (data, logs) for inspection
#   --wait-idle SECS     before measuring, wait up to SECS for the machine to be
#                        idle (< 15 % CPU busy over 2 s), e.g. while cargo builds
#
# Environment: CARGO_TARGET_DIR (default /tmp/bench-target), WHARF_BIN,
# WHARF_RUST_LOG (RUST_LOG for the wharf server, default "warn").
#
# Everything listens on 127.0.0.1 with free ports, lives in a temp dir, and
# every process started here is killed on exit.  The script never aborts on a
# failing scenario: the row becomes "n/a" and the reason is listed under the
# table.
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$BENCH_DIR")
LIB=$BENCH_DIR/lib
RESULTS_DIR=$BENCH_DIR/results
REGCLIENT=(python3 "$LIB/regclient.py")

QUICK=0 DO_BUILD=1 KEEP=0 ONLY="" WAIT_IDLE=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --no-build) DO_BUILD=0 ;;
    --keep) KEEP=1 ;;
    --wait-idle) WAIT_IDLE=${2:-}; shift
                 [[ $WAIT_IDLE =~ ^[0-9]+$ ]] || { echo "--wait-idle takes seconds" >&2; exit 2; } ;;
    --only) ONLY=${2:-}; shift
            case $ONLY in wharf|distribution) ;; *) echo "--only takes wharf or distribution" >&2; exit 2 ;; esac ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
REPO=bench/app
OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MiB=$((1024 * 1024))
CHUNK_BYTES=$((16 * MiB))
if [ "$QUICK" = 1 ]; then
  MODE=quick BIG_REPEAT=1 LOAD_SECS=2 BIG_BYTES=$((64 * MiB)) PUSH_BYTES=$((64 * MiB)) TAG_COUNT=1000 OPENSSL_SECS=1
else
  MODE=full BIG_REPEAT=3 LOAD_SECS=10 BIG_BYTES=$((1024 * MiB)) PUSH_BYTES=$((256 * MiB)) TAG_COUNT=10000 OPENSSL_SECS=3
fi
TAGLIST_ITER=20
CURL_MAX=600
CLK_TCK=$(getconf CLK_TCK)
REGISTRIES=(wharf distribution)
[ -n "$ONLY" ] && REGISTRIES=("$ONLY")

declare -A R=()      # results: R[reg.key]=value ("n/a" when not measured)
declare -A PID=() BASE=() LOGF=() DEAD=()
NOTES=()             # n/a reasons and informational notes (printed under the table)
PROBLEMS=()          # wrong behaviour seen: exact request, status, body
STARTED_PIDS=()
WORK=""

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- cleanup ---
kill_tree() {  # pid: TERM the process and its direct children, KILL after 5 s
  local p=$1 kids i
  kids=$(pgrep -P "$p" 2>/dev/null || true)
  kill -TERM "$p" $kids 2>/dev/null || return 0
  for i in $(seq 50); do
    kill -0 "$p" 2>/dev/null || break
    [ "$(proc_state "$p")" = Z ] && break
    sleep 0.1
  done
  kill -KILL "$p" $kids 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${STARTED_PIDS[@]}"; do kill_tree "$p"; done
  # anything else still attached to this shell (wrk, curl, python helpers)
  for p in $(jobs -p); do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- helpers ---
proc_state() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
cpu_ticks() {  # utime+stime of a pid (all threads), in clock ticks
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}'
}
alive() {  # reg
  local p=${PID[$1]:-}
  [ -n "$p" ] || return 1
  kill -0 "$p" 2>/dev/null || return 1
  [ "$(proc_state "$p")" != Z ]
}
cpu_busy_pct() {  # whole-machine CPU busy % over 2 s, from /proc/stat
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat); sleep 2
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    busy = y[1] - x[1]; tot = busy + y[2] - x[2]; printf "%.0f", (tot > 0 ? 100 * busy / tot : 0) }'
}
wait_for_idle() {
  local waited=0 busy
  busy=$(cpu_busy_pct)
  while [ "$busy" -ge 15 ] && [ "$waited" -lt "$WAIT_IDLE" ]; do
    log "machine busy ($busy % CPU), waiting for it to be idle ($waited/$WAIT_IDLE s)"
    sleep 8; waited=$((waited + 10)); busy=$(cpu_busy_pct)
  done
  IDLE_BEFORE="CPU busy before measuring: $busy %"
  [ "$busy" -ge 15 ] && log "WARNING: machine is busy ($busy % CPU): results will be skewed"
}
free_port() { "${REGCLIENT[@]}" free-port | jq -r .port; }
calc() { awk "BEGIN { printf \"%s\", $1 }"; }   # calc 'expr' (awk arithmetic)
num() { [[ ${1:-} =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; }

set_res() { R[$1.$2]=$3; }
na() {  # reg reason key...   mark keys n/a with one reason
  local reg=$1 reason=$2; shift 2
  local k
  for k in "$@"; do R[$reg.$k]="n/a"; done
  NOTES+=("$reg: n/a for $* -- $reason")
}
problem() { PROBLEMS+=("[$1] $2"); log "PROBLEM [$1] $2"; }

require_alive() {  # reg scenario key...   returns 1 (and marks n/a) if the server is gone
  local reg=$1 scen=$2; shift 2
  if [ -z "${PID[$reg]:-}" ]; then na "$reg" "${DEAD[$reg]:-server not running}" "$@"; return 1; fi
  if ! alive "$reg"; then
    if [ -z "${DEAD[$reg]:-}" ]; then
      local rc; wait "${PID[$reg]}" 2>/dev/null; rc=$?
      DEAD[$reg]="server process exited (status $rc) before scenario '$scen'"
      problem "$reg" "${DEAD[$reg]}; last log lines: $(tail -n 5 "${LOGF[$reg]}" 2>/dev/null | tr '\n' ' ' | cut -c1-600)"
    fi
    na "$reg" "${DEAD[$reg]}" "$@"
    return 1
  fi
}

check_died_during() {  # reg scenario: call after a scenario to attribute a crash to it
  local reg=$1 scen=$2
  if [ -n "${PID[$reg]:-}" ] && [ -z "${DEAD[$reg]:-}" ] && ! alive "$reg"; then
    local rc; wait "${PID[$reg]}" 2>/dev/null; rc=$?
    DEAD[$reg]="server process exited (status $rc) during scenario '$scen'"
    problem "$reg" "${DEAD[$reg]}; last log lines: $(tail -n 5 "${LOGF[$reg]}" 2>/dev/null | tr '\n' ' ' | cut -c1-600)"
  fi
}

# curl_req METHOD URL [curl args...]: sets CODE and TIME (curl time_total, s);
# response headers in $WORK/resp.hdr, body in $WORK/resp.body
curl_req() {
  local method=$1 url=$2 out; shift 2
  local m=(-X "$method")
  [ "$method" = HEAD ] && m=(-I)
  out=$(curl -sS --max-time "$CURL_MAX" -o "$WORK/resp.body" -D "$WORK/resp.hdr" \
        -w '%{http_code} %{time_total}' "${m[@]}" -H 'Expect:' "$@" "$url" 2>"$WORK/resp.err") || true
  CODE=${out%% *} TIME=${out##* }
  [ "$method" = HEAD ] && : >"$WORK/resp.body"   # -I writes the headers to -o too
  [ -n "$CODE" ] || CODE=000
  if [ "$CODE" = 000 ]; then : >"$WORK/resp.body"; cat "$WORK/resp.err" >>"$WORK/resp.body"; fi
}
# curl_upload METHOD URL FILE [curl args...]: like curl_req, streaming FILE as
# the body with -T (Content-Length from the file size).  --data-binary @file
# would load the file into memory first and curl refuses files >= 1 GiB; -T
# appends the file name to a URL whose path ends in "/", so the real path and
# query go in --request-target.
curl_upload() {
  local method=$1 url=$2 file=$3 target; shift 3
  target=/${url#http://*/}
  curl_req "$method" "${url%"$target"}/" -T "$file" --request-target "$target" "$@"
}
resp_hdr() { grep -i "^$1:" "$WORK/resp.hdr" 2>/dev/null | tail -n 1 | cut -d' ' -f2- | tr -d '\r'; }
resp_desc() {  # METHOD URL -> "METHOD /path -> CODE body-prefix"
  local path=${2#http://*/}
  echo "$1 /$path -> $CODE $(head -c 300 "$WORK/resp.body" 2>/dev/null | tr '\n' ' ')"
}
abs_url() {  # reg location
  case $2 in http://*|https://*) echo "$2" ;; /*) echo "${BASE[$1]}$2" ;; *) echo "${BASE[$1]}/$2" ;; esac
}
with_query() {  # url key value
  case $1 in *\?*) echo "$1&$2=$3" ;; *) echo "$1?$2=$3" ;; esac
}

wait_http() {  # url pid seconds: wait until url answers (any HTTP status)
  local url=$1 p=$2 t=$3 i code
  for i in $(seq $((t * 10))); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null || true)
    [ -n "$code" ] && [ "$code" != 000 ] && return 0
    kill -0 "$p" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# ----------------------------------------------------------------- set-up ---
install_prereqs() {
  local need=() cmd pkg
  for pair in docker-registry:docker-registry nginx:nginx wrk:wrk openssl:openssl jq:jq curl:curl; do
    cmd=${pair%%:*} pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2 \
      || { echo "apt-get install ${need[*]} failed" >&2; exit 1; }
  fi
  command -v nginx >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
  # wrk 4.1's parser waits for a body after a HEAD response, so HEAD load uses oha.
  OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
  if [ ! -x "$OHA" ]; then
    log "installing oha (cargo install --locked oha) for the HEAD scenarios"
    if ! CARGO_TARGET_DIR=$WORK/oha-target cargo install --locked oha >"$WORK/oha-install.log" 2>&1; then
      NOTES+=("oha could not be installed (see cargo install output); HEAD rows are n/a")
      OHA=""
    fi
    rm -rf "$WORK/oha-target"
  fi
}

build_wharf() {
  WHARF_BIN=${WHARF_BIN:-$CARGO_TARGET_DIR/release/wharf}
  if [ "$DO_BUILD" = 1 ]; then
    log "building wharf (cargo build --release -p wharf, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    if ! (cd "$REPO_ROOT" && cargo build --release -p wharf) >"$WORK/build.log" 2>&1; then
      WHARF_NA="cargo build --release -p wharf failed"
      NOTES+=("wharf build failed: $(grep -m 3 -E '^error' "$WORK/build.log" | tr '\n' ' ' | cut -c1-400)")
      log "wharf build failed (tail of log follows)"; tail -n 15 "$WORK/build.log" >&2
      return
    fi
  fi
  [ -x "$WHARF_BIN" ] || WHARF_NA="no wharf binary at $WHARF_BIN"
}

start_wharf() {
  if [ -n "${WHARF_NA:-}" ]; then DEAD[wharf]=$WHARF_NA; return; fi
  local port dir=$WORK/wharf-data
  mkdir -p "$dir"; port=$(free_port)
  LOGF[wharf]=$WORK/wharf.log
  RUST_LOG=${WHARF_RUST_LOG:-warn} "$WHARF_BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir" \
    2>"${LOGF[wharf]}" >&2 &
  PID[wharf]=$!; STARTED_PIDS+=("$!"); BASE[wharf]=http://127.0.0.1:$port
  if ! wait_http "${BASE[wharf]}/v2/" "${PID[wharf]}" 30; then
    DEAD[wharf]="wharf serve did not answer on /v2/ within 30 s"
    problem wharf "${DEAD[wharf]}: $(tail -n 5 "${LOGF[wharf]}" | tr '\n' ' ' | cut -c1-600)"
    kill_tree "${PID[wharf]}"; PID[wharf]=""
  fi
}

start_distribution() {
  local port dir=$WORK/distribution-data cfg=$WORK/distribution.yml
  mkdir -p "$dir"; port=$(free_port)
  cat >"$cfg" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
  LOGF[distribution]=$WORK/distribution.log
  docker-registry serve "$cfg" 2>"${LOGF[distribution]}" >&2 &
  PID[distribution]=$!; STARTED_PIDS+=("$!"); BASE[distribution]=http://127.0.0.1:$port
  if ! wait_http "${BASE[distribution]}/v2/" "${PID[distribution]}" 30; then
    DEAD[distribution]="docker-registry did not answer on /v2/ within 30 s"
    problem distribution "${DEAD[distribution]}: $(tail -n 5 "${LOGF[distribution]}" | tr '\n' ' ')"
    kill_tree "${PID[distribution]}"; PID[distribution]=""
  fi
}

make_test_data() {
  local f
  mkdir -p "$WORK/data" "$WORK/chunks"
  log "generating test data: $((BIG_BYTES / MiB)) MiB GET blob, 2 x $((PUSH_BYTES / MiB)) MiB push blobs"
  head -c "$BIG_BYTES" /dev/urandom >"$WORK/data/big.bin"
  head -c "$PUSH_BYTES" /dev/urandom >"$WORK/data/push-mono.bin"
  head -c "$PUSH_BYTES" /dev/urandom >"$WORK/data/push-chunked.bin"
  for f in big push-mono push-chunked; do
    DIGEST[$f]=sha256:$(openssl dgst -sha256 -r "$WORK/data/$f.bin" | cut -d' ' -f1)
  done
  split -b "$CHUNK_BYTES" -d -a 4 "$WORK/data/push-chunked.bin" "$WORK/chunks/c."
  cat "$WORK/data/"*.bin "$WORK/chunks/"* >/dev/null   # page cache
}
declare -A DIGEST=()

# --------------------------------------------------------------- ceilings ---
ceiling_openssl_sha256() {
  log "ceiling: openssl speed sha256 (one core, 16 KiB blocks, ${OPENSSL_SECS}s)"
  local line kbs
  line=$(openssl speed -seconds "$OPENSSL_SECS" -bytes 16384 sha256 2>/dev/null | grep -E '^sha256 ' | tail -n 1)
  kbs=$(awk '{v=$NF; sub(/k$/, "", v); print v}' <<<"$line")
  if num "$kbs"; then C_OPENSSL=$(calc "$kbs * 1000 / 1e6"); else C_OPENSSL="n/a"; NOTES+=("openssl speed output not understood: $line"); fi
}

# parallel_get LABEL URL N BYTES: N concurrent curl GETs of URL to /dev/null,
# wall time -> PAR_MBS (MB/s = N*BYTES/wall/1e6); PAR_ERR set on failure.
parallel_get() {
  local label=$1 url=$2 n=$3 bytes=$4 i t0 t1 bad=0 line pids=()
  PAR_MBS="n/a" PAR_ERR=""
  t0=$(date +%s%N)
  for i in $(seq "$n"); do
    curl -sS --max-time "$CURL_MAX" -o /dev/null -w '%{http_code} %{size_download}\n' "$url" \
      >"$WORK/pget.$i" 2>&1 &
    pids+=("$!")
  done
  wait "${pids[@]}" 2>/dev/null
  t1=$(date +%s%N)
  for i in $(seq "$n"); do
    line=$(head -n 1 "$WORK/pget.$i")
    if [ "$line" != "200 $bytes" ]; then bad=1; PAR_ERR="GET ${url#http://*/} (client $i/$n) -> '$line', expected '200 $bytes'"; fi
  done
  [ "$bad" = 0 ] && PAR_MBS=$(calc "$n * $bytes / (($t1 - $t0) / 1e9) / 1e6")
  log "  $label x$n: $PAR_MBS MB/s"
}

# best_get LABEL URL N BYTES: parallel_get repeated BIG_REPEAT times, best MB/s
# (the VM is noisy; the same rule applies to nginx and both registries)
best_get() {
  local best="n/a" err="" r
  for r in $(seq "$BIG_REPEAT"); do
    parallel_get "$@"
    [ -n "$PAR_ERR" ] && err=$PAR_ERR
    if num "$PAR_MBS" && { [ "$best" = n/a ] || awk -v a="$PAR_MBS" -v b="$best" 'BEGIN { exit !(a > b) }'; }; then best=$PAR_MBS; fi
  done
  PAR_MBS=$best PAR_ERR=$err
}

ceiling_nginx() {
  # Two server blocks on the same file: sendfile, and plain read/write with
  # 4 x 256 KiB output buffers (on this VM the latter is often faster).  The
  # ceiling is the better of the two for each client count.
  log "ceiling: nginx serving the $((BIG_BYTES / MiB)) MiB file from page cache (sendfile / read+write)"
  C_NGINX1="n/a" C_NGINX8="n/a"
  local d=$WORK/nginx p1 p2; mkdir -p "$d/tmp" "$d/logs"; p1=$(free_port); p2=$(free_port)
  cat >"$d/nginx.conf" <<EOF
worker_processes 2;
user root;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  server {
    listen 127.0.0.1:$p1;
    root $WORK/data;
    sendfile on;
    tcp_nopush on;
  }
  server {
    listen 127.0.0.1:$p2;
    root $WORK/data;
    sendfile off;
    output_buffers 4 256k;
  }
}
EOF
  nginx -p "$d" -e "$d/logs/error.log" -c "$d/nginx.conf" >"$d/logs/stdout.log" 2>&1 &
  local np=$!; STARTED_PIDS+=("$np")
  if ! wait_http "http://127.0.0.1:$p1/big.bin" "$np" 10; then
    NOTES+=("nginx did not start: $(tail -n 3 "$d/logs/error.log" | tr '\n' ' ')"); kill_tree "$np"; return
  fi
  local n port mode best how
  for n in 1 8; do
    best="n/a" how=""
    for port in "$p1" "$p2"; do
      mode=sendfile; [ "$port" = "$p2" ] && mode=read/write
      curl -s -o /dev/null "http://127.0.0.1:$port/big.bin"   # warm-up
      best_get "nginx $mode" "http://127.0.0.1:$port/big.bin" "$n" "$BIG_BYTES"
      [ -n "$PAR_ERR" ] && NOTES+=("nginx: $PAR_ERR")
      if num "$PAR_MBS" && { [ "$best" = n/a ] || awk -v a="$PAR_MBS" -v b="$best" 'BEGIN { exit !(a > b) }'; }; then best=$PAR_MBS how=$mode; fi
    done
    printf -v "C_NGINX$n" '%s' "$best"
    NGINX_MODE[$n]=$how
  done
  kill_tree "$np"
}
declare -A NGINX_MODE=()

# -------------------------------------------------------------- scenarios ---
# Each scenario_* takes the registry name (wharf | distribution), records
# R[reg.key] values (or n/a with a reason) and never aborts the run.

scenario_push_small_image() {
  local reg=$1 out
  require_alive "$reg" push_small_image small_image || return
  log "[$reg] push small image $REPO:v1 (config + 4 KiB layer + OCI manifest)"
  out=$("${REGCLIENT[@]}" push-image "${BASE[$reg]}" "$REPO" v1 "$WORK/$reg-image" 2>>"$WORK/$reg-helper.err")
  local p; while IFS= read -r p; do [ -n "$p" ] && problem "$reg" "push small image: $p"; done < <(jq -r '.problems[]?' <<<"$out" 2>/dev/null)
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
    na "$reg" "small image push failed" small_image
    return
  fi
  set_res "$reg" small_image ok
  LAYER_DIGEST[$reg]=$(jq -r .layer_digest <<<"$out")
  MANIFEST_FILE[$reg]=$WORK/$reg-image/manifest.json
  check_died_during "$reg" push_small_image
}

# Does the registry take a monolithic single POST ?digest= with the body (201)?
# If not (202), monolithic pushes are done as POST + PUT ?digest= with the body.
probe_single_post() {
  local reg=$1 out
  require_alive "$reg" probe_single_post single_post || return
  out=$("${REGCLIENT[@]}" probe-single-post "${BASE[$reg]}" "$REPO" 2>>"$WORK/$reg-helper.err")
  SINGLE_POST[$reg]=$(jq -r .supported <<<"$out" 2>/dev/null)
  case ${SINGLE_POST[$reg]} in
    true) ;;
    false) NOTES+=("$reg: single-POST monolithic upload not supported ($(jq -r .request <<<"$out" | cut -c1-200)); monolithic pushes use POST + PUT ?digest=") ;;
    *) SINGLE_POST[$reg]=false; NOTES+=("$reg: single-POST probe failed: $(tail -n 2 "$WORK/$reg-helper.err" | tr '\n' ' ' | cut -c1-300)") ;;
  esac
  if jq -e '.problem' <<<"$out" >/dev/null 2>&1; then problem "$reg" "$(jq -r .problem <<<"$out")"; fi
  check_died_during "$reg" probe_single_post
}
declare -A LAYER_DIGEST=() MANIFEST_FILE=() SINGLE_POST=()

# load_test REG KEY TOOL METHOD CONNS PATH: req/s, p50/p99 ms, server CPU us/req
load_test() {
  local reg=$1 key=$2 tool=$3 method=$4 conns=$5 path=$6
  local keys=("${key}_rps" "${key}_p50" "${key}_p99" "${key}_cpu")
  require_alive "$reg" "$key" "${keys[@]}" || return
  local url=${BASE[$reg]}$path
  curl_req "$method" "$url" -H "Accept: $OCI_MANIFEST"
  if [ "$CODE" != 200 ]; then
    problem "$reg" "$(resp_desc "$method" "$url") (expected 200 before load test $key)"
    na "$reg" "precheck $method $path returned $CODE" "${keys[@]}"; return
  fi
  log "[$reg] $key: $tool $method x$conns conns, ${LOAD_SECS}s"
  local c0 c1 out requests rps p50 p99 errs
  c0=$(cpu_ticks "${PID[$reg]}")
  if [ "$tool" = wrk ]; then
    local threads=2; [ "$conns" -lt 2 ] && threads=1
    out=$(WRK_METHOD=$method timeout -k 5 $((LOAD_SECS + 30)) wrk -t"$threads" -c"$conns" -d"${LOAD_SECS}s" \
          --timeout 10s -H "Accept: $OCI_MANIFEST" -s "$LIB/wrk-report.lua" "$url" 2>&1)
    c1=$(cpu_ticks "${PID[$reg]}")
    local line; line=$(grep '^WRKRESULT' <<<"$out" | tail -n 1)
    if [ -z "$line" ]; then na "$reg" "wrk produced no result: $(tail -n 3 <<<"$out" | tr '\n' ' ')" "${keys[@]}"; return; fi
    local -A W=(); local kv
    for kv in ${line#WRKRESULT }; do W[${kv%%=*}]=${kv#*=}; done
    requests=${W[requests]} rps=${W[rps]}
    p50=$(calc "${W[p50_us]} / 1000") p99=$(calc "${W[p99_us]} / 1000")
    errs=$((W[err_connect] + W[err_read] + W[err_write] + W[err_timeout] + W[err_status]))
    [ "$errs" -gt 0 ] && problem "$reg" "$key: wrk $method $path: ${W[err_status]} HTTP>=400, ${W[err_connect]} connect, ${W[err_read]} read, ${W[err_write]} write, ${W[err_timeout]} timeout errors of $requests"
  else
    if [ -z "${OHA:-}" ]; then na "$reg" "oha not available" "${keys[@]}"; return; fi
    out=$(timeout -k 5 $((LOAD_SECS + 30)) "$OHA" -z "${LOAD_SECS}s" -c "$conns" -m "$method" \
          -H "Accept: $OCI_MANIFEST" --no-tui --output-format json "$url" 2>"$WORK/oha.err")
    c1=$(cpu_ticks "${PID[$reg]}")
    if ! jq -e .summary <<<"$out" >/dev/null 2>&1; then
      na "$reg" "oha produced no result: $(head -c 300 "$WORK/oha.err")" "${keys[@]}"; return
    fi
    requests=$(jq '[.statusCodeDistribution[]] | add // 0' <<<"$out")
    local ok; ok=$(jq '.statusCodeDistribution["200"] // 0' <<<"$out")
    rps=$(jq '.summary.requestsPerSec' <<<"$out")
    p50=$(jq '.latencyPercentiles.p50 * 1000' <<<"$out") p99=$(jq '.latencyPercentiles.p99 * 1000' <<<"$out")
    # requests still in flight at the deadline are reported as errors by oha: not a server fault
    errs=$(( requests - ok + $(jq '[.errorDistribution | to_entries[] | select(.key | test("deadline") | not) | .value] | add // 0' <<<"$out") ))
    [ "$errs" -gt 0 ] && problem "$reg" "$key: oha $method $path: status codes $(jq -c .statusCodeDistribution <<<"$out"), errors $(jq -c .errorDistribution <<<"$out")"
    # oha counts requests cut off at the deadline as errors; rps = completed/s
  fi
  if ! num "$requests" || [ "$requests" -eq 0 ]; then na "$reg" "$key: no completed requests" "${keys[@]}"; return; fi
  set_res "$reg" "${key}_rps" "$rps"
  set_res "$reg" "${key}_p50" "$p50"
  set_res "$reg" "${key}_p99" "$p99"
  set_res "$reg" "${key}_cpu" "$(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $requests")"
  check_died_during "$reg" "$key"
}

scenario_manifest_get() {  # reg conns
  if [ -z "${MANIFEST_FILE[$1]:-}" ]; then
    na "$1" "small image was not pushed" "manifest_get_c$2_rps" "manifest_get_c$2_p50" "manifest_get_c$2_p99" "manifest_get_c$2_cpu"; return
  fi
  load_test "$1" "manifest_get_c$2" wrk GET "$2" "/v2/$REPO/manifests/v1"
}
scenario_manifest_head() {  # reg conns
  if [ -z "${MANIFEST_FILE[$1]:-}" ]; then
    na "$1" "small image was not pushed" "manifest_head_c$2_rps" "manifest_head_c$2_p50" "manifest_head_c$2_p99" "manifest_head_c$2_cpu"; return
  fi
  load_test "$1" "manifest_head_c$2" oha HEAD "$2" "/v2/$REPO/manifests/v1"
}
scenario_small_blob_get() {  # reg conns
  if [ -z "${LAYER_DIGEST[$1]:-}" ]; then
    na "$1" "small image was not pushed" "blob4k_get_c$2_rps" "blob4k_get_c$2_p50" "blob4k_get_c$2_p99" "blob4k_get_c$2_cpu"; return
  fi
  load_test "$1" "blob4k_get_c$2" wrk GET "$2" "/v2/$REPO/blobs/${LAYER_DIGEST[$1]}"
}

# push_blob REG FILE DIGEST: monolithic upload, single POST ?digest= when the
# registry supports it, else POST + PUT ?digest=.  PUSH_SECS = summed curl
# time_total (the file is streamed from page cache).  Returns 1 on error.
push_blob() {
  local reg=$1 file=$2 dg=$3 url=${BASE[$1]}/v2/$REPO/blobs/uploads/
  PUSH_SECS=""
  if [ "${SINGLE_POST[$reg]:-}" = true ]; then
    curl_upload POST "$url?digest=$dg" "$file" -H 'Content-Type: application/octet-stream'
    if [ "$CODE" != 201 ]; then problem "$reg" "$(resp_desc POST "$url?digest=$dg") (expected 201)"; return 1; fi
    PUSH_SECS=$TIME
  else
    curl_req POST "$url"
    if [ "$CODE" != 202 ]; then problem "$reg" "$(resp_desc POST "$url") (expected 202)"; return 1; fi
    local t1=$TIME loc; loc=$(abs_url "$reg" "$(resp_hdr Location)")
    local put; put=$(with_query "$loc" digest "$dg")
    curl_upload PUT "$put" "$file" -H 'Content-Type: application/octet-stream'
    if [ "$CODE" != 201 ]; then problem "$reg" "$(resp_desc PUT "$put") (expected 201)"; return 1; fi
    PUSH_SECS=$(calc "$t1 + $TIME")
  fi
  verify_blob_size "$reg" "$dg" "$(stat -c %s "$file")"
}

verify_blob_size() {  # reg digest bytes
  local url=${BASE[$1]}/v2/$REPO/blobs/$2 len
  curl_req HEAD "$url"
  len=$(resp_hdr Content-Length)
  if [ "$CODE" != 200 ] || [ "$len" != "$3" ]; then
    problem "$1" "$(resp_desc HEAD "$url") Content-Length '$len' (expected 200 and $3 after upload)"; return 1
  fi
}

scenario_push_monolithic() {
  local reg=$1 keys=(push_mono_mbs push_mono_cpu)
  require_alive "$reg" push_monolithic "${keys[@]}" || return
  log "[$reg] push $((PUSH_BYTES / MiB)) MiB monolithic"
  local c0; c0=$(cpu_ticks "${PID[$reg]}")
  if push_blob "$reg" "$WORK/data/push-mono.bin" "${DIGEST[push-mono]}"; then
    set_res "$reg" push_mono_mbs "$(calc "$PUSH_BYTES / $PUSH_SECS / 1e6")"
    set_res "$reg" push_mono_cpu "$(calc "($(cpu_ticks "${PID[$reg]}") - $c0) / $CLK_TCK / ($PUSH_BYTES / 1e9)")"
  else
    na "$reg" "monolithic push failed (see problems)" "${keys[@]}"
  fi
  check_died_during "$reg" push_monolithic
}

scenario_push_chunked() {
  local reg=$1 keys=(push_chunked_mbs)
  require_alive "$reg" push_chunked "${keys[@]}" || return
  log "[$reg] push $((PUSH_BYTES / MiB)) MiB chunked ($((CHUNK_BYTES / MiB)) MiB PATCHes)"
  local url=${BASE[$reg]}/v2/$REPO/blobs/uploads/ total=0 start=0 end size loc chunk range
  curl_req POST "$url"
  if [ "$CODE" != 202 ]; then problem "$reg" "$(resp_desc POST "$url") (expected 202)"; na "$reg" "chunked push: POST failed" "${keys[@]}"; return; fi
  total=$TIME; loc=$(abs_url "$reg" "$(resp_hdr Location)")
  for chunk in "$WORK/chunks/"c.*; do
    size=$(stat -c %s "$chunk"); end=$((start + size - 1))
    curl_upload PATCH "$loc" "$chunk" -H 'Content-Type: application/octet-stream' -H "Content-Range: $start-$end"
    if [ "$CODE" != 202 ]; then
      problem "$reg" "$(resp_desc PATCH "$loc") with Content-Range: $start-$end (expected 202)"
      na "$reg" "chunked push: PATCH failed" "${keys[@]}"; return
    fi
    range=$(resp_hdr Range)
    [ "$range" = "0-$end" ] || problem "$reg" "PATCH ${loc#http://*/} Content-Range: $start-$end -> Range: '$range' (expected 0-$end)"
    total=$(calc "$total + $TIME")
    loc=$(abs_url "$reg" "$(resp_hdr Location)")
    start=$((end + 1))
  done
  local put; put=$(with_query "$loc" digest "${DIGEST[push-chunked]}")
  curl_req PUT "$put" -H 'Content-Type: application/octet-stream' --data-binary ''
  if [ "$CODE" != 201 ]; then
    problem "$reg" "$(resp_desc PUT "$put") (expected 201, closing chunked upload)"
    na "$reg" "chunked push: final PUT failed" "${keys[@]}"; return
  fi
  total=$(calc "$total + $TIME")
  verify_blob_size "$reg" "${DIGEST[push-chunked]}" "$PUSH_BYTES" || { na "$reg" "chunked blob not readable after push" "${keys[@]}"; return; }
  set_res "$reg" push_chunked_mbs "$(calc "$PUSH_BYTES / $total / 1e6")"
  check_died_during "$reg" push_chunked
}

scenario_big_blob_get() {
  local reg=$1 keys=(bigblob_get_1_mbs bigblob_get_8_mbs bigblob_get_8_cpu)
  require_alive "$reg" big_blob_get "${keys[@]}" || return
  log "[$reg] push the $((BIG_BYTES / MiB)) MiB GET test blob (untimed)"
  if ! push_blob "$reg" "$WORK/data/big.bin" "${DIGEST[big]}"; then
    na "$reg" "could not push the $((BIG_BYTES / MiB)) MiB blob" "${keys[@]}"; return
  fi
  set_res "$reg" bigblob_push_mbs "$(calc "$BIG_BYTES / $PUSH_SECS / 1e6")"
  local url=${BASE[$reg]}/v2/$REPO/blobs/${DIGEST[big]} got
  # warm-up read that also verifies the content
  got=sha256:$(curl -sS --max-time "$CURL_MAX" "$url" | openssl dgst -sha256 -r | cut -d' ' -f1)
  if [ "$got" != "${DIGEST[big]}" ]; then
    problem "$reg" "GET /v2/$REPO/blobs/${DIGEST[big]}: body hashes to $got"
    na "$reg" "big blob content mismatch" "${keys[@]}"; return
  fi
  log "[$reg] GET $((BIG_BYTES / MiB)) MiB blob, 1 and 8 concurrent curl clients"
  best_get "$reg" "$url" 1 "$BIG_BYTES"
  [ -n "$PAR_ERR" ] && problem "$reg" "$PAR_ERR"
  set_res "$reg" bigblob_get_1_mbs "$PAR_MBS"
  local c0; c0=$(cpu_ticks "${PID[$reg]}")
  best_get "$reg" "$url" 8 "$BIG_BYTES"
  [ -n "$PAR_ERR" ] && problem "$reg" "$PAR_ERR"
  set_res "$reg" bigblob_get_8_mbs "$PAR_MBS"
  num "$PAR_MBS" && set_res "$reg" bigblob_get_8_cpu "$(calc "($(cpu_ticks "${PID[$reg]}") - $c0) / $CLK_TCK / ($BIG_REPEAT * 8 * $BIG_BYTES / 1e9)")"
  [ "$PAR_MBS" = n/a ] && NOTES+=("$reg: big blob GET n/a -- download errors (see problems)")
  check_died_during "$reg" big_blob_get
}

scenario_wrong_digest() {
  local reg=$1 out
  require_alive "$reg" wrong_digest wrong_digest || return
  log "[$reg] wrong-digest monolithic push must be rejected"
  out=$("${REGCLIENT[@]}" wrong-digest "${BASE[$reg]}" "$REPO" 2>>"$WORK/$reg-helper.err")
  local res; res=$(jq -r .result <<<"$out" 2>/dev/null)
  if [ -z "$res" ] || [ "$res" = null ]; then na "$reg" "wrong-digest helper failed: $(tail -n 2 "$WORK/$reg-helper.err" | tr '\n' ' ')" wrong_digest; return; fi
  set_res "$reg" wrong_digest "$res ($(jq -r .flow <<<"$out"))"
  local p; while IFS= read -r p; do [ -n "$p" ] && problem "$reg" "wrong digest: $p"; done < <(jq -r '.problems[]?' <<<"$out")
  check_died_during "$reg" wrong_digest
}

scenario_tags() {
  local reg=$1 keys=(tags_put_rps tags_list_ms tags_list_count) out
  require_alive "$reg" tags "${keys[@]}" || return
  [ -n "${MANIFEST_FILE[$reg]:-}" ] || { na "$reg" "small image was not pushed" "${keys[@]}"; return; }
  log "[$reg] create $TAG_COUNT tags (PUT manifest by tag, 4 keep-alive clients)"
  out=$("${REGCLIENT[@]}" put-tags "${BASE[$reg]}" "$REPO" "${MANIFEST_FILE[$reg]}" --count "$TAG_COUNT" --threads 4 2>>"$WORK/$reg-helper.err")
  if [ "$(jq -r .failed <<<"$out" 2>/dev/null)" != 0 ]; then
    problem "$reg" "tag creation: $(jq -r '"\(.failed) of '"$TAG_COUNT"' PUTs failed, first: \(.first_error)"' <<<"$out" 2>/dev/null || echo "$out")"
  fi
  local okn; okn=$(jq -r .ok <<<"$out" 2>/dev/null)
  if num "$okn" && [ "$okn" -gt 0 ]; then set_res "$reg" tags_put_rps "$(jq -r .rps <<<"$out")"; else na "$reg" "no tag could be created" tags_put_rps; fi
  check_died_during "$reg" tags_create
  require_alive "$reg" tags_list tags_list_ms tags_list_count || return
  log "[$reg] GET /v2/$REPO/tags/list x$TAGLIST_ITER (following Link pagination)"
  out=$("${REGCLIENT[@]}" tags-list "${BASE[$reg]}" "$REPO" --iterations "$TAGLIST_ITER" 2>>"$WORK/$reg-helper.err")
  set_res "$reg" tags_list_count "$(jq -r '"\(.tags) in \(.pages) page(s)"' <<<"$out" 2>/dev/null)"
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" = true ]; then
    set_res "$reg" tags_list_ms "$(jq -r .median_ms <<<"$out")"
  else
    na "$reg" "tags list failed: $(jq -r .problem <<<"$out" 2>/dev/null | cut -c1-300)" tags_list_ms
  fi
  local want=$((okn + 1)) got; got=$(jq -r .tags <<<"$out" 2>/dev/null)
  if num "$okn" && [ "$got" != "$want" ]; then problem "$reg" "GET /v2/$REPO/tags/list returned $got tags, expected $want"; fi
  [ "$(jq -r .unique <<<"$out" 2>/dev/null)" = "$got" ] || problem "$reg" "GET /v2/$REPO/tags/list returned duplicate tags"
  check_died_during "$reg" tags_list
}

record_peak_rss() {
  local reg=$1 kb
  require_alive "$reg" peak_rss peak_rss_mib || return
  kb=$(awk '/^VmHWM:/ {print $2}' "/proc/${PID[$reg]}/status")
  set_res "$reg" peak_rss_mib "$(calc "$kb / 1024")"
}

step() {  # step FUNCTION REG [ARGS...]: run one scenario, then attribute a crash to it
  "$@"
  check_died_during "$2" "$1${3:+ $3}"
}

run_registry_scenarios() {
  local reg=$1
  log "=== $reg ==="
  step scenario_push_small_image "$reg"
  step probe_single_post "$reg"
  step scenario_wrong_digest "$reg"
  step scenario_manifest_get "$reg" 1
  step scenario_manifest_get "$reg" 64
  step scenario_manifest_head "$reg" 1
  step scenario_manifest_head "$reg" 64
  step scenario_small_blob_get "$reg" 64
  step scenario_big_blob_get "$reg"
  step scenario_push_monolithic "$reg"
  step scenario_push_chunked "$reg"
  step scenario_tags "$reg"
  # add mirror / sync scenarios here (one scenario_* function each)
}

# ------------------------------------------------------------------ table ---
fmt() {  # value printf-format
  if num "$1"; then printf "$2" "$1"; else printf '%s' "${1:-n/a}"; fi
}
ratio() {  # wharf distribution dir(hi|lo)
  num "$1" && num "$2" || { echo "—"; return; }
  if [ "$3" = hi ]; then awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "—"; else printf "%.2f", a / b }'
  else awk -v a="$1" -v b="$2" 'BEGIN { if (a == 0) print "—"; else printf "%.2f", b / a }'; fi
}
pct_of() {  # value ceiling -> "NN %"
  num "$1" && num "$2" || { echo "n/a"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.0f %%", 100 * a / b }'
}

print_table() {
  local big="$((BIG_BYTES / MiB)) MiB" push="$((PUSH_BYTES / MiB)) MiB"
  [ "$BIG_BYTES" -ge $((1024 * MiB)) ] && big="$((BIG_BYTES / 1024 / MiB)) GiB"
  # key | label | direction (hi: ratio wharf/dist, lo: ratio dist/wharf, -: none) | printf format
  local rows=(
    "manifest_get_c1_rps|manifest GET by tag, 1 conn: req/s ↑|hi|%.0f"
    "manifest_get_c1_p50|manifest GET by tag, 1 conn: p50 ms ↓|lo|%.3f"
    "manifest_get_c1_p99|manifest GET by tag, 1 conn: p99 ms ↓|lo|%.3f"
    "manifest_get_c1_cpu|manifest GET by tag, 1 conn: server CPU µs/req ↓|lo|%.1f"
    "manifest_get_c64_rps|manifest GET by tag, 64 conns: req/s ↑|hi|%.0f"
    "manifest_get_c64_p50|manifest GET by tag, 64 conns: p50 ms ↓|lo|%.3f"
    "manifest_get_c64_p99|manifest GET by tag, 64 conns: p99 ms ↓|lo|%.3f"
    "manifest_get_c64_cpu|manifest GET by tag, 64 conns: server CPU µs/req ↓|lo|%.1f"
    "manifest_head_c1_rps|manifest HEAD by tag, 1 conn: req/s ↑ (oha)|hi|%.0f"
    "manifest_head_c1_p50|manifest HEAD by tag, 1 conn: p50 ms ↓|lo|%.3f"
    "manifest_head_c1_p99|manifest HEAD by tag, 1 conn: p99 ms ↓|lo|%.3f"
    "manifest_head_c1_cpu|manifest HEAD by tag, 1 conn: server CPU µs/req ↓|lo|%.1f"
    "manifest_head_c64_rps|manifest HEAD by tag, 64 conns: req/s ↑ (oha)|hi|%.0f"
    "manifest_head_c64_p50|manifest HEAD by tag, 64 conns: p50 ms ↓|lo|%.3f"
    "manifest_head_c64_p99|manifest HEAD by tag, 64 conns: p99 ms ↓|lo|%.3f"
    "manifest_head_c64_cpu|manifest HEAD by tag, 64 conns: server CPU µs/req ↓|lo|%.1f"
    "blob4k_get_c64_rps|4 KiB blob GET, 64 conns: req/s ↑|hi|%.0f"
    "blob4k_get_c64_p50|4 KiB blob GET, 64 conns: p50 ms ↓|lo|%.3f"
    "blob4k_get_c64_p99|4 KiB blob GET, 64 conns: p99 ms ↓|lo|%.3f"
    "blob4k_get_c64_cpu|4 KiB blob GET, 64 conns: server CPU µs/req ↓|lo|%.1f"
    "bigblob_get_1_mbs|$big blob GET, 1 client: MB/s ↑|hi|%.0f"
    "bigblob_get_8_mbs|$big blob GET, 8 clients: MB/s ↑|hi|%.0f"
    "bigblob_get_8_cpu|$big blob GET, 8 clients: server CPU s/GB ↓|lo|%.3f"
    "push_mono_mbs|$push push, monolithic: MB/s ↑|hi|%.0f"
    "push_mono_cpu|$push push, monolithic: server CPU s/GB ↓|lo|%.3f"
    "push_chunked_mbs|$push push, chunked 16 MiB PATCHes: MB/s ↑|hi|%.0f"
    "tags_put_rps|create $TAG_COUNT tags (PUT manifest, 4 clients): req/s ↑|hi|%.0f"
    "tags_list_ms|tags/list with $((TAG_COUNT + 1)) tags, median of $TAGLIST_ITER: ms ↓|lo|%.2f"
    "tags_list_count|tags/list: tags returned|-|%s"
    "wrong_digest|wrong ?digest= rejected with 400 DIGEST_INVALID|-|%s"
    "peak_rss_mib|peak RSS over the run (VmHWM): MiB ↓|lo|%.1f"
  )
  local row key label dir f w d
  echo "| scenario ($MODE run) | wharf | distribution | ratio (>1 = wharf better) |"
  echo "|---|---:|---:|---:|"
  for row in "${rows[@]}"; do
    IFS='|' read -r key label dir f <<<"$row"
    w=${R[wharf.$key]:-n/a} d=${R[distribution.$key]:-n/a}
    if [ "$dir" = - ]; then
      echo "| $label | $w | $d | — |"
    else
      echo "| $label | $(fmt "$w" "$f") | $(fmt "$d" "$f") | $(ratio "$w" "$d" "$dir") |"
    fi
  done
  echo "| ceiling: openssl SHA-256, one core, 16 KiB blocks: MB/s (machine) | $(fmt "$C_OPENSSL" %.0f) | $(fmt "$C_OPENSSL" %.0f) | — |"
  echo "| ceiling: nginx, $big file from page cache, 1 client: MB/s (machine; ${NGINX_MODE[1]:-n/a}) | $(fmt "$C_NGINX1" %.0f) | $(fmt "$C_NGINX1" %.0f) | — |"
  echo "| ceiling: nginx, $big file from page cache, 8 clients: MB/s (machine; ${NGINX_MODE[8]:-n/a}) | $(fmt "$C_NGINX8" %.0f) | $(fmt "$C_NGINX8" %.0f) | — |"
  local reg
  local -A P1 P2 P3 P4
  for reg in wharf distribution; do
    P1[$reg]=$(pct_of "${R[$reg.push_mono_mbs]:-}" "$C_OPENSSL")
    P2[$reg]=$(pct_of "${R[$reg.push_chunked_mbs]:-}" "$C_OPENSSL")
    P3[$reg]=$(pct_of "${R[$reg.bigblob_get_1_mbs]:-}" "$C_NGINX1")
    P4[$reg]=$(pct_of "${R[$reg.bigblob_get_8_mbs]:-}" "$C_NGINX8")
  done
  echo "| monolithic push / openssl SHA-256 ceiling | ${P1[wharf]} | ${P1[distribution]} | — |"
  echo "| chunked push / openssl SHA-256 ceiling | ${P2[wharf]} | ${P2[distribution]} | — |"
  echo "| $big GET 1 client / nginx 1 client | ${P3[wharf]} | ${P3[distribution]} | — |"
  echo "| $big GET 8 clients / nginx 8 clients | ${P4[wharf]} | ${P4[distribution]} | — |"
}

write_report() {
  local out=$RESULTS_DIR/latest.md stamp n
  stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  mkdir -p "$RESULTS_DIR"
  {
    echo "# Wharf benchmark ($MODE run, $stamp)"
    echo
    echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
    [ -z "${WHARF_BIN:-}" ] && WHARF_BIN="(not benchmarked)"
    echo "- wharf: $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo 'no commit')$( (cd "$REPO_ROOT" && [ -n "$(git status --porcelain -- crates 2>/dev/null)" ]) && echo ' (+ uncommitted changes)'), binary $WHARF_BIN"
    echo "- distribution: $(docker-registry --version 2>/dev/null | awk '{print $NF}') (filesystem storage, inmemory blob descriptor cache, log level error)"
    echo "- machine load average (1/5/15 min) at start: $LOAD_START, at end: $LOAD_END${BUSY_START:+; busy at start: $BUSY_START}; ${IDLE_BEFORE:-} -- other work on the 2 cores skews every number: compare only runs on an idle machine (--wait-idle)"
    echo "- load: wrk $(wrk --version 2>&1 | awk 'NR==1 {print $2}') for GET, $([ -n "${OHA:-}" ] && "$OHA" --version 2>/dev/null || echo 'oha n/a') for HEAD; ${LOAD_SECS}s per load scenario"
    echo
    echo "ratio: wharf/distribution for rows marked ↑ (higher is better), distribution/wharf for rows marked ↓ (lower is better); so >1 always means wharf is better. MB = 10^6 bytes."
    echo
    print_table
    echo
    if [ ${#NOTES[@]} -gt 0 ]; then
      echo "## Notes"; echo
      for n in "${NOTES[@]}"; do echo "- $n"; done; echo
    fi
    echo "## Problems seen"; echo
    if [ ${#PROBLEMS[@]} -eq 0 ]; then echo "none"; else for n in "${PROBLEMS[@]}"; do echo "- $n"; done; fi
  } >"$out"
  cp "$out" "$RESULTS_DIR/$(date -u +%Y%m%dT%H%M%SZ)-$MODE.md"
  { for n in "${!R[@]}"; do printf '%s\t%s\n' "$n" "${R[$n]}"; done | sort
    printf 'ceiling.openssl_sha256_mbs\t%s\nceiling.nginx_1_mbs\t%s\nceiling.nginx_8_mbs\t%s\n' "$C_OPENSSL" "$C_NGINX1" "$C_NGINX8"
  } >"$RESULTS_DIR/latest.tsv"
  echo
  cat "$out"
  echo
  log "report written to ${out#"$REPO_ROOT"/} (raw values: results/latest.tsv)"
}

# ------------------------------------------------------------------- main ---
main() {
  WORK=$(mktemp -d /tmp/wharf-bench.XXXXXX)
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  BUSY_START=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 {printf "%s%s (%s%%)", sep, $2, $1; sep=", "}')
  log "mode: $MODE, work dir: $WORK"
  install_prereqs
  WHARF_NA=""; WHARF_BIN=${WHARF_BIN:-}
  local reg
  for reg in "${REGISTRIES[@]}"; do [ "$reg" = wharf ] && build_wharf; done
  make_test_data
  wait_for_idle
  C_OPENSSL="n/a" C_NGINX1="n/a" C_NGINX8="n/a"
  ceiling_openssl_sha256
  ceiling_nginx
  for reg in "${REGISTRIES[@]}"; do "start_$reg"; done
  for reg in "${REGISTRIES[@]}"; do run_registry_scenarios "$reg"; done
  for reg in "${REGISTRIES[@]}"; do record_peak_rss "$reg"; done
  LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
  write_report
}

main
