#!/bin/sh
# Brings up the multi-host three-tier example on one machine: three "hosts" (network namespaces
# mh-host1..3) on an underlay bridge (namespace mh-ul, 10.99.0.0/24) with etcd on 10.99.0.254,
# one tunswitch per host (`run -c hostN.yaml`, kvstore mode), endpoints mh1-frontend,
# mh2-backend, mh3-db. Needs root, etcd (Debian: etcd-server) and a built tunswitch.
#   sudo examples/multi-host/up.sh      # then: sudo examples/multi-host/matrix.sh
#   sudo examples/multi-host/down.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cli="node $here/../../dist/src/cli/main.js"
run=/run/tunswitch-mh
mkdir -p "$run"
ip netns add mh-ul
ip -n mh-ul link add mhbr type bridge
ip -n mh-ul addr add 10.99.0.254/24 dev mhbr
ip -n mh-ul link set mhbr up
ip -n mh-ul link set lo up
ip netns exec mh-ul etcd --name mh --data-dir "$run/etcd" --listen-client-urls http://10.99.0.254:2379 \
  --advertise-client-urls http://10.99.0.254:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster mh=http://127.0.0.1:2380 \
  --log-level error > "$run/etcd.log" 2>&1 &
echo $! > "$run/etcd.pid"
for i in 1 2 3; do
  ip netns add mh-host$i
  ip link add mhh${i}a netns mh-host$i type veth peer name mhh${i}b netns mh-ul
  ip -n mh-host$i addr add 10.99.0.$i/24 dev mhh${i}a
  ip -n mh-host$i link set mhh${i}a up
  ip -n mh-host$i link set lo up
  ip -n mh-ul link set mhh${i}b master mhbr up
done
for ep in mh1-frontend mh2-backend mh3-db; do ip netns add $ep; done
sleep 2
for i in 1 2 3; do
  ip netns exec mh-host$i $cli --socket "$run/host$i.sock" run -c "$here/host$i.yaml" \
    --state-dir "$run/state$i" --no-metrics > "$run/host$i.log" 2>&1 &
  echo $! > "$run/host$i.pid"
done
for i in 1 2 3; do
  for t in $(seq 1 100); do grep -q 'ready:' "$run/host$i.log" && break; sleep 0.2; done
  grep -q 'ready:' "$run/host$i.log" || { echo "host$i did not start; see $run/host$i.log" >&2; exit 1; }
done
$cli --socket "$run/host1.sock" node list
