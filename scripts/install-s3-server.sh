#!/usr/bin/env bash
# Installs the S3-compatible test server (Garage, from crates.io) into a private root unless a
# working binary of the pinned version is already there. Builds from source: about
# 24 minutes wall clock on 2 shared cores (about 24 CPU-minutes), so keep $GARAGE_ROOT between runs.
#
#   scripts/install-s3-server.sh        # then: $GARAGE_ROOT/bin/garage
#
# GARAGE_ROOT (default /work/tools/garage) is the cargo --root; GARAGE_VERSION pins the crate.
# Prints the binary's path on stdout.
set -euo pipefail

garage_root=${GARAGE_ROOT:-/work/tools/garage}
version=${GARAGE_VERSION:-2.5.0}
bin=$garage_root/bin/garage

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -qF "$version ["; then
  echo "$bin"
  exit 0
fi

command -v cargo >/dev/null 2>&1 || { echo "install-s3-server.sh: cargo is needed" >&2; exit 1; }
echo "==> building garage $version from crates.io into $garage_root (takes a while)" >&2
# Default features (bundled-libs, metrics, lmdb, sqlite, k2v): the set this was tested with.
nice -n 19 cargo install --locked --quiet garage --version "=$version" --root "$garage_root" >&2
"$bin" --version >&2
echo "$bin"
