#!/usr/bin/env bash
# veil against WireGuard peers: iperf3 and ping through tunnels between two network namespaces
# joined by veth, on this machine. Builds veil (release), installs what it needs, measures, prints
# a markdown table, and writes a JSON file and a PNG chart to perf/results/.
#
# Usage: perf/run.sh [--duration S] [--repeat N] [--only LIST] [--pin "FLAGS"] [--sweep-pinning]
#                    [--pipelines LIST] [--clients K] [--probes N] [--mtu N] [--no-install]
#                    [--no-build] [--keep]
#
#   --duration S      seconds of each iperf3 run (default 4: the default run then takes about
#                     7 minutes on 2 cores, 10 with a first-time install and build)
#   --repeat N        repetitions; each runs every implementation once, interleaved (default 3)
#   --only LIST       comma-separated implementations and/or workloads to run, e.g.
#                     "veil-pipeline,wireguard-go,tcp1,udp64"; a list naming only implementations
#                     runs all workloads and the other way round. Implementations: veth
#                     veil-pipeline veil-single wireguard-go boringtun gotatun. Workloads: tcp1 tcp4
#                     udp1400 udp64 rtt rtt-load, and (only when named) many many-std
#   --pin "FLAGS"     extra flags passed to both veil processes, e.g. "--rx-cpu 1 --crypto-cpu 0"
#   --sweep-pinning   replace the two veil entries by one per sensible thread-to-CPU layout for
#                     this machine's CPU count, and report each
#   --pipelines LIST  the veil-pipeline server (side a) runs N pipelines (`veil up --pipelines`;
#                     default 1); a comma-separated list (e.g. 1,2) is a sweep: one entry
#                     veil-pipeline-nN per value. veil-single stays one pipeline
#   --clients K       client namespaces of the many-clients workloads (default 4, 1..=16)
#   --probes N        ping probes per RTT measurement (default 1000, 2 ms apart)
#   --mtu N           MTU of every tunnel (default 1440: 1500-byte veth minus 60 bytes of
#                     IPv4+UDP+WireGuard overhead, so 1400-byte UDP payloads are not fragmented)
#   --no-install      skip the install step (iperf3, wg, wireguard-go, boringtun-cli, gotatun,
#                     matplotlib)
#   --no-build        skip `cargo build --release` (uses the existing binary)
#   --keep            keep the work directory (configs, logs, raw iperf3/ping output) and say where
#
# Workloads, all from namespace b (client) to namespace a (server) through the tunnel:
#   tcp1, tcp4   iperf3 TCP, 1 and 4 streams: receiver Gbit/s; CPU-seconds of the tunnel processes
#                (both ends, utime+stime from /proc) per GB delivered
#   udp1400      iperf3 UDP `-b 0 -l 1400`: delivered packets/s, loss % (vs packets sent)
#   udp64        the same with 64-byte payloads
#   rtt          ping, --probes probes 2 ms apart, idle tunnel: p50, p99
#   rtt-load     the same while one iperf3 TCP stream runs through the tunnel
#   many         K client namespaces (--clients), each with its own tunnel to the gateway (side a)
#                over its own veth (198.18.I.0/24, the benchmarking range), each running one
#                iperf3 TCP stream at once: aggregate receiver Gbit/s, and CPU-seconds of the
#                gateway process alone per GB. The clients run the gateway's implementation
#                (veil clients for veil, in the same threading mode)
#   many-std     the same with standard clients: wireguard-go, whatever the gateway runs
#
# Needs root, iproute2 and a Rust toolchain. Leaves nothing behind (namespaces, interfaces,
# processes, UAPI sockets), also on failure or Ctrl-C. Environment: CARGO_TARGET_DIR is honoured.
set -uo pipefail

# veil's protection sections for benchmark runs (see where the configs are written).
veil_unlimited='[rate_limiting]
per_client_bandwidth_mbps = 0
per_client_pps = 0

[degradation]
enable_graceful_degradation = false
'

repo="$(cd "$(dirname "$0")/.." && pwd)"
perf_dir="$repo/perf"

