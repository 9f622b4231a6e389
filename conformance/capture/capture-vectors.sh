#!/usr/bin/env bash
# Capture real BGP messages exchanged by BIRD 2, FRR and GoBGP in network namespaces and
# store them as test vectors for the bgpd-proto codec.
#
# Usage (as root):  bash conformance/capture/capture-vectors.sh [OUTDIR]
#   OUTDIR defaults to bgpd/proto/tests/vectors (relative to the repository root).
#   KEEP=1 keeps the work directory (pcaps, daemon logs) for inspection.
#
# Needs: ip (iproute2), tcpdump, tshark, python3, bird + birdc (bird2), FRR (frr: bgpd,
# zebra, vtysh), gobgpd + gobgp. tshark is needed only to re-run this capture (it writes the
# *.tshark.txt decodes), not by the tests that read the vectors.
#
# Every namespace, veth and process is created by this script under unique names and removed
# on exit. Addresses (10.255.N.x, fd00:255:N::x) exist only inside those namespaces.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TPL=$HERE/templates
OUT=${1:-$REPO/bgpd/proto/tests/vectors}
FRR=/usr/lib/frr

if [ "$(id -u)" -ne 0 ]; then
  echo "capture-vectors.sh: must run as root (network namespaces, tcpdump)" >&2
  exit 1
fi
for c in ip tcpdump tshark python3 bird birdc vtysh gobgpd gobgp "$FRR/bgpd" "$FRR/zebra"; do
  command -v "$c" >/dev/null 2>&1 || { echo "capture-vectors.sh: missing $c" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/bgpcap.XXXXXX)
chmod 755 "$WORK"
PFX="bgpcap$$"
NAMESPACES=()
PIDS=()

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
  if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log() { echo "[$(date +%T)] $*" >&2; }

BIRD_VER=$(bird --version 2>&1 | sed -n 's/^BIRD version /BIRD /p')
FRR_VER=$("$FRR/bgpd" --version 2>&1 | sed -n 's/^bgpd version /FRR /p' | head -1)
GOBGP_VER=$(gobgpd --version 2>&1 | sed -n 's/^gobgpd version /GoBGP /p')
log "versions: $BIRD_VER, $FRR_VER, $GOBGP_VER"

