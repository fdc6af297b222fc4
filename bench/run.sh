#!/usr/bin/env bash
# Wharf benchmark harness: wharf vs CNCF distribution (docker-registry 2.8) on
# loopback, with the machine's ceilings (openssl SHA-256, nginx sendfile)
# measured in the same run.  See bench/README.md.
#
#   bash bench/run.sh            full run (~12 min + the wharf build)
#   bash bench/run.sh --quick    smoke run (2 s per load scenario, 64 MiB blobs,
#                                32 MiB mirror image, 100 MB/s upstream link
#                                instead of 200, small sync set)
#
# Other options:
#   --no-build           don't run cargo; use $WHARF_BIN or $CARGO_TARGET_DIR/release/wharf
#   --only NAME          benchmark only one registry (wharf | distribution); the
#                        mirror/sync sections then skip the other column
#   --sections LIST      comma-separated subset of registry,mirror,sync (default all)
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

QUICK=0 DO_BUILD=1 KEEP=0 ONLY="" SECTIONS=registry,mirror,sync WAIT_IDLE=0
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --no-build) DO_BUILD=0 ;;
    --keep) KEEP=1 ;;
    --wait-idle) WAIT_IDLE=${2:-}; shift
                 [[ $WAIT_IDLE =~ ^[0-9]+$ ]] || { echo "--wait-idle takes seconds" >&2; exit 2; } ;;
    --only) ONLY=${2:-}; shift
            case $ONLY in wharf|distribution) ;; *) echo "--only takes wharf or distribution" >&2; exit 2 ;; esac ;;
    --sections) SECTIONS=${2:-}; shift
                for s in ${SECTIONS//,/ }; do case $s in registry|mirror|sync) ;; *) echo "--sections takes registry,mirror,sync" >&2; exit 2 ;; esac; done ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
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
  MIRROR_LAYER_BYTES=3M-4M MIRROR_REPS=3 SYNC_LAYER_BYTES=128K-512K LINK_MBS=100
else
  MODE=full BIG_REPEAT=3 LOAD_SECS=10 BIG_BYTES=$((1024 * MiB)) PUSH_BYTES=$((256 * MiB)) TAG_COUNT=10000 OPENSSL_SECS=3
  MIRROR_LAYER_BYTES=24M-32M MIRROR_REPS=5 SYNC_LAYER_BYTES=1M-4M LINK_MBS=200
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
  dist_config "$cfg" "$dir" "$port"
  LOGF[distribution]=$WORK/distribution.log
  docker-registry serve "$cfg" 2>"${LOGF[distribution]}" >&2 &
  PID[distribution]=$!; STARTED_PIDS+=("$!"); BASE[distribution]=http://127.0.0.1:$port
  if ! wait_http "${BASE[distribution]}/v2/" "${PID[distribution]}" 30; then
    DEAD[distribution]="docker-registry did not answer on /v2/ within 30 s"
    problem distribution "${DEAD[distribution]}: $(tail -n 5 "${LOGF[distribution]}" | tr '\n' ' ')"
    kill_tree "${PID[distribution]}"; PID[distribution]=""
  fi
}

