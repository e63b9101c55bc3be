/*
 * The underlay UDP socket of a switch (VXLAN over UDP 8472), for the same binding as tun.c.
 * Plain C against node_api.h. tun.c's init() calls udp_register() to add these functions:
 *
 *   udpOpen(ipv4: number, port: number, bufBytes?: number) -> fd
 *       socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC), SO_RCVBUF /
 *       SO_SNDBUF (bufBytes, default 4 MiB; SO_*BUFFORCE first when we may), IP_MTU_DISCOVER
 *       = IP_PMTUDISC_DONT (an encapsulated packet above the path MTU is fragmented by the
 *       kernel, never refused), bind(ipv4:port). ipv4 is the address as a u32 number.
 *   udpRecvBatch(fd, slab: Uint8Array, slotSize, slots: Int32Array, start, count,
 *                lens: Int32Array, slotOff, maxLen, srcs?: Int32Array) -> n
 *       One recvmmsg(MSG_DONTWAIT): datagram i lands in slot s = slots[start+i] at
 *       slab[s*slotSize + slotOff], at most maxLen bytes; lens[s] = its length, or 0 when it
 *       was longer than maxLen (MSG_TRUNC: the caller drops it). srcs[i] = sender IPv4 (u32 as
 *       int32). Returns n (0 on EAGAIN). Every slot is bounds-checked first.
 *   udpRecvBatch(..., srcs: Int32Array | undefined, gsoSizes: Int32Array)
 *       The same; gsoSizes[i] = the segment size of a UDP GRO buffer (the UDP_GRO control
 *       message: datagram i holds several datagrams of that size back to back, the last one
 *       possibly shorter), 0 for a single datagram. Only with udpSetGro on.
 *   udpSetGro(fd, on: boolean) -> boolean
 *       setsockopt(SOL_UDP, UDP_GRO): the kernel may hand over several same-size datagrams
 *       of one sender as one buffer (and GSO packets of a UDP_SEGMENT sender unsplit).
 *       Returns false when the kernel refuses it.
 *   udpSendBatch(fd, slab: Uint8Array, offsets: Int32Array, lens: Int32Array,
 *                dsts: Int32Array, start, count, port) -> consumed
 *       sendmmsg of datagrams slab[offsets[i] .. +lens[i]] to dsts[i]:port, i in
 *       [start, start+count). Stops at EAGAIN (the socket buffer is full: the caller counts
 *       the rest as dropped). Datagrams the kernel refuses one by one (EMSGSIZE, EINVAL,
 *       ENETUNREACH, EHOSTUNREACH, EACCES, EPERM) are skipped and counted as consumed.
 *   udpSendBatch(..., port, gsoSizes: Int32Array)
 *       The same; a datagram i with gsoSizes[i] > 0 is sent with a UDP_SEGMENT control
 *       message of that size (UDP tunnel GSO: the kernel cuts it into datagrams of gsoSizes[i]
 *       bytes, the last one shorter). The caller keeps within the kernel's limits (at most 64
 *       segments, 65507 bytes, gsoSizes[i] + 28 within the device MTU).
 *
 * Batches are at most UDP_MAX_BATCH datagrams per system call (the caller loops).
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <node_api.h>

#define UDP_MAX_BATCH 64
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

void udp_register(napi_env env, napi_value exports);

static void udp_throw_sys(napi_env env, int err, const char *what) {
  char buf[256];
  napi_value msg, code, error, num;
  snprintf(buf, sizeof buf, "udp: %s failed: %s", what, strerror(err));
  napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, "EUDP", NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_throw(env, error);
}

static int udp_args(napi_env env, napi_callback_info info, size_t min, size_t max, napi_value *argv) {
  size_t argc = max;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < min) {
    napi_throw_type_error(env, "ERR_MISSING_ARGS", "udp: too few arguments");
    return -1;
  }
  for (size_t i = argc; i < max; i++) napi_get_undefined(env, &argv[i]);
  return 0;
}

static int udp_int(napi_env env, napi_value v, const char *arg, int64_t lo, int64_t hi, int64_t *out) {
  napi_valuetype t;
  double d;
  napi_typeof(env, v, &t);
  if (t != napi_number) {
    char buf[128];
    snprintf(buf, sizeof buf, "udp: argument \"%s\" must be a number", arg);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", buf);
    return -1;
  }
  napi_get_value_double(env, v, &d);
  if (d != d || d < (double)lo || d > (double)hi || d != (double)(int64_t)d) {
    char buf[160];
    snprintf(buf, sizeof buf, "udp: argument \"%s\" must be an integer in [%lld, %lld], got %g", arg,
             (long long)lo, (long long)hi, d);
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", buf);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

static int udp_typed(napi_env env, napi_value v, napi_typedarray_type want, const char *arg, void **data,
                     size_t *len) {
  bool is = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  napi_is_typedarray(env, v, &is);
  if (is) napi_get_typedarray_info(env, v, &type, len, data, &ab, &off);
  if (!is || type != want || (*len > 0 && *data == NULL)) {
    char buf[128];
    snprintf(buf, sizeof buf, "udp: argument \"%s\" must be a %s", arg,
             want == napi_uint8_array ? "Uint8Array" : "Int32Array");
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", buf);
    return -1;
  }
  return 0;
}

static napi_value udp_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t ip, port, bytes = 4 << 20;
  napi_valuetype t;
  if (udp_args(env, info, 2, 3, argv) != 0) return NULL;
  if (udp_int(env, argv[0], "ipv4", 0, 0xffffffffLL, &ip) != 0) return NULL;
  if (udp_int(env, argv[1], "port", 1, 65535, &port) != 0) return NULL;
  napi_typeof(env, argv[2], &t);
  if (t != napi_undefined && udp_int(env, argv[2], "bufBytes", 65536, 1 << 30, &bytes) != 0) return NULL;

  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    udp_throw_sys(env, errno, "socket(AF_INET, SOCK_DGRAM)");
    return NULL;
  }
  /* No SO_REUSEADDR: for UDP it would let a second switch bind the same address and share its traffic. */
  int b = (int)bytes, pmtu = IP_PMTUDISC_DONT;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &b, sizeof b) < 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, sizeof b);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &b, sizeof b) < 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, sizeof b);
  setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl((uint32_t)ip);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int err = errno;
    char what[96];
    snprintf(what, sizeof what, "bind(%s:%lld)", inet_ntoa(sa.sin_addr), (long long)port);
    close(fd);
    udp_throw_sys(env, err, what);
    return NULL;
  }
  napi_value res;
  napi_create_int32(env, fd, &res);
  return res;
}

