#!/usr/bin/env bash
# Wharf benchmark harness: wharf vs CNCF distribution (docker-registry 2.8) on
# loopback, with the machine's ceilings (openssl SHA-256, nginx sendfile)
# measured in the same run.  See bench/README.md.
#
#   bash bench/run.sh            full run (~13 min + the wharf build)
#   bash bench/run.sh --quick    smoke run (2 s per load scenario, 64 MiB blobs,
#                                32 MiB mirror image, 100 MB/s upstream link
#                                instead of 200, small sync set)
#
# Other options:
#   --no-build           don't run cargo; use $WHARF_BIN or $CARGO_TARGET_DIR/release/wharf
#   --only NAME          benchmark only one registry (wharf | distribution); the
#                        mirror/sync/auth sections then skip the other column
#   --sections LIST      comma-separated subset of registry,mirror,sync,auth,tagrules,gc,ops,s3
#                        (default all); auth: manifest GETs anonymous / Basic / Bearer and
#                        token issue on auth-enabled servers started in that section;
#                        gc: `wharf gc` on seeded stores (crates/wharf/examples/gc_seed.rs);
#                        ops: console pages of a 10,000-tag repository, and `wharf bundle
#                        export/import` vs skopeo and the disk (2 x 512 MiB layers, 256 in --quick);
#                        s3: wharf on a throw-away Garage bucket (scripts/s3-server.sh) vs wharf on
#                        the filesystem and vs Garage itself, and S3 requests per pull / push
#   --gc-max BLOBS       largest store of the gc section's growth rows (default 100000;
#                        1000000 adds the 1M-blob point, ~15-25 min of seeding more)
#   --keep               keep the temp dir (data, logs) for inspection
#   --wait-idle SECS     before measuring, wait up to SECS for the machine to be
#                        idle (< 15 % CPU busy over 2 s), e.g. while cargo builds
#
# Environment: CARGO_TARGET_DIR (default /tmp/bench-target), WHARF_BIN, GC_SEED_BIN,
# WHARF_RUST_LOG (RUST_LOG for the wharf server, default "warn"); for the s3 section,
# GARAGE_BIN / GARAGE_ROOT as scripts/s3-server.sh reads them.
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

QUICK=0 DO_BUILD=1 KEEP=0 ONLY="" SECTIONS=registry,mirror,sync,auth,tagrules,gc,ops,s3 WAIT_IDLE=0 GC_MAX=100000
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
                for s in ${SECTIONS//,/ }; do case $s in registry|mirror|sync|auth|tagrules|gc|ops|s3) ;; *) echo "--sections takes registry,mirror,sync,auth,tagrules,gc,ops,s3" >&2; exit 2 ;; esac; done ;;
    --gc-max) GC_MAX=${2:-}; shift
              [[ $GC_MAX =~ ^[0-9]+$ ]] || { echo "--gc-max takes a blob count" >&2; exit 2; } ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
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
cpu_user_ticks() {  # utime alone (work in the process itself, without the kernel's fsync work), clock ticks
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12}'
}
cpu_ticks_sum() {  # pid...: utime+stime of several processes (nginx master + workers), in clock ticks
  local p t=0 v
  for p in "$@"; do v=$(cpu_ticks "$p"); t=$((t + ${v:-0})); done
  echo "$t"
}
# CHILD_SECS = CPU seconds (user + system) of this shell's finished children so far: the difference around
# the big-blob GETs is what the curl clients used.  Call it directly, never in $(...): a subshell starts with
# no children of its own.
child_secs() {
  times >"$WORK/times.out"
  CHILD_SECS=$(tail -n 1 "$WORK/times.out" | awk '{ for (i = 1; i <= 2; i++) { v = $i; m = v; sub(/m.*/, "", m); sec = v
    sub(/^[0-9]+m/, "", sec); sub(/s$/, "", sec); t += m * 60 + sec } } END { printf "%.3f", t }')
}
# rss_sampler_start PID FILE: every 0.2 s, the largest RssAnon and RssFile (KiB) of PID so far -> FILE
# ("anon file"); stop with rss_sampler_stop.  VmHWM alone mixes the two: mapped page cache (file-backed,
# shared, reclaimable) shows up in it as much as heap does.
rss_sampler_start() {
  local pid=$1 out=$2
  echo "0 0" >"$out"
  ( ma=0 mf=0
    while kill -0 "$pid" 2>/dev/null; do
      read -r a f < <(awk '/^RssAnon:/ {a = $2} /^RssFile:/ {f = $2} END {print a + 0, f + 0}' "/proc/$pid/status" 2>/dev/null)
      [ "${a:-0}" -gt "$ma" ] && ma=$a; [ "${f:-0}" -gt "$mf" ] && mf=$f
      echo "$ma $mf" >"$out"; sleep 0.2
    done ) &
  RSS_SAMPLER=$!
}
rss_sampler_stop() { kill "$RSS_SAMPLER" 2>/dev/null; wait "$RSS_SAMPLER" 2>/dev/null; return 0; }
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
  for pair in docker-registry:docker-registry nginx:nginx wrk:wrk openssl:openssl jq:jq curl:curl htpasswd:apache2-utils; do
    cmd=${pair%%:*} pkg=${pair##*:}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
  done
  if section gc; then   # GNU time for peak RSS (`command -v time` finds bash's keyword); eatmydata for seeding
    [ -x /usr/bin/time ] || need+=(time)
    command -v eatmydata >/dev/null 2>&1 || need+=(eatmydata)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2 \
      || { echo "apt-get install ${need[*]} failed" >&2; exit 1; }
  fi
  command -v nginx >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
  # wrk 4.1's parser waits for a body after a HEAD response, so HEAD load uses oha (registry section only).
  OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
  if [ ! -x "$OHA" ] && ! section registry; then
    OHA=""
  elif [ ! -x "$OHA" ]; then
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
  if section gc; then
    GC_SEED_BIN=${GC_SEED_BIN:-$CARGO_TARGET_DIR/release/examples/gc_seed}
    if [ "$DO_BUILD" = 1 ] && [ -z "$WHARF_NA" ]; then
      log "building the gc seeder (cargo build --release -p wharf --example gc_seed)"
      if ! (cd "$REPO_ROOT" && cargo build --release -p wharf --example gc_seed) >>"$WORK/build.log" 2>&1; then
        GC_SEED_NA="cargo build --release -p wharf --example gc_seed failed"
        NOTES+=("gc seeder build failed: $(grep -m 3 -E '^error' "$WORK/build.log" | tr '\n' ' ' | cut -c1-400)")
      fi
    fi
    [ -x "$GC_SEED_BIN" ] || GC_SEED_NA=${GC_SEED_NA:-"no gc seeder at $GC_SEED_BIN"}
  fi
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

# dist_config FILE ROOTDIR PORT [PROXY-REMOTEURL] [HTPASSWD-FILE]: docker-registry config.yml
# (proxy mode when a remote URL is given: a pull-through cache of one upstream; htpasswd Basic auth
# when a file is given)
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
  [ -n "${5:-}" ] && printf 'auth:\n  htpasswd:\n    realm: wharf-bench\n    path: %s\n' "$5" >>"$1"
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
  PAR_ALL=""
  for r in $(seq "$BIG_REPEAT"); do
    parallel_get "$@"
    PAR_ALL+="${PAR_ALL:+, }$(fmt "$PAR_MBS" %.0f)"
    [ -n "$PAR_ERR" ] && err=$PAR_ERR
    if num "$PAR_MBS" && { [ "$best" = n/a ] || awk -v a="$PAR_MBS" -v b="$best" 'BEGIN { exit !(a > b) }'; }; then best=$PAR_MBS; fi
  done
  PAR_MBS=$best PAR_ERR=$err
}

ceiling_nginx() {
  # Two server blocks on the same file: sendfile, and plain read/write with 4 x 256 KiB output buffers.
  # Both are reported, each with nginx's own CPU (master + workers) per GB sent.
  log "ceiling: nginx serving the $((BIG_BYTES / MiB)) MiB file from page cache (sendfile / read+write)"
  NGX=()
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
  local n port mode c0 k0 pids
  pids=("$np" $(pgrep -P "$np"))
  for n in 1 8; do
    for mode in sendfile rw; do
      port=$p1; [ "$mode" = rw ] && port=$p2
      curl -s -o /dev/null "http://127.0.0.1:$port/big.bin"   # warm-up
      c0=$(cpu_ticks_sum "${pids[@]}"); child_secs; k0=$CHILD_SECS
      best_get "nginx $mode" "http://127.0.0.1:$port/big.bin" "$n" "$BIG_BYTES"
      [ -n "$PAR_ERR" ] && NOTES+=("nginx: $PAR_ERR")
      NGX[$mode.$n.mbs]=$PAR_MBS
      if num "$PAR_MBS"; then
        NGX[$mode.$n.cpu]=$(calc "($(cpu_ticks_sum "${pids[@]}") - $c0) / $CLK_TCK / ($BIG_REPEAT * $n * $BIG_BYTES / 1e9)")
        child_secs; NGX[$mode.$n.client]=$(calc "($CHILD_SECS - $k0) / ($BIG_REPEAT * $n * $BIG_BYTES / 1e9)")
      else
        NGX[$mode.$n.cpu]=n/a NGX[$mode.$n.client]=n/a
      fi
      NOTES+=("nginx $mode, $n client(s): tries $PAR_ALL MB/s (best is reported); the curl clients used $(fmt "${NGX[$mode.$n.client]}" %.3f) CPU s/GB")
    done
  done
  kill_tree "$np"
}
declare -A NGX=()

# The push ceiling's other half: the data dir's disk, 256 MiB written with fsync (every push fsyncs its
# blob before the rename).  Random bytes from the test data (zeros could be compressed by the filesystem).
ceiling_disk_fsync() {
  local f=$WORK/wharf-data.fsync-probe src=$WORK/data/big.bin t0 t1 bytes
  if [ "$BIG_BYTES" -lt $((256 * MiB)) ]; then   # --quick: the GET blob is smaller than 256 MiB
    src=$WORK/data/fsync-src.bin; head -c $((256 * MiB)) /dev/urandom >"$src"; cat "$src" >/dev/null
  fi
  log "ceiling: disk, 256 MiB written with fsync (dd conv=fsync) in $WORK"
  t0=$(date +%s%N)
  if dd if="$src" of="$f" bs=1M count=256 iflag=fullblock conv=fsync status=none 2>"$WORK/dd.err"; then
    t1=$(date +%s%N); bytes=$(stat -c %s "$f")
    C_DISK=$(calc "$bytes / (($t1 - $t0) / 1e9) / 1e6")
    NOTES+=("disk ceiling: dd if=<random test data> of=$WORK/... bs=1M count=256 conv=fsync wrote $bytes bytes in $(calc "($t1 - $t0) / 1e9" | xargs printf '%.2f') s ($(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}'))")
  else
    C_DISK="n/a"; NOTES+=("disk fsync ceiling failed: $(head -c 300 "$WORK/dd.err")")
  fi
  rm -f "$f" "$WORK/data/fsync-src.bin"
  C_PUSH="n/a"
  if num "$C_OPENSSL" && num "$C_DISK"; then C_PUSH=$(awk -v a="$C_OPENSSL" -v b="$C_DISK" 'BEGIN { print (a < b ? a : b) }'); fi
}

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

# load_test REG KEY TOOL METHOD CONNS PATH [HEADER]: req/s, p50/p99 ms, server CPU us/req;
# HEADER ("Name: value", e.g. Authorization) goes with the precheck and every load request
load_test() {
  local reg=$1 key=$2 tool=$3 method=$4 conns=$5 path=$6 hdr=()
  [ -n "${7:-}" ] && hdr=(-H "$7")
  local keys=("${key}_rps" "${key}_p50" "${key}_p99" "${key}_cpu")
  require_alive "$reg" "$key" "${keys[@]}" || return
  local url=${BASE[$reg]}$path
  curl_req "$method" "$url" -H "Accept: $OCI_MANIFEST" "${hdr[@]}"
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
          --timeout 10s -H "Accept: $OCI_MANIFEST" "${hdr[@]}" -s "$LIB/wrk-report.lua" "$url" 2>&1)
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
          -H "Accept: $OCI_MANIFEST" "${hdr[@]}" --no-tui --output-format json "$url" 2>"$WORK/oha.err")
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
  local reg=$1 keys=(bigblob_get_1_mbs bigblob_get_1_cpu bigblob_get_8_mbs bigblob_get_8_cpu bigblob_rss_anon bigblob_rss_file)
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
  local n c0 k0 client
  rss_sampler_start "${PID[$reg]}" "$WORK/$reg.rss"
  for n in 1 8; do
    c0=$(cpu_ticks "${PID[$reg]}"); child_secs; k0=$CHILD_SECS
    best_get "$reg" "$url" "$n" "$BIG_BYTES"
    [ -n "$PAR_ERR" ] && problem "$reg" "$PAR_ERR"
    set_res "$reg" "bigblob_get_${n}_mbs" "$PAR_MBS"
    if num "$PAR_MBS"; then
      set_res "$reg" "bigblob_get_${n}_cpu" "$(calc "($(cpu_ticks "${PID[$reg]}") - $c0) / $CLK_TCK / ($BIG_REPEAT * $n * $BIG_BYTES / 1e9)")"
      child_secs; client=$(calc "($CHILD_SECS - $k0) / ($BIG_REPEAT * $n * $BIG_BYTES / 1e9)")
    else
      set_res "$reg" "bigblob_get_${n}_cpu" n/a; client=n/a
      NOTES+=("$reg: big blob GET x$n n/a -- download errors (see problems)")
    fi
    NOTES+=("$reg big blob GET, $n client(s): tries $PAR_ALL MB/s (best is reported); the curl clients used $(fmt "$client" %.3f) CPU s/GB")
  done
  rss_sampler_stop
  local anon file; read -r anon file <"$WORK/$reg.rss"
  set_res "$reg" bigblob_rss_anon "$(calc "$anon / 1024")"
  set_res "$reg" bigblob_rss_file "$(calc "$file / 1024")"
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