# dist_config FILE ROOTDIR PORT [PROXY-REMOTEURL]: docker-registry config.yml
# (proxy mode when a remote URL is given: a pull-through cache of one upstream)
dist_config() {
  cat >"$1" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$3
EOF
  [ -n "${4:-}" ] && printf 'proxy:\n  remoteurl: %s\n' "$4" >>"$1"
  return 0
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
  # With one connection the result depends on whether the scheduler puts client
  # and server on the same core (on this VM ~2.5x apart), so pin them to
  # different cores for that case: server (all threads) on CPU 0, client on CPU 1.
  local pin=() ncpu; ncpu=$(nproc)
  if [ "$conns" -eq 1 ] && [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    taskset -a -p -c 0 "${PID[$reg]}" >/dev/null 2>&1 && pin=(taskset -c 1)
  fi
  local c0 c1 out requests rps p50 p99 errs
  c0=$(cpu_ticks "${PID[$reg]}")
  if [ "$tool" = wrk ]; then
    local threads=2; [ "$conns" -lt 2 ] && threads=1
    out=$(WRK_METHOD=$method timeout -k 5 $((LOAD_SECS + 30)) "${pin[@]}" wrk -t"$threads" -c"$conns" -d"${LOAD_SECS}s" \
          --timeout 10s -H "Accept: $OCI_MANIFEST" -s "$LIB/wrk-report.lua" "$url" 2>&1)
    c1=$(cpu_ticks "${PID[$reg]}")
    unpin "$reg" "${#pin[@]}"
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
    out=$(timeout -k 5 $((LOAD_SECS + 30)) "${pin[@]}" "$OHA" -z "${LOAD_SECS}s" -c "$conns" -m "$method" \
          -H "Accept: $OCI_MANIFEST" --no-tui --output-format json "$url" 2>"$WORK/oha.err")
    c1=$(cpu_ticks "${PID[$reg]}")
    unpin "$reg" "${#pin[@]}"
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

unpin() {  # reg was-pinned(0|n): give the server all CPUs back
  [ "$2" -gt 0 ] && taskset -a -p -c "0-$(($(nproc) - 1))" "${PID[$1]}" >/dev/null 2>&1
  return 0
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
  # mirror and sync scenarios need both servers at once: see scenario_mirror / scenario_sync
}

# ------------------------------------------------------ mirror and sync ---
# These need both kinds of server at once plus helpers (an upstream, fresh
# mirrors), so they run after the per-registry scenarios, each from one
# function that fills both columns: wharf | distribution (the mirror rows) and
# wharf sync | skopeo sync (the sync rows).

# start_aux KIND NAME DATADIR [CONFIG-or-REMOTEURL] [RUST_LOG]: start a wharf
# (KIND=wharf, optional --config file) or a docker-registry (KIND=dist, optional
# proxy remoteurl) under the key NAME in PID/BASE/LOGF.  Returns 1 on failure.
start_aux() {
  local kind=$1 name=$2 dir=$3 extra=${4:-} rlog=${5:-${WHARF_RUST_LOG:-warn}} port
  mkdir -p "$dir"; port=$(free_port)
  LOGF[$name]=$WORK/$name.log BASE[$name]=http://127.0.0.1:$port DEAD[$name]=""
  if [ "$kind" = wharf ]; then
    local cfg=(); [ -n "$extra" ] && cfg=(--config "$extra")
    RUST_LOG=$rlog "$WHARF_BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir" "${cfg[@]}" \
      2>>"${LOGF[$name]}" >&2 &
  else
    dist_config "$WORK/$name.yml" "$dir" "$port" "$extra"
    docker-registry serve "$WORK/$name.yml" 2>>"${LOGF[$name]}" >&2 &
  fi
  PID[$name]=$!; STARTED_PIDS+=("$!")
  if ! wait_http "${BASE[$name]}/v2/" "${PID[$name]}" 30; then
    DEAD[$name]="$name ($kind) did not answer on /v2/ within 30 s"
    problem "$name" "${DEAD[$name]}: $(tail -n 5 "${LOGF[$name]}" | tr '\n' ' ' | cut -c1-600)"
    kill_tree "${PID[$name]}"; PID[$name]=""; return 1
  fi
}
stop_aux() {  # name: stop it and report if it had died on its own
  local p=${PID[$1]:-}
  [ -n "$p" ] || return 0
  if ! alive "$1"; then
    local rc; wait "$p" 2>/dev/null; rc=$?
    problem "$1" "server process exited (status $rc) before it was stopped; last log lines: $(tail -n 5 "${LOGF[$1]}" | tr '\n' ' ' | cut -c1-600)"
  fi
  kill_tree "$p"; PID[$1]=""
}

metric() {  # base-url exact-series-name -> value (0 when absent)
  curl -s --max-time 10 "$1/metrics" | awk -v k="$2" '$1 == k {v = $2} END {print (v == "" ? 0 : v)}'
}
BLOB_GET_200='wharf_requests_total{endpoint="blob_get",status="200"}'

# Upstream traffic from a wharf upstream's access log (RUST_LOG=wharf::access=info):
# log_mark NAME, then after the work upstream_traffic NAME DESC sets UP_GETS
# (blob GETs answered 200), UP_BYTES (their sizes, from the push description),
# UP_OTHER (other blob GET statuses, JSON) and UP_JSON.
declare -A LOG_MARK=()
log_mark() { LOG_MARK[$1]=$(wc -l <"${LOGF[$1]}"); }
upstream_traffic() {
  UP_JSON=$("${REGCLIENT[@]}" access-sum "$2" "${LOGF[$1]}" --from-line "${LOG_MARK[$1]:-0}" 2>>"$WORK/helper.err")
  UP_GETS=$(jq -r '.blob_get_200 // "n/a"' <<<"$UP_JSON" 2>/dev/null) UP_BYTES=$(jq -r '.blob_get_bytes // "n/a"' <<<"$UP_JSON" 2>/dev/null)
  UP_OTHER=$(jq -c '.blob_get_other' <<<"$UP_JSON" 2>/dev/null)
  [ "$(jq -r '.first_other // empty' <<<"$UP_JSON" 2>/dev/null)" ] && NOTES+=("$1: blob GETs not answered 200: $(jq -r '"\(.blob_get_other) first: \(.first_other)"' <<<"$UP_JSON")")
  return 0
}

# do_pull LABEL NAME REPO [regclient pull args...]: one timed pull (regclient.py
# pull); PULL_S = wall seconds, or "" on failure (reported as a problem).
do_pull() {
  local label=$1 name=$2 repo=$3 out; shift 3
  PULL_S=""
  out=$("${REGCLIENT[@]}" pull "${BASE[$name]}" "$repo" v1 "$@" 2>>"$WORK/helper.err")
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" = true ]; then
    PULL_S=$(jq -r .seconds <<<"$out")
  else
    problem "$label" "pull of $repo:v1 ($*) from $name: $(jq -r '"\(.completed)/\(.clients) pulls complete, \(.problem_count) problem(s), first: \(.problems[0])"' <<<"$out" 2>/dev/null || echo "$out" | cut -c1-300)"
  fi
  log "  $label: pull $repo ($*) from $name: ${PULL_S:-failed} s"
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
best() { printf '%s\n' "$@" | sort -g | head -n 1; }   # the fastest of N timings (the VM is noisy: same rule as best_get)

MIRROR_REPO=bench/mirror MIRROR_PLATFORM=linux/amd64 MIRROR_CLIENTS=16
MIRROR_KEYS=(mirror_direct_s mirror_cold_s mirror_cold_ratio mirror_cold_upstream_x mirror_plain_s mirror_warm_s
             mirror_warm_ratio mirror_warm_self_ratio mirror_c16_s mirror_c16_upstream_x mirror_c16_fetched_x
             link_rate link_direct_s link_cold_s link_cold_ratio)
LINK_REPS=3   # pulls per kind over the bandwidth-limited link (best of)

# push_mirror_image NAME: the multi-platform test image (random layers, same
# layer count and sizes every time thanks to the seed) into NAME as bench/mirror:v1
push_mirror_image() {
  local out
  out=$("${REGCLIENT[@]}" push-multi "${BASE[$1]}" v1 "$WORK/mirror-image.$1.json" --repo "$MIRROR_REPO" \
        --platforms linux/amd64,linux/arm64 --layers 4-5 --layer-bytes "$MIRROR_LAYER_BYTES" --seed 7 2>>"$WORK/helper.err")
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
    problem "$1" "push of the multi-platform test image: $(jq -r '.problems[0]' <<<"$out" 2>/dev/null || echo "$out")"; return 1
  fi
}

# one mirror kind (wharf | distribution): REPS fresh mirrors, each pulled cold
# then warm; then one fresh mirror pulled by MIRROR_CLIENTS clients at once.
mirror_kind() {
  local reg=$1 kind=wharf name=wharf-mirror extra=$WORK/mirror.toml r cold=() warm=() upx=()
  [ "$reg" = distribution ] && kind=dist name=dist-proxy extra=${BASE[mirror-upstream]}
  for r in $(seq "$MIRROR_REPS"); do
    start_aux "$kind" "$name" "$WORK/$name.$r" "$extra" || break
    log_mark mirror-upstream
    do_pull "$reg" "$name" "$MIRROR_REPO" --ns docker.io --platform "$MIRROR_PLATFORM"
    [ -n "$PULL_S" ] && cold+=("$PULL_S")
    upstream_traffic mirror-upstream "$MIRROR_DESC"
    num "$UP_BYTES" && upx+=("$(calc "$UP_BYTES / $MIRROR_IMG_BYTES")")
    if num "$UP_BYTES" && [ "$UP_BYTES" -gt "$MIRROR_IMG_BYTES" ]; then
      if [ "$reg" = wharf ]; then
        problem wharf "one cold pull of $MIRROR_REPO:v1 (GET /v2/$MIRROR_REPO/blobs/<digest>?ns=docker.io) through a fresh mirror fetched $UP_BYTES blob bytes ($UP_GETS blob GETs) from the upstream for a $MIRROR_IMG_BYTES-byte image"
      elif [ "$r" = 1 ]; then
        NOTES+=("distribution proxy, one cold pull: upstream served $UP_GETS blob GETs = $UP_BYTES bytes for a $MIRROR_IMG_BYTES-byte image ($MIRROR_IMG_BLOBS blobs): distribution 2.8 streams a missing blob to the client and fetches it again to store it")
      fi
    fi
    log_mark mirror-upstream
    do_pull "$reg" "$name" "$MIRROR_REPO" --ns docker.io --platform "$MIRROR_PLATFORM"
    [ -n "$PULL_S" ] && warm+=("$PULL_S")
    upstream_traffic mirror-upstream "$MIRROR_DESC"
    if num "$UP_GETS" && [ "$UP_GETS" -gt 0 ]; then
      problem "$reg" "warm pull through the mirror still made $UP_GETS blob GETs upstream ($UP_BYTES bytes)"
    fi
    if [ "$r" = "$MIRROR_REPS" ]; then   # untimed: every byte's sha256, through the path-prefix form for wharf
      local vrepo=$MIRROR_REPO vns=(--ns docker.io); [ "$reg" = wharf ] && vrepo=docker.io/$MIRROR_REPO vns=()
      do_pull "$reg" "$name" "$vrepo" "${vns[@]}" --platform "$MIRROR_PLATFORM" --verify
    fi
    stop_aux "$name"; rm -rf "$WORK/$name.$r"
  done
  if [ ${#cold[@]} -gt 0 ]; then
    set_res "$reg" mirror_cold_s "$(best "${cold[@]}")"
    set_res "$reg" mirror_cold_upstream_x "$(printf '%s\n' "${upx[@]:-n/a}" | sort -g | tail -n 1)"   # the worst
    num "${R[wharf.mirror_direct_s]:-}" && set_res "$reg" mirror_cold_ratio "$(calc "${R[$reg.mirror_cold_s]} / ${R[wharf.mirror_direct_s]}")"
  else na "$reg" "no cold pull through the $kind mirror succeeded (see problems)" mirror_cold_s mirror_cold_ratio mirror_cold_upstream_x; fi
  if [ ${#warm[@]} -gt 0 ]; then
    set_res "$reg" mirror_warm_s "$(best "${warm[@]}")"
    num "${R[wharf.mirror_plain_s]:-}" && set_res "$reg" mirror_warm_ratio "$(calc "${R[$reg.mirror_warm_s]} / ${R[wharf.mirror_plain_s]}")"
    num "${R[$reg.mirror_plain_s]:-}" && set_res "$reg" mirror_warm_self_ratio "$(calc "${R[$reg.mirror_warm_s]} / ${R[$reg.mirror_plain_s]}")"
  else na "$reg" "no warm pull through the $kind mirror succeeded (see problems)" mirror_warm_s mirror_warm_ratio mirror_warm_self_ratio; fi

  log "[$reg] $MIRROR_CLIENTS concurrent cold pulls through a fresh $kind mirror"
  if start_aux "$kind" "$name" "$WORK/$name.c16" "$extra"; then
    log_mark mirror-upstream
    local f0=0; [ "$reg" = wharf ] && f0=$(metric "${BASE[$name]}" 'wharf_mirror_fetched_bytes_total{upstream="docker.io"}')
    do_pull "$reg" "$name" "$MIRROR_REPO" --ns docker.io --platform "$MIRROR_PLATFORM" --clients "$MIRROR_CLIENTS"
    local c16=$PULL_S
    upstream_traffic mirror-upstream "$MIRROR_DESC"
    if [ -n "$c16" ]; then
      set_res "$reg" mirror_c16_s "$c16"
      num "$UP_BYTES" && set_res "$reg" mirror_c16_upstream_x "$(calc "$UP_BYTES / $MIRROR_IMG_BYTES")"
      NOTES+=("$reg mirror, $MIRROR_CLIENTS concurrent cold pulls: upstream served $UP_GETS blob GETs (200) = $UP_BYTES bytes for a $MIRROR_IMG_BYTES-byte image ($MIRROR_IMG_BLOBS blobs); other blob statuses $UP_OTHER")
      if num "$UP_BYTES" && [ "$UP_BYTES" -gt "$MIRROR_IMG_BYTES" ] && [ "$reg" = wharf ]; then
        problem wharf "$MIRROR_CLIENTS concurrent cold pulls of $MIRROR_REPO:v1 (GET /v2/$MIRROR_REPO/blobs/<digest>?ns=docker.io) through a fresh mirror fetched $UP_BYTES bytes ($UP_GETS blob GETs) from the upstream: $(calc "$UP_BYTES / $MIRROR_IMG_BYTES")x the $MIRROR_IMG_BYTES-byte image"
      fi
      if [ "$reg" = wharf ]; then
        local f1; f1=$(metric "${BASE[$name]}" 'wharf_mirror_fetched_bytes_total{upstream="docker.io"}')
        num "$f1" && set_res wharf mirror_c16_fetched_x "$(calc "($f1 - $f0) / $MIRROR_IMG_BYTES")"
      fi
      do_pull "$reg" "$name" "$MIRROR_REPO" --ns docker.io --platform "$MIRROR_PLATFORM" --verify   # untimed check
    else
      na "$reg" "concurrent pulls failed (see problems)" mirror_c16_s mirror_c16_upstream_x
    fi
    stop_aux "$name"; rm -rf "$WORK/$name.c16"
  else
    na "$reg" "$kind mirror did not start" mirror_c16_s mirror_c16_upstream_x
  fi
}

scenario_mirror() {
  log "=== mirror ==="
  if [ -n "${WHARF_NA:-}" ]; then
    na wharf "$WHARF_NA (wharf is the upstream)" "${MIRROR_KEYS[@]}"; na distribution "$WHARF_NA (wharf is the upstream)" "${MIRROR_KEYS[@]}"; return
  fi
  if ! start_aux wharf mirror-upstream "$WORK/mirror-upstream" "" "warn,wharf::access=info" || ! push_mirror_image mirror-upstream; then
    na wharf "upstream set-up failed" "${MIRROR_KEYS[@]}"; na distribution "upstream set-up failed" "${MIRROR_KEYS[@]}"; return
  fi
  MIRROR_DESC=$WORK/mirror-image.mirror-upstream.json
  MIRROR_IMG_BYTES=$(jq --arg r "$MIRROR_REPO" --arg p "$MIRROR_PLATFORM" '.repos[$r].platforms[$p].blob_bytes' "$MIRROR_DESC")
  MIRROR_IMG_BLOBS=$(jq --arg r "$MIRROR_REPO" --arg p "$MIRROR_PLATFORM" '.repos[$r].platforms[$p].blobs | length' "$MIRROR_DESC")
  MIRROR_ALL_BYTES=$(jq .total_blob_bytes "$MIRROR_DESC")
  log "mirror image: $MIRROR_REPO:v1, 2 platforms, $((MIRROR_ALL_BYTES / MiB)) MiB of blobs; a $MIRROR_PLATFORM pull reads $MIRROR_IMG_BLOBS blobs, $((MIRROR_IMG_BYTES / MiB)) MiB"
  printf '[[upstream]]\nname = "docker.io"\nurl = "%s"\ndefault = true\n' "${BASE[mirror-upstream]}" >"$WORK/mirror.toml"

  # direct from the upstream (a plain wharf holding the image): one untimed
  # warm-up pull, then MIRROR_REPS timed ones.  This is also the "plain wharf" pull.
  local r t=()
  do_pull wharf mirror-upstream "$MIRROR_REPO" --platform "$MIRROR_PLATFORM" --verify
  for r in $(seq "$MIRROR_REPS"); do
    do_pull wharf mirror-upstream "$MIRROR_REPO" --platform "$MIRROR_PLATFORM"; [ -n "$PULL_S" ] && t+=("$PULL_S")
  done
  if [ ${#t[@]} -gt 0 ]; then
    set_res wharf mirror_direct_s "$(best "${t[@]}")"; set_res distribution mirror_direct_s "${R[wharf.mirror_direct_s]}"
    set_res wharf mirror_plain_s "${R[wharf.mirror_direct_s]}"
  else
    na wharf "pull from the upstream failed" mirror_direct_s mirror_plain_s
  fi
  # the same image in the plain distribution registry of the per-registry scenarios
  if [ -n "${PID[distribution]:-}" ] && alive distribution && push_mirror_image distribution; then
    t=()
    do_pull distribution distribution "$MIRROR_REPO" --platform "$MIRROR_PLATFORM" --verify
    for r in $(seq "$MIRROR_REPS"); do
      do_pull distribution distribution "$MIRROR_REPO" --platform "$MIRROR_PLATFORM"; [ -n "$PULL_S" ] && t+=("$PULL_S")
    done
    [ ${#t[@]} -gt 0 ] && set_res distribution mirror_plain_s "$(best "${t[@]}")"
  fi
  [ -n "${R[distribution.mirror_plain_s]:-}" ] || na distribution "plain distribution registry not running or pull failed" mirror_plain_s

  local reg
  for reg in wharf distribution; do
    if [ -n "$ONLY" ] && [ "$ONLY" != "$reg" ]; then
      na "$reg" "--only $ONLY" mirror_cold_s mirror_cold_ratio mirror_cold_upstream_x mirror_warm_s mirror_warm_ratio mirror_warm_self_ratio mirror_c16_s mirror_c16_upstream_x link_cold_s link_cold_ratio
      continue
    fi
    log "[$reg] cold and warm pulls through fresh mirrors ($MIRROR_REPS x)"
    mirror_kind "$reg"
  done
  scenario_mirror_link
  stop_aux mirror-upstream
}

# start_throttle NAME TARGET-BASE-URL MBPS: regclient.py throttle, a forwarding
# TCP proxy whose target->client direction is limited to MBPS MB/s per connection
# and in total, under the key NAME in PID/BASE/LOGF (stop it with stop_aux; its
# totals, one JSON line, end up in its log).  Returns 1 on failure.
start_throttle() {
  local name=$1 target=${2#http://} rate=$3 port; port=$(free_port)
  LOGF[$name]=$WORK/$name.log BASE[$name]=http://127.0.0.1:$port DEAD[$name]=""
  "${REGCLIENT[@]}" throttle --listen-port "$port" --target "$target" --rate "$rate" >>"${LOGF[$name]}" 2>&1 &
  PID[$name]=$!; STARTED_PIDS+=("$!")
  if ! wait_http "${BASE[$name]}/v2/" "${PID[$name]}" 10; then
    DEAD[$name]="throttle proxy $name did not relay GET /v2/ within 10 s"
    problem "$name" "${DEAD[$name]}: $(tail -n 5 "${LOGF[$name]}" | tr '\n' ' ' | cut -c1-600)"
    kill_tree "${PID[$name]}"; PID[$name]=""; return 1
  fi
}

# link_get URL N K BYTES: N concurrent curls, each GETting URL K times over one
# keep-alive connection; GOT_MBS = N*K*BYTES / wall / 1e6 (n/a on any error)
link_get() {
  local url=$1 n=$2 k=$3 bytes=$4 i t0 t1 args=() pids=() bad=""
  for i in $(seq "$k"); do args+=(-o /dev/null "$url"); done
  t0=$(date +%s%N)
  for i in $(seq "$n"); do
    curl -sS --max-time "$CURL_MAX" -w '%{http_code} %{size_download}\n' "${args[@]}" >"$WORK/lget.$i" 2>&1 &
    pids+=("$!")
  done
  wait "${pids[@]}" 2>/dev/null
  t1=$(date +%s%N)
  for i in $(seq "$n"); do
    [ "$(grep -c "^200 $bytes\$" "$WORK/lget.$i")" = "$k" ] || bad="$(grep -v "^200 $bytes\$" "$WORK/lget.$i" | head -n 1)"
  done
  if [ -z "$bad" ]; then GOT_MBS=$(calc "$n * $k * $bytes / (($t1 - $t0) / 1e9) / 1e6")
  else GOT_MBS=n/a; problem mirror-link "GET ${url#http://*/} through the throttle proxy ($n x $k): '$bad', expected '200 $bytes'"; fi
}

# The same cold-pull comparison with the upstream behind a LINK_MBS MB/s link
# (the throttle proxy in front of the mirror-upstream wharf): on loopback the
# upstream serves from page cache at GB/s, so there cold / direct measures
# SHA-256 and memcpy on 2 shared cores; real upstreams are remote.  Direct =
# the client pulls through the proxy; cold = a fresh wharf mirror (or
# docker-registry proxy) whose upstream URL is the proxy.  LINK_REPS of each,
# best of; a fresh mirror data dir for every cold pull.
scenario_mirror_link() {
  local link=mirror-link rate=$LINK_MBS r t=() reg kind name extra cold upx
  local lbl="link $rate MB/s"
  log "=== mirror, upstream behind a $rate MB/s link (regclient.py throttle) ==="
  if ! start_throttle "$link" "${BASE[mirror-upstream]}" "$rate"; then
    na wharf "throttle proxy did not start" link_rate link_direct_s link_cold_s link_cold_ratio
    na distribution "throttle proxy did not start" link_rate link_direct_s link_cold_s link_cold_ratio; return
  fi
  # the link's own rate: the image's largest blob through the proxy, 1 curl then
  # 4 at once, each GETting it repeatedly over one connection for ~1 s of link time
  local big_dg big_n k one four
  big_dg=$(jq -r --arg r "$MIRROR_REPO" --arg p "$MIRROR_PLATFORM" \
    '.blob_sizes as $s | .repos[$r].platforms[$p].blobs | max_by($s[.])' "$MIRROR_DESC")
  big_n=$(jq -r --arg d "$big_dg" '.blob_sizes[$d]' "$MIRROR_DESC")
  k=$(( (rate * 1000000 + big_n - 1) / big_n ))
  link_get "${BASE[$link]}/v2/$MIRROR_REPO/blobs/$big_dg" 1 "$k" "$big_n"; one=$GOT_MBS
  link_get "${BASE[$link]}/v2/$MIRROR_REPO/blobs/$big_dg" 4 $(( (k + 3) / 4 )) "$big_n"; four=$GOT_MBS
  log "  $lbl: measured $one MB/s with 1 connection, $four MB/s with 4"
  R[wharf.link_rate]="$(fmt "$one" %.0f) (1 conn), $(fmt "$four" %.0f) (4 conns)"
  R[distribution.link_rate]=${R[wharf.link_rate]}

  # (a) direct: the client pulls through the proxy (untimed verify pull first)
  do_pull "$lbl" "$link" "$MIRROR_REPO" --platform "$MIRROR_PLATFORM" --verify
  for r in $(seq "$LINK_REPS"); do
    do_pull "$lbl" "$link" "$MIRROR_REPO" --platform "$MIRROR_PLATFORM"; [ -n "$PULL_S" ] && t+=("$PULL_S")
  done
  if [ ${#t[@]} -gt 0 ]; then
    set_res wharf link_direct_s "$(best "${t[@]}")"; set_res distribution link_direct_s "${R[wharf.link_direct_s]}"
    NOTES+=("$lbl: the best direct pull through the link moved $MIRROR_IMG_BYTES image bytes in ${R[wharf.link_direct_s]} s = $(calc "$MIRROR_IMG_BYTES / ${R[wharf.link_direct_s]} / 1e6" | xargs printf '%.0f') MB/s effective (manifests and request round trips included)")
  else
    na wharf "pull through the link failed" link_direct_s; na distribution "pull through the link failed" link_direct_s
  fi

  # (b) wharf mirror, (c) distribution proxy, each with its upstream URL = the proxy
  printf '[[upstream]]\nname = "docker.io"\nurl = "%s"\ndefault = true\n' "${BASE[$link]}" >"$WORK/mirror-link.toml"
  for reg in wharf distribution; do
    if [ -n "$ONLY" ] && [ "$ONLY" != "$reg" ]; then continue; fi   # marked n/a by scenario_mirror
    kind=wharf name=wharf-mirror-link extra=$WORK/mirror-link.toml cold=() upx=()
    [ "$reg" = distribution ] && kind=dist name=dist-proxy-link extra=${BASE[$link]}
    log "[$reg] cold pulls through fresh mirrors over the $rate MB/s link ($LINK_REPS x)"
    for r in $(seq "$LINK_REPS"); do
      start_aux "$kind" "$name" "$WORK/$name.$r" "$extra" || break
      log_mark mirror-upstream
      do_pull "$reg" "$name" "$MIRROR_REPO" --ns docker.io --platform "$MIRROR_PLATFORM"
      [ -n "$PULL_S" ] && cold+=("$PULL_S")
      upstream_traffic mirror-upstream "$MIRROR_DESC"
      num "$UP_BYTES" && upx+=("$(calc "$UP_BYTES / $MIRROR_IMG_BYTES")")
      stop_aux "$name"; rm -rf "$WORK/$name.$r"
    done
    if [ ${#cold[@]} -gt 0 ]; then
      set_res "$reg" link_cold_s "$(best "${cold[@]}")"
      num "${R[wharf.link_direct_s]:-}" && set_res "$reg" link_cold_ratio "$(calc "${R[$reg.link_cold_s]} / ${R[wharf.link_direct_s]}")"
      NOTES+=("$lbl, $reg cold pulls: upstream blob bytes / image bytes over the link: $(fmt "$(printf '%s\n' "${upx[@]:-n/a}" | sort -g | tail -n 1)" %.2f) (worst of ${#cold[@]})")
    else
      na "$reg" "no cold pull through the $kind mirror over the link succeeded (see problems)" link_cold_s link_cold_ratio
    fi
  done
  stop_aux "$link"
  local stats; stats=$(grep '^{' "${LOGF[$link]}" | tail -n 1)
  [ -n "$stats" ] && NOTES+=("$lbl: throttle proxy totals: $(jq -r '"\(.connections) connections (at most \(.max_active) at once), \(.bytes_down) bytes upstream->client, \(.bytes_up) bytes client->upstream, \(.errors) connect errors"' <<<"$stats" 2>/dev/null)")
}

SYNC_COUNT=20
SYNC_KEYS=(sync_first_s sync_ratio sync_noop_s sync_noop_blob_gets sync_first_upstream_x)
# sync_verify NAME PREFIX: every synced index must be there by tag with the upstream's digest
sync_verify() {
  local name=$1 prefix=$2 repo want got bad=0
  for repo in $(jq -r '.repos | keys[]' "$SYNC_DESC"); do
    want=$(jq -r --arg r "$repo" '.repos[$r].index_digest' "$SYNC_DESC")
    curl_req HEAD "${BASE[$name]}/v2/$prefix/$repo/manifests/v1" -H "Accept: application/vnd.oci.image.index.v1+json"
    got=$(resp_hdr Docker-Content-Digest)
    if [ "$CODE" != 200 ] || [ "$got" != "$want" ]; then
      bad=$((bad + 1)); [ "$bad" = 1 ] && SYNC_BAD="HEAD /v2/$prefix/$repo/manifests/v1 -> $CODE digest '$got' (expected 200 $want)"
    fi
  done
  # and one platform of the first image, every blob checked
  repo=$(jq -r '.repos | keys[0]' "$SYNC_DESC")
  do_pull "$3" "$name" "$prefix/$repo" --platform linux/arm64 --verify
  [ -n "$PULL_S" ] || bad=$((bad + 1))
  return $((bad > 0))
}

# run_timed LOG CMD...: TIMED_S = wall seconds, TIMED_RC = exit status
run_timed() {
  local logf=$1 t0 t1; shift
  t0=$(date +%s%N); "$@" >"$logf" 2>&1; TIMED_RC=$?; t1=$(date +%s%N)
  TIMED_S=$(calc "($t1 - $t0) / 1e9")
}

scenario_sync() {
  log "=== sync ==="
  if [ -n "${WHARF_NA:-}" ]; then
    na wharf "$WHARF_NA" "${SYNC_KEYS[@]}"; na distribution "$WHARF_NA (wharf is the upstream)" "${SYNC_KEYS[@]}"; return
  fi
  local repos=() i out
  for i in $(seq -w 1 "$SYNC_COUNT"); do repos+=("bench/img$i"); done
  if ! start_aux wharf sync-upstream "$WORK/sync-upstream" "" "warn,wharf::access=info"; then
    na wharf "upstream did not start" "${SYNC_KEYS[@]}"; na distribution "upstream did not start" "${SYNC_KEYS[@]}"; return
  fi
  log "pushing $SYNC_COUNT images x 4 platforms x 2-3 layers of $SYNC_LAYER_BYTES bytes to the sync upstream"
  SYNC_DESC=$WORK/sync-images.json
  out=$("${REGCLIENT[@]}" push-multi "${BASE[sync-upstream]}" v1 "$SYNC_DESC" $(printf -- '--repo %s ' "${repos[@]}") \
        --platforms linux/amd64,linux/arm64,linux/ppc64le,linux/s390x --layers 2-3 --layer-bytes "$SYNC_LAYER_BYTES" --seed 3 2>>"$WORK/helper.err")
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
    problem sync-upstream "push of the sync images: $(jq -r '.problems[0]' <<<"$out" 2>/dev/null || echo "$out")"
    na wharf "upstream set-up failed" "${SYNC_KEYS[@]}"; na distribution "upstream set-up failed" "${SYNC_KEYS[@]}"; stop_aux sync-upstream; return
  fi
  SYNC_BYTES=$(jq .total_blob_bytes <<<"$out") SYNC_BLOBS=$(jq .blobs <<<"$out")
  log "sync set: $SYNC_COUNT images, $SYNC_BLOBS blobs, $((SYNC_BYTES / MiB)) MiB"

  # --- wharf sync: straight into a data dir (no server), then a no-op re-run
  local cfg=$WORK/sync.toml repo
  printf '[[upstream]]\nname = "docker.io"\nurl = "%s"\n' "${BASE[sync-upstream]}" >"$cfg"
  for repo in "${repos[@]}"; do printf '\n[[sync]]\nupstream = "docker.io"\nrepository = "%s"\ntags = ["v1"]\n' "$repo" >>"$cfg"; done
  log "[wharf] wharf sync of $SYNC_COUNT images into a fresh data dir"
  log_mark sync-upstream
  run_timed "$WORK/wharf-sync.1.log" "$WHARF_BIN" sync --config "$cfg" --data-dir "$WORK/wharf-sync-data" --no-progress
  upstream_traffic sync-upstream "$SYNC_DESC"
  if [ "$TIMED_RC" = 0 ]; then
    set_res wharf sync_first_s "$TIMED_S"
    num "$UP_BYTES" && set_res wharf sync_first_upstream_x "$(calc "$UP_BYTES / $SYNC_BYTES")"
    NOTES+=("wharf sync, first run: upstream answered $UP_GETS blob GETs ($SYNC_BLOBS blobs in the set), $(jq -r '"\(.manifest_get) manifest GETs, \(.manifest_head) manifest HEADs"' <<<"$UP_JSON")")
  else
    problem wharf "wharf sync --config sync.toml --data-dir <fresh> --no-progress exited $TIMED_RC: $(tail -n 5 "$WORK/wharf-sync.1.log" | tr '\n' ' ' | cut -c1-600)"
    na wharf "first sync failed (exit $TIMED_RC)" sync_first_s sync_first_upstream_x
  fi
  log "[wharf] no-op re-sync"
  log_mark sync-upstream
  run_timed "$WORK/wharf-sync.2.log" "$WHARF_BIN" sync --config "$cfg" --data-dir "$WORK/wharf-sync-data" --no-progress
  upstream_traffic sync-upstream "$SYNC_DESC"
  if [ "$TIMED_RC" = 0 ]; then
    set_res wharf sync_noop_s "$TIMED_S"; set_res wharf sync_noop_blob_gets "$UP_GETS"
    NOTES+=("wharf sync, no-op re-run: upstream requests: $(jq -r '"\(.blob_get_200) blob GETs, \(.blob_head) blob HEADs, \(.manifest_get) manifest GETs, \(.manifest_head) manifest HEADs"' <<<"$UP_JSON")")
    num "$UP_GETS" && [ "$UP_GETS" -gt 0 ] && problem wharf "no-op re-sync (wharf sync --config sync.toml --data-dir <synced>) made $UP_GETS blob GETs upstream"
  else
    problem wharf "no-op wharf sync exited $TIMED_RC: $(tail -n 5 "$WORK/wharf-sync.2.log" | tr '\n' ' ' | cut -c1-600)"
    na wharf "no-op sync failed (exit $TIMED_RC)" sync_noop_s sync_noop_blob_gets
  fi
  # untimed check: serve the synced data dir (no config) and compare digests
  if start_aux wharf sync-check "$WORK/wharf-sync-data"; then
    SYNC_BAD=""
    sync_verify sync-check docker.io wharf || problem wharf "synced content incomplete: ${SYNC_BAD:-verification pull failed}"
    stop_aux sync-check
  fi

  # --- skopeo sync --all of the same 20 images into a fresh plain wharf
  if ! command -v skopeo >/dev/null 2>&1; then
    na distribution "skopeo not installed" "${SYNC_KEYS[@]}"
  elif start_aux wharf skopeo-dest "$WORK/skopeo-dest"; then
    local yaml=$WORK/skopeo-sync.yaml dest=${BASE[skopeo-dest]#http://}/docker.io/bench
    { echo "${BASE[sync-upstream]#http://}:"; echo "  tls-verify: false"; echo "  images:"
      for repo in "${repos[@]}"; do echo "    $repo: [\"v1\"]"; done; } >"$yaml"
    SKOPEO_CMD=(skopeo sync --all --preserve-digests --src yaml --dest docker --dest-tls-verify=false "$yaml" "$dest")
    log "[skopeo] ${SKOPEO_CMD[*]}"
    log_mark sync-upstream
    run_timed "$WORK/skopeo-sync.1.log" "${SKOPEO_CMD[@]}"
    upstream_traffic sync-upstream "$SYNC_DESC"
    if [ "$TIMED_RC" = 0 ]; then
      set_res distribution sync_first_s "$TIMED_S"
      num "$UP_BYTES" && set_res distribution sync_first_upstream_x "$(calc "$UP_BYTES / $SYNC_BYTES")"
    else
      NOTES+=("skopeo sync exited $TIMED_RC: $(tail -n 3 "$WORK/skopeo-sync.1.log" | tr '\n' ' ' | cut -c1-400)")
      na distribution "skopeo sync failed" sync_first_s sync_first_upstream_x
    fi
    log "[skopeo] re-run (nothing new)"
    log_mark sync-upstream
    run_timed "$WORK/skopeo-sync.2.log" "${SKOPEO_CMD[@]}"
    upstream_traffic sync-upstream "$SYNC_DESC"
    if [ "$TIMED_RC" = 0 ]; then
      set_res distribution sync_noop_s "$TIMED_S"; set_res distribution sync_noop_blob_gets "$UP_GETS"
    else
      na distribution "skopeo re-sync failed" sync_noop_s sync_noop_blob_gets
    fi
    SYNC_BAD=""
    sync_verify skopeo-dest docker.io skopeo || NOTES+=("skopeo-synced content incomplete: ${SYNC_BAD:-verification pull failed}")
    stop_aux skopeo-dest
  else
    na distribution "destination wharf did not start" "${SYNC_KEYS[@]}"
  fi
  if num "${R[wharf.sync_first_s]:-}" && num "${R[distribution.sync_first_s]:-}"; then
    set_res wharf sync_ratio "$(calc "${R[wharf.sync_first_s]} / ${R[distribution.sync_first_s]}")"
  else
    R[wharf.sync_ratio]="n/a"
  fi
  R[distribution.sync_ratio]="—"
  stop_aux sync-upstream
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
  local big="$((BIG_BYTES / MiB)) MiB" push="$((PUSH_BYTES / MiB)) MiB" mimg="1-platform" sset=""
  num "${MIRROR_IMG_BYTES:-}" && mimg="1-platform ($(calc "$MIRROR_IMG_BYTES / 1e6" | xargs printf '%.0f') MB, $MIRROR_IMG_BLOBS blobs, of a 2-platform $(calc "$MIRROR_ALL_BYTES / 1e6" | xargs printf '%.0f') MB image)"
  num "${SYNC_BYTES:-}" && sset=" ($SYNC_BLOBS blobs, $(calc "$SYNC_BYTES / 1e6" | xargs printf '%.0f') MB)"
  [ "$BIG_BYTES" -ge $((1024 * MiB)) ] && big="$((BIG_BYTES / 1024 / MiB)) GiB"
  # key | label | direction (hi: ratio wharf/dist, lo: ratio dist/wharf, -: none) | printf format
  local rows=(
    "manifest_get_c1_rps|manifest GET by tag, 1 conn (client, server on separate cores): req/s ↑|hi|%.0f"
    "manifest_get_c1_p50|manifest GET by tag, 1 conn: p50 ms ↓|lo|%.3f"
    "manifest_get_c1_p99|manifest GET by tag, 1 conn: p99 ms ↓|lo|%.3f"
    "manifest_get_c1_cpu|manifest GET by tag, 1 conn: server CPU µs/req ↓|lo|%.1f"
    "manifest_get_c64_rps|manifest GET by tag, 64 conns: req/s ↑|hi|%.0f"
    "manifest_get_c64_p50|manifest GET by tag, 64 conns: p50 ms ↓|lo|%.3f"
    "manifest_get_c64_p99|manifest GET by tag, 64 conns: p99 ms ↓|lo|%.3f"
    "manifest_get_c64_cpu|manifest GET by tag, 64 conns: server CPU µs/req ↓|lo|%.1f"
    "manifest_head_c1_rps|manifest HEAD by tag, 1 conn (client, server on separate cores): req/s ↑ (oha)|hi|%.0f"
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
    "mirror_direct_s|mirror, upstream on loopback (page cache, GB/s): $mimg pull straight from the upstream (a plain wharf; both columns): s ↓ (every pull time: best of $MIRROR_REPS)|-|%.3f"
    "mirror_cold_s|mirror, upstream on loopback: cold pull through a fresh mirror (distribution: proxy mode): s ↓|lo|%.3f"
    "mirror_cold_ratio|mirror, upstream on loopback: cold through mirror / direct from upstream (target ≤ 1.15) ↓|lo|%.2f"
    "mirror_cold_upstream_x|mirror: cold pull, upstream blob bytes / image bytes (worst of the cold pulls) ↓|lo|%.2f"
    "link_rate|mirror over a $LINK_MBS MB/s upstream link (throttle proxy in front of the upstream): the link's measured rate, GETs of the largest blob: MB/s|-|%s"
    "link_direct_s|mirror over a $LINK_MBS MB/s upstream link: the same pull straight from the upstream through the link (both columns): s ↓ (best of $LINK_REPS)|-|%.3f"
    "link_cold_s|mirror over a $LINK_MBS MB/s upstream link: cold pull through a fresh mirror whose upstream is behind the link: s ↓ (best of $LINK_REPS)|lo|%.3f"
    "link_cold_ratio|mirror over a $LINK_MBS MB/s upstream link: cold through mirror / direct (target ≤ 1.15) ↓|lo|%.2f"
    "mirror_plain_s|mirror: pull from a plain registry holding the image (wharf: the upstream): s ↓|lo|%.3f"
    "mirror_warm_s|mirror: warm pull through the mirror (second pull): s ↓|lo|%.3f"
    "mirror_warm_ratio|mirror: warm through mirror / plain wharf pull (target ≤ 1.05) ↓|lo|%.2f"
    "mirror_warm_self_ratio|mirror: warm through mirror / plain registry of the same kind ↓|lo|%.2f"
    "mirror_c16_s|mirror: $MIRROR_CLIENTS concurrent cold pulls through a fresh mirror: wall s ↓|lo|%.3f"
    "mirror_c16_upstream_x|mirror: $MIRROR_CLIENTS concurrent cold pulls, upstream blob bytes / image bytes (target 1.00) ↓|lo|%.2f"
    "mirror_c16_fetched_x|mirror: $MIRROR_CLIENTS concurrent cold pulls, mirror's own fetched-bytes counter / image bytes|-|%.2f"
    "sync_first_s|sync: $SYNC_COUNT images x 4 platforms$sset from a local upstream, fresh target: s ↓ (distribution column: skopeo sync --all)|lo|%.2f"
    "sync_ratio|sync: wharf sync time / skopeo sync time (target ≤ 0.5) ↓|-|%.2f"
    "sync_first_upstream_x|sync: upstream blob bytes / set size ↓|lo|%.2f"
    "sync_noop_s|sync: no-op re-sync of the same set: s ↓ (wharf target < 2 s)|lo|%.3f"
    "sync_noop_blob_gets|sync: upstream blob GETs during the no-op re-sync (target 0)|-|%s"
  )
  local row key label dir f w d
  echo "| scenario ($MODE run) | wharf | distribution | ratio (>1 = wharf better) |"
  echo "|---|---:|---:|---:|"
  for row in "${rows[@]}"; do
    IFS='|' read -r key label dir f <<<"$row"
    w=${R[wharf.$key]:-n/a} d=${R[distribution.$key]:-n/a}
    if [ "$dir" = - ]; then
      echo "| $label | $(fmt "$w" "$f") | $(fmt "$d" "$f") | — |"
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
section() { [[ ,$SECTIONS, == *,$1,* ]]; }
main() {
  WORK=$(mktemp -d /tmp/wharf-bench.XXXXXX)
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  BUSY_START=$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 {printf "%s%s (%s%%)", sep, $2, $1; sep=", "}')
  log "mode: $MODE, work dir: $WORK"
  install_prereqs
  WHARF_NA=""; WHARF_BIN=${WHARF_BIN:-}
  local reg need_wharf=0
  for reg in "${REGISTRIES[@]}"; do [ "$reg" = wharf ] && need_wharf=1; done
  { section mirror || section sync; } && need_wharf=1   # wharf is the upstream there
  [ "$need_wharf" = 1 ] && build_wharf
  section registry && make_test_data
  wait_for_idle
  C_OPENSSL="n/a" C_NGINX1="n/a" C_NGINX8="n/a"
  if section registry; then
    ceiling_openssl_sha256
    ceiling_nginx
  fi
  # the plain distribution instance also serves the mirror section's "plain registry" pull
  for reg in "${REGISTRIES[@]}"; do
    if section registry || { [ "$reg" = distribution ] && section mirror; }; then "start_$reg"; fi
  done
  if section registry; then
    for reg in "${REGISTRIES[@]}"; do run_registry_scenarios "$reg"; done
    for reg in "${REGISTRIES[@]}"; do record_peak_rss "$reg"; done
  fi
  section mirror && scenario_mirror
  section sync && scenario_sync
  LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
  write_report
}

main
