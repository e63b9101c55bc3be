# node-gyp build file for the TUN binding (plain C against node_api.h, no node-addon-api).
# Built by `npm ci` through package.json's "install" script:
#   node-gyp rebuild --directory native   ->  native/build/Release/tunswitch_tun.node
{
  "targets": [
    {
      "target_name": "tunswitch_tun",
      "sources": ["src/tun.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    }
  ]
}