# Manifest GETs (wrk, 64 conns) while tag PUTs run in bursts of 1,000 (4 keep-alive clients, new tag names
# each burst): fsyncs on the request path must not stall reads. The bursts repeat until wrk's window ends, so
# every GET is measured during a burst. Runs after scenario_tags (its tag count check stays exact).
scenario_get_during_tag_burst() {
  local reg=$1 keys=(burst_get_c64_p99 burst_get_c64_rps burst_put_rps)
  require_alive "$reg" tag_burst "${keys[@]}" || return
  [ -n "${MANIFEST_FILE[$reg]:-}" ] || { na "$reg" "small image was not pushed" "${keys[@]}"; return; }
  local stop="$WORK/$reg-burst.stop" out="$WORK/$reg-burst.jsonl"
  rm -f "$stop" "$out"
  ( local n=0
    while [ ! -e "$stop" ]; do
      "${REGCLIENT[@]}" put-tags "${BASE[$reg]}" "$REPO" "${MANIFEST_FILE[$reg]}" --count 1000 --threads 4 \
        --prefix "burst$n-" 2>>"$WORK/$reg-helper.err" | jq -c . >>"$out" 2>/dev/null
      n=$((n + 1))
    done ) &
  local bursts=$!
  sleep 0.5  # let the first burst get going
  load_test "$reg" burst_get_c64 wrk GET 64 "/v2/$REPO/manifests/v1"
  touch "$stop"
  wait "$bursts" 2>/dev/null
  local ok failed rps
  ok=$(jq -s 'map(.ok) | add // 0' "$out" 2>/dev/null) failed=$(jq -s 'map(.failed) | add // 0' "$out" 2>/dev/null)
  rps=$(jq -s 'if length > 0 then (map(.rps) | add / length) else empty end' "$out" 2>/dev/null)
  if num "$failed" && [ "$failed" -gt 0 ]; then problem "$reg" "tag burst: $failed of $((ok + failed)) PUTs failed"; fi
  if num "$rps"; then set_res "$reg" burst_put_rps "$rps"; else na "$reg" "no tag burst completed" burst_put_rps; fi
  NOTES+=("$reg: GETs during tag bursts: $(jq -s length "$out" 2>/dev/null) bursts of 1,000 PUTs, $ok tags created")
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
  step scenario_get_during_tag_burst "$reg"
  # mirror and sync scenarios need both servers at once: see scenario_mirror / scenario_sync
}

# ------------------------------------------------------ mirror and sync ---
# These need both kinds of server at once plus helpers (an upstream, fresh
# mirrors), so they run after the per-registry scenarios, each from one
# function that fills both columns: wharf | distribution (the mirror rows) and
# wharf sync | skopeo sync (the sync rows).