mkdir -p "$OUT"
rm -f "$OUT"/*.hex "$OUT"/*.tshark.txt
INDEX=$WORK/index.tsv
: >"$INDEX"

# ------------------------------------------------------------------ namespaces and links

# mk_link N: namespaces $PFX-Na and $PFX-Nb joined by a veth pair (veth0 in each), with
#   a: 10.255.N.1/24 10.255.N.11/24 fd00:255:N::1/64 fd00:255:N::11/64
#   b: 10.255.N.2/24 10.255.N.12/24 fd00:255:N::2/64 fd00:255:N::12/64
mk_link() {
  local n=$1 a="$PFX-${1}a" b="$PFX-${1}b"
  ip netns add "$a"; NAMESPACES+=("$a")
  ip netns add "$b"; NAMESPACES+=("$b")
  ip link add name veth0 netns "$a" type veth peer name veth0 netns "$b"
  local ns h
  for ns in "$a" "$b"; do
    if [ "$ns" = "$a" ]; then h=1; else h=2; fi
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.veth0.accept_dad=0
    ip -n "$ns" addr add "10.255.$n.$h/24" dev veth0
    ip -n "$ns" addr add "10.255.$n.1$h/24" dev veth0
    ip -n "$ns" addr add "fd00:255:$n::$h/64" dev veth0 nodad
    ip -n "$ns" addr add "fd00:255:$n::1$h/64" dev veth0 nodad
    ip -n "$ns" link set veth0 up
  done
  sleep 1
}

# ------------------------------------------------------------------ daemons

# start_bird NS TAG CONF
start_bird() {
  local ns=$1 d=$WORK/$2-bird
  mkdir -p "$d"
  ip netns exec "$ns" bird -f -c "$3" -s "$d/bird.ctl" -P "$d/bird.pid" >"$d/bird.log" 2>&1 &
  PIDS+=($!)
  BIRDC_SOCK=$d/bird.ctl
}
birdc_() { birdc -s "$1" "${@:2}"; }

# start_frr NS TAG CONF  (zebra + bgpd, sockets and logs in the work dir)
start_frr() {
  local ns=$1 d=$WORK/$2-frr
  mkdir -p "$d"
  : >"$d/zebra.conf"
  # zebra has no --skip_runas; it drops to the frr user, so its directory belongs to frr
  chown frr:frr "$d" "$d/zebra.conf"
  ip netns exec "$ns" "$FRR/zebra" -f "$d/zebra.conf" -i "$d/zebra.pid" -z "$d/zserv.api" \
    --vty_socket "$d" -P 0 --log "file:$d/zebra.log" >"$d/zebra.out" 2>&1 &
  PIDS+=($!)
  sleep 1
  ip netns exec "$ns" "$FRR/bgpd" -S -f "$3" -i "$d/bgpd.pid" -z "$d/zserv.api" \
    --vty_socket "$d" -P 0 --log "file:$d/bgpd.log" >"$d/bgpd.out" 2>&1 &
  PIDS+=($!)
  FRR_DIR=$d
}
# vty NS DIR CMD...  (each CMD one -c)
vty() {
  local ns=$1 d=$2; shift 2
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  ip netns exec "$ns" vtysh --vty_socket "$d" "${args[@]}"
}

# start_gobgp NS TAG CONF
start_gobgp() {
  local ns=$1 d=$WORK/$2-gobgp
  mkdir -p "$d"
  # own UTS namespace with a fixed hostname: GoBGP puts the hostname into its FQDN capability
  ip netns exec "$ns" unshare --uts sh -c \
    "hostname gobgp-$2 && exec gobgpd -f '$3' -p --api-hosts 127.0.0.1:50051 --pprof-disable -l info" \
    >"$d/gobgpd.log" 2>&1 &
  PIDS+=($!)
  sleep 2
}
gob() { local ns=$1; shift; ip netns exec "$ns" gobgp -u 127.0.0.1 -p 50051 "$@"; }

# ------------------------------------------------------------------ session state

# wait_until DESC TIMEOUT CMD...: poll CMD every second until it succeeds
wait_until() {
  local desc=$1 t=$2; shift 2
  local i
  for ((i = 0; i < t; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "WARNING: timeout waiting for $desc (continuing; some vectors may be missing)"
  return 0
}
bird_up() { birdc -s "$1" show protocols "$2" | grep -q Established; }
frr_up() { vty "$1" "$2" "show bgp neighbors $3 json" | grep -q '"bgpState":"Established"'; }

# ------------------------------------------------------------------ capture

# start_capture NS TAG: tcpdump on veth0 of NS
start_capture() {
  ip netns exec "$1" tcpdump -i veth0 -U -s 0 -w "$WORK/$2.pcap" 'tcp port 179' \
    >"$WORK/$2.tcpdump.log" 2>&1 &
  CAP_PID=$!
  PIDS+=("$CAP_PID")
  sleep 2
}
stop_capture() {
  sleep 2
  kill -INT "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
}

# summary FILE: the template's "summary:" comment line
summary() { sed -n 's/^[#!] summary: //p' "$1" | head -1; }

# extract TAG NS_CAPTURED_IN ARGS...: run the extractor on $WORK/TAG.pcap
extract() {
  local tag=$1 where=$2; shift 2
  python3 "$HERE/extract_vectors.py" --pcap "$WORK/$tag.pcap" --out "$OUT" \
    --capture-note "conformance/capture/capture-vectors.sh scenario $tag (tcpdump -w on veth0 in the netns of $where; TCP stream reassembled by sequence number and split into BGP messages by conformance/capture/extract_vectors.py)" \
    --version "bird=$BIRD_VER" --version "frr=$FRR_VER" --version "gobgp=$GOBGP_VER" \
    "$@" >>"$INDEX"
}

# finish_scenario: stop the daemons (SIGTERM, so they may send a final NOTIFICATION) while
# tcpdump still runs, then stop tcpdump
finish_scenario() {
  local p
  for p in "${PIDS[@]}"; do
    [ "$p" = "$CAP_PID" ] || kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    [ "$p" = "$CAP_PID" ] || wait "$p" 2>/dev/null || true
  done
  stop_capture
  PIDS=()
}

# ================================================================== scenarios

# s1: BIRD (AS 65001, ns 1a) <-> FRR (AS 65002, ns 1b), eBGP over IPv4 transport.
scenario_s1() {
  local tag=ebgp4 A="$PFX-1a" B="$PFX-1b"
  log "s1: BIRD <-> FRR, $tag"
  mk_link 1
  start_capture "$A" s1
  start_bird "$A" s1 "$TPL/s1-ebgp4-bird.conf"; local bs=$BIRDC_SOCK
  start_frr "$B" s1 "$TPL/s1-ebgp4-frr.conf"; local fd=$FRR_DIR
  wait_until "s1 established" 90 bird_up "$bs" frr
  sleep 5
  log "s1: route refresh"
  vty "$B" "$fd" "clear bgp ipv4 unicast 10.255.1.1 soft in" "clear bgp ipv6 unicast 10.255.1.1 soft in"
  sleep 2
  birdc_ "$bs" reload in frr
  sleep 3
  log "s1: withdrawals"
  vty "$B" "$fd" "configure terminal" "router bgp 65002" "address-family ipv4 unicast" \
    "no network 10.2.1.0/24" "exit-address-family" "address-family ipv6 unicast" \
    "no network fd00:2:1::/48"
  birdc_ "$bs" disable s4w
  birdc_ "$bs" disable s6w
  sleep 3
  log "s1: FRR shutdown with message"
  vty "$B" "$fd" "configure terminal" "router bgp 65002" \
    "neighbor 10.255.1.1 shutdown message maintenance by frr, back soon"
  sleep 3
  vty "$B" "$fd" "configure terminal" "router bgp 65002" "no neighbor 10.255.1.1 shutdown"
  wait_until "s1 re-established (1)" 60 bird_up "$bs" frr
  sleep 2
  log "s1: BIRD disable with message"
  birdc_ "$bs" disable frr '"maintenance by bird"'
  sleep 3
  birdc_ "$bs" enable frr
  wait_until "s1 re-established (2)" 60 bird_up "$bs" frr
  sleep 2
  log "s1: admin resets"
  vty "$B" "$fd" "clear bgp 10.255.1.1"
  sleep 3
  wait_until "s1 re-established (3)" 60 bird_up "$bs" frr
  sleep 2
  birdc_ "$bs" restart frr
  sleep 3
  wait_until "s1 re-established (4)" 60 bird_up "$bs" frr
  finish_scenario
  extract s1 "BIRD (netns side a of link 1)" \
    --node 10.255.1.1=bird --node 10.255.1.2=frr --node 10.255.1.11=bird --node 10.255.1.12=frr \
    --session "10.255.1.1,10.255.1.2=ebgp4|eBGP over IPv4 transport, local AS {local}, peer AS {peer}" \
    --session "10.255.1.11,10.255.1.12=badas|eBGP over IPv4 transport, local AS {local}, peer AS {peer} (FRR misconfigured with remote-as 65099 for this BIRD session)" \
    --as ebgp4:bird=65001 --as ebgp4:frr=65002 --as badas:bird=65001 --as badas:frr=65002 \
    --config "ebgp4:bird=$(summary "$TPL/s1-ebgp4-bird.conf")" \
    --config "ebgp4:frr=$(summary "$TPL/s1-ebgp4-frr.conf")" \
    --config "badas:bird=protocol bgp badas { local 10.255.1.11 as 65001; neighbor 10.255.1.12 as 65002; ipv4; }" \
    --config "badas:frr=router bgp 65002; neighbor 10.255.1.11 remote-as 65099 (wrong on purpose); neighbor 10.255.1.11 update-source 10.255.1.12"
}

# s2: BIRD (AS 65010, ns 2a) <-> FRR (AS 65010, ns 2b), iBGP over IPv6 transport, IPv4 routes
# with IPv6 next hops (extended next hop).
scenario_s2() {
  local A="$PFX-2a" B="$PFX-2b"
  log "s2: BIRD <-> FRR, ibgp6"
  mk_link 2
  start_capture "$A" s2
  start_bird "$A" s2 "$TPL/s2-ibgp6-bird.conf"; local bs=$BIRDC_SOCK
  start_frr "$B" s2 "$TPL/s2-ibgp6-frr.conf"; local fd=$FRR_DIR
  wait_until "s2 established" 90 bird_up "$bs" frr
  sleep 5
  log "s2: route refresh"
  vty "$B" "$fd" "clear bgp ipv4 unicast fd00:255:2::1 soft in"
  birdc_ "$bs" reload in frr
  sleep 3
  log "s2: withdrawals"
  vty "$B" "$fd" "configure terminal" "router bgp 65010" "address-family ipv4 unicast" \
    "no network 10.2.21.0/24" "exit-address-family" "address-family ipv6 unicast" \
    "no network fd00:2:21::/48"
  birdc_ "$bs" disable s4w
  birdc_ "$bs" disable s6w
  sleep 3
  log "s2: BIRD shuts down (birdc down)"
  birdc_ "$bs" down
  sleep 2
  finish_scenario
  extract s2 "BIRD (netns side a of link 2)" \
    --node fd00:255:2::1=bird --node fd00:255:2::2=frr \
    --session "fd00:255:2::1,fd00:255:2::2=ibgp6|iBGP over IPv6 transport, local AS {local}, peer AS {peer}" \
    --as ibgp6:bird=65010 --as ibgp6:frr=65010 \
    --config "ibgp6:bird=$(summary "$TPL/s2-ibgp6-bird.conf")" \
    --config "ibgp6:frr=$(summary "$TPL/s2-ibgp6-frr.conf")"
}

# GoBGP routes used in s3/s4/s5 (gobgp global rib add ...), also quoted in the vector headers
GOBGP_ROUTES_EBGP=(
  "-a ipv4 10.3.0.0/24 origin igp aspath 65003,65003 med 33 community 65003:100,65003:200 large-community 65003:1:2,65003:3:4"
  "-a ipv4 10.3.1.0/24 origin egp"
  "-a ipv4 10.3.8.0/21 origin igp aggregator 65003:10.255.0.3"
  "-a ipv4 10.3.9.0/24"
  "-a ipv6 fd00:3::/48 origin igp med 66 community 65003:600 large-community 65003:6:6"
  "-a ipv6 fd00:3:1::/48 origin incomplete"
  "-a ipv6 fd00:3:9::/48"
)
gobgp_add_routes() {
  local ns=$1 nh4=$2 nh6=$3 extra=$4 r
  for r in "${GOBGP_ROUTES_EBGP[@]}"; do
    # shellcheck disable=SC2086
    if [[ $r == "-a ipv4"* ]]; then
      gob "$ns" global rib add $r nexthop "$nh4" $extra || log "WARNING: gobgp global rib add $r failed"
    else
      gob "$ns" global rib add $r nexthop "$nh6" $extra || log "WARNING: gobgp global rib add $r failed"
    fi
  done
}
GOBGP_ROUTES_NOTE="gobgp global rib add -a ipv4 10.3.0.0/24 origin igp aspath 65003,65003 med 33 community 65003:100,65003:200 large-community 65003:1:2,65003:3:4; 10.3.1.0/24 origin egp; 10.3.8.0/21 aggregator 65003:10.255.0.3; -a ipv6 fd00:3::/48 med 66 community 65003:600 large-community 65003:6:6; fd00:3:1::/48 origin incomplete"

# s3: BIRD (AS 65001, ns 3a) <-> GoBGP (AS 65003, ns 3b), eBGP over IPv4 transport.
scenario_s3() {
  local A="$PFX-3a" B="$PFX-3b"
  log "s3: BIRD <-> GoBGP, ebgp4"
  mk_link 3
  start_capture "$A" s3
  start_gobgp "$B" s3 "$TPL/s3-ebgp4-gobgp.toml"
  gobgp_add_routes "$B" 10.255.3.2 fd00:255:3::2 ""
  start_bird "$A" s3 "$TPL/s3-ebgp4-bird.conf"; local bs=$BIRDC_SOCK
  wait_until "s3 established" 90 bird_up "$bs" gobgp
  sleep 5
  log "s3: route refresh"
  gob "$B" neighbor 10.255.3.1 softresetin -a ipv4 || true
  gob "$B" neighbor 10.255.3.1 softresetin -a ipv6 || true
  sleep 2
  birdc_ "$bs" reload in gobgp
  sleep 3
  log "s3: withdrawals"
  gob "$B" global rib del -a ipv4 10.3.9.0/24 || true
  gob "$B" global rib del -a ipv6 fd00:3:9::/48 || true
  birdc_ "$bs" disable s4w
  birdc_ "$bs" disable s6w
  sleep 3
  log "s3: GoBGP disable with reason"
  gob "$B" neighbor 10.255.3.1 disable --reason "maintenance by gobgp" || true
  sleep 3
  gob "$B" neighbor 10.255.3.1 enable || true
  wait_until "s3 re-established (1)" 60 bird_up "$bs" gobgp
  sleep 2
  log "s3: GoBGP shutdown (deprecated command) with reason"
  gob "$B" neighbor 10.255.3.1 shutdown --reason "gobgp shutdown with reason" || true
  sleep 3
  gob "$B" neighbor 10.255.3.1 enable || true
  wait_until "s3 re-established (1b)" 60 bird_up "$bs" gobgp
  sleep 2
  log "s3: GoBGP reset"
  gob "$B" neighbor 10.255.3.1 reset || true
  sleep 3
  wait_until "s3 re-established (2)" 60 bird_up "$bs" gobgp
  sleep 2
  log "s3: BIRD disable with message"
  birdc_ "$bs" disable gobgp '"maintenance by bird"'
  sleep 2
  finish_scenario
  extract s3 "BIRD (netns side a of link 3)" \
    --node 10.255.3.1=bird --node 10.255.3.2=gobgp --node 10.255.3.11=bird --node 10.255.3.12=gobgp \
    --session "10.255.3.1,10.255.3.2=ebgp4|eBGP over IPv4 transport, local AS {local}, peer AS {peer}" \
    --session "10.255.3.11,10.255.3.12=badas|eBGP over IPv4 transport, local AS {local}, peer AS {peer} (BIRD misconfigured with neighbor as 65099 for this GoBGP session)" \
    --as ebgp4:bird=65001 --as ebgp4:gobgp=65003 --as badas:bird=65001 --as badas:gobgp=65003 \
    --config "ebgp4:bird=$(summary "$TPL/s3-ebgp4-bird.conf")" \
    --config "ebgp4:gobgp=$(summary "$TPL/s3-ebgp4-gobgp.toml"); $GOBGP_ROUTES_NOTE" \
    --config "badas:bird=protocol bgp badas { local 10.255.3.11 as 65001; neighbor 10.255.3.12 as 65099 (wrong on purpose); ipv4; }" \
    --config "badas:gobgp=neighbor 10.255.3.11 peer-as 65001; transport local-address 10.255.3.12"
}

# s4: FRR (AS 65002, ns 4a) <-> GoBGP (AS 65003, ns 4b), eBGP over IPv6 transport.
scenario_s4() {
  local A="$PFX-4a" B="$PFX-4b"
  log "s4: FRR <-> GoBGP, ebgp6"
  mk_link 4
  start_capture "$A" s4
  start_gobgp "$B" s4 "$TPL/s4-ebgp6-gobgp.toml"
  gobgp_add_routes "$B" 10.255.4.2 fd00:255:4::2 ""
  start_frr "$A" s4 "$TPL/s4-ebgp6-frr.conf"; local fd=$FRR_DIR
  wait_until "s4 established" 90 frr_up "$A" "$fd" fd00:255:4::2
  sleep 5
  log "s4: route refresh"
  vty "$A" "$fd" "clear bgp ipv4 unicast fd00:255:4::2 soft in" "clear bgp ipv6 unicast fd00:255:4::2 soft in"
  sleep 2
  gob "$B" neighbor fd00:255:4::1 softresetin -a ipv4 || true
  sleep 3
  log "s4: withdrawals"
  gob "$B" global rib del -a ipv4 10.3.9.0/24 || true
  gob "$B" global rib del -a ipv6 fd00:3:9::/48 || true
  vty "$A" "$fd" "configure terminal" "router bgp 65002" "address-family ipv4 unicast" \
    "no network 10.2.49.0/24" "exit-address-family" "address-family ipv6 unicast" \
    "no network fd00:2:49::/48"
  sleep 3
  log "s4: FRR shutdown with message"
  vty "$A" "$fd" "configure terminal" "router bgp 65002" \
    "neighbor fd00:255:4::2 shutdown message frr going down for maintenance"
  sleep 3
  vty "$A" "$fd" "configure terminal" "router bgp 65002" "no neighbor fd00:255:4::2 shutdown"
  wait_until "s4 re-established (1)" 60 frr_up "$A" "$fd" fd00:255:4::2
  sleep 2
  log "s4: GoBGP disable with reason"
  gob "$B" neighbor fd00:255:4::1 disable --reason "gobgp maintenance" || true
  sleep 3
  finish_scenario
  extract s4 "FRR (netns side a of link 4)" \
    --node fd00:255:4::1=frr --node fd00:255:4::2=gobgp --node fd00:255:4::11=frr --node fd00:255:4::12=gobgp \
    --session "fd00:255:4::1,fd00:255:4::2=ebgp6|eBGP over IPv6 transport, local AS {local}, peer AS {peer}" \
    --session "fd00:255:4::11,fd00:255:4::12=badas6|eBGP over IPv6 transport, local AS {local}, peer AS {peer} (GoBGP misconfigured with peer-as 65099 for this FRR session)" \
    --as ebgp6:frr=65002 --as ebgp6:gobgp=65003 --as badas6:frr=65002 --as badas6:gobgp=65003 \
    --config "ebgp6:frr=$(summary "$TPL/s4-ebgp6-frr.conf")" \
    --config "ebgp6:gobgp=$(summary "$TPL/s4-ebgp6-gobgp.toml"); $GOBGP_ROUTES_NOTE" \
    --config "badas6:frr=neighbor fd00:255:4::12 remote-as 65003; neighbor fd00:255:4::12 update-source fd00:255:4::11" \
    --config "badas6:gobgp=neighbor fd00:255:4::11 peer-as 65099 (wrong on purpose); transport local-address fd00:255:4::12; afi-safis ipv6-unicast"
}

# s5: FRR (AS 65020, ns 5a) <-> GoBGP (AS 65020, ns 5b), iBGP over IPv4 transport.
scenario_s5() {
  local A="$PFX-5a" B="$PFX-5b"
  log "s5: FRR <-> GoBGP, ibgp4"
  mk_link 5
  start_capture "$A" s5
  start_gobgp "$B" s5 "$TPL/s5-ibgp4-gobgp.toml"
  gob "$B" global rib add -a ipv4 10.5.0.0/24 origin igp local-pref 300 med 7 community 65020:50 nexthop 10.255.5.2 || true
  gob "$B" global rib add -a ipv4 10.5.0.0/24 origin igp local-pref 200 nexthop 10.255.5.12 identifier 2 || true
  gob "$B" global rib add -a ipv6 fd00:5::/48 origin igp local-pref 300 nexthop fd00:255:5::2 || true
  gob "$B" global rib add -a ipv4 10.5.9.0/24 nexthop 10.255.5.2 || true
  start_frr "$A" s5 "$TPL/s5-ibgp4-frr.conf"; local fd=$FRR_DIR
  wait_until "s5 established" 90 frr_up "$A" "$fd" 10.255.5.2
  sleep 5
  log "s5: withdrawals"
  gob "$B" global rib del -a ipv4 10.5.9.0/24 || true
  vty "$A" "$fd" "configure terminal" "router bgp 65020" "address-family ipv4 unicast" \
    "no network 10.2.51.0/24"
  sleep 3
  log "s5: GoBGP reset"
  gob "$B" neighbor 10.255.5.1 reset || true
  sleep 3
  wait_until "s5 re-established" 60 frr_up "$A" "$fd" 10.255.5.2
  sleep 2
  log "s5: FRR clear (admin reset)"
  vty "$A" "$fd" "clear bgp 10.255.5.2"
  sleep 3
  finish_scenario
  extract s5 "FRR (netns side a of link 5)" \
    --node 10.255.5.1=frr --node 10.255.5.2=gobgp \
    --session "10.255.5.1,10.255.5.2=ibgp4|iBGP over IPv4 transport, local AS {local}, peer AS {peer}" \
    --as ibgp4:frr=65020 --as ibgp4:gobgp=65020 \
    --config "ibgp4:frr=$(summary "$TPL/s5-ibgp4-frr.conf")" \
    --config "ibgp4:gobgp=$(summary "$TPL/s5-ibgp4-gobgp.toml"); gobgp global rib add -a ipv4 10.5.0.0/24 local-pref 300 med 7 community 65020:50 nexthop 10.255.5.2; 10.5.0.0/24 local-pref 200 nexthop 10.255.5.12 identifier 2; -a ipv6 fd00:5::/48 local-pref 300 nexthop fd00:255:5::2"
}

SCENARIOS=${SCENARIOS:-"s1 s2 s3 s4 s5"}
for s in $SCENARIOS; do
  "scenario_$s"
done

# README.md: fixed head + one table row per vector
{
  cat "$HERE/README.vectors.head.md"
  echo "Captured with: $BIRD_VER, $FRR_VER, $GOBGP_VER; tshark $(tshark --version 2>/dev/null | sed -n '1s/^TShark (Wireshark) \([^ ]*\).*/\1/p')."
  echo
  echo "| file | sender → receiver | what it carries |"
  echo "| --- | --- | --- |"
  sort -t$'\t' -k1,1 "$INDEX" | while IFS=$'\t' read -r base s r what; do
    printf '| `%s.hex` | %s → %s | %s |\n' "$base" "$s" "$r" "${what//|/\\|}"
  done
} >"$OUT/README.md"

log "$(wc -l <"$INDEX") vectors written to $OUT (list in $OUT/README.md)"
cut -f1 "$INDEX" >&2
