#!/bin/sh
# The three-tier matrix across hosts: what the policies allow must connect, the rest must not.
#   frontend(host1) -> backend(host2):8080  allowed     backend(host2) -> db(host3):5432  allowed
#   frontend(host1) -> db(host3):5432       denied      db(host3) -> backend(host2):8080  denied
try() { # from-ns to port want
  ip netns exec "$4" sh -c "nc -l $2 $3 >/dev/null 2>&1 &" ; sleep 0.3
  if ip netns exec "$1" nc -z -w 2 "$2" "$3"; then got=allowed; else got=denied; fi
  ip netns exec "$4" pkill -f "nc -l $2 $3" 2>/dev/null
  printf '%-14s -> %-16s %-8s (want %s)\n' "$1" "$2:$3" "$got" "$5"
}
try mh1-frontend 10.98.2.10 8080 mh2-backend allowed
try mh2-backend 10.98.3.10 5432 mh3-db allowed
try mh1-frontend 10.98.3.10 5432 mh3-db denied
try mh3-db 10.98.2.10 8080 mh2-backend denied
