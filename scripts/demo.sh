#!/usr/bin/env bash
# Demo: install what is needed, build veil, bring up a veil gateway and a veil
# client in two network namespaces joined by veth, and show traffic crossing
# the tunnel (ping and a 5 s iperf3 run). Everything is torn down on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

bash scripts/install-deps.sh
export PATH="$repo/.tools/bin:$PATH"
echo "== building veil (release)"
cargo build --release --quiet
veil="$repo/target/release/veil"

prefix=veildemo
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  bash "$repo/scripts/netns.sh" down "$prefix" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

bash scripts/netns.sh up "$prefix"
gw_priv=$("$veil" genkey); gw_pub=$(echo "$gw_priv" | "$veil" pubkey)
cl_priv=$("$veil" genkey); cl_pub=$(echo "$cl_priv" | "$veil" pubkey)
umask 077
cat >"$work/veil0.conf" <<CONF
[Interface]
PrivateKey = $gw_priv
ListenPort = 51820
Address = 10.9.0.1/24, fd09::1/64

[Peer]
PublicKey = $cl_pub
AllowedIPs = 10.9.0.2/32, fd09::2/128
CONF
cat >"$work/veil1.conf" <<CONF
[Interface]
PrivateKey = $cl_priv
Address = 10.9.0.2/24, fd09::2/64

[Peer]
PublicKey = $gw_pub
Endpoint = 192.168.241.1:51820
AllowedIPs = 10.9.0.0/24, fd09::/64
PersistentKeepalive = 25
CONF

echo "== gateway (namespace ${prefix}a) and client (namespace ${prefix}b)"
ip netns exec "${prefix}a" "$veil" up "$work/veil0.conf" 2>"$work/gw.log" & pids+=($!)
ip netns exec "${prefix}b" "$veil" up "$work/veil1.conf" 2>"$work/cl.log" & pids+=($!)
for _ in $(seq 50); do
  ip -n "${prefix}b" link show veil1 >/dev/null 2>&1 && ip -n "${prefix}a" link show veil0 >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 0.3
echo "== ping through the tunnel, client -> gateway 10.9.0.1"
ip netns exec "${prefix}b" ping -c 5 -i 0.2 10.9.0.1
echo "== ping over IPv6 inside the tunnel"
ip netns exec "${prefix}b" ping -c 3 -i 0.2 fd09::1
echo "== iperf3, 5 s TCP through the tunnel"
ip netns exec "${prefix}a" iperf3 -s -1 -B 10.9.0.1 >/dev/null 2>&1 & pids+=($!)
sleep 0.5
ip netns exec "${prefix}b" iperf3 -c 10.9.0.1 -t 5 -f m | tail -n 4
echo "== gateway log"
cat "$work/gw.log"
echo "== done: tearing down"