duration=4
repeat=3
only=""
pin=""
pipelines=1
clients=4
sweep=no
probes=1000
mtu=1440
do_install=yes
do_build=yes
keep=no

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}
die() {
    echo "run.sh: $*" >&2
    exit 1
}
need_arg() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
}

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) need_arg "$@"; duration="$2"; shift 2 ;;
        --repeat) need_arg "$@"; repeat="$2"; shift 2 ;;
        --only) need_arg "$@"; only="$2"; shift 2 ;;
        --pin) [ $# -ge 2 ] || die "--pin needs a value"; pin="$2"; shift 2 ;;
        --pipelines) need_arg "$@"; pipelines="$2"; shift 2 ;;
        --clients) need_arg "$@"; clients="$2"; shift 2 ;;
        --sweep-pinning) sweep=yes; shift ;;
        --probes) need_arg "$@"; probes="$2"; shift 2 ;;
        --mtu) need_arg "$@"; mtu="$2"; shift 2 ;;
        --no-install) do_install=no; shift ;;
        --no-build) do_build=no; shift ;;
        --keep) keep=yes; shift ;;
        -h | --help) usage ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || die "--duration must be a whole number of seconds >= 1, not '$duration'"
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a whole number >= 1, not '$repeat'"
[[ "$pipelines" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--pipelines must be N or a list N,M,... of whole numbers >= 1, not '$pipelines'"
if ! [[ "$clients" =~ ^[1-9][0-9]*$ ]] || [ "$clients" -gt 16 ]; then
    die "--clients must be 1..=16, not '$clients'"
fi
[[ "$probes" =~ ^[1-9][0-9]*$ ]] || die "--probes must be a whole number >= 1, not '$probes'"
if ! [[ "$mtu" =~ ^[0-9]+$ ]] || [ "$mtu" -lt 1280 ] || [ "$mtu" -gt 1440 ]; then
    die "--mtu must be 1280..=1440 (the veth is 1500 and WireGuard over IPv4 adds 60), not '$mtu'"
fi
if [ -n "$pin" ] && [ "$sweep" = yes ]; then
    die "--pin and --sweep-pinning exclude each other: the sweep chooses the pinning"
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, veth, TUN); try: sudo $0"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- cleanup: whatever happens, nothing stays behind -------------------------------------------
prefix="vp$$"      # namespaces vpPIDa / vpPIDb
ifa="wp$$a"        # tunnel interface names; unique per run because wireguard-go and boringtun
ifb="wp$$b"        # put their UAPI sockets in /var/run/wireguard/, shared by all namespaces
work="$(mktemp -d /tmp/veil-perf.XXXXXX)"
pids=()            # every long-running process we started
cleaned=no

stop_pids() {
    local p alive=()
    for p in "${pids[@]}"; do
        kill -0 "$p" 2>/dev/null && alive+=("$p")
    done
    [ "${#alive[@]}" -gt 0 ] || { pids=(); return 0; }
    kill -TERM "${alive[@]}" 2>/dev/null
    for _ in $(seq 1 30); do
        local still=()
        for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && still+=("$p"); done
        [ "${#still[@]}" -gt 0 ] || break
        sleep 0.1
    done
    for p in "${alive[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for p in "${alive[@]}"; do wait "$p" 2>/dev/null; done
    pids=()
}

teardown_session() {
    many_down
    stop_pids
    bash "$repo/scripts/netns.sh" down "$prefix" >/dev/null 2>&1
    rm -f "/var/run/wireguard/$ifa.sock" "/var/run/wireguard/$ifb.sock"
}

cleanup() {
    local rc=$?
    [ "$cleaned" = no ] || return 0
    cleaned=yes
    trap - EXIT INT TERM
    teardown_session
    if [ "$keep" = yes ]; then
        echo "run.sh: work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
    # Say so loudly if anything survived.
    local left
    left="$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}[ab]$" || true)"
    [ -z "$left" ] || echo "run.sh: WARNING: namespaces left behind: $left" >&2
    left="$(ip -br link 2>/dev/null | awk '{print $1}' | grep -E "^(${ifa}|${ifb})" || true)"
    [ -z "$left" ] || echo "run.sh: WARNING: interfaces left behind: $left" >&2
    return "$rc"
}
on_signal() {
    echo >&2
    log "interrupted ($1): cleaning up"
    cleanup
    exit "$2"
}
trap cleanup EXIT
trap 'on_signal SIGINT 130' INT
trap 'on_signal SIGTERM 143' TERM

