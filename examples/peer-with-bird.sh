#!/usr/bin/env bash
# bgpd on a file datastore peering with a real BIRD 2 over TCP MD5, in two
# network namespaces joined by a veth (nothing leaves the machine).
# Run as root from the repository root after `cargo build --release -p bgpd`:
#   bash examples/peer-with-bird.sh
# It prints bgpd's peers and routes and BIRD's table, then cleans up.
set -euo pipefail
BGPD=${BGPD:-target/release/bgpd}
[ -x "$BGPD" ] || { echo "build first: cargo build --release -p bgpd" >&2; exit 1; }
command -v bird >/dev/null || { echo "needs BIRD 2: apt-get install bird2" >&2; exit 1; }
work=$(mktemp -d)
a=bgpdex-a-$$ b=bgpdex-b-$$
cleanup() {
  pkill -TERM -f "bgpd run --datastore file:$work" 2>/dev/null || true
  [ -f "$work/bird.pid" ] && kill "$(cat "$work/bird.pid")" 2>/dev/null || true
  ip netns del "$a" 2>/dev/null || true
  ip netns del "$b" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$a"; ip netns add "$b"
ip link add "va$$" type veth peer name "vb$$"
ip link set "va$$" netns "$a"; ip link set "vb$$" netns "$b"
ip -n "$a" addr add 10.255.9.1/24 dev "va$$"; ip -n "$b" addr add 10.255.9.2/24 dev "vb$$"
ip -n "$a" addr add fd00:255:9::1/64 dev "va$$" nodad; ip -n "$b" addr add fd00:255:9::2/64 dev "vb$$" nodad
for n in "$a" "$b"; do ip -n "$n" link set lo up; done
ip -n "$a" link set "va$$" up; ip -n "$b" link set "vb$$" up

cat > "$work/bird.conf" <<CONF
router id 10.255.9.2;
protocol device {}
protocol static s4 { ipv4; route 192.0.2.0/24 blackhole; }
protocol static s6 { ipv6; route 2001:db8:1::/48 blackhole; }
protocol bgp node1 {
  local 10.255.9.2 as 65010;
  neighbor 10.255.9.1 as 64512;
  password "s3cret";
  ipv4 { import all; export all; };
  ipv6 { import all; export all; };
}
CONF
cat > "$work/datastore.yaml" <<'YAML'
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node-1}
spec: {bgp: {ipv4Address: 10.255.9.1/24, ipv6Address: "fd00:255:9::1/64"}}
---
apiVersion: v1
kind: Secret
metadata: {name: bgp-secrets, namespace: kube-system}
stringData: {tor: s3cret}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  peerIP: 10.255.9.2
  asNumber: 65010
  password: {secretKeyRef: {name: bgp-secrets, key: tor}}
---
apiVersion: crd.projectcalico.org/v1
kind: IPAMBlock
metadata: {name: 10-244-1-0-26}
spec: {cidr: 10.244.1.0/26, affinity: "host:node-1"}
---
apiVersion: crd.projectcalico.org/v1
kind: IPAMBlock
metadata: {name: fd00-244-1-0-122}
spec: {cidr: "fd00:244:1::/122", affinity: "host:node-1"}
YAML
ip netns exec "$b" bird -c "$work/bird.conf" -s "$work/bird.ctl" -P "$work/bird.pid"
ip netns exec "$a" "$BGPD" run --datastore "file:$work/datastore.yaml" --node node-1 \
  --control-socket "$work/bgpd.sock" 2> "$work/bgpd.log" &
for _ in $(seq 30); do
  "$BGPD" show peers --json --control-socket "$work/bgpd.sock" 2>/dev/null | grep -q Established && break
  sleep 0.5
done
echo "== bgpd show peers";  "$BGPD" show peers --control-socket "$work/bgpd.sock"
echo "== bgpd show routes"; "$BGPD" show routes --control-socket "$work/bgpd.sock"
echo "== BIRD's table";     birdc -s "$work/bird.ctl" show route
