#!/bin/sh
# Prints the static liburing archive to link into the binding, or nothing when liburing-dev
# (liburing.h + liburing.a) is missing: binding.gyp then builds without the io_uring engine
# (uringProbe() reports "built without liburing").
# TUNSWITCH_NO_LIBURING=1 forces the build without it (to test that build).
[ "${TUNSWITCH_NO_LIBURING:-0}" = 1 ] && exit 0
[ -f /usr/include/liburing.h ] || exit 0
for d in "/usr/lib/$(gcc -print-multiarch 2>/dev/null)" /usr/lib64 /usr/lib /usr/local/lib; do
  if [ -f "$d/liburing.a" ]; then echo "$d/liburing.a"; exit 0; fi
done