# Namespaces of an earlier run that was killed outright (SIGKILL, power loss) carry the dead
# run's PID in their name; remove them so they do not pile up.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^vp[0-9]+a$' || true); do
    old="${ns#vp}"
    old="${old%a}"
    if [ "$old" != "$$" ] && ! kill -0 "$old" 2>/dev/null; then
        log "removing namespaces vp${old}a/vp${old}b left by an earlier run that was killed"
        bash "$repo/scripts/netns.sh" down "vp$old" >/dev/null 2>&1
        rm -f "/var/run/wireguard/wp${old}a.sock" "/var/run/wireguard/wp${old}b.sock"
    fi
done

# Runs a command in the background with its output in OUT and waits for it, so a signal
# interrupts the wait at once (bash defers traps until a foreground child ends). The redirection
# is the command's own: redirecting the call would also redirect this shell (and the trap's
# messages) while it waits. Returns the command's status.
run() { # out command...
    local out="$1"
    shift
    "$@" >"$out" 2>&1 &
    local p=$!
    pids+=("$p")
    wait "$p"
    local rc=$?
    local keep=() q
    for q in "${pids[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
    pids=("${keep[@]}")
    return "$rc"
}

# --- install and build -------------------------------------------------------------------------
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
PY=/usr/bin/python3

if [ "$do_install" = yes ]; then
    log "install: iproute2, iperf3, wireguard-tools, wireguard-go, boringtun-cli, gotatun-cli (scripts/install-deps.sh)"
    bash "$repo/scripts/install-deps.sh" >"$work/install.log" 2>&1 || {
        cat "$work/install.log" >&2
        die "scripts/install-deps.sh failed"
    }
    # Perf-only: Debian's python3 with matplotlib for the chart.
    if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
        log "install: python3-matplotlib (Debian)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-matplotlib; } \
            >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; die "apt-get install python3-matplotlib failed"; }
    fi
fi
for tool in ip iperf3 ping wg wireguard-go boringtun-cli gotatun "$PY"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found; run without --no-install"
done

target_dir="${CARGO_TARGET_DIR:-$repo/target}"
veil="$target_dir/release/veil"
if [ "$do_build" = yes ]; then
    log "build: cargo build --release (target dir $target_dir)"
    (cd "$repo" && cargo build --release --quiet --bin veil) || die "cargo build --release failed"
fi
[ -x "$veil" ] || die "$veil not found; run without --no-build"

helper() { "$PY" "$perf_dir/perf.py" "$@"; }

