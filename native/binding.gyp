# node-gyp build file for the TUN binding (plain C against node_api.h, no node-addon-api).
# Built by `npm ci` through package.json's "install" script:
#   node-gyp rebuild --directory native   ->  native/build/Release/tunswitch_tun.node
# The io_uring engine (src/uring.c) links liburing statically when liburing-dev is installed
# (liburing.sh finds liburing.a); without it the binding still builds, minus the engine.
{
  "variables": {
    "liburing_a": "<!(sh ./liburing.sh)"
  },
  "targets": [
    {
      "target_name": "tunswitch_tun",
      "sources": ["src/tun.c", "src/uring.c", "src/udp.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"],
      "conditions": [
        ["liburing_a!=''", {
          "defines": ["HAVE_LIBURING=1"],
          "libraries": ["<(liburing_a)"]
        }]
      ]
    }
  ]
}
