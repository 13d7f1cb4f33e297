#!/usr/bin/env bash
# Runs the whole test suite: unit, integration and doc tests, every feature.
# Works on a fresh Debian-like machine with Rust installed.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --all-features --all-targets
cargo test --all-features --doc