# --- what to run -------------------------------------------------------------------------------
all_workloads=(tcp1 tcp4 udp1400 udp64 rtt rtt-load)
# Run only when named in --only (each sets up --clients more tunnels).
extra_workloads=(many many-std)
declare -A kind flags_a flags_b
impls=(veth)
kind[veth]=veth
add_veil() { # id, flags for side a, flags for side b
    impls+=("$1")
    kind[$1]=veil
    flags_a[$1]="$2"
    flags_b[$1]="$3"
}
if [ "$sweep" = yes ]; then
    mapfile -t cpus < <("$PY" -c 'import os; print("\n".join(map(str, sorted(os.sched_getaffinity(0)))))')
    n=${#cpus[@]}
    c0=${cpus[0]}
    c1=${cpus[1]:-$c0}
    c2=${cpus[2]:-$c0}
    P="--threading pipeline"
    S="--threading single"
    if [ "$n" -ge 3 ]; then
        add_veil "veil-p:rx$c0/cr$c1/tx$c2" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c2" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c2"
        add_veil "veil-p:rx$c0/cr$c1/tx$c0" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c0" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c0"
    elif [ "$n" -eq 2 ]; then
        add_veil "veil-p:rx$c0/cr$c1/tx$c0" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c0" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c0"
        add_veil "veil-p:rx$c0/cr$c1/tx$c1" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c1" "$P --rx-cpu $c0 --crypto-cpu $c1 --tx-cpu $c1"
        add_veil "veil-p:rx$c1/cr$c0/tx$c1" "$P --rx-cpu $c1 --crypto-cpu $c0 --tx-cpu $c1" "$P --rx-cpu $c1 --crypto-cpu $c0 --tx-cpu $c1"
    fi
    add_veil "veil-p:no-pin" "$P --no-pin" "$P --no-pin"
    add_veil "veil-s:cpu$c0" "$S --rx-cpu $c0" "$S --rx-cpu $c0"
    if [ "$n" -ge 2 ]; then
        add_veil "veil-s:cpu$c1" "$S --rx-cpu $c1" "$S --rx-cpu $c1"
        # The two tunnel ends share this machine: one CPU each.
        add_veil "veil-s:a$c0/b$c1" "$S --rx-cpu $c0" "$S --rx-cpu $c1"
    fi
    add_veil "veil-s:no-pin" "$S --no-pin" "$S --no-pin"
else
    IFS=',' read -r -a pipeline_counts <<<"$pipelines"
    for n in "${pipeline_counts[@]}"; do
        id=veil-pipeline
        [ "${#pipeline_counts[@]}" -eq 1 ] || id="veil-pipeline-n$n"
        add_veil "$id" "--threading pipeline --pipelines $n $pin" "--threading pipeline $pin"
    done
    add_veil veil-single "--threading single $pin" "--threading single $pin"
fi
impls+=(wireguard-go boringtun gotatun)
kind[wireguard-go]=wgo
kind[boringtun]=boringtun
kind[gotatun]=gotatun

sel_impls=()
sel_workloads=()
if [ -n "$only" ]; then
    IFS=',' read -r -a words <<<"$only"
    for w in "${words[@]}"; do
        w="${w// /}"
        [ -n "$w" ] || continue
        if [[ " ${all_workloads[*]} ${extra_workloads[*]} " == *" $w "* ]]; then
            sel_workloads+=("$w")
        elif [ -n "${kind[$w]+x}" ] || { [ "$sweep" = yes ] && [ "$w" = veil ]; }; then
            if [ "$w" = veil ]; then
                for i in "${impls[@]}"; do [ "${kind[$i]}" = veil ] && sel_impls+=("$i"); done
            else
                sel_impls+=("$w")
            fi
        else
            die "--only: '$w' is neither an implementation (${impls[*]}) nor a workload (${all_workloads[*]} ${extra_workloads[*]})"
        fi
    done
fi
[ "${#sel_impls[@]}" -gt 0 ] || sel_impls=("${impls[@]}")
[ "${#sel_workloads[@]}" -gt 0 ] || sel_workloads=("${all_workloads[@]}")

# --- machine and versions ----------------------------------------------------------------------
clk_tck="$(getconf CLK_TCK)"
records="$work/records.jsonl"
: >"$records"
first_line() { "$@" 2>&1 | head -n 1; }
veil_rev="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$repo" diff --quiet HEAD 2>/dev/null || veil_rev="$veil_rev+dirty"
cat >"$work/meta.env" <<EOF
cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
cores=$(nproc)
kernel=$(uname -r)
veil=veil $veil_rev ($(cd "$repo" && cargo pkgid -p veil 2>/dev/null | sed 's/.*[#@]//'))
wireguard-go=$(first_line wireguard-go --version)
boringtun-cli=$(first_line boringtun-cli --version)
gotatun-cli=$(first_line gotatun --version)
iperf3=$(first_line iperf3 --version)
wg=$(first_line wg --version)
ping=$(first_line ping -V)
duration=$duration
repeat=$repeat
probes=$probes
mtu=$mtu
pin=$pin
pipelines=$pipelines
clients=$clients
sweep=$sweep
only=$only
implementations=${sel_impls[*]}
workloads=${sel_workloads[*]}
EOF

# --- one implementation's tunnel ---------------------------------------------------------------
ns_a="${prefix}a" # server side
ns_b="${prefix}b" # client side
tunnel_pids=()
target=""
session=""

# Sum of utime+stime (clock ticks) of the tunnel processes, all threads.
cpu_ticks() {
    local p total=0 t
    for p in "${tunnel_pids[@]}"; do
        # Fields after the ")" that closes the command name: state is 3, utime 14, stime 15.
        t="$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')"
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

tunnel_alive() {
    local p
    for p in "${tunnel_pids[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}

wait_for() { # tries, command...
    local tries="$1"
    shift
    for _ in $(seq 1 "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# Like wait_for, but gives up at once if process PID exited.
wait_while_alive() { # pid tries command...
    local pid="$1" tries="$2"
    shift 2
    for _ in $(seq 1 "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

start_wg_peer() { # kind ns iface keyfile peerpub addr [endpoint]
    local k="$1" ns="$2" iface="$3" key="$4" peer="$5" addr="$6" ep="${7:-}" p
    local logf="$work/$session.$iface.log"
    rm -f "/var/run/wireguard/$iface.sock"
    if [ "$k" = wgo ]; then
        ip netns exec "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 \
            wireguard-go -f "$iface" >"$logf" 2>&1 &
    else
        # boringtun-cli and gotatun (Mullvad's fork of it) take the same command line.
        local bin=boringtun-cli
        [ "$k" = gotatun ] && bin=gotatun
        ip netns exec "$ns" "$bin" "$iface" --foreground --disable-drop-privileges \
            >"$logf" 2>&1 &
    fi
    p=$!
    pids+=("$p")
    tunnel_pids+=("$p")
    wait_while_alive "$p" 100 test -S "/var/run/wireguard/$iface.sock" || return 1
    local args=(private-key "$key" listen-port 51820 peer "$peer" allowed-ips 10.9.0.0/24)
    [ -z "$ep" ] || args+=(endpoint "$ep")
    ip netns exec "$ns" wg set "$iface" "${args[@]}" || return 1
    ip -n "$ns" addr add "$addr" dev "$iface" || return 1
    ip -n "$ns" link set "$iface" mtu "$mtu" up || return 1
}

veil_counters() { # impl prefix: both veil ends' `veil show --json`, for the offload counters
    [ "${kind[$1]}" = veil ] || return 0
    ip netns exec "$ns_a" "$veil" show "$ifa" --json >"$2.a" 2>/dev/null || true
    ip netns exec "$ns_b" "$veil" show "$ifb" --json >"$2.b" 2>/dev/null || true
}

start_veil() { # ns iface conf flags
    local ns="$1" iface="$2" conf="$3" flags="$4" p
    # shellcheck disable=SC2086  # flags are words
    ip netns exec "$ns" "$veil" up "$conf" --interface "$iface" $flags >"$work/$session.$iface.log" 2>&1 &
    p=$!
    pids+=("$p")
    tunnel_pids+=("$p")
    wait_while_alive "$p" 100 ip -n "$ns" link show "$iface" || return 1
}

start_session() { # impl
    local impl="$1" k="${kind[$1]}"
    tunnel_pids=()
    bash "$repo/scripts/netns.sh" up "$prefix" >"$work/netns.log" 2>&1 || {
        cat "$work/netns.log" >&2
        return 1
    }
    if [ "$k" = veth ]; then
        target=192.168.241.1
    else
        target=10.9.0.1
        local a_priv b_priv a_pub b_pub
        a_priv="$(wg genkey)"
        b_priv="$(wg genkey)"
        a_pub="$(wg pubkey <<<"$a_priv")"
        b_pub="$(wg pubkey <<<"$b_priv")"
        (umask 077 && echo "$a_priv" >"$work/a.key" && echo "$b_priv" >"$work/b.key")
        case "$k" in
            veil)
                (
                    umask 077
                    # The peers compared have no per-client limits or load shedding: lift
                    # veil's defaults (100 Mb/s per client, degradation) so the table compares
                    # the tunnels, not veil's protection settings.
                    printf '[Interface]\nPrivateKey = %s\nListenPort = 51820\nAddress = 10.9.0.1/24\nMTU = %s\n\n[Peer]\nPublicKey = %s\nAllowedIPs = 10.9.0.2/32\n\n%s' \
                        "$a_priv" "$mtu" "$b_pub" "$veil_unlimited" >"$work/a.conf"
                    printf '[Interface]\nPrivateKey = %s\nListenPort = 51820\nAddress = 10.9.0.2/24\nMTU = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = 192.168.241.1:51820\nAllowedIPs = 10.9.0.0/24\n\n%s' \
                        "$b_priv" "$mtu" "$a_pub" "$veil_unlimited" >"$work/b.conf"
                )
                start_veil "$ns_a" "$ifa" "$work/a.conf" "${flags_a[$impl]}" || return 1
                start_veil "$ns_b" "$ifb" "$work/b.conf" "${flags_b[$impl]}" || return 1
                ;;
            wgo | boringtun | gotatun)
                start_wg_peer "$k" "$ns_a" "$ifa" "$work/a.key" "$b_pub" 10.9.0.1/24 || return 1
                start_wg_peer "$k" "$ns_b" "$ifb" "$work/b.key" "$a_pub" 10.9.0.2/24 192.168.241.1:51820 || return 1
                ;;
        esac
    fi
    # First packet triggers the handshake; wait until the tunnel carries traffic.
    wait_for 100 ip netns exec "$ns_b" ping -c 1 -W 1 "$target" || return 1
    tunnel_alive || return 1
    if [ "$k" = veil ]; then # the AEAD backend veil's start-up line names, for the JSON
        echo "aead.$impl=$(grep -o 'aead [a-z-]*' "$work/$session.$ifa.log" | head -n 1 | cut -d' ' -f2)" >>"$work/meta.env"
    fi
    ip netns exec "$ns_a" iperf3 -s -p 5201 >"$work/iperf3-server.log" 2>&1 &
    pids+=("$!")
    wait_for 50 server_listening || return 1
}

server_listening() {
    ip netns exec "$ns_a" ss -ltnH 'sport = :5201' | grep -q .
}

show_logs() {
    local f
    for f in "$work/$session.$ifa.log" "$work/$session.$ifb.log"; do
        [ -s "$f" ] && { echo "--- $(basename "$f")"; tail -n 5 "$f"; } >&2
    done
}

# --- many clients: K more namespaces, each with a tunnel to the gateway ------------------------
many_ns=()   # client namespaces of the running many-clients workload
many_keys=() # the peers it added to the gateway (public keys)
many_pids=() # its client tunnels and iperf3 processes

# utime+stime (clock ticks) of the gateway process alone (the first tunnel process started).
gateway_ticks() {
    sed 's/.*) //' "/proc/${tunnel_pids[0]}/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

many_down() {
    local p ns key i
    for p in "${many_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${many_pids[@]}"; do
        for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    for key in "${many_keys[@]}"; do
        ip netns exec "$ns_a" wg set "$ifa" peer "$key" remove >/dev/null 2>&1
    done
    for ns in "${many_ns[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    for i in $(seq 1 "$clients"); do rm -f "/var/run/wireguard/${prefix}m$i.sock"; done
    many_ns=()
    many_keys=()
    many_pids=()
}

# Client I of the many-clients workload: namespace PREFIXcI joined to the gateway's namespace by
# a veth (198.18.I.1 there, .2 here), a tunnel of kind K with address 10.9.0.(10+I), its peer
# added to the gateway with `wg set`. Its processes go to many_pids, not tunnel_pids.
many_client() { # impl kind i
    local impl="$1" k="$2" i="$3"
    local ns="${prefix}c$i" iface="${prefix}m$i" addr="10.9.0.$((10 + i))"
    local priv pub gw_pub before=("${tunnel_pids[@]}")
    ip netns add "$ns" || return 1
    many_ns+=("$ns")
    ip -n "$ns_a" link add "m$i" type veth peer name veth0 netns "$ns" || return 1
    ip -n "$ns_a" addr add "198.18.$i.1/24" dev "m$i" || return 1
    ip -n "$ns" addr add "198.18.$i.2/24" dev veth0 || return 1
    ip -n "$ns_a" link set "m$i" up && ip -n "$ns" link set veth0 up && ip -n "$ns" link set lo up || return 1
    priv="$(wg genkey)"
    pub="$(wg pubkey <<<"$priv")"
    gw_pub="$(wg pubkey <"$work/a.key")"
    (umask 077 && echo "$priv" >"$work/c$i.key")
    ip netns exec "$ns_a" wg set "$ifa" peer "$pub" allowed-ips "$addr/32" || return 1
    many_keys+=("$pub")
    if [ "$k" = veil ]; then
        (
            umask 077
            printf '[Interface]\nPrivateKey = %s\nAddress = %s/24\nMTU = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = 198.18.%s.1:51820\nAllowedIPs = 10.9.0.0/24\n\n%s' \
                "$priv" "$addr" "$mtu" "$gw_pub" "$i" "$veil_unlimited" >"$work/c$i.conf"
        )
        start_veil "$ns" "$iface" "$work/c$i.conf" "${flags_b[$impl]}" || return 1
    else
        start_wg_peer "$k" "$ns" "$iface" "$work/c$i.key" "$gw_pub" "$addr/24" "198.18.$i.1:51820" || return 1
    fi
    # start_veil / start_wg_peer count the process as a tunnel end: it is a client here.
    local p
    for p in "${tunnel_pids[@]}"; do [[ " ${before[*]} " == *" $p "* ]] || many_pids+=("$p"); done
    tunnel_pids=("${before[@]}")
    wait_for 100 ip netns exec "$ns" ping -c 1 -W 1 10.9.0.1
}

many_listening() { # port
    ip netns exec "$ns_a" ss -ltnH "sport = :$1" | grep -q .
}

# The many-clients workload: every client's iperf3 JSON, one after the other, in OUT.
many_clients() { # impl workload out
    local impl="$1" w="$2" out="$3" k="${kind[$1]}" i p rc=0 iperfs=()
    [ "$w" = many-std ] && k=wgo
    for i in $(seq 1 "$clients"); do
        many_client "$impl" "$k" "$i" || { echo "client $i did not come up" >"$out"; many_down; return 1; }
    done
    for i in $(seq 1 "$clients"); do
        ip netns exec "$ns_a" iperf3 -s -1 -p $((5300 + i)) >"$work/many-server.$i.log" 2>&1 &
        many_pids+=("$!")
    done
    for i in $(seq 1 "$clients"); do
        wait_for 50 many_listening $((5300 + i)) || { echo "iperf3 server $i did not start" >"$out"; many_down; return 1; }
    done
    many_t0="$(gateway_ticks)"
    for i in $(seq 1 "$clients"); do
        timeout -k 3 $((duration + 20)) ip netns exec "${prefix}c$i" \
            iperf3 -c 10.9.0.1 -p $((5300 + i)) -t "$duration" -J --connect-timeout 3000 \
            >"$out.$i" 2>&1 &
        iperfs+=("$!")
        pids+=("$!")
    done
    for p in "${iperfs[@]}"; do wait "$p" || rc=1; done
    many_t1="$(gateway_ticks)"
    for i in $(seq 1 "$clients"); do cat "$out.$i"; done >"$out"
    many_down
    return "$rc"
}

# --- workloads ---------------------------------------------------------------------------------
iperf_client() { # out args...
    local out="$1"
    shift
    run "$out" timeout -k 3 $((duration + 20)) ip netns exec "$ns_b" \
        iperf3 -c "$target" -p 5201 -t "$duration" -J --connect-timeout 3000 "$@"
}

# Kernel counters of both namespaces (links, UDP/TCP MIBs), to tell where packets were dropped:
# a tunnel's TUN "tx dropped" means the tunnel process did not read fast enough; UdpRcvbufErrors
# means a socket's receive buffer overflowed; /proc/net/udp tells whether it was the tunnel's
# (port 51820) or iperf3's.
snap() { # file
    local ns
    for ns in "$ns_a" "$ns_b"; do
        echo "### $ns link"
        ip -n "$ns" -s -j link show 2>/dev/null
        echo
        echo "### $ns nstat"
        ip netns exec "$ns" nstat -asz -j 2>/dev/null
        echo
        echo "### $ns udpsock"
        ip netns exec "$ns" cat /proc/net/udp /proc/net/udp6 2>/dev/null
    done >"$1"
}

measure() { # impl rep workload
    local impl="$1" rep="$2" w="$3" t0 t1 rc=1 try
    local out="$work/$session.$w.out"
    # The many-clients workloads need a gateway: the plain veth has none.
    [[ "$w" == many* && "${kind[$impl]}" == veth ]] && return 0
    for try in 1 2; do
        tunnel_alive || { echo "tunnel process died" >"$out"; rc=1; break; }
        snap "$out.snap0"
        veil_counters "$impl" "$out.veil0"
        t0="$(cpu_ticks)"
        case "$w" in
            tcp1) iperf_client "$out"; rc=$? ;;
            tcp4) iperf_client "$out" -P 4; rc=$? ;;
            udp1400) iperf_client "$out" -u -b 0 -l 1400; rc=$? ;;
            udp64) iperf_client "$out" -u -b 0 -l 64; rc=$? ;;
            many | many-std) many_clients "$impl" "$w" "$out"; rc=$? ;;
            rtt)
                run "$out" ip netns exec "$ns_b" ping -n -c "$probes" -i 0.002 -W 1 "$target"
                rc=$?
                ;;
            rtt-load)
                local secs=$((probes * 2 / 1000 + 2))
                timeout -k 3 $((secs + 20)) ip netns exec "$ns_b" \
                    iperf3 -c "$target" -p 5201 -t "$secs" -J --connect-timeout 3000 >"$out.load" 2>&1 &
                local lp=$!
                pids+=("$lp")
                sleep 1
                run "$out" ip netns exec "$ns_b" ping -n -c "$probes" -i 0.002 -W 1 "$target"
                rc=$?
                wait "$lp" || rc=1
                ;;
        esac
        t1="$(cpu_ticks)"
        # The many-clients figure is the gateway's CPU over the iperf3 runs alone.
        [[ "$w" == many* ]] && { t0="$many_t0"; t1="$many_t1"; }
        snap "$out.snap1"
        veil_counters "$impl" "$out.veil1"
        # ping exits 1 when some probes were lost; the record counts them.
        if [ "$rc" -eq 0 ] || { [[ "$w" == rtt* ]] && [ "$rc" -eq 1 ] && grep -q 'time=' "$out"; }; then
            rc=0
            break
        fi
        [ "$try" = 2 ] || { log "  $w failed (status $rc), retrying once"; sleep 1; }
    done
    local status=ok
    [ "$rc" -eq 0 ] || status=failed
    helper record --records "$records" --impl "$impl" --rep "$rep" --workload "$w" --raw "$out" \
        --status "$status" --cpu-ticks $((t1 - t0)) --clk-tck "$clk_tck" \
        --snap-before "$out.snap0" --snap-after "$out.snap1" --ns-a "$ns_a" --ns-b "$ns_b" \
        --veil-before "$out.veil0" --veil-after "$out.veil1" \
        --tunnel "$([ "${kind[$impl]}" = veth ] && echo no || echo yes)" --clients "$clients"
    sleep 0.2
}

