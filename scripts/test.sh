#!/usr/bin/env bash
# The whole test suite: installs what the tests need (iproute2, iperf3,
# wireguard-tools, wireguard-go, boringtun-cli), checks formatting and lints,
# then runs every test, end-to-end namespace tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
export PATH="$PWD/.tools/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
echo "== loom models of the doorbell and baton protocols (dataplane/src/loom_models.rs)"
cargo test -p veil-dataplane --features loom --lib loom_models -- --test-threads 1
echo "== fuzz targets (5 s each; says so and skips without nightly)"
bash scripts/fuzz.sh 5
