#!/usr/bin/env bash
# Starts a throw-away single-node Garage S3 server on 127.0.0.1 for tests.
#
#   scripts/s3-server.sh DIR
#
# DIR must not exist yet or be empty; it receives garage.toml, meta/, data/ and garage.log.
# Ports are chosen by the OS (bind to port 0), so several servers can run side by side.
# On success prints, on stdout, one KEY=VALUE per line:
#   S3_ENDPOINT, S3_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_BUCKET, GARAGE_PID
# and leaves the server running in the background; the caller stops it with `kill $GARAGE_PID`
# (and removes DIR). On failure prints the server log to stderr, stops the server and exits 1.
#
# The binary: $GARAGE_BIN, else $GARAGE_ROOT/bin/garage (default root /work/tools/garage, as
# scripts/install-s3-server.sh installs it), else `garage` on PATH.
# Optional: S3_BUCKET (default wharf), S3_REGION (default garage), GARAGE_DB_ENGINE (lmdb|sqlite,
# default lmdb), S3_SERVER_TIMEOUT seconds to wait for readiness (default 60).
set -Eeuo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
  echo "s3-server.sh: $dir is not empty; give a fresh directory" >&2
  exit 2
fi
mkdir -p "$dir/meta" "$dir/data"
dir=$(cd "$dir" && pwd)

garage_root=${GARAGE_ROOT:-/work/tools/garage}
if [ -n "${GARAGE_BIN:-}" ]; then
  garage=$GARAGE_BIN
elif [ -x "$garage_root/bin/garage" ]; then
  garage=$garage_root/bin/garage
elif command -v garage >/dev/null 2>&1; then
  garage=$(command -v garage)
else
  echo "s3-server.sh: no garage binary; run scripts/install-s3-server.sh" >&2
  exit 1
fi

bucket=${S3_BUCKET:-wharf}
region=${S3_REGION:-garage}
db_engine=${GARAGE_DB_ENGINE:-lmdb}
timeout=${S3_SERVER_TIMEOUT:-60}

# Three distinct free ports, all held open until all are chosen.
read -r s3_port rpc_port admin_port < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
rpc_secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
admin_token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

cfg=$dir/garage.toml
cat >"$cfg" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "$db_engine"
replication_factor = 1
metadata_fsync = false
data_fsync = false
compression_level = "none"

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$rpc_secret"

[s3_api]
s3_region = "$region"
api_bind_addr = "127.0.0.1:$s3_port"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$admin_token"
EOF
chmod 600 "$cfg"

# The server must not hold the caller's stdout (tests read it through a pipe) nor its stdin.
NO_COLOR=1 RUST_LOG=${RUST_LOG:-garage=info} nohup "$garage" -c "$cfg" server </dev/null >"$dir/garage.log" 2>&1 &
pid=$!

fail() {
  echo "s3-server.sh: $*" >&2
  echo "---- $dir/garage.log ----" >&2
  tail -n 20 "$dir/garage.log" >&2 || true
  kill "$pid" 2>/dev/null || true
  exit 1
}
trap 'fail "command failed at line $LINENO"' ERR

g() { "$garage" -c "$cfg" "$@"; }

deadline=$((SECONDS + timeout))
# 1. RPC answers. (`garage node id` alone is no test: it reads the node key from meta/ on disk.)
until g status >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || fail "garage exited early"
  [ $SECONDS -lt $deadline ] || fail "no RPC answer within ${timeout}s"
  sleep 0.2
done
node_id=$(g node id -q 2>/dev/null)
node_id=${node_id%%@*}

# 2. One-node layout, a key, the bucket, the key allowed on the bucket.
g layout assign -z dc1 -c 1G "$node_id" >/dev/null
g layout apply --version 1 >/dev/null
key_out=$(g key create wharf-test)
key_id=$(printf '%s\n' "$key_out" | sed -n 's/^Key ID:[[:space:]]*//p' | head -n1)
secret=$(printf '%s\n' "$key_out" | sed -n 's/^Secret key:[[:space:]]*//p' | head -n1)
[ -n "$key_id" ] && [ -n "$secret" ] || fail "could not parse 'garage key create' output: $key_out"
g bucket create "$bucket" >/dev/null
g bucket allow --read --write --owner "$bucket" --key "$key_id" >/dev/null

# 3. The S3 endpoint answers a signed HEAD on the bucket with 200.
endpoint=http://127.0.0.1:$s3_port
# Garage insists on x-amz-content-sha256, which curl only signs when given: the empty body's hash.
empty_sha=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
until [ "$(curl -s -o /dev/null -w '%{http_code}' -I --aws-sigv4 "aws:amz:$region:s3" \
  --user "$key_id:$secret" -H "x-amz-content-sha256: $empty_sha" "$endpoint/$bucket" 2>/dev/null)" = 200 ]; do
  kill -0 "$pid" 2>/dev/null || fail "garage exited early"
  [ $SECONDS -lt $deadline ] || fail "S3 endpoint not ready within ${timeout}s"
  sleep 0.2
done
trap - ERR

cat <<EOF
S3_ENDPOINT=$endpoint
S3_REGION=$region
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$secret
S3_BUCKET=$bucket
GARAGE_PID=$pid
EOF