# start_aux KIND NAME DATADIR [CONFIG-or-REMOTEURL] [RUST_LOG]: start a wharf
# (KIND=wharf, optional --config file) or a docker-registry (KIND=dist, optional
# proxy remoteurl, or htpasswd=FILE for Basic auth) under the key NAME in
# PID/BASE/LOGF.  Returns 1 on failure.
start_aux() {
  local kind=$1 name=$2 dir=$3 extra=${4:-} rlog=${5:-${WHARF_RUST_LOG:-warn}} port
  mkdir -p "$dir"; port=$(free_port)
  LOGF[$name]=$WORK/$name.log BASE[$name]=http://127.0.0.1:$port DEAD[$name]=""
  if [ "$kind" = wharf ]; then
    local cfg=(); [ -n "$extra" ] && cfg=(--config "$extra")
    RUST_LOG=$rlog "$WHARF_BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir" "${cfg[@]}" \
      2>>"${LOGF[$name]}" >&2 &
  else
    case $extra in
      htpasswd=*) dist_config "$WORK/$name.yml" "$dir" "$port" "" "${extra#htpasswd=}" ;;
      *) dist_config "$WORK/$name.yml" "$dir" "$port" "$extra" ;;
    esac
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
  # wharf verify --deep --all over the synced set: every manifest and blob re-hashed (pages are cached: the
  # sync just wrote them), against one core's openssl SHA-256 when the registry section measured it
  # without the registry section, measure the one-core SHA-256 ceiling here, right before, under the same load
  num "${C_OPENSSL:-}" || ceiling_openssl_sha256
  run_timed "$WORK/wharf-verify.log" "$WHARF_BIN" verify --deep --all --data-dir "$WORK/wharf-sync-data"
  if [ "$TIMED_RC" = 0 ] && num "$SYNC_BYTES"; then
    set_res wharf verify_deep_mbs "$(calc "$SYNC_BYTES / 1e6 / $TIMED_S")"
    if num "${C_OPENSSL:-}"; then set_res wharf verify_deep_ratio "$(calc "${R[wharf.verify_deep_mbs]} / $C_OPENSSL")"
    else na wharf "openssl speed sha256 could not be measured" verify_deep_ratio; fi
  else
    problem wharf "wharf verify --deep --all --data-dir <synced> exited $TIMED_RC: $(tail -n 5 "$WORK/wharf-verify.log" | tr '\n' ' ' | cut -c1-600)"
    na wharf "verify failed (exit $TIMED_RC)" verify_deep_mbs verify_deep_ratio
  fi
  na distribution "no verify command" verify_deep_mbs verify_deep_ratio
  # untimed check: serve the synced data dir (no config) and compare digests
  if start_aux wharf sync-check "$WORK/wharf-sync-data"; then
    SYNC_BAD=""
    sync_verify sync-check docker.io wharf || problem wharf "synced content incomplete: ${SYNC_BAD:-verification pull failed}"
    stop_aux sync-check
  fi

  # --- skopeo sync --all of the same 20 images into a fresh plain wharf. It lands under skopeo/bench/...:
  # names whose first component reads as a registry host (docker.io/...) are reserved for mirrors and
  # refuse pushes.
  if ! command -v skopeo >/dev/null 2>&1; then
    na distribution "skopeo not installed" "${SYNC_KEYS[@]}"
  elif start_aux wharf skopeo-dest "$WORK/skopeo-dest"; then
    local yaml=$WORK/skopeo-sync.yaml dest=${BASE[skopeo-dest]#http://}/skopeo/bench
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
    sync_verify skopeo-dest skopeo skopeo || NOTES+=("skopeo-synced content incomplete: ${SYNC_BAD:-verification pull failed}")
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

# ------------------------------------------------------------------- auth ---
# Access control on: each registry is started afresh (new data dir) with one htpasswd user (a bcrypt entry
# written by `htpasswd -B`, apache's default cost 5, the form distribution's docs use), the small image is
# pushed as that user, then wrk at 64 connections on the manifest by tag: anonymous, with Basic
# credentials, with a Bearer token (wharf), and wharf's token endpoint itself.  Rows land in the
# wharf | distribution columns.
AUTH_USER=bench
AUTH_LOAD_KEYS=(auth_anon_c64 auth_basic_c64 auth_bearer_c64 auth_token_c64)
auth_keys() { local k; for k in "$@"; do printf '%s\n' "${k}_rps" "${k}_p50" "${k}_p99" "${k}_cpu"; done; }
AUTH_ALL_KEYS=($(auth_keys "${AUTH_LOAD_KEYS[@]}") auth_basic_ratio auth_bearer_ratio)

# auth_load COL NAME KEY PATH [HEADER]: load_test (wrk GET, 64 conns) on the server NAME; the values go to
# column COL (wharf | distribution)
auth_load() {
  local col=$1 name=$2 key=$3 path=$4 k
  load_test "$name" "$key" wrk GET 64 "$path" "${5:-}"
  for k in rps p50 p99 cpu; do
    R[$col.${key}_$k]=${R[$name.${key}_$k]:-n/a}; unset "R[$name.${key}_$k]"
  done
}
# auth_ratio COL KEY NUMERATOR DENOMINATOR: req/s of one auth_load row over another's
auth_ratio() {
  if num "${R[$1.$3_rps]:-}" && num "${R[$1.$4_rps]:-}"; then
    set_res "$1" "$2" "$(calc "${R[$1.$3_rps]} / ${R[$1.$4_rps]}")"
  else
    na "$1" "$3 or $4 not measured" "$2"
  fi
}
# auth_push NAME: the small image as bench/app:v1, every request with the user's Basic credentials
auth_push() {
  local out p
  log "[$1] push small image $REPO:v1 as $AUTH_USER (Basic credentials)"
  out=$("${REGCLIENT[@]}" push-image "${BASE[$1]}" "$REPO" v1 "$WORK/$1-image" --user "$AUTH_USER:$AUTH_PASS" 2>>"$WORK/$1-helper.err")
  while IFS= read -r p; do [ -n "$p" ] && problem "$1" "push small image as $AUTH_USER: $p"; done < <(jq -r '.problems[]?' <<<"$out" 2>/dev/null)
  [ "$(jq -r .ok <<<"$out" 2>/dev/null)" = true ]
}
# auth_expect NAME WANT METHOD PATH [curl args...]: one request; a problem unless the status is WANT
auth_expect() {
  local name=$1 want=$2 method=$3 path=$4; shift 4
  curl_req "$method" "${BASE[$name]}$path" "$@"
  [ "$CODE" = "$want" ] && return 0
  problem "$name" "$(resp_desc "$method" "${BASE[$name]}$path") (expected $want)"; return 1
}

auth_wharf() {
  local name=wharf-auth cfg=$WORK/wharf-auth.toml man=/v2/$REPO/manifests/v1 token scope
  local tok_path="/auth/token?service=wharf&scope=repository:$REPO:pull"
  if [ -n "${WHARF_NA:-}" ]; then na wharf "$WHARF_NA" "${AUTH_ALL_KEYS[@]}"; return; fi
  cat >"$cfg" <<EOF
[auth]
htpasswd = "$AUTH_HTPASSWD"

[[access]]
repositories = ["$REPO"]
users = ["anonymous"]
actions = ["pull"]

[[access]]
repositories = ["*"]
users = ["$AUTH_USER"]
actions = ["pull", "push"]
EOF
  log "[wharf] auth: [auth] htpasswd + [[access]] (anonymous pull on $REPO; $AUTH_USER pull, push on *)"
  if ! start_aux wharf "$name" "$WORK/$name" "$cfg"; then
    na wharf "auth-enabled wharf did not start (see problems)" "${AUTH_ALL_KEYS[@]}"; return
  fi
  if ! auth_push "$name"; then
    na wharf "small image push as $AUTH_USER failed (see problems)" "${AUTH_ALL_KEYS[@]}"; stop_aux "$name"; return
  fi
  # access control is on: an anonymous push is refused
  auth_expect "$name" 401 POST "/v2/$REPO/blobs/uploads/"
  auth_load wharf "$name" auth_anon_c64 "$man"
  auth_load wharf "$name" auth_basic_c64 "$man" "$AUTH_BASIC"
  # one token (Basic credentials, scope pull on the repo) for the whole Bearer run
  curl_req GET "${BASE[$name]}$tok_path" -u "$AUTH_USER:$AUTH_PASS"
  token=$(jq -r '.token // empty' "$WORK/resp.body" 2>/dev/null)
  if [ "$CODE" != 200 ] || [ -z "$token" ]; then
    problem "$name" "$(resp_desc GET "${BASE[$name]}$tok_path") with $AUTH_USER's Basic credentials (expected 200 and a JSON token)"
    na wharf "token request failed (see problems)" $(auth_keys auth_bearer_c64 auth_token_c64)
  else
    scope=$(jq -r '.scope // .access // empty' "$WORK/resp.body" 2>/dev/null)
    NOTES+=("wharf auth: GET ${tok_path} with Basic credentials -> 200, token granted for '$scope', expires_in $(jq -r '.expires_in // "?"' "$WORK/resp.body") s (fetched once, used for the whole Bearer run)")
    auth_load wharf "$name" auth_bearer_c64 "$man" "Authorization: Bearer $token"
    # token issue rate: the same request as above (checked: 200 with a token), at 64 connections
    auth_load wharf "$name" auth_token_c64 "$tok_path" "$AUTH_BASIC"
  fi
  auth_ratio wharf auth_basic_ratio auth_basic_c64 auth_anon_c64
  auth_ratio wharf auth_bearer_ratio auth_bearer_c64 auth_anon_c64
  stop_aux "$name"; rm -rf "$WORK/$name"
}

auth_distribution() {
  local name=dist-auth dir=$WORK/dist-auth man=/v2/$REPO/manifests/v1
  na distribution "docker-registry 2.8 with htpasswd auth has no token endpoint (the token flow needs a separate token server, auth: token)" \
    $(auth_keys auth_bearer_c64 auth_token_c64) auth_bearer_ratio
  log "[distribution] auth: docker-registry with auth: htpasswd: {realm, path}"
  if ! start_aux dist "$name" "$dir" "htpasswd=$AUTH_HTPASSWD"; then
    na distribution "auth-enabled docker-registry did not start (see problems)" $(auth_keys auth_anon_c64 auth_basic_c64) auth_basic_ratio; return
  fi
  if ! auth_push "$name"; then
    na distribution "small image push as $AUTH_USER failed (see problems)" $(auth_keys auth_anon_c64 auth_basic_c64) auth_basic_ratio
    stop_aux "$name"; return
  fi
  # access control is on: an anonymous GET is refused
  auth_expect "$name" 401 GET "$man" -H "Accept: $OCI_MANIFEST"
  auth_load distribution "$name" auth_basic_c64 "$man" "$AUTH_BASIC"
  stop_aux "$name"
  # distribution's htpasswd auth has no anonymous access at all, so the anonymous baseline is the same data
  # dir served by a docker-registry without auth
  if start_aux dist dist-noauth "$dir"; then
    auth_load distribution dist-noauth auth_anon_c64 "$man"
    stop_aux dist-noauth
    NOTES+=("distribution auth: htpasswd auth admits no anonymous requests, so its anonymous row is the same data dir served by docker-registry without auth (wharf's: the auth-enabled server, a rule letting anonymous pull $REPO)")
  else
    na distribution "docker-registry without auth did not start on the auth data dir (see problems)" $(auth_keys auth_anon_c64)
  fi
  auth_ratio distribution auth_basic_ratio auth_basic_c64 auth_anon_c64
  rm -rf "$dir"
}

scenario_auth() {
  log "=== auth ==="
  local reg
  AUTH_PASS=$(openssl rand -hex 16) AUTH_HTPASSWD=$WORK/auth.htpasswd
  if ! htpasswd -B -b -c "$AUTH_HTPASSWD" "$AUTH_USER" "$AUTH_PASS" 2>"$WORK/htpasswd.err"; then
    for reg in wharf distribution; do na "$reg" "htpasswd -B failed: $(head -c 200 "$WORK/htpasswd.err")" "${AUTH_ALL_KEYS[@]}"; done
    return
  fi
  NOTES+=("auth: htpasswd entry $(cut -d: -f2 "$AUTH_HTPASSWD" | cut -c1-7)... (htpasswd -B, cost $(cut -d'$' -f3 "$AUTH_HTPASSWD")), the same file for both registries")
  AUTH_BASIC="Authorization: Basic $(printf '%s:%s' "$AUTH_USER" "$AUTH_PASS" | base64 -w0)"
  for reg in wharf distribution; do
    if [ -n "$ONLY" ] && [ "$ONLY" != "$reg" ]; then na "$reg" "--only $ONLY" "${AUTH_ALL_KEYS[@]}"; continue; fi
    "auth_$reg"
    # with the registry section in the same run: the auth-off server's figure for the same request
    if num "${R[$reg.manifest_get_c64_rps]:-}" && num "${R[$reg.auth_anon_c64_rps]:-}"; then
      NOTES+=("$reg: manifest GET at 64 conns without access control (registry section): $(fmt "${R[$reg.manifest_get_c64_rps]}" %.0f) req/s, $(fmt "${R[$reg.manifest_get_c64_cpu]}" %.1f) µs CPU/req; the auth section's anonymous row: $(fmt "${R[$reg.auth_anon_c64_rps]}" %.0f) req/s, $(fmt "${R[$reg.auth_anon_c64_cpu]}" %.1f) µs CPU/req")
    fi
  done
}

# ------------------------------------------------------------- tag rules ---
# What [[tags]] rules cost a push: tag PUTs (the small manifest under new tags, 4 keep-alive clients) on a
# fresh wharf without rules, then on a fresh wharf whose rules cover every one of those tags (immutable: each
# PUT checks the tag's current digest and the rule before it moves the tag). Both record the tag history.
TAGRULE_KEYS=(tagrules_plain_rps tagrules_rules_rps tagrules_plain_cpu tagrules_rules_cpu tagrules_plain_ucpu tagrules_rules_ucpu tagrules_ratio)
scenario_tagrules() {
  log "=== tag rules ==="
  na distribution "no tag rules in distribution 2.8" "${TAGRULE_KEYS[@]}"
  if [ -n "${WHARF_NA:-}" ]; then na wharf "$WHARF_NA" "${TAGRULE_KEYS[@]}"; return; fi
  local count=$((TAG_COUNT / 4)) variant name cfg out cpu rps
  # Interleaved and repeated (plain, rules, plain, rules), the best of each kept: a single pair is at the
  # mercy of whatever else the disk and the 2 cores are doing at that moment.
  for variant in plain rules plain rules; do
    name=wharf-tags-$variant cfg=""
    if [ "$variant" = rules ]; then
      cfg=$WORK/$name.toml
      printf '[[tags]]\nrepositories = ["%s"]\ntags = ["t*"]\nimmutable = true\n' "$REPO" >"$cfg"
    fi
    if ! start_aux wharf "$name" "$WORK/$name" "$cfg"; then na wharf "$name did not start" "tagrules_${variant}_rps"; continue; fi
    out=$("${REGCLIENT[@]}" push-image "${BASE[$name]}" "$REPO" v1 "$WORK/$name-image" 2>>"$WORK/$name-helper.err")
    if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
      problem "$name" "push small image: $(jq -c .problems <<<"$out" 2>/dev/null)"; na wharf "push failed" "tagrules_${variant}_rps"
      stop_aux "$name"; continue
    fi
    log "[$name] create $count tags (PUT manifest by tag, 4 keep-alive clients)"
    local c0 c1 u0 u1 ucpu; c0=$(cpu_ticks "${PID[$name]}") u0=$(cpu_user_ticks "${PID[$name]}")
    out=$("${REGCLIENT[@]}" put-tags "${BASE[$name]}" "$REPO" "$WORK/$name-image/manifest.json" --count "$count" --threads 4 2>>"$WORK/$name-helper.err")
    c1=$(cpu_ticks "${PID[$name]}") u1=$(cpu_user_ticks "${PID[$name]}")
    if [ "$(jq -r .failed <<<"$out" 2>/dev/null)" = 0 ]; then
      rps=$(jq -r .rps <<<"$out") cpu=$(calc "($c1 - $c0) / $CLK_TCK * 1e6 / $count")
      ucpu=$(calc "($u1 - $u0) / $CLK_TCK * 1e6 / $count")
      NOTES+=("tag rules: $variant run: $(fmt "$rps" %.0f) PUT/s, $(fmt "$cpu" %.1f) µs CPU/PUT of which $(fmt "$ucpu" %.1f) µs user")
      if ! num "${R[wharf.tagrules_${variant}_ucpu]:-}" || awk -v a="$ucpu" -v b="${R[wharf.tagrules_${variant}_ucpu]}" 'BEGIN { exit !(a < b) }'; then
        set_res wharf "tagrules_${variant}_ucpu" "$ucpu"
      fi
      if ! num "${R[wharf.tagrules_${variant}_rps]:-}" || awk -v a="$rps" -v b="${R[wharf.tagrules_${variant}_rps]}" 'BEGIN { exit !(a > b) }'; then
        set_res wharf "tagrules_${variant}_rps" "$rps"
      fi
      if ! num "${R[wharf.tagrules_${variant}_cpu]:-}" || awk -v a="$cpu" -v b="${R[wharf.tagrules_${variant}_cpu]}" 'BEGIN { exit !(a < b) }'; then
        set_res wharf "tagrules_${variant}_cpu" "$cpu"
      fi
    else
      problem "$name" "tag creation: $(jq -c . <<<"$out" 2>/dev/null | cut -c1-300)"; na wharf "tag PUTs failed" "tagrules_${variant}_rps"
    fi
    stop_aux "$name"; rm -rf "$WORK/$name"
  done
  # User CPU per PUT, not req/s nor total CPU: the PUTs wait on fsyncs, and the kernel's fsync work (system
  # time, ~90% of a PUT's CPU on this VM) varies 2x from run to run; the rule check runs in user space.
  if num "${R[wharf.tagrules_plain_ucpu]:-}" && num "${R[wharf.tagrules_rules_ucpu]:-}"; then
    set_res wharf tagrules_ratio "$(calc "${R[wharf.tagrules_rules_ucpu]} / ${R[wharf.tagrules_plain_ucpu]}")"
  else
    na wharf "a tag PUT run was not measured" tagrules_ratio
  fi
}

# --------------------------------------------------------------------- gc ---
# Garbage collection on stores seeded by crates/wharf/examples/gc_seed.rs through the store API (M = blobs/10
# manifests of config + 9 layers in repositories of 100; even-numbered manifests tagged, odd ones not; orphan
# uploads top the pool up to the blob count). Seeding is set-up, not measured: it runs under eatmydata when
# installed (no fsync per object), then `sync` writes everything out before any measurement. Each point gets a
# fresh store: `wharf gc --data-dir DIR --grace 0s` as a separate process under /usr/bin/time (wall time from
# the shell, peak RSS = %M); with --grace 0s everything not reachable from a tag is garbage, ~half the store.
# Then the manifest GET p99 (wrk, 64 conns) against a `wharf serve` on a copy of the main store, idle and while
# `wharf gc` runs in a loop beside it on the same data dir. distribution's column: points up to 100k, the same
# content converted to its layout (lib/dist_from_wharf.py), `docker-registry garbage-collect --delete-untagged`.
GC_POINTS=() GC_MAIN="" GC_DIST_MAX=100000
gc_points() {
  local p cand=(10000 100000 1000000)
  [ "$QUICK" = 1 ] && cand=(1000 10000 100000)
  GC_POINTS=()
  for p in "${cand[@]}"; do
    [ "$p" -le "$GC_MAX" ] && { [ "$QUICK" = 0 ] || [ "$p" -le 100000 ]; } && GC_POINTS+=("$p")
  done
  [ ${#GC_POINTS[@]} -eq 0 ] && GC_POINTS=("$GC_MAX")
  GC_MAIN=${GC_POINTS[-1]}
  for p in "${GC_POINTS[@]}"; do [ "$p" = 100000 ] && GC_MAIN=100000; done
  return 0
}
thousands() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
gc_point_keys() { echo "gc_$1_s gc_$1_rss gc_$1_us"; }
GC_SERVE_KEYS=(gc_get_idle_p99 gc_get_busy_p99 gc_get_ratio gc_get_idle_rps gc_get_busy_rps)

# gc_seed N DIR: a fresh store of N blobs in DIR; SEED_JSON, SEED_SECS (seeding + sync). Returns 1 on failure.
gc_seed() {
  local n=$1 dir=$2 t0 t1 pre=()
  command -v eatmydata >/dev/null 2>&1 && pre=(eatmydata)
  log "[gc] seeding $(thousands "$n") blobs, $(thousands $((n / 10))) manifests${pre:+ (under eatmydata)}"
  t0=$(date +%s%N)
  if ! SEED_JSON=$("${pre[@]}" "$GC_SEED_BIN" --data-dir "$dir" --blobs "$n" 2>"$WORK/gc-seed-$n.err"); then
    problem wharf "gc_seed --data-dir $dir --blobs $n failed: $(tail -n 3 "$WORK/gc-seed-$n.err" | tr '\n' ' ' | cut -c1-400)"
    return 1
  fi
  sync
  t1=$(date +%s%N); SEED_SECS=$(calc "($t1 - $t0) / 1e9")
}

# gc_run DIR OUT: one `wharf gc --grace 0s` under /usr/bin/time; GC_SECS (wall), GC_RSS_KIB, GC_DEL ("manifests
# links blobs"); its output in OUT. Returns 1 when it failed.
gc_run() {
  local dir=$1 out=$2 t0 t1 rc
  GC_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s%N)
  RUST_LOG=warn /usr/bin/time -f '%e %M' -o "$out.time" "$WHARF_BIN" gc --data-dir "$dir" --grace 0s >"$out" 2>&1; rc=$?
  t1=$(date +%s%N)
  GC_SECS=$(calc "($t1 - $t0) / 1e9") GC_RSS_KIB=$(awk 'END {print $2}' "$out.time")
  GC_DEL=$(sed -n 's/.*deleted \([0-9]*\) manifests, \([0-9]*\) blob links, \([0-9]*\) pool blobs.*/\1 \2 \3/p' "$out" | head -n 1)
  [ "$rc" = 0 ] && [ -n "$GC_DEL" ]
}

# gc_dist N WHARF_DIR: distribution's offline collector on the same content (the registry is stopped: its GC is
# stop-the-world); fills the distribution column of point N.
gc_dist() {
  local n=$1 src=$2 root=$WORK/gc-dist-$n cfg=$WORK/gc-dist-$n.yml conv t0 t1 rc left_m left_b
  if [ -n "$ONLY" ] && [ "$ONLY" != distribution ]; then na distribution "--only $ONLY" $(gc_point_keys "$n"); return; fi
  if ! conv=$(python3 "$LIB/dist_from_wharf.py" "$src" "$root" 2>"$WORK/gc-dist-conv.err"); then
    na distribution "converting the seeded store failed: $(tail -n 2 "$WORK/gc-dist-conv.err" | tr '\n' ' ' | cut -c1-300)" $(gc_point_keys "$n"); return
  fi
  sync
  dist_config "$cfg" "$root" "$(free_port)"
  log "[gc] distribution: docker-registry garbage-collect --delete-untagged on the same $(thousands "$n") blobs"
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s%N)
  /usr/bin/time -f '%e %M' -o "$WORK/gc-dist-$n.time" docker-registry garbage-collect --delete-untagged "$cfg" >"$WORK/gc-dist-$n.log" 2>&1; rc=$?
  t1=$(date +%s%N)
  if [ "$rc" != 0 ]; then
    na distribution "docker-registry garbage-collect exited $rc: $(tail -n 2 "$WORK/gc-dist-$n.log" | tr '\n' ' ' | cut -c1-300)" $(gc_point_keys "$n"); return
  fi
  set_res distribution "gc_${n}_s" "$(calc "($t1 - $t0) / 1e9")"
  set_res distribution "gc_${n}_rss" "$(calc "$(awk 'END {print $2}' "$WORK/gc-dist-$n.time") / 1024")"
  set_res distribution "gc_${n}_us" "$(calc "($t1 - $t0) / 1e3 / $n")"
  left_m=$(find "$root/docker/registry/v2/repositories" -path '*/_manifests/revisions/*' -name link | wc -l)
  left_b=$(find "$root/docker/registry/v2/blobs" -name data | wc -l)
  NOTES+=("gc, distribution at $(thousands "$n") blobs: converted $conv; after garbage-collect --delete-untagged: $left_m manifest revisions and $left_b blob files left (blob files include the manifests' own); load average before it: $load")
}

scenario_gc() {
  log "=== gc ==="
  gc_points
  local n dir keys want_m want_b m l b serve=$WORK/gc-serve
  local all=()
  for n in "${GC_POINTS[@]}"; do all+=($(gc_point_keys "$n")); done
  all+=(gc_main_s gc_main_rss "${GC_SERVE_KEYS[@]}")
  na distribution "no online GC in distribution 2.8 (its garbage-collect is offline, stop-the-world: the registry must be stopped or read-only)" "${GC_SERVE_KEYS[@]}"
  if [ -n "${WHARF_NA:-}" ] || [ -n "${GC_SEED_NA:-}" ]; then
    na wharf "${WHARF_NA:-$GC_SEED_NA}" "${all[@]}"; return
  fi
  [ "$GC_MAIN" -gt "$GC_DIST_MAX" ] && na distribution "distribution's collector is compared up to $(thousands "$GC_DIST_MAX") blobs" gc_main_s gc_main_rss
  for n in "${GC_POINTS[@]}"; do
    dir=$WORK/gc-$n; rm -rf "$dir"
    keys=($(gc_point_keys "$n"))
    if ! gc_seed "$n" "$dir"; then na wharf "seeding failed (see problems)" "${keys[@]}"; continue; fi
    want_m=$(jq -r .garbage_manifests <<<"$SEED_JSON") want_b=$(jq -r .garbage_blobs <<<"$SEED_JSON")
    NOTES+=("gc, $(thousands "$n") blobs: seeded $(jq -c . <<<"$SEED_JSON") in $(fmt "$SEED_SECS" %.1f) s with the final sync ($(calc "$n / $SEED_SECS" | xargs printf '%.0f') blobs/s$(command -v eatmydata >/dev/null 2>&1 && echo ', under eatmydata')); garbage: $want_m of $(jq -r .manifests <<<"$SEED_JSON") manifests (the untagged ones) and $want_b of $n blobs ($(calc "100 * $want_b / $n" | xargs printf '%.1f') %: their configs and own layers, and the orphan uploads)")
    [ "$n" = "$GC_MAIN" ] && { rm -rf "$serve"; cp -a "$dir" "$serve"; }
    if [ "$n" -le "$GC_DIST_MAX" ]; then gc_dist "$n" "$dir"; else na distribution "distribution's collector is compared up to $(thousands "$GC_DIST_MAX") blobs (its offline run at 1M would add minutes and several GB of converted layout)" "${keys[@]}"; fi
    log "[gc] wharf gc --grace 0s on $(thousands "$n") blobs"
    if ! gc_run "$dir" "$WORK/gc-$n.out"; then
      problem wharf "wharf gc --data-dir <$n-blob store> --grace 0s failed: $(tail -n 3 "$WORK/gc-$n.out" | tr '\n' ' ' | cut -c1-400)"
      na wharf "wharf gc failed (see problems)" "${keys[@]}"; continue
    fi
    set_res wharf "gc_${n}_s" "$GC_SECS"
    set_res wharf "gc_${n}_rss" "$(calc "$GC_RSS_KIB / 1024")"
    set_res wharf "gc_${n}_us" "$(calc "$GC_SECS * 1e6 / $n")"
    read -r m l b <<<"$GC_DEL"
    NOTES+=("gc, wharf at $(thousands "$n") blobs: $(head -n 2 "$WORK/gc-$n.out" | tail -n 1 | sed 's/^ *//'); load average before it: $GC_LOAD")
    [ "$m" = "$want_m" ] && [ "$b" = "$want_b" ] ||
      problem wharf "wharf gc on the $n-blob store deleted $m manifests and $b pool blobs; the seeder's garbage is $want_m manifests and $want_b blobs"
    # The stores stay until the work dir goes at exit, after the report: deleting millions of small files is
    # minutes of disk work (at 1M), which would land on the next measurement.
    if [ "$n" = "$GC_MAIN" ]; then
      R[wharf.gc_main_s]=${R[wharf.gc_${n}_s]:-} R[wharf.gc_main_rss]=${R[wharf.gc_${n}_rss]:-}
      R[distribution.gc_main_s]=${R[distribution.gc_${n}_s]:-n/a} R[distribution.gc_main_rss]=${R[distribution.gc_${n}_rss]:-n/a}
      # the GET rows now, before a bigger point's seeding and clean-up (minutes of disk work at 1M)
      gc_serve "$serve"
    fi
  done
  if [ -z "${R[wharf.gc_get_idle_p99]:-}" ] && [ -d "$serve" ]; then gc_serve "$serve"   # the main point's gc failed
  elif [ -z "${R[wharf.gc_get_idle_p99]:-}" ]; then na wharf "the $(thousands "$GC_MAIN")-blob store was not seeded" "${GC_SERVE_KEYS[@]}"; fi
  return 0
}

# gc_serve DIR: manifest GET p99 at 64 connections against `wharf serve` on DIR, idle, then while `wharf gc
# --grace 0s` runs in a loop on the same data dir (a separate process, one run after another).
gc_serve() {
  local dir=$1 name=wharf-gc path=/v2/gcbench/r00000/manifests/t0000000 loop k runs
  if [ ! -d "$dir" ]; then na wharf "the $(thousands "$GC_MAIN")-blob store was not seeded" "${GC_SERVE_KEYS[@]}"; return; fi
  if ! start_aux wharf "$name" "$dir"; then na wharf "wharf serve on the seeded store did not start" "${GC_SERVE_KEYS[@]}"; return; fi
  gc_load() {  # key
    load_test "$name" "$1" wrk GET 64 "$path"
    for k in rps p50 p99 cpu; do R[wharf.${1}_$k]=${R[$name.${1}_$k]:-n/a}; unset "R[$name.${1}_$k]"; done
  }
  local load_idle load_busy
  load_idle=$(cut -d' ' -f1-3 /proc/loadavg)
  gc_load gc_idle_c64
  load_busy=$(cut -d' ' -f1-3 /proc/loadavg)
  log "[gc] the same while wharf gc --grace 0s runs in a loop on the data dir"
  : >"$WORK/gc-loop.log"
  ( while :; do
      echo "START $(date +%s%N)" >>"$WORK/gc-loop.log"
      RUST_LOG=warn "$WHARF_BIN" gc --data-dir "$dir" --grace 0s >>"$WORK/gc-loop.log" 2>&1
      echo "END $(date +%s%N) rc=$?" >>"$WORK/gc-loop.log"
    done ) &
  loop=$!; STARTED_PIDS+=("$loop")
  sleep 1
  gc_load gc_busy_c64
  runs=$(grep -c '^END' "$WORK/gc-loop.log")
  kill_tree "$loop"
  NOTES+=("gc during GETs: $runs wharf gc run(s) finished in the ${LOAD_SECS} s load window + 1 s lead-in (the first deletes the store's garbage, later ones only mark and find nothing; a run still going at the end was killed); first run: $(grep -m 1 'deleted' "$WORK/gc-loop.log" | sed 's/^ *//' || echo 'not finished'); GET req/s idle $(fmt "${R[wharf.gc_idle_c64_rps]:-}" %.0f), during gc $(fmt "${R[wharf.gc_busy_c64_rps]:-}" %.0f); load average before the idle run: $load_idle, before the gc loop: $load_busy")
  R[wharf.gc_get_idle_p99]=${R[wharf.gc_idle_c64_p99]:-n/a} R[wharf.gc_get_busy_p99]=${R[wharf.gc_busy_c64_p99]:-n/a}
  R[wharf.gc_get_idle_rps]=${R[wharf.gc_idle_c64_rps]:-n/a} R[wharf.gc_get_busy_rps]=${R[wharf.gc_busy_c64_rps]:-n/a}
  if num "${R[wharf.gc_get_idle_p99]}" && num "${R[wharf.gc_get_busy_p99]}"; then
    set_res wharf gc_get_ratio "$(calc "${R[wharf.gc_get_busy_p99]} / ${R[wharf.gc_get_idle_p99]}")"
  else
    na wharf "a p99 was not measured" gc_get_ratio
  fi
  stop_aux "$name"
}

# rows of the gc section, appended to print_table's rows (bash's dynamic scope)
gc_table_rows() {
  local n mn
  [ ${#GC_POINTS[@]} -gt 0 ] || return 0
  mn="$(thousands "$GC_MAIN") blobs, $(thousands $((GC_MAIN / 10))) manifests"
  rows+=(
    "gc_main_s|gc: wharf gc --grace 0s on a store of $mn (about half garbage; distribution: garbage-collect --delete-untagged, offline): wall s ↓ (target < 10)|lo|%.2f"
    "gc_main_rss|gc: the same, peak RSS of the gc process (/usr/bin/time %M): MiB ↓ (target < 64)|lo|%.1f"
  )
  for n in "${GC_POINTS[@]}"; do
    rows+=(
      "gc_${n}_s|gc growth: $(thousands "$n") blobs, $(thousands $((n / 10))) manifests: wall s ↓|lo|%.2f"
      "gc_${n}_rss|gc growth: $(thousands "$n") blobs: peak RSS MiB ↓|lo|%.1f"
      "gc_${n}_us|gc growth: $(thousands "$n") blobs: µs per blob (wall / blobs) ↓|lo|%.1f"
    )
  done
  rows+=(
    "gc_get_idle_p99|gc: manifest GET by tag, 64 conns, wharf serve on the $mn store, no gc: p99 ms ↓|lo|%.3f"
    "gc_get_busy_p99|gc: the same while wharf gc --grace 0s runs in a loop beside it (separate process, same data dir): p99 ms ↓|lo|%.3f"
    "gc_get_ratio|gc: GET p99 during gc / idle (target ≤ 2) ↓|-|%.2f"
  )
}

# -------------------------------------------------------------------- ops ---
# Operations (wharf only): (a) console pages of a 10,000-tag repository: one 3-platform OCI index (tiny random
# layers, regclient.py push-multi) tagged 10,000 times by manifest PUTs of the same bytes (lib/opsclient.py
# tag-many, 16 keep-alive connections), then GET /ui/tags/<repo> (page 1), ?page=50 and GET / with wrk, 1
# connection (client and server pinned to separate cores, as every 1-conn row), LOAD_SECS each; (b) air-gap
# bundles: a 2-platform image of one OPS_LAYER_BYTES random layer per platform, `wharf bundle export` / `wharf
# bundle import` against skopeo copy --all to / from an oci-archive of the same image, each timed to durable
# (command + sync), the page cache dropped before each step when /proc/sys/vm/drop_caches is writable, and
# compared with the disk's sequential write speed (dd, 1 GiB, oflag=direct conv=fdatasync).
OPS_UI_KEYS=() OPS_BUNDLE_KEYS=(ops_disk_write_mbs ops_disk_read_mbs ops_copy_mbs ops_export_mbs ops_export_disk ops_export_copy ops_import_mbs ops_import_disk ops_import_copy)
for _k in ui_tags1 ui_tags50 ui_root; do for _m in rps p50 p99 cpu; do OPS_UI_KEYS+=("ops_${_k}_$_m"); done; done
OPS_TAGS=10000 OPS_DROPPED="" OPS_LAYER_BYTES=512M
[ "$QUICK" = 1 ] && OPS_LAYER_BYTES=256M

ops_drop_caches() {  # sync, then drop the page cache when allowed; OPS_DROPPED = yes | no (reason)
  sync
  if { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then OPS_DROPPED=${OPS_DROPPED:-yes}
  else OPS_DROPPED="no (writing /proc/sys/vm/drop_caches failed)"; fi
}

# ops_timed WHO LABEL LOG CMD...: drop the page cache, run CMD then sync, OPS_S = wall seconds of both (""
# on failure, reported as a problem under WHO), OPS_CMD_S = the command alone.
ops_timed() {
  local who=$1 label=$2 logf=$3 t0 t1 t2 rc pre=(); shift 3
  [ -x /usr/bin/time ] && pre=(/usr/bin/time -f '%U %S %M' -o "$logf.time")
  ops_drop_caches
  log "[ops] $label"
  t0=$(date +%s%N)
  "${pre[@]}" "$@" >"$logf" 2>&1; rc=$?
  t1=$(date +%s%N); sync; t2=$(date +%s%N)
  OPS_S="" OPS_CMD_S=$(calc "($t1 - $t0) / 1e9")
  OPS_CPU=$(awk 'END { if (NF >= 3) printf "process CPU %.2f s user + %.2f s system, peak RSS %.1f MiB", $1, $2, $3 / 1024; else print "process CPU n/a" }' "$logf.time" 2>/dev/null)
  if [ "$rc" != 0 ]; then
    problem "$who" "$label: \`$*\` exited $rc: $(tail -n 3 "$logf" | tr '\n' ' ' | cut -c1-400)"; return 1
  fi
  OPS_S=$(calc "($t2 - $t0) / 1e9")
}

ops_console() {
  local name=wharf-ops-ui repo=ops/console out idx=$WORK/ops-console-index.json k
  if ! start_aux wharf "$name" "$WORK/ops-ui-data"; then na wharf "wharf serve did not start" "${OPS_UI_KEYS[@]}"; return; fi
  log "[ops] console: a 3-platform index, tagged $(thousands "$OPS_TAGS") times"
  out=$("${REGCLIENT[@]}" push-multi "${BASE[$name]}" v0 "$WORK/ops-console.json" --repo "$repo" \
        --platforms linux/amd64,linux/arm64,linux/s390x --layers 1 --layer-bytes 4K-16K 2>>"$WORK/helper.err")
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
    problem wharf "ops console: pushing the 3-platform index failed: $(jq -r '.problems | join("; ")' <<<"$out" 2>/dev/null | cut -c1-400)"
    na wharf "the index push failed" "${OPS_UI_KEYS[@]}"; stop_aux "$name"; return
  fi
  curl_req GET "${BASE[$name]}/v2/$repo/manifests/v0" -H 'Accept: application/vnd.oci.image.index.v1+json'
  if [ "$CODE" != 200 ]; then
    problem wharf "$(resp_desc GET "${BASE[$name]}/v2/$repo/manifests/v0") (expected the pushed index)"
    na wharf "the index could not be read back" "${OPS_UI_KEYS[@]}"; stop_aux "$name"; return
  fi
  cp "$WORK/resp.body" "$idx"
  out=$(python3 "$LIB/opsclient.py" tag-many "${BASE[$name]}" "$repo" "$idx" \
        --media-type application/vnd.oci.image.index.v1+json --count "$OPS_TAGS" --threads 16 2>>"$WORK/helper.err")
  NOTES+=("ops console: $(thousands "$OPS_TAGS") tag PUTs of one 3-platform index ($(stat -c %s "$idx") bytes), 16 keep-alive connections: $(jq -c . <<<"$out" 2>/dev/null || echo "$out")")
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != "$OPS_TAGS" ]; then
    problem wharf "ops console: $(jq -r .failed <<<"$out") of $OPS_TAGS tag PUTs failed, first: $(jq -r .first_error <<<"$out" | cut -c1-400)"
  fi
  # the pages once, checked, before the load runs
  local path desc
  for path in "/ui/tags/$repo" "/ui/tags/$repo?page=50" "/"; do
    curl_req GET "${BASE[$name]}$path"
    desc="GET $path -> $CODE, $(stat -c %s "$WORK/resp.body") bytes, $(grep -o "/ui/image/$repo[^\"]*" "$WORK/resp.body" | sort -u | wc -l) image links, $(fmt "$TIME" %s) s"
    case $path in
      *page=50) grep -q 't04900' "$WORK/resp.body" || problem wharf "GET $path: tag t04900 (first of page 50 of sorted t00000..t09999) not on the page" ;;
      /ui/tags/*) grep -q 't00000' "$WORK/resp.body" || problem wharf "GET $path: tag t00000 not on page 1" ;;
    esac
    NOTES+=("ops console check: $desc")
  done
  load_test "$name" ops_ui_tags1 wrk GET 1 "/ui/tags/$repo"
  load_test "$name" ops_ui_tags50 wrk GET 1 "/ui/tags/$repo?page=50"
  load_test "$name" ops_ui_root wrk GET 1 "/"
  for k in "${OPS_UI_KEYS[@]}"; do R[wharf.$k]=${R[$name.$k]:-n/a}; unset "R[$name.$k]"; done
  stop_aux "$name"
}

ops_bundle() {
  local src=wharf-ops-src dst=wharf-ops-dst repo=ops/big out bytes mb f=$WORK/ops-dd.bin
  local wtar=$WORK/ops-wharf-bundle.tar star=$WORK/ops-skopeo.tar t0 t1 k
  na distribution "wharf only (the distribution column holds skopeo copy --all, the reference)" ops_disk_write_mbs ops_disk_read_mbs ops_copy_mbs ops_export_disk ops_import_disk ops_export_copy ops_import_copy
  # the disk: 1 GiB sequential write with direct I/O and a final fdatasync, then read back with direct I/O
  log "[ops] disk: dd 1 GiB, bs=16M, oflag=direct conv=fdatasync"
  ops_drop_caches
  t0=$(date +%s%N)
  if dd if=/dev/zero of="$f" bs=16M count=64 oflag=direct conv=fdatasync status=none 2>"$WORK/dd.err"; then
    t1=$(date +%s%N); set_res wharf ops_disk_write_mbs "$(calc "$(stat -c %s "$f") / (($t1 - $t0) / 1e9) / 1e6")"
    ops_drop_caches
    t0=$(date +%s%N); dd if="$f" of=/dev/null bs=16M iflag=direct status=none; t1=$(date +%s%N)
    set_res wharf ops_disk_read_mbs "$(calc "$(stat -c %s "$f") / (($t1 - $t0) / 1e9) / 1e6")"
    NOTES+=("ops disk: $(df -T "$WORK" | awk 'NR == 2 {print $2 " on " $1}'), dd if=/dev/zero of=$f bs=16M count=64 oflag=direct conv=fdatasync: $(fmt "${R[wharf.ops_disk_write_mbs]}" %.0f) MB/s; dd iflag=direct read back: $(fmt "${R[wharf.ops_disk_read_mbs]}" %.0f) MB/s")
  else
    na wharf "dd failed: $(head -c 300 "$WORK/dd.err")" ops_disk_write_mbs ops_disk_read_mbs
  fi
  rm -f "$f"
  if ! start_aux wharf "$src" "$WORK/ops-src-data"; then
    na wharf "wharf serve did not start" ops_export_mbs ops_export_disk ops_import_mbs ops_import_disk
    na distribution "wharf serve did not start" ops_export_mbs ops_import_mbs; return
  fi
  log "[ops] bundle: pushing $repo:v1, 2 platforms x one $OPS_LAYER_BYTES random layer"
  out=$("${REGCLIENT[@]}" push-multi "${BASE[$src]}" v1 "$WORK/ops-big.json" --repo "$repo" \
        --platforms linux/amd64,linux/arm64 --layers 1 --layer-bytes "$OPS_LAYER_BYTES" 2>>"$WORK/helper.err")
  if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
    problem wharf "ops bundle: pushing the image failed: $(jq -r '.problems | join("; ")' <<<"$out" 2>/dev/null | cut -c1-400)"
    na wharf "the image push failed" ops_export_mbs ops_export_disk ops_import_mbs ops_import_disk
    na distribution "the image push failed" ops_export_mbs ops_import_mbs; stop_aux "$src"; return
  fi
  bytes=$(jq -r .total_blob_bytes <<<"$out"); mb=$(calc "$bytes / 1e6")
  # wharf export (from the store, the server still running on it)
  if ops_timed wharf "wharf bundle export $repo:v1" "$WORK/ops-export.log" "$WHARF_BIN" bundle export "$repo:v1" -o "$wtar" --data-dir "$WORK/ops-src-data"; then
    set_res wharf ops_export_mbs "$(calc "$mb / $OPS_S")"
    NOTES+=("ops export: wharf bundle export $repo:v1 -o FILE --data-dir DIR: $(stat -c %s "$wtar") bytes in $(fmt "$OPS_CMD_S" %.2f) s + sync = $(fmt "$OPS_S" %.2f) s, $OPS_CPU; output: $(tail -n 2 "$WORK/ops-export.log" | tr '\n' ' ' | cut -c1-300)")
  else na wharf "wharf bundle export failed (see problems)" ops_export_mbs; fi
  # a plain copy of the bundle on the same disk (read + write of the same bytes, no hashing): what export and
  # import could reach at best on this disk, since both read and write every byte on it
  if [ -f "$wtar" ] && ops_timed wharf "plain copy: cat bundle > file" "$WORK/ops-copy.log" sh -c 'cat "$1" >"$2"' sh "$wtar" "$WORK/ops-copy.tar"; then
    set_res wharf ops_copy_mbs "$(calc "$(stat -c %s "$wtar") / 1e6 / $OPS_S")"
  else na wharf "no bundle to copy, or the copy failed" ops_copy_mbs; fi
  rm -f "$WORK/ops-copy.tar"
  # skopeo export: pulls over HTTP from the same wharf
  if ops_timed skopeo "skopeo copy --all docker://…/$repo:v1 oci-archive" "$WORK/ops-skopeo-export.log" \
       skopeo copy --all --src-tls-verify=false "docker://${BASE[$src]#http://}/$repo:v1" "oci-archive:$star:x"; then
    set_res distribution ops_export_mbs "$(calc "$mb / $OPS_S")"
    NOTES+=("ops export reference: skopeo $(skopeo --version | awk '{print $3}') copy --all --src-tls-verify=false docker://127.0.0.1:PORT/$repo:v1 oci-archive:FILE:x (over HTTP from the same wharf; skopeo builds the layout in a temp dir, then tars it): $(stat -c %s "$star") bytes in $(fmt "$OPS_CMD_S" %.2f) s + sync = $(fmt "$OPS_S" %.2f) s, skopeo $OPS_CPU")
  else
    na distribution "skopeo copy failed" ops_export_mbs
  fi
  stop_aux "$src"
  # wharf import into a fresh data dir
  if [ -f "$wtar" ] && ops_timed wharf "wharf bundle import into a fresh data dir" "$WORK/ops-import.log" "$WHARF_BIN" bundle import "$wtar" --data-dir "$WORK/ops-import-data"; then
    set_res wharf ops_import_mbs "$(calc "$mb / $OPS_S")"
    NOTES+=("ops import: wharf bundle import FILE --data-dir FRESH_DIR: $(fmt "$OPS_CMD_S" %.2f) s + sync = $(fmt "$OPS_S" %.2f) s, $OPS_CPU; output: $(tail -n 2 "$WORK/ops-import.log" | tr '\n' ' ' | cut -c1-300)")
    if start_aux wharf wharf-ops-check "$WORK/ops-import-data"; then
      curl_req GET "${BASE[wharf-ops-check]}/v2/$repo/manifests/v1" -H 'Accept: application/vnd.oci.image.index.v1+json'
      [ "$CODE" = 200 ] || problem wharf "after wharf bundle import: $(resp_desc GET "${BASE[wharf-ops-check]}/v2/$repo/manifests/v1") (expected the imported index)"
      stop_aux wharf-ops-check
    fi
  else na wharf "no wharf bundle, or wharf bundle import failed (see problems)" ops_import_mbs; fi
  rm -rf "$WORK/ops-import-data"
  # skopeo import: the oci-archive into a second, empty wharf over HTTP
  if [ -f "$star" ] && start_aux wharf "$dst" "$WORK/ops-dst-data"; then
    if ops_timed skopeo "skopeo copy --all oci-archive → empty wharf" "$WORK/ops-skopeo-import.log" \
         skopeo copy --all --dest-tls-verify=false "oci-archive:$star:x" "docker://${BASE[$dst]#http://}/other:tag"; then
      set_res distribution ops_import_mbs "$(calc "$mb / $OPS_S")"
      NOTES+=("ops import reference: skopeo copy --all --dest-tls-verify=false oci-archive:FILE:x docker://127.0.0.1:PORT2/other:tag into an empty wharf (skopeo unpacks the archive to a temp dir first): $(fmt "$OPS_CMD_S" %.2f) s + sync = $(fmt "$OPS_S" %.2f) s, skopeo $OPS_CPU (the server's work not included)")
    else
      na distribution "skopeo copy failed" ops_import_mbs
    fi
    stop_aux "$dst"
  else na distribution "no skopeo archive, or the second wharf did not start" ops_import_mbs; fi
  local d=${R[wharf.ops_disk_write_mbs]:-n/a} cp=${R[wharf.ops_copy_mbs]:-n/a}
  for k in export import; do
    if num "${R[wharf.ops_${k}_mbs]:-}" && num "$d"; then set_res wharf "ops_${k}_disk" "$(calc "${R[wharf.ops_${k}_mbs]} / $d")"
    else na wharf "not measured" "ops_${k}_disk"; fi
    if num "${R[wharf.ops_${k}_mbs]:-}" && num "$cp"; then set_res wharf "ops_${k}_copy" "$(calc "${R[wharf.ops_${k}_mbs]} / $cp")"
    else na wharf "not measured" "ops_${k}_copy"; fi
  done
  NOTES+=("ops bundle: image $repo:v1 = $(thousands "$bytes") blob bytes (2 platforms x one $OPS_LAYER_BYTES layer + configs); MB/s = those bytes / (command + sync) wall time; page cache dropped before every timed step: ${OPS_DROPPED:-not tried}")
  rm -f "$wtar" "$star"
}

scenario_ops() {
  log "=== ops ==="
  na distribution "distribution has no web console" "${OPS_UI_KEYS[@]}"
  if [ -n "${WHARF_NA:-}" ]; then
    na wharf "$WHARF_NA" "${OPS_UI_KEYS[@]}" "${OPS_BUNDLE_KEYS[@]}"; na distribution "$WHARF_NA" ops_export_mbs ops_import_mbs; return
  fi
  ops_console
  if ! command -v skopeo >/dev/null 2>&1; then NOTES+=("skopeo not installed: the bundle reference rows are n/a"); fi
  ops_bundle
  return 0
}

ops_table_rows() {
  local t; t=$(thousands $((OPS_TAGS + 1)))   # the tags t00000.. and the push's own v0
  rows+=(
    "ops_ui_tags1_p50|ops console: GET /ui/tags/<repo> page 1 (100 rows of $t tags), 1 conn: p50 ms ↓ (target < 100)|lo|%.2f"
    "ops_ui_tags1_p99|ops console: GET /ui/tags/<repo> page 1, 1 conn: p99 ms ↓ (target < 100)|lo|%.2f"
    "ops_ui_tags1_cpu|ops console: GET /ui/tags/<repo> page 1: server CPU µs/req ↓|lo|%.0f"
    "ops_ui_tags50_p50|ops console: GET /ui/tags/<repo>?page=50, 1 conn: p50 ms ↓ (target < 100)|lo|%.2f"
    "ops_ui_tags50_p99|ops console: GET /ui/tags/<repo>?page=50, 1 conn: p99 ms ↓ (target < 100)|lo|%.2f"
    "ops_ui_tags50_cpu|ops console: GET /ui/tags/<repo>?page=50: server CPU µs/req ↓|lo|%.0f"
    "ops_ui_root_p50|ops console: GET / (repository list), 1 conn: p50 ms ↓ (target < 100)|lo|%.2f"
    "ops_ui_root_p99|ops console: GET /, 1 conn: p99 ms ↓ (target < 100)|lo|%.2f"
    "ops_ui_root_cpu|ops console: GET /: server CPU µs/req ↓|lo|%.0f"
    "ops_disk_write_mbs|ops bundle: disk sequential write, dd 1 GiB bs=16M oflag=direct conv=fdatasync: MB/s (machine)|-|%.0f"
    "ops_disk_read_mbs|ops bundle: disk sequential read, dd 1 GiB bs=16M iflag=direct: MB/s (machine)|-|%.0f"
    "ops_copy_mbs|ops bundle: plain copy of the bundle file on the same disk (cat, + sync; reads and writes every byte like export/import): MB/s (machine)|-|%.0f"
    "ops_export_mbs|ops bundle: export a 2 x $OPS_LAYER_BYTES-layer image to a tar, + sync (wharf bundle export; distribution column: skopeo copy --all to oci-archive over HTTP from the wharf): MB/s ↑|hi|%.0f"
    "ops_export_disk|ops bundle: wharf export MB/s / disk write MB/s (target ≥ 0.8)|-|%.2f"
    "ops_export_copy|ops bundle: wharf export MB/s / plain copy MB/s|-|%.2f"
    "ops_import_mbs|ops bundle: import that tar into an empty store, + sync (wharf bundle import; distribution column: skopeo copy --all from the oci-archive to an empty wharf): MB/s ↑|hi|%.0f"
    "ops_import_disk|ops bundle: wharf import MB/s / disk write MB/s (target ≥ 0.8)|-|%.2f"
    "ops_import_copy|ops bundle: wharf import MB/s / plain copy MB/s|-|%.2f"
  )
}

# --------------------------------------------------------------------- s3 ---
# Wharf on an S3-compatible bucket (section `s3`, wharf only): a throw-away Garage on loopback
# (scripts/s3-server.sh, RUST_LOG=garage=warn), one `wharf serve` with `[storage] backend = "s3"` (prefix
# bench/, path-style, streaming blob GETs: no redirect) and, for the manifest rows, one on the filesystem
# back-end. The wharf column is Wharf on the bucket; the distribution column holds the reference of each row:
# Wharf on the filesystem (manifest GETs), or Garage itself, reached with signed curl requests (blob GET and
# PUT). Then the S3 requests Wharf makes per pull and per push, from `wharf_s3_requests_total` in /metrics.
S3_PREFIX=bench/ S3_IMG_REPO=bench/s3img
S3_GET_BYTES=$BIG_BYTES S3_PUSH_BYTES=$PUSH_BYTES
[ "$QUICK" = 1 ] && S3_GET_BYTES=$((256 * MiB))
S3_MGET_KEYS=(s3_mget_c64_rps s3_mget_c64_p50 s3_mget_c64_p99 s3_mget_c64_cpu)
S3_GET_KEYS=(s3_get_mbs s3_get_wharf_cpu s3_get_garage_cpu s3_get_ratio)
S3_PUSH_KEYS=(s3_push_mbs s3_push_wharf_cpu s3_push_garage_cpu s3_push_ratio)
S3_REQ_KEYS=(s3_req_pull1 s3_req_pull2 s3_req_pull2_per s3_req_push s3_req_push_per)
S3_ALL_KEYS=("${S3_MGET_KEYS[@]}" s3_mget_ratio s3_mget_garage_cpu s3_mget_s3_per "${S3_GET_KEYS[@]}" "${S3_PUSH_KEYS[@]}" "${S3_REQ_KEYS[@]}")
declare -A S3=()

forget_pid() {  # pid: drop it from the exit trap's list (a process that has exited: its pid may be reused)
  local p keep=()
  for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  STARTED_PIDS=("${keep[@]}")
}

# s3_start_garage: scripts/s3-server.sh in $WORK/garage; its KEY=VALUE lines land in S3[...], Garage's pid in
# PID[garage] and the exit trap's list; a curl config (-K) with the signing options in $WORK/s3-curl.cfg (the
# secret stays off the command lines). Returns 1 with S3_NA set on failure.
s3_start_garage() {
  local dir=$WORK/garage out=$WORK/garage.env p rc k v
  log "[s3] starting Garage: scripts/s3-server.sh (RUST_LOG=garage=warn)"
  # in the background so that an interrupt during start-up reaches it: the exit trap kills the script and its
  # children, Garage among them until the script returns
  RUST_LOG=garage=warn bash "$REPO_ROOT/scripts/s3-server.sh" "$dir" >"$out" 2>"$WORK/garage-start.err" &
  p=$!; STARTED_PIDS+=("$p")
  wait "$p"; rc=$?
  forget_pid "$p"
  while IFS='=' read -r k v; do
    case $k in S3_ENDPOINT|S3_REGION|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|S3_BUCKET|GARAGE_PID) S3[$k]=$v ;; esac
  done <"$out"
  [ -n "${S3[GARAGE_PID]:-}" ] && STARTED_PIDS+=("${S3[GARAGE_PID]}")
  if [ "$rc" != 0 ] || [ -z "${S3[GARAGE_PID]:-}" ] || [ -z "${S3[S3_ENDPOINT]:-}" ]; then
    S3_NA="scripts/s3-server.sh failed (exit $rc): $(grep -v '^ *$' "$WORK/garage-start.err" | head -n 3 | tr '\n' ' ' | cut -c1-300)"
    return 1
  fi
  PID[garage]=${S3[GARAGE_PID]} LOGF[garage]=$dir/garage.log BASE[garage]=${S3[S3_ENDPOINT]} DEAD[garage]=""
  ( umask 077
    # no "Expect:" to switch 100-continue off as the uploads to wharf do: curl 7.88 would sign the removed header
    # and Garage answers 400 "signed header `expect` is not present"
    printf 'aws-sigv4 = "aws:amz:%s:s3"\nuser = "%s:%s"\nheader = "x-amz-content-sha256: UNSIGNED-PAYLOAD"\n' \
      "${S3[S3_REGION]}" "${S3[AWS_ACCESS_KEY_ID]}" "${S3[AWS_SECRET_ACCESS_KEY]}" >"$WORK/s3-curl.cfg" )
  NOTES+=("s3: Garage $("$(s3_garage_bin)" --version 2>/dev/null | awk '{print $2}') on ${S3[S3_ENDPOINT]} (region ${S3[S3_REGION]}, bucket ${S3[S3_BUCKET]}; scripts/s3-server.sh: one node, replication 1, lmdb, metadata_fsync = false, data_fsync = false, no compression)")
}
s3_garage_bin() {  # the binary scripts/s3-server.sh uses
  if [ -n "${GARAGE_BIN:-}" ]; then echo "$GARAGE_BIN"
  elif [ -x "${GARAGE_ROOT:-/work/tools/garage}/bin/garage" ]; then echo "${GARAGE_ROOT:-/work/tools/garage}/bin/garage"
  else command -v garage || echo garage; fi
}

# curl_timed METHOD URL [curl args...]: one request, the body (if any) to /dev/null; T_CODE, T_SIZE (bytes
# received, or sent for a PUT), T_TIME (curl time_total, s); curl's errors in $WORK/curl-timed.err
curl_timed() {
  local method=$1 url=$2 out up; shift 2
  out=$(curl -sS --max-time "$CURL_MAX" -X "$method" -o /dev/null \
        -w '%{http_code} %{size_download} %{size_upload} %{time_total}' "$@" "$url" 2>"$WORK/curl-timed.err") || true
  read -r T_CODE T_SIZE up T_TIME <<<"$out"
  [ "$method" = PUT ] && T_SIZE=$up
  T_CODE=${T_CODE:-000}
}
# s3_curl METHOD KEY [curl args...]: curl_timed with Garage's signing options (-K $WORK/s3-curl.cfg), bucket key
# KEY, path-style
s3_curl() { local m=$1 k=$2; shift 2; curl_timed "$m" "${S3[S3_ENDPOINT]}/${S3[S3_BUCKET]}/$k" -K "$WORK/s3-curl.cfg" "$@"; }

# s3_snap NAME FILE: wharf NAME's /metrics text into FILE. s3_delta BEFORE AFTER: S3_DELTA_N = S3 requests made
# in between (sum over ops), S3_DELTA_OPS = "op n, op n" (ops that moved), HTTP_DELTA_N = registry API requests
# answered in between (wharf_requests_total, every endpoint and status; /metrics itself is not counted)
s3_snap() { curl -s --max-time 10 "${BASE[$1]}/metrics" >"$2" 2>/dev/null; }
s3_has_metric() { grep -q '^wharf_s3_requests_total{' "$1"; }
s3_delta() {
  local out
  out=$(awk '
    FNR == 1 { f++ }
    /^wharf_s3_requests_total\{/ { match($1, /op="[^"]*"/); op = substr($1, RSTART + 4, RLENGTH - 5); s[f, op] = $2; ops[op] = 1 }
    /^wharf_requests_total\{/ { h[f] += $2 }
    END { n = 0; d = ""
      for (op in ops) { v = s[2, op] - s[1, op]; if (v != 0) { n += v; d = d (d == "" ? "" : ", ") op " " v } }
      printf "%d|%d|%s\n", n, h[2] - h[1], d }' "$1" "$2")
  IFS='|' read -r S3_DELTA_N HTTP_DELTA_N S3_DELTA_OPS <<<"$out"
  # awk walks ops in hash order: sort them by name
  S3_DELTA_OPS=$(tr ',' '\n' <<<"$S3_DELTA_OPS" | sed 's/^ *//' | grep -v '^$' | sort | paste -sd, - | sed 's/,/, /g')
}

s3_manifest_get() {
  local img out cfs=distribution
  if ! start_aux wharf wharf-fs "$WORK/s3-fs-data"; then
    na wharf "the filesystem-backed wharf did not start" "${S3_MGET_KEYS[@]}" s3_mget_ratio s3_mget_garage_cpu s3_mget_s3_per
    na distribution "the filesystem-backed wharf did not start" "${S3_MGET_KEYS[@]}"; return
  fi
  for img in wharf-fs wharf-s3; do
    out=$("${REGCLIENT[@]}" push-image "${BASE[$img]}" "$REPO" v1 "$WORK/$img-image" --seed 11 2>>"$WORK/$img-helper.err")
    if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
      problem "$img" "push small image $REPO:v1: $(jq -r '.problems | join("; ")' <<<"$out" 2>/dev/null | cut -c1-400)"
    fi
  done
  cmp -s "$WORK/wharf-fs-image/manifest.json" "$WORK/wharf-s3-image/manifest.json" ||
    problem wharf-s3 "the small image pushed with push-image --seed 11 has different manifests on the two back-ends"
  auth_load "$cfs" wharf-fs s3_mget_c64 "/v2/$REPO/manifests/v1"
  stop_aux wharf-fs
  local g0 g1 b=$WORK/s3-mget.before a=$WORK/s3-mget.after
  s3_snap wharf-s3 "$b"; g0=$(cpu_ticks "${PID[garage]}")
  auth_load wharf wharf-s3 s3_mget_c64 "/v2/$REPO/manifests/v1"
  g1=$(cpu_ticks "${PID[garage]}"); s3_snap wharf-s3 "$a"
  s3_delta "$b" "$a"
  if num "$HTTP_DELTA_N" && [ "$HTTP_DELTA_N" -gt 0 ]; then
    set_res wharf s3_mget_garage_cpu "$(calc "($g1 - $g0) / $CLK_TCK * 1e6 / $HTTP_DELTA_N")"
    if s3_has_metric "$a"; then
      set_res wharf s3_mget_s3_per "$(calc "$S3_DELTA_N / $HTTP_DELTA_N")"
      NOTES+=("s3: during the S3-backed manifest GET load: $HTTP_DELTA_N manifest GETs answered, $S3_DELTA_N S3 requests (${S3_DELTA_OPS:-none})")
    else
      na wharf "no wharf_s3_requests_total metric" s3_mget_s3_per
    fi
  else
    na wharf "no manifest GET counted in wharf_requests_total" s3_mget_garage_cpu s3_mget_s3_per
  fi
  if num "${R[wharf.s3_mget_c64_rps]:-}" && num "${R[$cfs.s3_mget_c64_rps]:-}"; then
    set_res wharf s3_mget_ratio "$(calc "${R[wharf.s3_mget_c64_rps]} / ${R[$cfs.s3_mget_c64_rps]}")"
  else
    na wharf "a manifest GET run was not measured" s3_mget_ratio
  fi
}

# s3_gen FILE BYTES: random bytes (never seen by Garage: it stores blocks by content hash, and wharf does not
# rewrite a blob it holds), written out (sync) so that write-back does not land on the timed transfer
s3_gen() { head -c "$2" /dev/urandom >"$1"; sync; }

s3_big_get() {
  local f=$WORK/s3-big.bin dg hex key url got r c0 g0 wt=0 wg=0 dg_=0 best_w=n/a best_d=n/a tries_w="" tries_d="" mbs
  local mb=$((S3_GET_BYTES / MiB))
  log "[s3] $mb MiB blob: push through wharf (untimed), then GETs through wharf and straight from Garage"
  s3_gen "$f" "$S3_GET_BYTES"
  dg=sha256:$(openssl dgst -sha256 -r "$f" | cut -d' ' -f1); hex=${dg#sha256:}
  if ! push_blob wharf-s3 "$f" "$dg"; then
    rm -f "$f"; na wharf "could not push the $mb MiB blob (see problems)" "${S3_GET_KEYS[@]}"; na distribution "blob not pushed" s3_get_mbs s3_get_garage_cpu; return
  fi
  rm -f "$f"
  NOTES+=("s3: the $mb MiB blob's push (untimed set-up, monolithic): $(calc "$S3_GET_BYTES / $PUSH_SECS / 1e6" | xargs printf '%.0f') MB/s")
  url=${BASE[wharf-s3]}/v2/$REPO/blobs/$dg key=${S3_PREFIX}blobs/sha256/${hex:0:2}/$hex
  # warm-up reads: through wharf with the content checked, straight from Garage with the size checked
  got=sha256:$(curl -sS --max-time "$CURL_MAX" "$url" | openssl dgst -sha256 -r | cut -d' ' -f1)
  if [ "$got" != "$dg" ]; then
    problem wharf-s3 "GET /v2/$REPO/blobs/$dg: body hashes to $got"
    na wharf "big blob content mismatch through wharf" "${S3_GET_KEYS[@]}"; na distribution "not measured" s3_get_mbs s3_get_garage_cpu; return
  fi
  s3_curl GET "$key"
  if [ "$T_CODE" != 200 ] || [ "$T_SIZE" != "$S3_GET_BYTES" ]; then
    problem garage "signed GET /${S3[S3_BUCKET]}/$key -> $T_CODE, $T_SIZE bytes (expected 200 and $S3_GET_BYTES: the blob's object under prefix $S3_PREFIX) $(head -c 300 "$WORK/curl-timed.err")"
    na distribution "direct GET of the blob's object failed (see problems)" s3_get_mbs s3_get_garage_cpu; key=""
  fi
  local b=$WORK/s3-get.before a=$WORK/s3-get.after
  # interleaved, best of BIG_REPEAT each: through wharf, then straight from Garage
  for r in $(seq "$BIG_REPEAT"); do
    [ "$r" = 1 ] && s3_snap wharf-s3 "$b"
    c0=$(cpu_ticks "${PID[wharf-s3]}") g0=$(cpu_ticks "${PID[garage]}")
    curl_timed GET "$url"
    wt=$((wt + $(cpu_ticks "${PID[wharf-s3]}") - c0)) wg=$((wg + $(cpu_ticks "${PID[garage]}") - g0))
    [ "$r" = 1 ] && s3_snap wharf-s3 "$a"
    if [ "$T_CODE" = 200 ] && [ "$T_SIZE" = "$S3_GET_BYTES" ]; then
      mbs=$(calc "$S3_GET_BYTES / $T_TIME / 1e6"); tries_w+="${tries_w:+, }$(fmt "$mbs" %.0f)"
      { [ "$best_w" = n/a ] || awk -v a="$mbs" -v b="$best_w" 'BEGIN { exit !(a > b) }'; } && best_w=$mbs
    else
      problem wharf-s3 "GET /v2/$REPO/blobs/$dg -> $T_CODE, $T_SIZE bytes (expected 200 and $S3_GET_BYTES; try $r) $(head -c 300 "$WORK/curl-timed.err")"
    fi
    [ -n "$key" ] || continue
    g0=$(cpu_ticks "${PID[garage]}")
    s3_curl GET "$key"
    dg_=$((dg_ + $(cpu_ticks "${PID[garage]}") - g0))
    if [ "$T_CODE" = 200 ] && [ "$T_SIZE" = "$S3_GET_BYTES" ]; then
      mbs=$(calc "$S3_GET_BYTES / $T_TIME / 1e6"); tries_d+="${tries_d:+, }$(fmt "$mbs" %.0f)"
      { [ "$best_d" = n/a ] || awk -v a="$mbs" -v b="$best_d" 'BEGIN { exit !(a > b) }'; } && best_d=$mbs
    else
      problem garage "signed GET /${S3[S3_BUCKET]}/$key -> $T_CODE, $T_SIZE bytes (try $r)"
    fi
  done
  local gb; gb=$(calc "$BIG_REPEAT * $S3_GET_BYTES / 1e9")
  set_res wharf s3_get_mbs "$best_w"
  if num "$best_w"; then
    set_res wharf s3_get_wharf_cpu "$(calc "$wt / $CLK_TCK / $gb")"
    set_res wharf s3_get_garage_cpu "$(calc "$wg / $CLK_TCK / $gb")"
  else na wharf "no GET through wharf succeeded (see problems)" s3_get_mbs s3_get_wharf_cpu s3_get_garage_cpu; fi
  if [ -n "$key" ]; then
    set_res distribution s3_get_mbs "$best_d"
    if num "$best_d"; then set_res distribution s3_get_garage_cpu "$(calc "$dg_ / $CLK_TCK / $gb")"
    else na distribution "no direct GET succeeded (see problems)" s3_get_mbs s3_get_garage_cpu; fi
  fi
  if num "$best_w" && num "$best_d"; then set_res wharf s3_get_ratio "$(calc "$best_w / $best_d")"
  else na wharf "a GET kind was not measured" s3_get_ratio; fi
  s3_delta "$b" "$a"
  NOTES+=("s3: $mb MiB blob GET tries, MB/s (best is reported): through wharf $tries_w; straight from Garage ${tries_d:-n/a}$(s3_has_metric "$a" && echo "; S3 requests wharf made for one GET through it: $S3_DELTA_N (${S3_DELTA_OPS:-none})")")
}

s3_push() {
  local f=$WORK/s3-push.bin dg r c0 g0 wt=0 wg=0 dg_=0 best_w=n/a best_d=n/a tries_w="" tries_d="" mbs mb=$((S3_PUSH_BYTES / MiB))
  local b=$WORK/s3-push.before a=$WORK/s3-push.after
  log "[s3] $mb MiB push through wharf (monolithic) and straight to Garage (PUT), $BIG_REPEAT x each"
  for r in $(seq "$BIG_REPEAT"); do
    s3_gen "$f" "$S3_PUSH_BYTES"; dg=sha256:$(openssl dgst -sha256 -r "$f" | cut -d' ' -f1)
    [ "$r" = 1 ] && s3_snap wharf-s3 "$b"
    c0=$(cpu_ticks "${PID[wharf-s3]}") g0=$(cpu_ticks "${PID[garage]}")
    if push_blob wharf-s3 "$f" "$dg"; then
      wt=$((wt + $(cpu_ticks "${PID[wharf-s3]}") - c0)) wg=$((wg + $(cpu_ticks "${PID[garage]}") - g0))
      mbs=$(calc "$S3_PUSH_BYTES / $PUSH_SECS / 1e6"); tries_w+="${tries_w:+, }$(fmt "$mbs" %.0f)"
      { [ "$best_w" = n/a ] || awk -v a="$mbs" -v b="$best_w" 'BEGIN { exit !(a > b) }'; } && best_w=$mbs
    fi
    [ "$r" = 1 ] && s3_snap wharf-s3 "$a"
    s3_gen "$f" "$S3_PUSH_BYTES"
    g0=$(cpu_ticks "${PID[garage]}")
    s3_curl PUT "bench-direct/push-$r.bin" -T "$f"
    dg_=$((dg_ + $(cpu_ticks "${PID[garage]}") - g0))
    if [ "$T_CODE" = 200 ] && [ "$T_SIZE" = "$S3_PUSH_BYTES" ]; then
      mbs=$(calc "$S3_PUSH_BYTES / $T_TIME / 1e6"); tries_d+="${tries_d:+, }$(fmt "$mbs" %.0f)"
      { [ "$best_d" = n/a ] || awk -v a="$mbs" -v b="$best_d" 'BEGIN { exit !(a > b) }'; } && best_d=$mbs
    else
      problem garage "signed PUT /${S3[S3_BUCKET]}/bench-direct/push-$r.bin ($S3_PUSH_BYTES bytes, x-amz-content-sha256: UNSIGNED-PAYLOAD) -> $T_CODE, $T_SIZE bytes sent $(head -c 300 "$WORK/curl-timed.err")"
    fi
  done
  rm -f "$f"
  local gb; gb=$(calc "$S3_PUSH_BYTES / 1e9")
  if num "$best_w"; then
    local n; n=$(tr ',' '\n' <<<"$tries_w" | grep -c .)
    set_res wharf s3_push_mbs "$best_w"
    set_res wharf s3_push_wharf_cpu "$(calc "$wt / $CLK_TCK / ($n * $gb)")"
    set_res wharf s3_push_garage_cpu "$(calc "$wg / $CLK_TCK / ($n * $gb)")"
  else na wharf "no push through wharf succeeded (see problems)" s3_push_mbs s3_push_wharf_cpu s3_push_garage_cpu; fi
  if num "$best_d"; then
    set_res distribution s3_push_mbs "$best_d"
    set_res distribution s3_push_garage_cpu "$(calc "$dg_ / $CLK_TCK / ($BIG_REPEAT * $gb)")"
  else na distribution "no direct PUT succeeded (see problems)" s3_push_mbs s3_push_garage_cpu; fi
  if num "$best_w" && num "$best_d"; then set_res wharf s3_push_ratio "$(calc "$best_w / $best_d")"
  else na wharf "a push kind was not measured" s3_push_ratio; fi
  s3_delta "$b" "$a"
  NOTES+=("s3: $mb MiB push tries, MB/s (best is reported; fresh random bytes for every try): through wharf (${SINGLE_POST[wharf-s3]:-?} = single POST ?digest=) ${tries_w:-n/a}; straight to Garage (one signed PUT, UNSIGNED-PAYLOAD) ${tries_d:-n/a}$(s3_has_metric "$a" && echo "; S3 requests wharf made for one push: $S3_DELTA_N (${S3_DELTA_OPS:-none})")")
}

# S3 requests per pull and per push (wharf_s3_requests_total before and after, against the registry API
# requests wharf answered in between): the small 2-platform image pushed (set-up, counted in the Notes), pulled
# whole twice (the second pull is the warm one), then a new image of the same shape pushed.
s3_requests() {
  local b=$WORK/s3-req.before a=$WORK/s3-req.after out sp=no
  s3_snap wharf-s3 "$a"
  if ! s3_has_metric "$a"; then na wharf "no wharf_s3_requests_total metric" "${S3_REQ_KEYS[@]}"; return; fi
  # anything in the background (nothing should be): the counters over 2 idle seconds
  sleep 2; s3_snap wharf-s3 "$b"; s3_delta "$a" "$b"
  [ "$S3_DELTA_N" = 0 ] || NOTES+=("s3: wharf made $S3_DELTA_N S3 requests in 2 idle seconds (${S3_DELTA_OPS}): background work counts in the rows below")
  [ "${SINGLE_POST[wharf-s3]:-}" = true ] && sp=yes
  s3_count_push() {  # tag label -> S3_PUSH_DESC or returns 1
    s3_snap wharf-s3 "$b"
    out=$("${REGCLIENT[@]}" push-multi "${BASE[wharf-s3]}" "$1" "$WORK/s3-img-$1.json" --repo "$S3_IMG_REPO" \
          --platforms linux/amd64,linux/arm64 --layers 1 --layer-bytes 16K-64K --single-post "$sp" 2>>"$WORK/helper.err")
    s3_snap wharf-s3 "$a"
    if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
      problem wharf-s3 "push of the 2-platform image $S3_IMG_REPO:$1: $(jq -r '.problems | join("; ")' <<<"$out" 2>/dev/null | cut -c1-400)"; return 1
    fi
    s3_delta "$b" "$a"
  }
  s3_count_pull() {  # verify-flag...
    s3_snap wharf-s3 "$b"
    out=$("${REGCLIENT[@]}" pull "${BASE[wharf-s3]}" "$S3_IMG_REPO" v1 --platform all "$@" 2>>"$WORK/helper.err")
    s3_snap wharf-s3 "$a"
    if [ "$(jq -r .ok <<<"$out" 2>/dev/null)" != true ]; then
      problem wharf-s3 "whole pull of $S3_IMG_REPO:v1: $(jq -r '.problems[0]' <<<"$out" 2>/dev/null | cut -c1-400)"; return 1
    fi
    s3_delta "$b" "$a"
  }
  if ! s3_count_push v1; then na wharf "the 2-platform image could not be pushed (see problems)" "${S3_REQ_KEYS[@]}"; return; fi
  NOTES+=("s3: the set-up push of $S3_IMG_REPO:v1 (index, 2 manifests, 2 configs, 2 layers of 16-64 KiB; a new repository; regclient.py push-multi, single POST ?digest= per blob: $sp) made $S3_DELTA_N S3 requests for $HTTP_DELTA_N registry API requests (${S3_DELTA_OPS:-none})")
  local i
  for i in 1 2; do
    local v=(); [ "$i" = 1 ] && v=(--verify)
    if s3_count_pull "${v[@]}"; then
      set_res wharf "s3_req_pull$i" "$S3_DELTA_N for $HTTP_DELTA_N HTTP requests: ${S3_DELTA_OPS:-none}"
      [ "$i" = 2 ] && set_res wharf s3_req_pull2_per "$(calc "$S3_DELTA_N / $HTTP_DELTA_N")"
    else
      na wharf "pull $i failed (see problems)" "s3_req_pull$i"; [ "$i" = 2 ] && na wharf "the warm pull failed" s3_req_pull2_per
    fi
  done
  if s3_count_push v2; then
    set_res wharf s3_req_push "$S3_DELTA_N for $HTTP_DELTA_N HTTP requests: ${S3_DELTA_OPS:-none}"
    set_res wharf s3_req_push_per "$(calc "$S3_DELTA_N / $HTTP_DELTA_N")"
  else
    na wharf "the push of a new image failed (see problems)" s3_req_push s3_req_push_per
  fi
}

scenario_s3() {
  log "=== s3 ==="
  local k
  # rows whose distribution column has no counterpart
  for k in s3_mget_ratio s3_mget_garage_cpu s3_mget_s3_per s3_get_wharf_cpu s3_get_ratio s3_push_wharf_cpu s3_push_ratio "${S3_REQ_KEYS[@]}"; do
    R[distribution.$k]="—"
  done
  if [ "$ONLY" = distribution ]; then na wharf "--only distribution" "${S3_ALL_KEYS[@]}"; na distribution "--only distribution" "${S3_MGET_KEYS[@]}" s3_get_mbs s3_get_garage_cpu s3_push_mbs s3_push_garage_cpu; return; fi
  if [ -n "${WHARF_NA:-}" ]; then na wharf "$WHARF_NA" "${S3_ALL_KEYS[@]}"; return; fi
  S3_NA=""
  if ! s3_start_garage; then
    na wharf "$S3_NA" "${S3_ALL_KEYS[@]}"; na distribution "$S3_NA" "${S3_MGET_KEYS[@]}" s3_get_mbs s3_get_garage_cpu s3_push_mbs s3_push_garage_cpu; return
  fi
  local cfg=$WORK/wharf-s3.toml
  ( umask 077
    cat >"$cfg" <<EOC
[storage]
backend = "s3"
bucket = "${S3[S3_BUCKET]}"
endpoint = "${S3[S3_ENDPOINT]}"
region = "${S3[S3_REGION]}"
prefix = "$S3_PREFIX"
path_style = true
access_key_id = "${S3[AWS_ACCESS_KEY_ID]}"
secret_access_key = "${S3[AWS_SECRET_ACCESS_KEY]}"
# UNSIGNED-PAYLOAD like the straight PUT it is compared with (and like any https:// endpoint by default).
sign_payload = false
EOC
  )
  if ! start_aux wharf wharf-s3 "$WORK/s3-scratch" "$cfg"; then
    na wharf "wharf with [storage] backend = \"s3\" did not start (see problems)" "${S3_ALL_KEYS[@]}"
    na distribution "not measured: the S3-backed wharf did not start" "${S3_MGET_KEYS[@]}" s3_get_mbs s3_get_garage_cpu s3_push_mbs s3_push_garage_cpu
    stop_aux garage; return
  fi
  s3_snap wharf-s3 "$WORK/s3-start.metrics"
  s3_has_metric "$WORK/s3-start.metrics" || NOTES+=("s3: wharf's /metrics has no wharf_s3_requests_total: the S3-request rows are n/a")
  probe_single_post wharf-s3
  s3_manifest_get
  s3_big_get
  s3_push
  s3_requests
  stop_aux wharf-s3
  stop_aux garage
  return 0
}

s3_table_rows() {
  local g="$((S3_GET_BYTES / MiB)) MiB" p="$((S3_PUSH_BYTES / MiB)) MiB"
  [ "$S3_GET_BYTES" -ge $((1024 * MiB)) ] && g="$((S3_GET_BYTES / 1024 / MiB)) GiB"
  rows+=(
    "s3_mget_c64_rps|s3: manifest GET by tag, 64 conns, wharf on the S3 back-end (Garage on loopback; distribution column: wharf on the filesystem back-end, same image): req/s ↑|hi|%.0f"
    "s3_mget_c64_p50|s3: manifest GET, 64 conns: p50 ms ↓|lo|%.3f"
    "s3_mget_c64_p99|s3: manifest GET, 64 conns: p99 ms ↓|lo|%.3f"
    "s3_mget_c64_cpu|s3: manifest GET, 64 conns: wharf CPU µs/req ↓|lo|%.1f"
    "s3_mget_garage_cpu|s3: manifest GET, 64 conns: Garage CPU µs per manifest GET|-|%.1f"
    "s3_mget_s3_per|s3: manifest GET, 64 conns: S3 requests per manifest GET ↓|-|%.2f"
    "s3_mget_ratio|s3: manifest GET req/s, S3 / filesystem back-end (target ≥ 0.5) ↑|-|%.2f"
    "s3_get_mbs|s3: $g blob GET, 1 client, streamed through wharf from the bucket (distribution column: the same object straight from Garage, signed curl GET): MB/s ↑ (best of $BIG_REPEAT)|hi|%.0f"
    "s3_get_wharf_cpu|s3: $g blob GET through wharf: wharf CPU s/GB ↓|-|%.3f"
    "s3_get_garage_cpu|s3: $g blob GET: Garage CPU s/GB (through wharf / straight) ↓|lo|%.3f"
    "s3_get_ratio|s3: blob GET MB/s, through wharf / straight from Garage (target ≥ 0.8) ↑|-|%.2f"
    "s3_push_mbs|s3: $p blob push to wharf on the S3 back-end, monolithic (distribution column: one signed PUT of the same size straight to Garage): MB/s ↑ (best of $BIG_REPEAT)|hi|%.0f"
    "s3_push_wharf_cpu|s3: $p push through wharf: wharf CPU s/GB ↓|-|%.3f"
    "s3_push_garage_cpu|s3: $p push: Garage CPU s/GB (through wharf / straight) ↓|lo|%.3f"
    "s3_push_ratio|s3: push MB/s, through wharf / straight to Garage (target ≥ 0.8) ↑|-|%.2f"
    "s3_req_pull1|s3: S3 requests wharf made for a whole pull of a 2-platform image (index by tag, 2 manifests, 2 configs, 2 layers: 7 HTTP requests), first pull: total, per op|-|%s"
    "s3_req_pull2|s3: the same, second (warm) pull: total, per op|-|%s"
    "s3_req_pull2_per|s3: warm pull: S3 requests per wharf HTTP request ↓|-|%.2f"
    "s3_req_push|s3: S3 requests wharf made for the push of a new image of that shape (4 single-POST blob uploads, 2 manifest PUTs, the index PUT by tag: 7 HTTP requests): total, per op|-|%s"
    "s3_req_push_per|s3: push: S3 requests per wharf HTTP request ↓|-|%.2f"
  )
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
times_of() {  # value reference -> "N.NNx"
  num "$1" && num "$2" || { echo "n/a"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2fx", a / b }'
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
    "bigblob_get_1_mbs|$big blob GET, 1 client: MB/s ↑ (best of $BIG_REPEAT)|hi|%.0f"
    "bigblob_get_1_cpu|$big blob GET, 1 client: server CPU s/GB ↓|lo|%.3f"
    "bigblob_get_8_mbs|$big blob GET, 8 clients: MB/s ↑ (best of $BIG_REPEAT)|hi|%.0f"
    "bigblob_get_8_cpu|$big blob GET, 8 clients: server CPU s/GB ↓|lo|%.3f"
    "bigblob_rss_anon|$big blob GETs: peak anonymous RSS (RssAnon, sampled every 0.2 s): MiB ↓|lo|%.1f"
    "bigblob_rss_file|$big blob GETs: peak file-backed RSS (RssFile: mapped page cache, shared): MiB|-|%.1f"
    "push_mono_mbs|$push push, monolithic: MB/s ↑|hi|%.0f"
    "push_mono_cpu|$push push, monolithic: server CPU s/GB ↓|lo|%.3f"
    "push_chunked_mbs|$push push, chunked 16 MiB PATCHes: MB/s ↑|hi|%.0f"
    "tags_put_rps|create $TAG_COUNT tags (PUT manifest, 4 clients): req/s ↑|hi|%.0f"
    "tags_list_ms|tags/list with $((TAG_COUNT + 1)) tags, median of $TAGLIST_ITER: ms ↓|lo|%.2f"
    "tags_list_count|tags/list: tags returned|-|%s"
    "burst_get_c64_p99|manifest GET p99 at 64 connections during a burst of 1,000 tag PUTs: ms ↓|lo|%.3f"
    "burst_get_c64_rps|manifest GET, 64 conns, during the tag PUT bursts: req/s ↑|hi|%.0f"
    "burst_put_rps|tag PUTs during those GETs (4 clients, bursts of 1,000): req/s ↑|hi|%.0f"
    "wrong_digest|wrong ?digest= rejected with 400 DIGEST_INVALID|-|%s"
    "peak_rss_mib|peak RSS over the run (VmHWM, anonymous + file-backed): MiB ↓|lo|%.1f"
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
    "verify_deep_mbs|verify: wharf verify --deep --all over the synced set (every blob and manifest re-hashed, both cores): MB/s ↑|hi|%.0f"
    "verify_deep_ratio|verify: MB/s / one core's openssl SHA-256 (target ≥ 0.8)|-|%.2f"
    "auth_anon_c64_rps|auth on: manifest GET by tag, 64 conns, anonymous (wharf: a rule lets anonymous pull; distribution: same data, no auth): req/s ↑|hi|%.0f"
    "auth_anon_c64_p99|auth on: manifest GET, 64 conns, anonymous: p99 ms ↓|lo|%.3f"
    "auth_anon_c64_cpu|auth on: manifest GET, 64 conns, anonymous: server CPU µs/req ↓|lo|%.1f"
    "auth_basic_c64_rps|auth on: manifest GET, 64 conns, Basic credentials (bcrypt cost 5 htpasswd entry): req/s ↑|hi|%.0f"
    "auth_basic_c64_p99|auth on: manifest GET, 64 conns, Basic: p99 ms ↓|lo|%.3f"
    "auth_basic_c64_cpu|auth on: manifest GET, 64 conns, Basic: server CPU µs/req ↓|lo|%.1f"
    "auth_basic_ratio|auth on: Basic / anonymous req/s (wharf target ≥ 0.8) ↑|hi|%.2f"
    "auth_bearer_c64_rps|auth on: manifest GET, 64 conns, Bearer token (one token from /auth/token): req/s ↑|hi|%.0f"
    "auth_bearer_c64_p99|auth on: manifest GET, 64 conns, Bearer: p99 ms ↓|lo|%.3f"
    "auth_bearer_c64_cpu|auth on: manifest GET, 64 conns, Bearer: server CPU µs/req ↓|lo|%.1f"
    "auth_bearer_ratio|auth on: Bearer / anonymous req/s (target ≥ 0.9) ↑|hi|%.2f"
    "auth_token_c64_rps|auth: token issue, GET /auth/token (Basic, scope pull on $REPO), 64 conns: req/s ↑ (target ≥ 2,000)|hi|%.0f"
    "auth_token_c64_p99|auth: token issue, 64 conns: p99 ms ↓|lo|%.3f"
    "auth_token_c64_cpu|auth: token issue, 64 conns: server CPU µs/token ↓|lo|%.1f"
    "tagrules_plain_rps|tag PUTs (new tags, 4 clients), no [[tags]] rules: req/s ↑ (best of 2)|hi|%.0f"
    "tagrules_plain_cpu|tag PUTs, no rules: server CPU µs/PUT ↓|lo|%.1f"
    "tagrules_rules_rps|tag PUTs, a [[tags]] immutable rule covering every tag: req/s ↑|hi|%.0f"
    "tagrules_rules_cpu|tag PUTs with the rule: server CPU µs/PUT ↓|lo|%.1f"
    "tagrules_plain_ucpu|tag PUTs, no rules: server user CPU µs/PUT (without the kernel's fsync work) ↓|lo|%.1f"
    "tagrules_rules_ucpu|tag PUTs with the rule: server user CPU µs/PUT ↓|lo|%.1f"
    "tagrules_ratio|tag PUTs: server user CPU with rules / without (target ≤ 1.05) ↓|-|%.3f"
  )
  section gc && gc_table_rows
  section ops && ops_table_rows
  section s3 && s3_table_rows
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
  echo "| ceiling: disk, 256 MiB written with fsync (dd conv=fsync, the data dir's filesystem): MB/s (machine) | $(fmt "$C_DISK" %.0f) | $(fmt "$C_DISK" %.0f) | — |"
  echo "| ceiling: push = min(SHA-256 one core, fsync'd disk write): MB/s (machine) | $(fmt "$C_PUSH" %.0f) | $(fmt "$C_PUSH" %.0f) | — |"
  local mode mname n
  for mode in sendfile rw; do
    mname="sendfile on"; [ "$mode" = rw ] && mname="sendfile off, output_buffers 4 256k"
    for n in 1 8; do
      echo "| ceiling: nginx ($mname), $big file from page cache, $n client(s): MB/s (best of $BIG_REPEAT) | $(fmt "${NGX[$mode.$n.mbs]:-n/a}" %.0f) | $(fmt "${NGX[$mode.$n.mbs]:-n/a}" %.0f) | — |"
      echo "| ceiling: nginx ($mname), $n client(s): nginx CPU s/GB | $(fmt "${NGX[$mode.$n.cpu]:-n/a}" %.3f) | $(fmt "${NGX[$mode.$n.cpu]:-n/a}" %.3f) | — |"
    done
  done
  local reg
  local -A P1 P2 G
  for reg in wharf distribution; do
    P1[$reg]=$(pct_of "${R[$reg.push_mono_mbs]:-}" "$C_PUSH")
    P2[$reg]=$(pct_of "${R[$reg.push_chunked_mbs]:-}" "$C_PUSH")
    for mode in sendfile rw; do
      for n in 1 8; do
        G[$reg.$mode.$n.mbs]=$(times_of "${R[$reg.bigblob_get_${n}_mbs]:-}" "${NGX[$mode.$n.mbs]:-}")
        G[$reg.$mode.$n.cpu]=$(times_of "${R[$reg.bigblob_get_${n}_cpu]:-}" "${NGX[$mode.$n.cpu]:-}")
      done
    done
  done
  echo "| monolithic push / push ceiling | ${P1[wharf]} | ${P1[distribution]} | — |"
  echo "| chunked push / push ceiling | ${P2[wharf]} | ${P2[distribution]} | — |"
  for mode in sendfile rw; do
    mname="nginx sendfile on"; [ "$mode" = rw ] && mname="nginx sendfile off"
    for n in 1 8; do
      echo "| $big GET $n client(s): MB/s / $mname (target ≥ 0.9x) | ${G[wharf.$mode.$n.mbs]} | ${G[distribution.$mode.$n.mbs]} | — |"
      echo "| $big GET $n client(s): server CPU s/GB / $mname's (target ≤ 1.5x) | ${G[wharf.$mode.$n.cpu]} | ${G[distribution.$mode.$n.cpu]} | — |"
    done
  done
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
    printf 'ceiling.openssl_sha256_mbs\t%s\nceiling.disk_fsync_mbs\t%s\nceiling.push_mbs\t%s\n' "$C_OPENSSL" "$C_DISK" "$C_PUSH"
    for n in "${!NGX[@]}"; do printf 'ceiling.nginx.%s\t%s\n' "$n" "${NGX[$n]}"; done | sort
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
  WHARF_NA="" GC_SEED_NA=""; WHARF_BIN=${WHARF_BIN:-}
  local reg need_wharf=0
  for reg in "${REGISTRIES[@]}"; do [ "$reg" = wharf ] && need_wharf=1; done
  { section mirror || section sync || section gc || section ops || section s3; } && need_wharf=1   # wharf is the upstream there; gc, ops, s3 are wharf's
  [ "$need_wharf" = 1 ] && build_wharf
  section registry && make_test_data
  wait_for_idle
  C_OPENSSL="n/a" C_DISK="n/a" C_PUSH="n/a"
  if section registry; then
    ceiling_openssl_sha256
    ceiling_disk_fsync
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
  section auth && scenario_auth
  section tagrules && scenario_tagrules
  section gc && scenario_gc
  section ops && scenario_ops
  section s3 && scenario_s3
  LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
  write_report
}

main
