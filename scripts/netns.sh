#!/usr/bin/env bash
# Two network namespaces joined by a veth pair: the "wire" for end-to-end tests, perf runs and the
# README demo. Needs root and iproute2.
#
# Usage:
#   scripts/netns.sh up PREFIX                 create namespaces PREFIXa and PREFIXb
#   scripts/netns.sh down PREFIX               delete them, killing what still runs inside;
#                                              succeeds when they do not exist
#   scripts/netns.sh exec PREFIX a|b CMD...    run CMD inside PREFIXa or PREFIXb
#
# Layout after `up` (each side's veth has the same name, so scripts need not care which side):
#   PREFIXa: lo, veth0 192.168.241.1/24 fd41::1/64
#   PREFIXb: lo, veth0 192.168.241.2/24 fd41::2/64
#
# Environment overrides:
#   NETNS_A_V4, NETNS_B_V4   IPv4 address/prefix of side a, b (default 192.168.241.1/24, .2/24)
#   NETNS_A_V6, NETNS_B_V6   IPv6 address/prefix of side a, b (default fd41::1/64, fd41::2/64)
#   NETNS_IFNAME             name of the veth in both namespaces (default veth0)
#   NETNS_MTU                MTU of the veth pair (default: the kernel's, 1500)
#
# Note for tunnels inside: wireguard-go and boringtun-cli put their UAPI socket at
# /var/run/wireguard/IFNAME.sock, which all namespaces share. Give each side's tunnel its own name
# (e.g. wga, wgb), or the second one replaces the first's socket and `wg set` configures the wrong
# side.
set -euo pipefail

A_V4="${NETNS_A_V4:-192.168.241.1/24}"
B_V4="${NETNS_B_V4:-192.168.241.2/24}"
A_V6="${NETNS_A_V6:-fd41::1/64}"
B_V6="${NETNS_B_V6:-fd41::2/64}"
IFNAME="${NETNS_IFNAME:-veth0}"
MTU="${NETNS_MTU:-}"

usage() {
    # The header comment, up to the first line that is not a comment.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

die() {
    echo "netns.sh: $*" >&2
    exit 1
}

ns_exists() {
    # `ip netns list` prints "NAME" or "NAME (id: N)". Captured first: with pipefail, an early
    # `grep -q` exit could SIGPIPE the writer and read as "absent".
    local names
    names="$(ip netns list 2>/dev/null | awk '{print $1}')"
    grep -qxF -- "$1" <<<"$names"
}

check_prefix() {
    local prefix="$1"
    # Namespace names become file names under /run/netns; keep them plain.
    [[ "$prefix" =~ ^[A-Za-z0-9_.-]{1,32}$ ]] ||
        die "PREFIX '$prefix' must be 1..=32 characters of A-Z a-z 0-9 _ . - (e.g. veiltest)"
}

# Stops everything still running inside a namespace: first politely, then for sure.
kill_inside() {
    local ns="$1" pids
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086  # one pid per word
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 20); do
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        [ -n "$pids" ] || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    # Give the kernel a moment to reap them so the namespace can go.
    for _ in $(seq 1 20); do
        [ -n "$(ip netns pids "$ns" 2>/dev/null || true)" ] || return 0
        sleep 0.1
    done
}

down() {
    local prefix="$1" side ns
    for side in a b; do
        ns="${prefix}${side}"
        if ns_exists "$ns"; then
            kill_inside "$ns"
            # Deleting a namespace also destroys its end of the veth, and with it the pair.
            ip netns del "$ns" 2>/dev/null || echo "netns.sh: could not delete $ns" >&2
        fi
    done
    return 0
}

setup_side() {
    local ns="$1" v4="$2" v6="$3"
    ip -n "$ns" link set lo up
    # DAD would hold the IPv6 address "tentative" for a second or two; tests want it now.
    ip netns exec "$ns" sysctl -qw "net.ipv6.conf.${IFNAME}.disable_ipv6=0" \
        "net.ipv6.conf.${IFNAME}.accept_dad=0"
    if [ -n "$MTU" ]; then
        ip -n "$ns" link set "$IFNAME" mtu "$MTU"
    fi
    ip -n "$ns" addr add "$v4" dev "$IFNAME"
    ip -n "$ns" -6 addr add "$v6" dev "$IFNAME" nodad
    ip -n "$ns" link set "$IFNAME" up
}

wait_link_up() {
    local ns="$1"
    for _ in $(seq 1 50); do
        if ip -n "$ns" -br link show dev "$IFNAME" | awk '{print $2}' | grep -qx UP; then
            return 0
        fi
        sleep 0.1
    done
    die "$IFNAME in $ns did not come up within 5 s"
}

up() {
    local prefix="$1" a="${1}a" b="${1}b"
    [ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"
    for ns in "$a" "$b"; do
        if ns_exists "$ns"; then
            die "namespace $ns already exists; run: $0 down $prefix"
        fi
    done
    # Leave nothing half-built behind if a step fails (set -e exits; EXIT traps still run).
    built=no
    trap '[ "$built" = yes ] || { echo "netns.sh: setup failed, cleaning up" >&2; down "$prefix"; }' EXIT
    ip netns add "$a"
    ip netns add "$b"
    # Created straight inside the namespaces, so the name never clashes in the root namespace
    # or between parallel runs with different prefixes.
    ip link add "$IFNAME" netns "$a" type veth peer name "$IFNAME" netns "$b"
    setup_side "$a" "$A_V4" "$A_V6"
    setup_side "$b" "$B_V4" "$B_V6"
    # Link state settles asynchronously; return only once both ends can carry traffic.
    wait_link_up "$a"
    wait_link_up "$b"
    built=yes
    echo "netns.sh: $a $IFNAME $A_V4 $A_V6 <-> $b $IFNAME $B_V4 $B_V6"
}

[ $# -ge 2 ] || usage
cmd="$1"
prefix="$2"
shift 2
check_prefix "$prefix"

case "$cmd" in
    up)
        [ $# -eq 0 ] || usage
        up "$prefix"
        ;;
    down)
        [ $# -eq 0 ] || usage
        down "$prefix"
        ;;
    exec)
        [ $# -ge 2 ] || usage
        side="$1"
        shift
        case "$side" in
            a | b) ;;
            *) die "side must be 'a' or 'b', not '$side'" ;;
        esac
        ns_exists "${prefix}${side}" || die "namespace ${prefix}${side} does not exist; run: $0 up $prefix"
        exec ip netns exec "${prefix}${side}" "$@"
        ;;
    *) usage ;;
esac
