#!/usr/bin/env bash
# Runs Wharf's whole test suite on a fresh Debian/Ubuntu machine, installing what the tests need first:
# the third-party clients and servers the integration tests drive (skopeo, docker-registry, containerd + ctr),
# and openssl/curl for the TLS upstream test.
# Needs root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v skopeo >/dev/null 2>&1 || packages+=(skopeo)
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

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
