#!/usr/bin/env bash
# Install what veil's tests, perf runs and demo need on a Debian (bookworm-like) machine.
#
# Usage: scripts/install-deps.sh [--tunnel-peers | --no-tunnel-peers]
#
#   --tunnel-peers     also install the peers we test and measure against:
#                      wireguard-go (Debian package), boringtun-cli and gotatun-cli
#                      (crates.io; gotatun-cli installs the binary `gotatun`). Default.
#   --no-tunnel-peers  only the basics: iproute2, iputils-ping, iperf3, wireguard-tools, procps, nftables,
#                      conntrack, tcpdump (the sticky-source test captures with it), and systemd (for systemd-analyze, which checks scripts/veil@.service).
#                      curl and promtool.
#
# Environment:
#   BORINGTUN_VERSION  boringtun-cli version to install (default below).
#   GOTATUN_VERSION    gotatun-cli version to install (default below).
#   CARGO_DEB_VERSION  cargo-deb version to install (builds the .deb: scripts/package.sh).
#   VEIL_TOOLS_ROOT    `cargo install --root` for boringtun-cli and gotatun-cli; default is cargo's own home
#                      (~/.cargo), whose bin/ is already on PATH. We avoid a path inside the work
#                      tree because CI and new sessions get a fresh clone, which would force a
#                      rebuild (about a minute on 2 cores) on every run.
#
# Idempotent: apt-get update runs only when a package is missing, and boringtun-cli and
# gotatun-cli are rebuilt only when the installed version differs. Needs root (apt-get) and only Debian's and crates.io's
# registries.
set -euo pipefail

BORINGTUN_VERSION="${BORINGTUN_VERSION:-0.7.1}"
GOTATUN_VERSION="${GOTATUN_VERSION:-0.10.2}"
CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.8.0}"
TOOLS_ROOT="${VEIL_TOOLS_ROOT:-${CARGO_HOME:-$HOME/.cargo}}"
export DEBIAN_FRONTEND=noninteractive

tunnel_peers=yes
for arg in "$@"; do
    case "$arg" in
        --tunnel-peers) tunnel_peers=yes ;;
        --no-tunnel-peers) tunnel_peers=no ;;
        -h | --help)
            # The header comment, up to the first line that is not a comment.
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        *)
            echo "install-deps.sh: unknown argument '$arg' (expected --tunnel-peers or --no-tunnel-peers)" >&2
            exit 2
            ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root (it calls apt-get install); try: sudo $0 $*" >&2
    exit 1
fi

log() { echo "install-deps: $*" >&2; }

# Runs a noisy command silently; shows its output only if it fails.
quietly() {
    local out
    if ! out="$("$@" 2>&1)"; then
        printf '%s\n' "$out" >&2
        echo "install-deps.sh: failed: $*" >&2
        return 1
    fi
}

# --- Debian packages -------------------------------------------------------------------------
packages=(iproute2 iputils-ping iperf3 wireguard-tools procps nftables conntrack tcpdump ca-certificates curl)
# systemd-analyze verifies the unit file; only its files are needed, not systemd as PID 1.
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
# promtool (the metrics test checks veil's exposition with it) ships only in Debian's prometheus
# package; skip that sizeable package where a promtool is already on PATH.
if ! command -v promtool >/dev/null 2>&1; then
    packages+=(prometheus)
fi
if [ "$tunnel_peers" = yes ]; then
    # Debian ships wireguard-go since bullseye; it is the reference userspace implementation.
    packages+=(wireguard-go)
fi

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    quietly apt-get update -qq
    # --no-install-recommends: wireguard-tools would otherwise pull in the kernel-module tooling
    # and a resolver, neither of which veil needs.
    quietly apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- the account veil runs as once its interface is set up (veil up --user, default veil) -----
if ! getent passwd veil >/dev/null; then
    log "adding system user veil"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --user-group veil
fi

# --- boringtun-cli and gotatun-cli (crates.io) ------------------------------------------------
boringtun_bin="$TOOLS_ROOT/bin/boringtun-cli"
gotatun_bin="$TOOLS_ROOT/bin/gotatun"
cargo_deb_bin="$TOOLS_ROOT/bin/cargo-deb"

installed_version() { # binary
    # `--version` prints e.g. "boringtun 0.7.1" or "gotatun-cli 0.10.2"; the last word is it.
    if [ -x "$1" ]; then
        "$1" --version 2>/dev/null | awk '{print $NF}'
    fi
}

install_crate() { # crate version binary
    local crate="$1" version="$2" bin="$3"
    if [ "$(installed_version "$bin")" = "$version" ]; then
        return 0
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "install-deps.sh: cargo not found; $crate is built from crates.io. Install a Rust toolchain (rustup or Debian's 'cargo') and rerun" >&2
        exit 1
    fi
    if ! command -v cc >/dev/null 2>&1; then
        log "installing build-essential ($crate's ring dependency compiles C)"
        quietly apt-get update -qq
        quietly apt-get install -y -qq --no-install-recommends build-essential
    fi
    log "building $crate $version into $TOOLS_ROOT (a minute or more on 2 cores)"
    local start=$SECONDS build_dir
    # A throwaway target dir, so we neither reuse nor pollute a project's CARGO_TARGET_DIR.
    build_dir="$(mktemp -d)"
    CARGO_TARGET_DIR="$build_dir" cargo install --quiet --locked \
        --root "$TOOLS_ROOT" --version "$version" "$crate"
    rm -rf "$build_dir"
    log "$crate built in $((SECONDS - start)) s"
}

# cargo-deb builds the Debian package (scripts/package.sh).
install_crate cargo-deb "$CARGO_DEB_VERSION" "$cargo_deb_bin"

if [ "$tunnel_peers" = yes ]; then
    install_crate boringtun-cli "$BORINGTUN_VERSION" "$boringtun_bin"
    install_crate gotatun-cli "$GOTATUN_VERSION" "$gotatun_bin"
fi

# --- report ----------------------------------------------------------------------------------
# One line per tool. A tool that fails to run here fails the script: a half-working install is
# worse than a loud one.
status=0
report() {
    local name="$1"
    shift
    local out
    # Capture all output first: piping into `head` could SIGPIPE the tool and read as a failure.
    if out="$("$@" 2>&1)" && [ -n "$out" ]; then
        printf '%-14s %s\n' "$name" "${out%%$'\n'*}"
    else
        printf '%-14s MISSING OR BROKEN (%s)\n' "$name" "$*"
        status=1
    fi
}

report ip ip -V
report ping ping -V
report iperf3 iperf3 --version
report wg wg --version
report curl curl --version
report promtool promtool --version
report ps ps --version
report nft nft --version
report conntrack conntrack --version
report tcpdump tcpdump --version
report systemd-analyze systemd-analyze --version
report cargo-deb "$cargo_deb_bin" --version
if [ "$tunnel_peers" = yes ]; then
    report wireguard-go wireguard-go --version
    report boringtun-cli "$boringtun_bin" --version
    report gotatun "$gotatun_bin" --version
    if ! command -v boringtun-cli >/dev/null 2>&1; then
        log "note: $TOOLS_ROOT/bin is not on PATH; add it: export PATH=\"$TOOLS_ROOT/bin:\$PATH\""
    fi
fi
exit "$status"
