#!/usr/bin/env bash
# Runs Wharf's whole test suite on a fresh Debian/Ubuntu machine, installing what the tests need first:
# the third-party clients and servers the integration tests drive (skopeo, podman, umoci, docker-registry,
# containerd + ctr, headless Chromium + chromedriver for the console), openssl/curl for the TLS upstream test,
# python3-yaml to parse generated YAML, and an S3-compatible server (Garage) for the S3 back-end.
# Needs root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v skopeo >/dev/null 2>&1 || packages+=(skopeo)
command -v podman >/dev/null 2>&1 || packages+=(podman)
command -v umoci >/dev/null 2>&1 || packages+=(umoci)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
python3 -c 'import yaml' >/dev/null 2>&1 || packages+=(python3-yaml)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v curl >/dev/null 2>&1 || packages+=(curl)
command -v docker-registry >/dev/null 2>&1 || packages+=(docker-registry)
{ command -v containerd && command -v ctr; } >/dev/null 2>&1 || packages+=(containerd)
if [ ${#packages[@]} -gt 0 ]; then
  echo "==> installing test dependencies: ${packages[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# The S3 back-end's tests run against a real S3-compatible server: Garage, built from crates.io once
# (about 20 minutes on 2 cores; kept under $GARAGE_ROOT, default /work/tools/garage, between runs).
echo "==> S3-compatible test server (Garage)"
GARAGE_BIN=$(./scripts/install-s3-server.sh)
export GARAGE_BIN
# With a server installed, a test that cannot start one fails instead of skipping.
export WHARF_REQUIRE_S3=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# cargo-nextest runs each test in its own process under the limits in .config/nextest.toml (a hung test is
# killed and reported instead of stalling the run). The machine image usually has it; otherwise build it.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
echo "==> cargo nextest run"
cargo nextest run --workspace --locked --no-tests=fail