static napi_value udp_recv_batch(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  int64_t fd, slot_size, start, count, slot_off, max_len;
  uint8_t *slab;
  int32_t *slots, *lens, *srcs = NULL, *gso = NULL;
  size_t slab_len, slots_len, lens_len, srcs_len = 0, gso_len = 0;
  napi_valuetype t;
  if (udp_args(env, info, 9, 11, argv) != 0) return NULL;
  if (udp_int(env, argv[0], "fd", 0, INT_MAX, &fd) != 0) return NULL;
  if (udp_typed(env, argv[1], napi_uint8_array, "slab", (void **)&slab, &slab_len) != 0) return NULL;
  if (udp_int(env, argv[2], "slotSize", 1, INT32_MAX, &slot_size) != 0) return NULL;
  if (udp_typed(env, argv[3], napi_int32_array, "slots", (void **)&slots, &slots_len) != 0) return NULL;
  if (udp_int(env, argv[4], "start", 0, INT32_MAX, &start) != 0) return NULL;
  if (udp_int(env, argv[5], "count", 0, INT32_MAX, &count) != 0) return NULL;
  if (udp_typed(env, argv[6], napi_int32_array, "lens", (void **)&lens, &lens_len) != 0) return NULL;
  if (udp_int(env, argv[7], "slotOff", 0, INT32_MAX, &slot_off) != 0) return NULL;
  if (udp_int(env, argv[8], "maxLen", 1, INT32_MAX, &max_len) != 0) return NULL;
  napi_typeof(env, argv[9], &t);
  if (t != napi_undefined && udp_typed(env, argv[9], napi_int32_array, "srcs", (void **)&srcs, &srcs_len) != 0) return NULL;
  napi_typeof(env, argv[10], &t);
  if (t != napi_undefined && udp_typed(env, argv[10], napi_int32_array, "gsoSizes", (void **)&gso, &gso_len) != 0) return NULL;
  if (count > UDP_MAX_BATCH) count = UDP_MAX_BATCH;
  if (slot_off + max_len > slot_size) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udp: slotOff + maxLen exceeds slotSize");
    return NULL;
  }
  if (count > 0 && (start + count > (int64_t)slots_len || (srcs != NULL && count > (int64_t)srcs_len) ||
                    (gso != NULL && count > (int64_t)gso_len))) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udp: start/count exceed slots, srcs or gsoSizes");
    return NULL;
  }
  struct mmsghdr msgs[UDP_MAX_BATCH];
  struct iovec iov[UDP_MAX_BATCH];
  struct sockaddr_in from[UDP_MAX_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } rctl[UDP_MAX_BATCH];
  for (int64_t i = 0; i < count; i++) {
    int64_t s = slots[start + i];
    if (s < 0 || (s + 1) * slot_size > (int64_t)slab_len || s >= (int64_t)lens_len) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udp: a slot is outside the slab or lens");
      return NULL;
    }
    iov[i].iov_base = slab + s * slot_size + slot_off;
    iov[i].iov_len = (size_t)max_len;
    memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    if (gso != NULL) {
      msgs[i].msg_hdr.msg_control = rctl[i].buf;
      msgs[i].msg_hdr.msg_controllen = sizeof rctl[i].buf;
    }
    msgs[i].msg_len = 0;
  }
  int n;
  do {
    n = count > 0 ? recvmmsg((int)fd, msgs, (unsigned)count, MSG_DONTWAIT, NULL) : 0;
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) n = 0;
    else {
      udp_throw_sys(env, errno, "recvmmsg");
      return NULL;
    }
  }
  for (int i = 0; i < n; i++) {
    int64_t s = slots[start + i];
    lens[s] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? 0 : (int32_t)msgs[i].msg_len;
    if (srcs != NULL) srcs[i] = (int32_t)ntohl(from[i].sin_addr.s_addr);
    if (gso != NULL) {
      int32_t g = 0;
      for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[i].msg_hdr); cm != NULL; cm = CMSG_NXTHDR(&msgs[i].msg_hdr, cm)) {
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
          int v;
          memcpy(&v, CMSG_DATA(cm), sizeof v);
          g = v > 0 && v < 65536 ? v : 0;
        }
      }
      gso[i] = g;
    }
  }
  napi_value res;
  napi_create_int32(env, n, &res);
  return res;
}