# --- main loop ---------------------------------------------------------------------------------
total=$((repeat * ${#sel_impls[@]}))
n_done=0
log "run: ${#sel_impls[@]} implementations (${sel_impls[*]}) x workloads (${sel_workloads[*]}) x $repeat, ${duration}s each"
for rep in $(seq 1 "$repeat"); do
    # Rotate the order each repetition so no implementation always goes first.
    order=()
    count=${#sel_impls[@]}
    for i in $(seq 0 $((count - 1))); do order+=("${sel_impls[$(((i + rep - 1) % count))]}"); done
    for impl in "${order[@]}"; do
        n_done=$((n_done + 1))
        log "[$n_done/$total] repetition $rep/$repeat: $impl"
        # File-name safe: sweep ids contain '/' and ':'.
        session="${impl//[^A-Za-z0-9_.-]/_}.$rep"
        if ! start_session "$impl"; then
            log "  $impl: tunnel did not come up"
            show_logs
            for w in "${sel_workloads[@]}"; do
                echo "tunnel did not come up" >"$work/fail.out"
                helper record --records "$records" --impl "$impl" --rep "$rep" --workload "$w" \
                    --raw "$work/fail.out" --status failed --cpu-ticks 0 --clk-tck "$clk_tck" --tunnel yes
            done
            teardown_session
            continue
        fi
        for w in "${sel_workloads[@]}"; do
            measure "$impl" "$rep" "$w"
        done
        tunnel_alive || { log "  $impl: a tunnel process exited during the run"; show_logs; }
        teardown_session
    done
done

# --- report ------------------------------------------------------------------------------------
mkdir -p "$perf_dir/results"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
json="$perf_dir/results/perf-$stamp.json"
png="$perf_dir/results/perf-$stamp.png"
log "report"
helper report --records "$records" --meta "$work/meta.env" --json "$json" --png "$png" || die "report failed"
log "wrote $json"
[ -f "$png" ] && log "wrote $png"
