#!/usr/bin/env python3
"""Helper for perf/run.sh: parses one measurement into a record, and turns the records of a run
into the markdown table (stdout), the JSON file and the PNG chart.

  perf.py record --records FILE --impl ID --rep N --workload W --raw OUT --status ok|failed
                 --cpu-ticks N --clk-tck N --tunnel yes|no
  perf.py report --records FILE --meta META.env --json OUT.json --png OUT.png

Standard library only, except matplotlib for the chart (skipped with a warning if missing).
"""

import argparse
import datetime
import json
import math
import re
import statistics
import sys

PEERS = ("wireguard-go", "boringtun", "gotatun")

# (key, label, unit, better, workload, format)
FIGURES = [
    ("tcp1_gbps", "TCP, 1 stream", "Gbit/s", "higher", "tcp1", "{:.2f}"),
    ("tcp4_gbps", "TCP, 4 streams", "Gbit/s", "higher", "tcp4", "{:.2f}"),
    ("udp1400_kpps", "UDP 1400 B, delivered", "kpps", "higher", "udp1400", "{:.1f}"),
    ("udp1400_loss", "UDP 1400 B, loss", "%", "lower", "udp1400", "{:.1f}"),
    ("udp64_kpps", "UDP 64 B, delivered", "kpps", "higher", "udp64", "{:.1f}"),
    ("udp64_loss", "UDP 64 B, loss", "%", "lower", "udp64", "{:.1f}"),
    ("rtt_p50", "RTT idle, p50", "µs", "lower", "rtt", "{:.0f}"),
    ("rtt_p99", "RTT idle, p99", "µs", "lower", "rtt", "{:.0f}"),
    ("rttload_p50", "RTT under TCP load, p50", "µs", "lower", "rtt-load", "{:.0f}"),
    ("rttload_p99", "RTT under TCP load, p99", "µs", "lower", "rtt-load", "{:.0f}"),
    ("tcp1_cpu", "CPU per GB, TCP 1 stream", "CPU-s/GB", "lower", "tcp1", "{:.2f}"),
    ("tcp4_cpu", "CPU per GB, TCP 4 streams", "CPU-s/GB", "lower", "tcp4", "{:.2f}"),
    ("udp1400_cpu", "CPU per GB, UDP 1400 B", "CPU-s/GB", "lower", "udp1400", "{:.2f}"),
    ("udp64_cpu", "CPU per GB, UDP 64 B", "CPU-s/GB", "lower", "udp64", "{:.2f}"),
    ("many_gbps", "TCP, K clients at once (own impl.)", "Gbit/s", "higher", "many", "{:.2f}"),
    ("many_cpu", "CPU per GB at the gateway, K clients (own impl.)", "CPU-s/GB", "lower", "many", "{:.2f}"),
    ("manystd_gbps", "TCP, K wireguard-go clients at once", "Gbit/s", "higher", "many-std", "{:.2f}"),
    ("manystd_cpu", "CPU per GB at the gateway, K wireguard-go clients", "CPU-s/GB", "lower", "many-std", "{:.2f}"),
]


def json_objects(text):
    """Every top-level JSON object in `text`, in order, skipping whatever is between them."""
    dec = json.JSONDecoder()
    objs, i = [], text.find("{")
    while 0 <= i < len(text):
        try:
            obj, end = dec.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            objs.append(obj)
        i = text.find("{", end)
    return objs


def load_json_blob(text):
    """iperf3 -J output, tolerating stray lines around it. iperf3 sometimes prints more than
    one object (e.g. a second one after a late error): take the last with results, else the
    last one."""
    objs = json_objects(text)
    if not objs:
        raise ValueError("no JSON object in iperf3 output")
    with_results = [o for o in objs if "sum_received" in o.get("end", {})]
    return (with_results or objs)[-1]