static napi_value udp_send_batch(napi_env env, napi_callback_info info) {
  napi_value argv[9];
  int64_t fd, start, count, port;
  uint8_t *slab;
  int32_t *offsets, *lens, *dsts, *gso = NULL;
  size_t slab_len, offsets_len, lens_len, dsts_len, gso_len = 0;
  napi_valuetype t;
  if (udp_args(env, info, 8, 9, argv) != 0) return NULL;
  if (udp_int(env, argv[0], "fd", 0, INT_MAX, &fd) != 0) return NULL;
  if (udp_typed(env, argv[1], napi_uint8_array, "slab", (void **)&slab, &slab_len) != 0) return NULL;
  if (udp_typed(env, argv[2], napi_int32_array, "offsets", (void **)&offsets, &offsets_len) != 0) return NULL;
  if (udp_typed(env, argv[3], napi_int32_array, "lens", (void **)&lens, &lens_len) != 0) return NULL;
  if (udp_typed(env, argv[4], napi_int32_array, "dsts", (void **)&dsts, &dsts_len) != 0) return NULL;
  if (udp_int(env, argv[5], "start", 0, INT32_MAX, &start) != 0) return NULL;
  if (udp_int(env, argv[6], "count", 0, INT32_MAX, &count) != 0) return NULL;
  if (udp_int(env, argv[7], "port", 1, 65535, &port) != 0) return NULL;
  napi_typeof(env, argv[8], &t);
  if (t != napi_undefined && udp_typed(env, argv[8], napi_int32_array, "gsoSizes", (void **)&gso, &gso_len) != 0) return NULL;
  int64_t end = start + count;
  if (count > 0 && (end > (int64_t)offsets_len || end > (int64_t)lens_len || end > (int64_t)dsts_len ||
                    (gso != NULL && end > (int64_t)gso_len))) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udp: start/count exceed offsets, lens, dsts or gsoSizes");
    return NULL;
  }
  for (int64_t i = start; i < end; i++) {
    if (offsets[i] < 0 || lens[i] < 0 || (int64_t)offsets[i] + lens[i] > (int64_t)slab_len) {
      napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "udp: a datagram is outside the slab");
      return NULL;
    }
  }
  struct mmsghdr msgs[UDP_MAX_BATCH];
  struct iovec iov[UDP_MAX_BATCH];
  struct sockaddr_in to[UDP_MAX_BATCH];
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctl[UDP_MAX_BATCH];
  int64_t done = 0;
  while (done < count) {
    int m = (int)(count - done > UDP_MAX_BATCH ? UDP_MAX_BATCH : count - done);
    for (int k = 0; k < m; k++) {
      int64_t i = start + done + k;
      iov[k].iov_base = slab + offsets[i];
      iov[k].iov_len = (size_t)lens[i];
      memset(&to[k], 0, sizeof to[k]);
      to[k].sin_family = AF_INET;
      to[k].sin_port = htons((uint16_t)port);
      to[k].sin_addr.s_addr = htonl((uint32_t)dsts[i]);
      memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
      msgs[k].msg_hdr.msg_name = &to[k];
      msgs[k].msg_hdr.msg_namelen = sizeof to[k];
      if (gso != NULL && gso[i] > 0 && gso[i] <= 65535) {
        memset(ctl[k].buf, 0, sizeof ctl[k].buf);
        msgs[k].msg_hdr.msg_control = ctl[k].buf;
        msgs[k].msg_hdr.msg_controllen = sizeof ctl[k].buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[k].msg_hdr);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t g = (uint16_t)gso[i];
        memcpy(CMSG_DATA(cm), &g, sizeof g);
      }
    }
    int n = sendmmsg((int)fd, msgs, (unsigned)m, MSG_DONTWAIT);
    if (n > 0) {
      done += n;
      continue;
    }
    int err = errno;
    if (n < 0 && err == EINTR) continue;
    if (n < 0 && (err == EAGAIN || err == EWOULDBLOCK)) break;
    if (n < 0 && (err == EMSGSIZE || err == EINVAL || err == ENETUNREACH || err == EHOSTUNREACH ||
                  err == EACCES || err == EPERM || err == ECONNREFUSED)) {
      done++; /* the first datagram of this batch was refused: skip it */
      continue;
    }
    if (done > 0) break;
    udp_throw_sys(env, err, "sendmmsg");
    return NULL;
  }
  napi_value res;
  napi_create_int32(env, (int32_t)done, &res);
  return res;
}

static napi_value udp_set_gro(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int64_t fd;
  bool on = false;
  if (udp_args(env, info, 2, 2, argv) != 0) return NULL;
  if (udp_int(env, argv[0], "fd", 0, INT_MAX, &fd) != 0) return NULL;
  if (napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "udp: argument \"on\" must be a boolean");
    return NULL;
  }
  int v = on ? 1 : 0;
  napi_value res;
  napi_get_boolean(env, setsockopt((int)fd, SOL_UDP, UDP_GRO, &v, sizeof v) == 0, &res);
  return res;
}

static void udp_set_fn(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);
  napi_set_named_property(env, exports, name, f);
}

void udp_register(napi_env env, napi_value exports) {
  udp_set_fn(env, exports, "udpOpen", udp_open);
  udp_set_fn(env, exports, "udpRecvBatch", udp_recv_batch);
  udp_set_fn(env, exports, "udpSendBatch", udp_send_batch);
  udp_set_fn(env, exports, "udpSetGro", udp_set_gro);
}
