# The switch image. Its base is a stand-in made locally by docker/build-images.sh (busybox +
# the host's node, ip and nsenter with their libraries), because no image registry is
# reachable here; see docker/README.md. Build it through that script, which also makes the
# base:   docker/build-images.sh [--dist DIR]
#
# It ships what `npm ci && tsc` made on the host: package.json, node_modules (the native
# TUN binding was compiled against the same node that the base image carries), the built
# JavaScript (build arg DIST, the tsc outDir, default dist) and native/build.
#
# Run it privileged, with the host's network and pid namespaces and the engine socket (see
# docker-compose.yml): it creates TUN devices and moves them into containers' namespaces
# through /proc/PID/ns/net.
ARG BASE=tunswitch-base:local
FROM ${BASE}
ARG DIST=dist
WORKDIR /opt/tunswitch
COPY package.json ./
COPY node_modules/ ./node_modules/
COPY native/build/Release/tunswitch_tun.node ./native/build/Release/
COPY ${DIST}/src/ ./dist/src/
COPY ${DIST}/workers/ ./dist/workers/
# The CLI registers `bench`, whose harness lives in dist/bench.
COPY ${DIST}/bench/ ./dist/bench/
RUN printf '#!/bin/sh\nexec node /opt/tunswitch/dist/src/cli/main.js "$@"\n' >/usr/local/bin/tunswitch \
 && chmod 0755 /usr/local/bin/tunswitch \
 && mkdir -p /run/tunswitch /var/lib/tunswitch /etc/tunswitch
ENTRYPOINT ["node", "/opt/tunswitch/dist/src/cli/main.js"]
CMD ["--help"]
