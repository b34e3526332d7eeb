#!/usr/bin/env bash
# A small internet in network namespaces, for direct connections through
# NATs (crates/tallow/tests/nat.rs and scripts/bench-direct.sh). Needs root,
# iproute2 and nftables.
#
#   host A 192.168.1.2 -- router A (NAT) 198.51.100.2 --+
#                                                       +-- bridge -- relay 198.51.100.10
#   host B 192.168.1.2 -- router B (NAT) 198.51.100.3 --+
#
# Both private networks are 192.168.1.0/24 (as two homes' often are), so an
# interface address offered by one host is, at the other, itself. Each
# router masquerades its network and, like a home router, drops connections
# that start outside (nothing from the outside reaches a host unless the
# host's own packets opened the way).
#
# Usage: nat-lab.sh up ID | down ID | block ID | shape ID RELAY_RATE HOST_RATE
#   ID          a small number; namespaces are named tl<ID>{pub,relay,ra,rb,ha,hb}
#   block       drop everything between the two routers (the relay still
#               reaches both): no direct path exists
#   shape       tbf on the relay's link (both ways) and on each router's
#               link to the bridge (both ways), e.g. 100mbit 1gbit
set -euo pipefail

cmd=${1:?usage: nat-lab.sh up|down|block|shape ID ...}
id=${2:?usage: nat-lab.sh $cmd ID}
p="tl$id"
ns() { ip netns exec "$1" "${@:2}"; }
# A veth pair: NAME1 in NS1, NAME2 in NS2 (made with temporary names, as
# the same name may exist in both).
veth() {
    ip link add "${p}x1" type veth peer name "${p}x2"
    ip link set "${p}x1" netns "$2"
    ip link set "${p}x2" netns "$4"
    ns "$2" ip link set "${p}x1" name "$1"
    ns "$4" ip link set "${p}x2" name "$3"
}

router_rules() { # NS
    ns "$1" nft -f - <<EOF
table ip lab {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }
}
EOF
}

case "$cmd" in
up)
    for n in pub relay ra rb ha hb; do
        ip netns add "$p$n"
        ns "$p$n" ip link set lo up
    done
    ns "${p}pub" ip link add name lbr type bridge
    ns "${p}pub" ip link set lbr up
    # The relay and the routers' public sides, on the bridge.
    for n in relay ra rb; do
        inner=wan
        [ "$n" = relay ] && inner=eth0
        veth "${p}$n-p" "${p}pub" "$inner" "$p$n"
        ns "${p}pub" ip link set "${p}$n-p" master lbr up
        ns "$p$n" ip link set "$inner" up
    done
    ns "${p}relay" ip addr add 198.51.100.10/24 dev eth0
    ns "${p}ra" ip addr add 198.51.100.2/24 dev wan
    ns "${p}rb" ip addr add 198.51.100.3/24 dev wan
    # Each host behind its router, in the same private range.
    for side in a b; do
        veth lan "${p}r$side" eth0 "${p}h$side"
        ns "${p}r$side" ip addr add 192.168.1.1/24 dev lan
        ns "${p}r$side" ip link set lan up
        ns "${p}h$side" ip addr add 192.168.1.2/24 dev eth0
        ns "${p}h$side" ip link set eth0 up
        ns "${p}h$side" ip route add default via 192.168.1.1
        ns "${p}r$side" sysctl -qw net.ipv4.ip_forward=1
        router_rules "${p}r$side"
    done
    ;;
down)
    for n in pub relay ra rb ha hb; do
        ip netns del "$p$n" 2>/dev/null || true
    done
    ;;
block)
    ns "${p}ra" nft insert rule ip lab forward ip daddr 198.51.100.3 drop
    ns "${p}ra" nft insert rule ip lab forward ip saddr 198.51.100.3 drop
    ns "${p}rb" nft insert rule ip lab forward ip daddr 198.51.100.2 drop
    ns "${p}rb" nft insert rule ip lab forward ip saddr 198.51.100.2 drop
    ;;
shape)
    relay_rate=${3:?relay rate, e.g. 100mbit}
    host_rate=${4:?host rate, e.g. 1gbit}
    tbf() { ns "$1" tc qdisc replace dev "$2" root tbf rate "$3" burst 1mbit latency 50ms; }
    tbf "${p}relay" eth0 "$relay_rate"
    tbf "${p}pub" "${p}relay-p" "$relay_rate"
    for side in a b; do
        tbf "${p}r$side" wan "$host_rate"
        tbf "${p}pub" "${p}r$side-p" "$host_rate"
    done
    ;;
*)
    echo "unknown command $cmd (up, down, block, shape)" >&2
    exit 2
    ;;
esac
