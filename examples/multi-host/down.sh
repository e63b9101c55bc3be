#!/bin/sh
# Stops the multi-host example: the switches (SIGTERM: they leave the cluster), etcd, the namespaces.
run=/run/tunswitch-mh
for i in 1 2 3; do [ -f "$run/host$i.pid" ] && kill "$(cat "$run/host$i.pid")" 2>/dev/null; done
sleep 2
[ -f "$run/etcd.pid" ] && kill "$(cat "$run/etcd.pid")" 2>/dev/null
for ns in mh1-frontend mh2-backend mh3-db mh-host1 mh-host2 mh-host3 mh-ul; do ip netns delete $ns 2>/dev/null; done
rm -rf "$run"