def percentile(sorted_values, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def parse_iperf(text, workload, cpu_s, tunnel):
    j = load_json_blob(text)
    if j.get("error") and "sum_received" not in j.get("end", {}):
        raise ValueError("iperf3: " + j["error"])
    end = j["end"]
    recv = end["sum_received"]
    delivered = float(recv["bytes"])
    secs = float(recv["seconds"]) or 1.0
    m = {"delivered_bytes": delivered, "seconds": secs}
    if workload.startswith("tcp"):
        m[workload + "_gbps"] = recv["bits_per_second"] / 1e9
        m["retransmits"] = end.get("sum_sent", {}).get("retransmits")
    else:
        blk = j["start"]["test_start"]["blksize"]
        sent = float(end["sum_sent"]["packets"])
        got = delivered / blk
        m[workload + "_kpps"] = got / secs / 1e3
        m[workload + "_loss"] = max(0.0, 100.0 * (1.0 - got / sent)) if sent else None
        m["sent_pps"] = sent / (float(end["sum_sent"]["seconds"]) or 1.0)
    if tunnel and delivered > 0:
        m[workload + "_cpu"] = cpu_s / (delivered / 1e9)
    return m


def parse_many(text, workload, cpu_s, clients):
    """The many-clients workloads: one iperf3 -J object per client, one after the other. The
    figure is their summed receiver rate; the CPU is the gateway's alone."""
    objs = [o for o in json_objects(text) if "sum_received" in o.get("end", {})]
    if len(objs) != clients:
        raise ValueError(f"{len(objs)} of {clients} clients reported a result")
    key = workload.replace("-", "")
    delivered = sum(float(o["end"]["sum_received"]["bytes"]) for o in objs)
    m = {
        "delivered_bytes": delivered,
        "clients": clients,
        key + "_gbps": sum(o["end"]["sum_received"]["bits_per_second"] for o in objs) / 1e9,
        "per_client_gbps": [o["end"]["sum_received"]["bits_per_second"] / 1e9 for o in objs],
        "retransmits": sum(o["end"].get("sum_sent", {}).get("retransmits") or 0 for o in objs),
    }
    if delivered > 0:
        m[key + "_cpu"] = cpu_s / (delivered / 1e9)
    return m


def parse_ping(text, workload):
    times = [float(t) * 1000.0 for t in re.findall(r"time=([0-9.]+) ms", text)]
    sent = re.search(r"(\d+) packets transmitted", text)
    if not times:
        raise ValueError("no ping replies")
    times.sort()
    key = "rtt" if workload == "rtt" else "rttload"
    m = {
        key + "_p50": percentile(times, 50),
        key + "_p99": percentile(times, 99),
        "probes_sent": int(sent.group(1)) if sent else None,
        "probes_answered": len(times),
    }
    return m


# Kernel counters whose growth during a run says where packets were lost.
NSTAT_KEYS = (
    "UdpRcvbufErrors",
    "UdpSndbufErrors",
    "UdpInErrors",
    "TcpRetransSegs",
    "IpOutDiscards",
)


def read_snap(path):
    """{ns: {"link": [...], "nstat": {...}}} from run.sh's snap file."""
    out, ns, part, buf = {}, None, None, []

    def flush():
        if ns and part and "".join(buf).strip():
            try:
                out.setdefault(ns, {})[part] = json.loads("".join(buf))
            except ValueError:
                pass

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("### "):
                flush()
                ns, part = line[4:].split()
                buf = []
            elif part == "udpsock":
                # /proc/net/udp: local address is field 1 ("HEXADDR:HEXPORT"), drops the last.
                f = line.split()
                if len(f) > 12 and ":" in f[1] and f[-1].isdigit():
                    port = int(f[1].rsplit(":", 1)[1], 16)
                    socks = out.setdefault(ns, {}).setdefault("udp_drops", {})
                    socks[port] = socks.get(port, 0) + int(f[-1])
            else:
                buf.append(line)
    flush()
    return out


TUNNEL_PORT = 51820


def drop_deltas(before, after, ns_names):
    """Growth of the drop counters per side ("a" server, "b" client)."""
    deltas = {}
    for side, ns in ns_names.items():
        b, a = before.get(ns, {}), after.get(ns, {})
        d = {}
        links_b = {l.get("ifname"): l for l in b.get("link", [])}
        for link in a.get("link", []):
            name = link.get("ifname")
            if name == "lo" or name not in links_b:
                continue
            for direction in ("rx", "tx"):
                x = link.get("stats64", {}).get(direction, {}).get("dropped", 0)
                y = links_b[name].get("stats64", {}).get(direction, {}).get("dropped", 0)
                if x - y:
                    d[f"{name} {direction} dropped"] = x - y
        kb, ka = b.get("nstat", {}).get("kernel", {}), a.get("nstat", {}).get("kernel", {})
        for key in NSTAT_KEYS:
            if key in ka and key in kb and ka[key] - kb[key]:
                d[key] = ka[key] - kb[key]
        tb = b.get("udp_drops", {}).get(TUNNEL_PORT, 0)
        ta = a.get("udp_drops", {}).get(TUNNEL_PORT, 0)
        if ta - tb:
            d["tunnel socket rcvbuf drops"] = ta - tb
        deltas[side] = d
    return deltas


def cmd_record(a):
    cpu_s = a.cpu_ticks / float(a.clk_tck)
    tunnel = a.tunnel == "yes"
    rec = {
        "impl": a.impl,
        "rep": a.rep,
        "workload": a.workload,
        "status": a.status,
        "cpu_s": cpu_s if tunnel else None,
        "metrics": {},
    }
    try:
        text = open(a.raw, encoding="utf-8", errors="replace").read()
    except OSError as e:
        text = ""
        rec["status"] = "failed"
        rec["error"] = str(e)
    if rec["status"] == "ok":
        try:
            if a.workload.startswith("rtt"):
                rec["metrics"] = parse_ping(text, a.workload)
                if a.workload == "rtt-load":
                    try:
                        load = open(a.raw + ".load", encoding="utf-8", errors="replace").read()
                        lj = load_json_blob(load)
                        rec["metrics"]["load_gbps"] = (
                            lj["end"]["sum_received"]["bits_per_second"] / 1e9
                        )
                    except (OSError, ValueError, KeyError):
                        pass
            elif a.workload.startswith("many"):
                rec["metrics"] = parse_many(text, a.workload, cpu_s, a.clients)
            else:
                rec["metrics"] = parse_iperf(text, a.workload, cpu_s, tunnel)
        except (ValueError, KeyError, TypeError) as e:
            rec["status"] = "failed"
            rec["error"] = str(e)
    if a.snap_before and a.snap_after:
        try:
            rec["kernel_drops"] = drop_deltas(
                read_snap(a.snap_before), read_snap(a.snap_after), {"a": a.ns_a, "b": a.ns_b}
            )
        except (OSError, ValueError, TypeError, AttributeError):
            pass
    if a.veil_before and a.veil_after:
        offload = offload_ratios(a.veil_before, a.veil_after)
        if offload:
            rec["offload"] = offload
    if rec["status"] != "ok" and "error" not in rec:
        rec["error"] = text.strip().splitlines()[-1][:200] if text.strip() else "failed"
    with open(a.records, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    # Progress line.
    if rec["status"] != "ok":
        print(f"  {a.workload:<9} FAILED: {rec.get('error', '')}", file=sys.stderr)
        return
    parts = []
    for key, label, unit, _, w, fmt in FIGURES:
        if w == a.workload and key in rec["metrics"] and rec["metrics"][key] is not None:
            parts.append(f"{fmt.format(rec['metrics'][key])} {unit}")
    if "load_gbps" in rec["metrics"]:
        parts.append(f"(load {rec['metrics']['load_gbps']:.2f} Gbit/s)")
    if "probes_sent" in rec["metrics"]:
        m = rec["metrics"]
        parts.append(f"{m['probes_answered']}/{m['probes_sent']} answered")
    drops = rec.get("kernel_drops", {})
    if a.workload.startswith("udp"):
        shown = [f"{side}:{k} {v}" for side in ("b", "a") for k, v in drops.get(side, {}).items()
                 if "dropped" in k or "Rcvbuf" in k or "Sndbuf" in k or "socket" in k]
        if shown:
            parts.append("drops " + ", ".join(shown))
    print(f"  {a.workload:<9} " + ", ".join(parts), file=sys.stderr)


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


# (name in the perf JSON, numerator, denominator): veil's offload counters as ratios per run.
OFFLOAD_RATIOS = (
    ("segments_per_tun_read", ("rx", "tun_packets"), ("rx", "tun_reads")),
    ("packets_per_tun_write", ("tx", "tun_packets"), ("tx", "tun_writes")),
    ("datagrams_per_gso_send", ("tx", "udp_gso_datagrams"), ("tx", "udp_gso_sends")),
    ("datagrams_per_gro_receive", ("rx", "udp_gro_datagrams"), ("rx", "udp_gro_receives")),
)


def offload_ratios(before_prefix, after_prefix):
    """Per veil end (a = gateway, b = client): the offload ratios over the workload, from the
    counter deltas of `veil show --json` before and after it, and GSO-disabled events."""
    out = {}
    for side in ("a", "b"):
        try:
            c0 = json.load(open(f"{before_prefix}.{side}", encoding="utf-8"))["counters"]
            c1 = json.load(open(f"{after_prefix}.{side}", encoding="utf-8"))["counters"]
        except (OSError, ValueError, KeyError):
            continue

        def delta(key):
            stage, name = key
            return c1.get(stage, {}).get(name, 0) - c0.get(stage, {}).get(name, 0)

        ratios = {}
        for name, num, den in OFFLOAD_RATIOS:
            d = delta(den)
            ratios[name] = round(delta(num) / d, 2) if d > 0 else None
        ratios["gso_disabled"] = delta(("tx", "udp_gso_disabled"))
        out[side] = ratios
    return out


def summarize(records, impls):
    """{impl: {figure: {"median", "samples", "failed"}}}"""
    out = {}
    for impl in impls:
        out[impl] = {}
        for key, _, _, _, w, _ in FIGURES:
            recs = [r for r in records if r["impl"] == impl and r["workload"] == w]
            if not recs:
                continue
            samples = [
                r["metrics"][key]
                for r in recs
                if r["status"] == "ok" and r["metrics"].get(key) is not None
            ]
            failed = sum(1 for r in recs if r["status"] != "ok")
            out[impl][key] = {
                "median": statistics.median(samples) if samples else None,
                "samples": samples,
                "failed": failed,
            }
    return out


def best_peer(summary, key, better, peers):
    vals = [
        (summary[p][key]["median"], p)
        for p in peers
        if key in summary.get(p, {}) and summary[p][key]["median"] is not None
    ]
    if not vals:
        return None, None
    return (max(vals) if better == "higher" else min(vals))


def ratio(v, best):
    if v is None or best is None:
        return None
    if best == 0:
        return 1.0 if v == 0 else None
    return v / best


def cell(summary, impl, key, fmt, tunnel_only_na):
    s = summary.get(impl, {}).get(key)
    if tunnel_only_na:
        return "n/a"
    if s is None:
        return "–"
    if s["median"] is None:
        return "fail"
    return fmt.format(s["median"]) + ("*" if s["failed"] else "")


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def cmd_report(a):
    meta = read_meta(a.meta)
    records = [json.loads(l) for l in open(a.records, encoding="utf-8") if l.strip()]
    impls = meta.get("implementations", "").split()
    veils = [i for i in impls if i.startswith("veil")]
    peers = [p for p in PEERS if p in impls]
    summary = summarize(records, impls)
    figures = [f for f in FIGURES if any(f[0] in summary[i] for i in impls)]

    ratios = {v: {} for v in veils}
    best = {}
    for key, _, _, better, _, _ in figures:
        b, who = best_peer(summary, key, better, peers)
        best[key] = {"value": b, "peer": who}
        for v in veils:
            s = summary[v].get(key)
            ratios[v][key] = ratio(s["median"] if s else None, b)

    arrows = {"higher": "↑", "lower": "↓"}
    lines = []
    reps = meta.get("repeat")
    lines.append(
        f"veil vs WireGuard peers: median of {reps} run(s), {meta.get('duration')} s each, "
        f"tunnel MTU {meta.get('mtu')}; {meta.get('cores')} × {meta.get('cpu_model')}, "
        f"Linux {meta.get('kernel')}"
        + (f"; many-clients workloads with K = {meta.get('clients')} clients, veil gateway "
           f"pipelines {meta.get('pipelines')}"
           if any(w.startswith("many") for w in meta.get("workloads", "").split()) else "")
    )
    lines.append("")
    many = len(veils) > 2
    if not many:
        head = ["figure", "unit"] + impls + [f"{v} ÷ best peer" for v in veils]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
        for key, label, unit, better, _, fmt in figures:
            row = [label, f"{unit} {arrows[better]}"]
            for i in impls:
                row.append(cell(summary, i, key, fmt, i == "veth" and key.endswith("_cpu")))
            for v in veils:
                row.append(fmt_ratio(ratios[v][key]))
            lines.append("| " + " | ".join(row) + " |")
    else:
        # Pinning sweep: one row per implementation, the ratio next to each veil figure.
        head = ["implementation"] + [f"{label} ({unit} {arrows[b]})" for _, label, unit, b, _, _ in figures]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|" + "|".join(["---:"] * len(figures)) + "|")
        for i in impls:
            row = [i]
            for key, _, _, _, _, fmt in figures:
                c = cell(summary, i, key, fmt, i == "veth" and key.endswith("_cpu"))
                if i in veils and ratios[i].get(key) is not None:
                    c += f" ({fmt_ratio(ratios[i][key])})"
                row.append(c)
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        ("Ratios are veil ÷ the best of " + ", ".join(peers) + " for that figure: "
         "above 1 is better for ↑ figures, below 1 is better for ↓ figures. "
         if peers else "No peer was measured, so there are no ratios. ")
        + 
        "veth is the ceiling (no tunnel); its CPU cost is n/a (no tunnel process). "
        "* = some repetitions failed; the median is over the others."
    )
    failures = [r for r in records if r["status"] != "ok"]
    if failures:
        lines.append("")
        lines.append(f"{len(failures)} measurement(s) failed:")
        for r in failures:
            lines.append(f"- {r['impl']} {r['workload']} rep {r['rep']}: {r.get('error', '')}")
    print("\n".join(lines))

    versions = {
        k: meta.get(k)
        for k in ("veil", "wireguard-go", "boringtun-cli", "gotatun-cli", "iperf3", "wg", "ping")
    }
    out = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_model": meta.get("cpu_model"),
            "cores": int(meta.get("cores", "0") or 0),
            "kernel": meta.get("kernel"),
            "shared": True,
        },
        "versions": versions,
        "parameters": {
            k: meta.get(k)
            for k in ("duration", "repeat", "probes", "mtu", "pin", "pipelines", "clients", "sweep", "only", "workloads")
        },
        "implementations": impls,
        # The transport AEAD each veil variant ran with (its start-up log line).
        "veil_aead": {k[len("aead."):]: v for k, v in meta.items() if k.startswith("aead.")},
        "figures": {
            key: {"label": label, "unit": unit, "better": better, "workload": w}
            for key, label, unit, better, w, _ in figures
        },
        "results": summary,
        "best_peer": best,
        "ratios_to_best_peer": ratios,
        "records": records,
        "table_markdown": "\n".join(lines),
    }
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, ensure_ascii=False)
        f.write("\n")
    chart(a.png, summary, impls, meta)


