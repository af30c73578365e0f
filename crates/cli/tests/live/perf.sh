#!/bin/bash
# Throughput of the live bridge beside the kernel's, measured in one run (needs root, iproute2,
# iperf3, nftables, python3; not part of the test suite):
#
#   bash crates/cli/tests/live/perf.sh [ROUNDS]
#
# Environment: PALISADE=path/to/palisade picks a binary; MODES="bridge nft palisade1 palisade2"
# the configurations (run in that order in every round, so each is measured beside the others;
# altN runs the binary ALT=path/to/other/palisade with N workers: a before/after in one run);
# TESTS="tcp udp" the measurements to make; DUR=5 seconds per measurement; STREAMS=4 UDP streams (flows) per measurement; CPUS=0 pins the
# daemon to those CPUs (taskset list; empty: no pinning) and GEN_CPUS=1 the traffic generator;
# NICE=-10 runs the daemon and both iperf3 ends at that nice level (on a machine shared with other
# work, so that they are not starved by it; every configuration gets the same).
#
# Topology: h1 (198.18.0.1) -- pa [fw] pb -- h2 (198.18.0.2), each in its own namespace, every
# interface with the kernel's default offloads (TSO/GSO on veth, rx VLAN offload). fw is, in
# turn: a Linux bridge (bridge); a Linux bridge with the nftables equivalent of the rule set
# (nft); palisade run --bridge pa,pb with 1 and 2 workers (palisade1, palisade2). The rule set
# has 1,000 rules: 997 that never match the test traffic, in front of the permits.
# Per configuration and round: iperf3 TCP Gbit/s (one stream), and 64-byte UDP frames per second
# delivered to h2's interface (iperf3 -u -l 18 -b 0 -P STREAMS from h1; the frames are 60 bytes
# on the wire plus the 4-byte FCS the wire would add), with the daemon's CPU time per frame
# delivered during it (and during the TCP test, its CPU time per KB received). At the end: the
# median per configuration and its ratio to the Linux bridge's median.
set -u
ROUNDS=${1:-3}; DUR=${DUR:-5}; STREAMS=${STREAMS:-4}; TESTS=${TESTS:-tcp udp}
MODES=${MODES:-bridge nft palisade1 palisade2}
CPUS=${CPUS-}; GEN_CPUS=${GEN_CPUS-}; NICE=${NICE:-0}
B=${PALISADE:-$(dirname "$0")/../../../../target/release/palisade}
W=$(mktemp -d); P=pf$$
cleanup() { [ -n "${DPID:-}" ] && kill $DPID 2>/dev/null; wait 2>/dev/null; for n in h1 fw h2; do ip netns del $P-$n 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT
python3 - "$W" <<'EOF'
import sys
w = sys.argv[1]
pal = ['version = 1', '[[port]]', 'name = "pa"', '[[port]]', 'name = "pb"',
       '[[acl]]', 'name = "from-h1"', 'default = "deny"']
nft = ['table bridge perf {', '  chain forward_filter {', '    type filter hook forward priority 0; policy accept;']
for i in range(997):
    a, b = divmod(i, 250)
    src, port = f"10.{a}.{b + 1}.0/24", 20000 + i
    pal += ['  [[acl.rule]]', f'  id = "r{i}"', '  action = "deny"', '  proto = "udp"', f'  src = "{src}"', f'  dst_port = {port}']
    nft.append(f'    iifname "pa" ip saddr {src} udp dport {port} drop')
for acl, key in (("from-h1", "dst_port"), ("from-h2", "src_port")):
    if acl == "from-h2":
        pal += ['[[acl]]', f'name = "{acl}"', 'default = "deny"']
    for proto in ("tcp", "udp"):
        pal += ['  [[acl.rule]]', '  action = "permit"', f'  proto = "{proto}"', f'  {key} = 5201']
    pal += ['  [[acl.rule]]', '  action = "permit"', '  proto = "icmp"']
pal += ['[[bind]]', 'acl = "from-h1"', 'port = "pa"', '[[bind]]', 'acl = "from-h2"', 'port = "pb"']
for dev, key in (("pa", "dport"), ("pb", "sport")):
    nft += [f'    iifname "{dev}" tcp {key} 5201 accept', f'    iifname "{dev}" udp {key} 5201 accept',
            f'    iifname "{dev}" ip protocol icmp accept', f'    iifname "{dev}" drop']
nft += ['  }', '}']
open(f"{w}/rules.toml", "w").write("\n".join(pal) + "\n")
open(f"{w}/rules.nft", "w").write("\n".join(nft) + "\n")
EOF
# CPU time (ns) the daemon's threads have used so far (0 without a daemon): with the frames
# delivered, its cost per frame, which the machine's other load disturbs far less than rates.
cpu_ns() { local s=0 t; [ -n "${DPID:-}" ] || { echo 0; return; }; for t in /proc/$DPID/task/*/schedstat; do s=$((s + $(cut -d' ' -f1 "$t" 2>/dev/null || echo 0))); done; echo $s; }
gen() { if [ -n "$GEN_CPUS" ]; then nice -n "$NICE" taskset -c "$GEN_CPUS" "$@"; else nice -n "$NICE" "$@"; fi; }
one() {
  local mode=$1 n
  for n in h1 fw h2; do ip netns add $P-$n; ip netns exec $P-$n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1; ip -n $P-$n link set lo up; done
  ip link add eth0 netns $P-h1 address 02:00:00:00:01:01 type veth peer name pa netns $P-fw
  ip link add eth0 netns $P-h2 address 02:00:00:00:02:01 type veth peer name pb netns $P-fw
  ip -n $P-h1 addr add 198.18.0.1/24 dev eth0; ip -n $P-h2 addr add 198.18.0.2/24 dev eth0
  for n in h1 h2; do ip -n $P-$n link set eth0 up; done
  for n in pa pb; do ip -n $P-fw link set $n up; done
  ip -n $P-h1 neigh replace 198.18.0.2 lladdr 02:00:00:00:02:01 dev eth0 nud permanent
  ip -n $P-h2 neigh replace 198.18.0.1 lladdr 02:00:00:00:01:01 dev eth0 nud permanent
  DPID=
  case $mode in
    palisade*|alt*)
      local pin=() bin=$B workers=${mode#palisade}; [ -n "$CPUS" ] && pin=(taskset -c "$CPUS")
      case $mode in alt*) bin=${ALT:?ALT=path/to/palisade for mode $mode}; workers=${mode#alt};; esac
      rm -rf "$W/state"
      ip netns exec $P-fw nice -n "$NICE" "${pin[@]}" "$bin" run --config "$W/rules.toml" --control "$W/c.sock" --state-dir "$W/state" \
        --bridge pa,pb --workers "$workers" 2>"$W/daemon.log" &
      DPID=$!; for n in $(seq 100); do "$B" status --control "$W/c.sock" >/dev/null 2>&1 && break; sleep 0.1; done ;;
    bridge|nft)
      ip -n $P-fw link add br0 type bridge; ip -n $P-fw link set pa master br0; ip -n $P-fw link set pb master br0; ip -n $P-fw link set br0 up
      if [ $mode = nft ]; then ip netns exec $P-fw nft -f "$W/rules.nft"; fi ;;
  esac
  sleep 0.5
  local tcp=0 tcpcpu=0 r0=0 r1=0 c0=0 c1=0 cpu=0
  if [[ " $TESTS " == *" tcp "* ]]; then
  ip netns exec $P-h2 nice -n "$NICE" iperf3 -s -D -1 >/dev/null 2>&1; sleep 0.3
  local t0 t1 out; t0=$(cpu_ns)
  out=$(gen ip netns exec $P-h1 iperf3 -c 198.18.0.2 -t $DUR -J 2>/dev/null | python3 -c 'import json,sys; r=json.load(sys.stdin)["end"]["sum_received"]; print("%.2f %d" % (r["bits_per_second"]/1e9, r["bytes"]))' 2>/dev/null)
  t1=$(cpu_ns); tcp=${out% *}; local bytes=${out#* }
  [ "${bytes:-0}" -gt 0 ] 2>/dev/null && tcpcpu=$(( (t1 - t0) * 1000 / bytes ))
  fi
  if [[ " $TESTS " == *" udp "* ]]; then
  ip netns exec $P-h2 nice -n "$NICE" iperf3 -s -D -1 >/dev/null 2>&1; sleep 0.3
  r0=$(ip netns exec $P-h2 cat /sys/class/net/eth0/statistics/rx_packets); c0=$(cpu_ns)
  gen ip netns exec $P-h1 iperf3 -c 198.18.0.2 -u -l 18 -b 0 -P "$STREAMS" -t $DUR >/dev/null 2>&1
  r1=$(ip netns exec $P-h2 cat /sys/class/net/eth0/statistics/rx_packets); c1=$(cpu_ns)
  [ "$r1" -gt "$r0" ] && cpu=$(( (c1 - c0) / (r1 - r0) ))
  fi
  echo "$mode tcp_gbps=${tcp:-0} tcp_daemon_cpu_ns_per_kb=$tcpcpu udp64_fps=$(( (r1 - r0) / DUR )) udp64_daemon_cpu_ns=$cpu" | tee -a "$W/results"
  if [ -n "$DPID" ]; then kill $DPID; wait $DPID 2>/dev/null; grep -h "super_frames" "$W/daemon.log" | sed "s/^/  $mode: /"; fi
  DPID=
  for n in h1 fw h2; do ip netns del $P-$n; done
}
for r in $(seq "$ROUNDS"); do for m in $MODES; do one $m; done; done
python3 - "$W/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, *kv = line.split()
    d = dict(x.split("=") for x in kv)
    rows.setdefault(mode, []).append((float(d["tcp_gbps"] or 0), float(d["udp64_fps"]), float(d["udp64_daemon_cpu_ns"]), float(d["tcp_daemon_cpu_ns_per_kb"])))
base = rows.get("bridge")
med = lambda xs: statistics.median(xs)
for mode, v in rows.items():
    tcp, udp, cpu, tcpu = (med([x[i] for x in v]) for i in range(4))
    line = f"median {mode}: tcp_gbps={tcp:.2f} tcp_daemon_cpu_ns_per_kb={tcpu:.0f} udp64_fps={udp:.0f} udp64_daemon_cpu_ns={cpu:.0f} (n={len(v)})"
    if base:
        bt, bu = med([x[0] for x in base]), med([x[1] for x in base])
        line += f"  vs bridge: tcp {tcp / bt if bt else 0:.2f}x udp64 {udp / bu if bu else 0:.2f}x"
    print(line)
for one, two in (("palisade1", "palisade2"), ("alt1", "alt2")):
    if one in rows and two in rows:
        u1, u2 = med([x[1] for x in rows[one]]), med([x[1] for x in rows[two]])
        print(f"scaling udp64 {two}/{one}: {u2 / u1 if u1 else 0:.2f}x")
EOF