def chart(path, summary, impls, meta):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("perf.py: matplotlib missing; no chart (install python3-matplotlib)", file=sys.stderr)
        return
    panels = [
        ("TCP throughput (Gbit/s, higher is better)", [("tcp1_gbps", "1 stream"), ("tcp4_gbps", "4 streams")], False, "{:.1f}"),
        ("UDP delivered (kpps, higher is better)", [("udp1400_kpps", "1400 B"), ("udp64_kpps", "64 B")], False, "{:.0f}"),
        (
            "Round-trip time (µs, log scale, lower is better)",
            [("rtt_p50", "idle p50"), ("rtt_p99", "idle p99"), ("rttload_p50", "load p50"), ("rttload_p99", "load p99")],
            True,
            None,
        ),
    ]
    panels = [p for p in panels if any(k in summary[i] for i in impls for k, _ in p[1])]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, series, logy, ceiling_fmt) in zip(axes[0], panels):
        groups = [(k, lab) for k, lab in series if any(k in summary[i] for i in impls)]
        shown = impls
        if ceiling_fmt and "veth" in impls and len(impls) > 1:
            # The veth ceiling is 10-50x a tunnel's throughput and would flatten every other bar:
            # give it in the title instead.
            shown = [i for i in impls if i != "veth"]
            vals = []
            for k, lab in groups:
                s = summary["veth"].get(k)
                if s and s["median"] is not None:
                    vals.append(f"{lab} {ceiling_fmt.format(s['median'])}")
            if vals:
                title += "\nveth ceiling (not drawn): " + ", ".join(vals)
        width = 0.8 / max(1, len(shown))
        for n, impl in enumerate(shown):
            xs, ys = [], []
            for g, (k, _) in enumerate(groups):
                s = summary[impl].get(k)
                if s and s["median"] is not None:
                    xs.append(g - 0.4 + width * (n + 0.5))
                    ys.append(s["median"])
            ax.bar(xs, ys, width, label=impl, color=colors[impls.index(impl) % len(colors)])
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([lab for _, lab in groups])
        ax.set_title(title, fontsize=10)
        if logy:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(
        f"veil vs WireGuard peers over veth: median of {meta.get('repeat')} run(s) × {meta.get('duration')} s; "
        f"{meta.get('cores')} × {meta.get('cpu_model')}, Linux {meta.get('kernel')}, shared machine",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--records", required=True)
    r.add_argument("--impl", required=True)
    r.add_argument("--rep", type=int, required=True)
    r.add_argument("--workload", required=True)
    r.add_argument("--raw", required=True)
    r.add_argument("--status", choices=("ok", "failed"), required=True)
    r.add_argument("--cpu-ticks", type=int, required=True)
    r.add_argument("--clk-tck", type=int, required=True)
    r.add_argument("--tunnel", choices=("yes", "no"), required=True)
    r.add_argument("--snap-before")
    r.add_argument("--snap-after")
    r.add_argument("--veil-before")
    r.add_argument("--veil-after")
    r.add_argument("--ns-a", default="")
    r.add_argument("--ns-b", default="")
    r.add_argument("--clients", type=int, default=1, help="client tunnels of the many-clients workloads")
    s = sub.add_parser("report")
    s.add_argument("--records", required=True)
    s.add_argument("--meta", required=True)
    s.add_argument("--json", required=True)
    s.add_argument("--png", required=True)
    a = p.parse_args()
    {"record": cmd_record, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
