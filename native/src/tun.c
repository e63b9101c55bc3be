/*
 * tunswitch_tun: the N-API binding that owns TUN file descriptors for the I/O thread.
 *
 * Plain C against node_api.h (NAPI_VERSION 8) plus libuv for readiness. Linux only.
 *
 * What it does, one native call per batch (never per packet):
 *   1. open(name, opts)        /dev/net/tun + TUNSETIFF (IFF_TUN | IFF_NO_PI, optional
 *                              IFF_MULTI_QUEUE and IFF_VNET_HDR); with IFF_VNET_HDR the
 *                              header size is set to 12 (see VNET_HDR_LEN below).
 *   2. setOffload(fd, flags)   TUNSETOFFLOAD; returns the flags set.
 *   3. readBatch(...)          read() packets into slots of a caller-owned slab until EAGAIN
 *                              or the slot budget is spent (consecutive slots);
 *      readBatchSlots(...)     the same into slots named by a list (a free list).
 *   4. writeBatch(...)         write() packets from (offset, length) pairs of a slab until
 *                              EAGAIN; packets the kernel rejects as malformed are counted
 *                              as consumed-and-dropped.
 *      writeBatchFds(...)      the same with a destination fd per packet.
 *   5. pollStart/pollSet/pollStop   a uv_poll_t on Node's own event loop that calls a JS
 *                              function (status, events) when the fd is ready.
 *   6. close(fd).
 *   7. uring*                  the io_uring engine, in uring.c (registered from init()).
 *
 * Errors are JS Errors with `code` (the errno name, e.g. "EBUSY"), `errno` (the number) and
 * `syscall`. Argument errors are TypeError (code ERR_INVALID_ARG_TYPE) or RangeError (code
 * ERR_OUT_OF_RANGE) and name the argument.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/if_tun.h>

#include <node_api.h>
#include <uv.h>

#include "napi_util.h"

/* Older kernel headers lack the UDP segmentation offload bits (added in Linux 6.2). */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif

/*
 * VNET_HDR_LEN = 12 = sizeof(struct virtio_net_hdr_mrg_rxbuf). With IFF_VNET_HDR every packet
 * read from or written to the fd is preceded by this header, host byte order (little endian
 * on x86/arm64; we never call TUNSETVNETBE/LE):
 *
 *   offset width field        why
 *   0      u8    flags        1 = NEEDS_CSUM: csum_start/csum_offset say where to finish it
 *   1      u8    gso_type     0 none, 1 TCPV4, 3 UDP (UFO), 4 TCPV6, 5 UDP_L4 (USO), |0x80 ECN
 *   2      u16   hdr_len      length of the headers repeated in every segment
 *   4      u16   gso_size     payload bytes per segment (the MSS)
 *   6      u16   csum_start   offset (from the IP header) where checksumming starts
 *   8      u16   csum_offset  where, from csum_start, the checksum field sits
 *   10     u16   num_buffers  unused by TUN (mergeable rx buffers); written as 0
 *
 * The kernel default is 10 bytes (plain struct virtio_net_hdr). We choose 12 so that, in a
 * slot aligned to 4, the IP header that follows starts 4-byte aligned, which keeps the
 * datapath's 32-bit address reads aligned; it is also the virtio 1.0 layout.
 */
#define VNET_HDR_LEN 12

/* ---------------------------------------------------------------------------------------- */
/* Error helpers                                                                            */

const char *errno_code(int err) {
  switch (err) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case ENXIO: return "ENXIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENFILE: return "ENFILE";
    case EMFILE: return "EMFILE";
    case ENOTTY: return "ENOTTY";
    case ENOSPC: return "ENOSPC";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case EMSGSIZE: return "EMSGSIZE";
    case ENOBUFS: return "ENOBUFS";
    case EBADFD: return "EBADFD";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOSYS: return "ENOSYS";
    case ECANCELED: return "ECANCELED";
    case EOVERFLOW: return "EOVERFLOW";
    case EALREADY: return "EALREADY";
    case ETIME: return "ETIME";
    default: return "EUNKNOWN";
  }
}

/* Throws Error(message) with .code = errno name, .errno = err, .syscall = syscall. */
void throw_errno(napi_env env, int err, const char *syscall, const char *message) {
  napi_value msg, code, error, num, sc;
  const char *c = errno_code(err);
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok) return;
  if (napi_create_string_utf8(env, c, NAPI_AUTO_LENGTH, &code) != napi_ok) return;
  if (napi_create_error(env, code, msg, &error) != napi_ok) return;
  napi_create_int32(env, err, &num);
  napi_set_named_property(env, error, "errno", num);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
}

/* Generic "tun: <what> failed: <strerror> (CODE)" error. */
void throw_sys(napi_env env, int err, const char *syscall, const char *what) {
  char buf[256];
  snprintf(buf, sizeof buf, "tun: %s failed: %s (%s)", what, strerror(err), errno_code(err));
  throw_errno(env, err, syscall, buf);
}

void throw_type(napi_env env, const char *arg, const char *want) {
  char buf[160];
  snprintf(buf, sizeof buf, "tun: argument \"%s\" must be %s", arg, want);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", buf);
}

void throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
}

/* ---------------------------------------------------------------------------------------- */
/* Argument helpers: each returns 0 on success, -1 after throwing.                          */

int get_args(napi_env env, napi_callback_info info, size_t want_min, size_t max,
             napi_value *argv, size_t *argc_out) {
  size_t argc = max;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want_min) {
    char buf[96];
    snprintf(buf, sizeof buf, "tun: expected at least %zu arguments, got %zu", want_min, argc);
    napi_throw_type_error(env, "ERR_MISSING_ARGS", buf);
    return -1;
  }
  for (size_t i = argc; i < max; i++) napi_get_undefined(env, &argv[i]);
  if (argc_out) *argc_out = argc;
  return 0;
}

/* An integer-valued number in [lo, hi]. */
int get_int(napi_env env, napi_value v, const char *arg, int64_t lo, int64_t hi,
            int64_t *out) {
  napi_valuetype t;
  double d;
  napi_typeof(env, v, &t);
  if (t != napi_number) {
    throw_type(env, arg, "a number");
    return -1;
  }
  napi_get_value_double(env, v, &d);
  if (d != d || d < (double)lo || d > (double)hi || d != (double)(int64_t)d) {
    char buf[160];
    snprintf(buf, sizeof buf, "tun: argument \"%s\" must be an integer in [%lld, %lld], got %g",
             arg, (long long)lo, (long long)hi, d);
    throw_range(env, buf);
    return -1;
  }
  *out = (int64_t)d;
  return 0;
}

int get_fd(napi_env env, napi_value v, int *fd) {
  int64_t x;
  if (get_int(env, v, "fd", 0, INT_MAX, &x) != 0) return -1;
  *fd = (int)x;
  return 0;
}

/* A typed array of the given element type; data already includes its byteOffset. */
int get_typed(napi_env env, napi_value v, napi_typedarray_type want, const char *arg,
              const char *want_name, void **data, size_t *len) {
  bool is;
  napi_typedarray_type type;
  napi_value ab;
  size_t off;
  napi_is_typedarray(env, v, &is);
  if (!is) {
    throw_type(env, arg, want_name);
    return -1;
  }
  napi_get_typedarray_info(env, v, &type, len, data, &ab, &off);
  if (type != want) {
    throw_type(env, arg, want_name);
    return -1;
  }
  if (*len > 0 && *data == NULL) {
    throw_type(env, arg, "a typed array over a live (not detached) buffer");
    return -1;
  }
  return 0;
}

int get_stats(napi_env env, napi_value v, size_t min_len, int32_t **stats, size_t *len_out) {
  napi_valuetype t;
  size_t len = 0;
  *stats = NULL;
  if (len_out != NULL) *len_out = 0;
  napi_typeof(env, v, &t);
  if (t == napi_undefined) return 0;
  if (get_typed(env, v, napi_int32_array, "stats", "an Int32Array", (void **)stats, &len) != 0)
    return -1;
  if (len < min_len) {
    char buf[96];
    snprintf(buf, sizeof buf, "tun: argument \"stats\" must have at least %zu elements", min_len);
    throw_range(env, buf);
    return -1;
  }
  if (len_out != NULL) *len_out = len;
  return 0;
}

int get_packet_batch(napi_env env, napi_value *argv, packet_batch *b) {
  size_t offsets_len, lens_len;
  if (get_typed(env, argv[0], napi_uint8_array, "slab", "a Uint8Array", (void **)&b->slab,
                &b->slab_len) != 0)
    return -1;
  if (get_typed(env, argv[1], napi_int32_array, "offsets", "an Int32Array", (void **)&b->offsets,
                &offsets_len) != 0)
    return -1;
  if (get_typed(env, argv[2], napi_int32_array, "lens", "an Int32Array", (void **)&b->lens,
                &lens_len) != 0)
    return -1;
  if (get_int(env, argv[3], "start", 0, INT32_MAX, &b->start) != 0) return -1;
  if (get_int(env, argv[4], "count", 0, INT32_MAX, &b->count) != 0) return -1;
  if (get_stats(env, argv[5], 2, &b->stats, NULL) != 0) return -1;
  int64_t end = b->start + b->count;
  if (b->count > 0 && (end > (int64_t)offsets_len || end > (int64_t)lens_len)) {
    char buf[192];
    snprintf(buf, sizeof buf,
             "tun: argument \"start\"/\"count\": entries [%lld, %lld) exceed offsets (%zu) or "
             "lens (%zu)", (long long)b->start, (long long)end, offsets_len, lens_len);
    throw_range(env, buf);
    return -1;
  }
  for (int64_t i = b->start; i < end; i++) {
    int64_t o = b->offsets[i], l = b->lens[i];
    if (o < 0 || l < 0 || o + l > (int64_t)b->slab_len) {
      char buf[192];
      snprintf(buf, sizeof buf,
               "tun: argument \"offsets\"/\"lens\": entry %lld (offset %lld, length %lld) is "
               "outside the slab (%zu bytes)", (long long)i, (long long)o, (long long)l,
               b->slab_len);
      throw_range(env, buf);
      return -1;
    }
  }
  return 0;
}

int get_batch_fds(napi_env env, napi_value v, const packet_batch *b, int32_t **fds) {
  size_t len;
  if (get_typed(env, v, napi_int32_array, "fds", "an Int32Array", (void **)fds, &len) != 0)
    return -1;
  if (b->count > 0 && b->start + b->count > (int64_t)len) {
    char buf[160];
    snprintf(buf, sizeof buf, "tun: argument \"fds\" has %zu elements, entries [%lld, %lld) "
             "are needed", len, (long long)b->start, (long long)(b->start + b->count));
    throw_range(env, buf);
    return -1;
  }
  return 0;
}

int get_slotted_slab(napi_env env, napi_value *argv, slotted_slab *s) {
  if (get_typed(env, argv[0], napi_uint8_array, "slab", "a Uint8Array", (void **)&s->slab,
                &s->slab_len) != 0)
    return -1;
  return get_int(env, argv[1], "slotSize", 1, INT32_MAX, &s->slot_size);
}

int check_slot_range(napi_env env, const slotted_slab *s, const char *what, int64_t first,
                     int64_t count, int64_t lens_len) {
  /* In 64-bit so nothing overflows: every slot used must sit inside the slab. */
  int64_t end = first + count;
  char buf[224];
  if (count <= 0) return 0;
  if (end * s->slot_size > (int64_t)s->slab_len) {
    snprintf(buf, sizeof buf,
             "tun: argument %s: slots [%lld, %lld) of %lld bytes need %lld bytes, slab has %zu",
             what, (long long)first, (long long)end, (long long)s->slot_size,
             (long long)(end * s->slot_size), s->slab_len);
    throw_range(env, buf);
    return -1;
  }
  if (lens_len >= 0 && end > lens_len) {
    snprintf(buf, sizeof buf,
             "tun: argument \"lens\" has %lld elements, slots up to %lld are needed",
             (long long)lens_len, (long long)end);
    throw_range(env, buf);
    return -1;
  }
  return 0;
}

napi_value int32_result(napi_env env, int32_t n) {
  napi_value r;
  if (n < 0) return NULL;
  napi_create_int32(env, n, &r);
  return r;
}

int check_slots(napi_env env, const int32_t *slots, int64_t start, int64_t count,
                size_t slots_len, int64_t slot_size, size_t slab_len, int64_t lens_len) {
  if (count > 0 && start + count > (int64_t)slots_len) {
    char buf[160];
    snprintf(buf, sizeof buf,
             "tun: argument \"start\"/\"count\": entries [%lld, %lld) exceed slots (%zu)",
             (long long)start, (long long)(start + count), slots_len);
    throw_range(env, buf);
    return -1;
  }
  for (int64_t i = start; i < start + count; i++) {
    int64_t s = slots[i];
    if (s < 0 || (s + 1) * slot_size > (int64_t)slab_len || (lens_len >= 0 && s >= lens_len)) {
      char buf[224];
      if (lens_len >= 0)
        snprintf(buf, sizeof buf,
                 "tun: argument \"slots\": entry %lld is slot %lld, outside the slab (%zu bytes "
                 "/ %lld per slot) or lens (%lld)", (long long)i, (long long)s, slab_len,
                 (long long)slot_size, (long long)lens_len);
      else
        snprintf(buf, sizeof buf,
                 "tun: argument \"slots\": entry %lld is slot %lld, outside the slab (%zu bytes "
                 "/ %lld per slot)", (long long)i, (long long)s, slab_len, (long long)slot_size);
      throw_range(env, buf);
      return -1;
    }
  }
  return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* open(name: string, opts?: {multiQueue?: boolean, vnetHdr?: boolean}) -> {fd, name}      */

static int get_bool_prop(napi_env env, napi_value obj, const char *key, bool *out) {
  napi_value v;
  napi_valuetype t;
  *out = false;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return -1;
  napi_typeof(env, v, &t);
  if (t == napi_undefined) return 0;
  if (t != napi_boolean) {
    char arg[64];
    snprintf(arg, sizeof arg, "opts.%s", key);
    throw_type(env, arg, "a boolean");
    return -1;
  }
  napi_get_value_bool(env, v, out);
  return 0;
}

static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 1, 2, argv, NULL) != 0) return NULL;

  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_string) {
    throw_type(env, "name", "a string");
    return NULL;
  }
  /* Full UTF-8 length first, then copy at most 63 bytes (enough for the message). */
  char name[64];
  size_t full_len = 0, name_len = 0;
  napi_get_value_string_utf8(env, argv[0], NULL, 0, &full_len);
  napi_get_value_string_utf8(env, argv[0], name, sizeof name, &name_len);
  if (full_len >= IFNAMSIZ) {
    char buf[160];
    snprintf(buf, sizeof buf,
             "tun: interface name \"%.40s%s\" is too long (%zu bytes); Linux allows at most %d",
             name, full_len > 40 ? "..." : "", full_len, IFNAMSIZ - 1);
    throw_errno(env, ENAMETOOLONG, "open", buf);
    return NULL;
  }
  if (memchr(name, '/', name_len) != NULL || strlen(name) != name_len) {
    char buf[128];
    snprintf(buf, sizeof buf, "tun: interface name \"%s\" is invalid (no '/' or NUL allowed)",
             name);
    throw_errno(env, EINVAL, "open", buf);
    return NULL;
  }

  bool multi_queue = false, vnet_hdr = false;
  napi_typeof(env, argv[1], &t);
  if (t == napi_object) {
    if (get_bool_prop(env, argv[1], "multiQueue", &multi_queue) != 0) return NULL;
    if (get_bool_prop(env, argv[1], "vnetHdr", &vnet_hdr) != 0) return NULL;
  } else if (t != napi_undefined && t != napi_null) {
    throw_type(env, "opts", "an object");
    return NULL;
  }

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    char buf[192];
    if (err == ENOENT)
      snprintf(buf, sizeof buf, "tun: /dev/net/tun is missing (modprobe tun)");
    else if (err == ENODEV || err == ENXIO)
      snprintf(buf, sizeof buf, "tun: /dev/net/tun has no driver behind it (modprobe tun)");
    else if (err == EPERM || err == EACCES)
      snprintf(buf, sizeof buf,
               "tun: opening TUN device \"%s\" needs CAP_NET_ADMIN (run as root): "
               "/dev/net/tun: %s", name, strerror(err));
    else
      snprintf(buf, sizeof buf, "tun: open /dev/net/tun failed: %s (%s)", strerror(err),
               errno_code(err));
    throw_errno(env, err, "open", buf);
    return NULL;
  }

  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  if (multi_queue) ifr.ifr_flags |= IFF_MULTI_QUEUE;
  if (vnet_hdr) ifr.ifr_flags |= IFF_VNET_HDR;
  memcpy(ifr.ifr_name, name, name_len); /* name_len <= IFNAMSIZ-1, ifr zeroed: terminated */

  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    char buf[320];
    close(fd);
    switch (err) {
      case EPERM:
      case EACCES:
        snprintf(buf, sizeof buf,
                 "tun: opening TUN device \"%s\" needs CAP_NET_ADMIN (run as root), or the "
                 "persistent device belongs to another user", name);
        break;
      case EBUSY:
        snprintf(buf, sizeof buf,
                 "tun: interface name \"%s\" is taken: another file descriptor already holds "
                 "this TUN device (open it with multiQueue on both sides to share it)", name);
        break;
      case EINVAL:
        snprintf(buf, sizeof buf,
                 "tun: cannot open TUN device \"%s\": the name is invalid, or a device of that "
                 "name exists that is not a TUN device or was created with different flags "
                 "(multiQueue=%s, vnetHdr=%s)", name, multi_queue ? "true" : "false",
                 vnet_hdr ? "true" : "false");
        break;
      case EEXIST:
        snprintf(buf, sizeof buf, "tun: interface name \"%s\" already exists", name);
        break;
      default:
        snprintf(buf, sizeof buf, "tun: TUNSETIFF \"%s\" failed: %s (%s)", name, strerror(err),
                 errno_code(err));
    }
    throw_errno(env, err, "ioctl(TUNSETIFF)", buf);
    return NULL;
  }

  if (vnet_hdr) {
    int sz = VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
      int err = errno;
      close(fd);
      throw_sys(env, err, "ioctl(TUNSETVNETHDRSZ)", "setting the vnet header size to 12");
      return NULL;
    }
  }

  napi_value result, jfd, jname;
  napi_create_object(env, &result);
  napi_create_int32(env, fd, &jfd);
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &jname);
  napi_set_named_property(env, result, "fd", jfd);
  napi_set_named_property(env, result, "name", jname);
  return result;
}

/* ---------------------------------------------------------------------------------------- */
/* setOffload(fd, flags) -> flags                                                           */

static napi_value js_set_offload(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int64_t flags;
  if (get_args(env, info, 2, 2, argv, NULL) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  if (get_int(env, argv[1], "flags", 0, 0xff, &flags) != 0) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) {
    int err = errno;
    char what[64];
    snprintf(what, sizeof what, "TUNSETOFFLOAD 0x%02llx", (long long)flags);
    throw_sys(env, err, "ioctl(TUNSETOFFLOAD)", what);
    return NULL;
  }
  napi_value r;
  napi_create_int32(env, (int32_t)flags, &r);
  return r;
}

/* ---------------------------------------------------------------------------------------- */
/* One packet read. TUN silently truncates a packet longer than the buffer (read returns the
 * buffer size), so we read into the slot plus one spare byte: a result > slot_size means
 * "did not fit" and the caller drops the packet instead of passing on a truncated one.
 * Returns bytes read (may be slot_size + 1), or -1 with errno set.                          */

static ssize_t read_packet(int fd, uint8_t *dst, int64_t slot_size) {
  uint8_t spare;
  struct iovec iov[2];
  iov[0].iov_base = dst;
  iov[0].iov_len = (size_t)slot_size;
  iov[1].iov_base = &spare;
  iov[1].iov_len = 1;
  return readv(fd, iov, 2);
}

/* The read loop behind readBatch and readBatchSlots. Packet i goes to slot
 * slots[first+i] when `slots` is given, else to slot first+i; its length to lens[slot].
 * Reads until EAGAIN or `count` packets. A packet longer than the slot (TUN truncates it) or
 * refused by the kernel (EINVAL, EFAULT, EMSGSIZE) is consumed, takes no slot and is counted
 * in stats. Another error ends the batch early if packets were read (it recurs on the next
 * call), else it is thrown and -1 returned. Arguments are already bounds-checked. */
static int32_t read_loop(napi_env env, int fd, uint8_t *slab, int64_t slot_size,
                         const int32_t *slots, int64_t first, int64_t count, int32_t *lens,
                         int32_t *stats) {
  int32_t n = 0, lost = 0, lost_errno = 0;
  while (n < count) {
    int64_t slot = slots != NULL ? slots[first + n] : first + n;
    ssize_t r = read_packet(fd, slab + slot * slot_size, slot_size);
    if (r > slot_size) { /* did not fit: the kernel truncated it, drop it */
      lost++;
      lost_errno = EMSGSIZE;
      continue;
    }
    if (r >= 0) {
      lens[slot] = (int32_t)r;
      n++;
      continue;
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) break;
    if (err == EINVAL || err == EFAULT || err == EMSGSIZE) {
      lost++;
      lost_errno = err;
      continue;
    }
    if (n > 0) break; /* hand over what we have; the error will recur on the next call */
    throw_sys(env, err, "read", "read from TUN device");
    return -1;
  }
  if (stats != NULL) {
    stats[0] = lost;
    stats[1] = lost_errno;
  }
  return n;
}

/* ---------------------------------------------------------------------------------------- */
/* readBatch(fd, slab: Uint8Array, slotSize, firstSlot, maxSlots, lens: Int32Array,
 *           stats?: Int32Array) -> count
 *
 * Packet i (0-based within this call) lands at slab[(firstSlot+i)*slotSize ...] (relative to
 * the Uint8Array's own byteOffset) and its length goes to lens[firstSlot+i]. Stops at EAGAIN
 * or after maxSlots packets. Returns the number of packets stored (0 if nothing was waiting).
 *
 * stats (optional, length >= 2) is overwritten on every call:
 *   stats[0]  packets lost in this call: longer than slotSize (TUN would truncate them; we
 *             detect it and drop them, errno EMSGSIZE), or refused by the kernel (EINVAL,
 *             EFAULT). Such a packet is consumed and does not take a slot.
 *   stats[1]  errno of the last such loss, 0 if none
 * Size slots for MTU (+ VNET_HDR_LEN), or 65535 + VNET_HDR_LEN with GSO offloads on.
 */
static napi_value js_read_batch(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int fd;
  slotted_slab s;
  int64_t first, max_slots;
  int32_t *lens, *stats = NULL;
  size_t lens_len;

  if (get_args(env, info, 6, 7, argv, NULL) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  if (get_slotted_slab(env, argv + 1, &s) != 0) return NULL;
  if (get_int(env, argv[3], "firstSlot", 0, INT32_MAX, &first) != 0) return NULL;
  if (get_int(env, argv[4], "maxSlots", 0, INT32_MAX, &max_slots) != 0) return NULL;
  if (get_typed(env, argv[5], napi_int32_array, "lens", "an Int32Array", (void **)&lens,
                &lens_len) != 0)
    return NULL;
  if (get_stats(env, argv[6], 2, &stats, NULL) != 0) return NULL;
  if (check_slot_range(env, &s, "\"firstSlot\"/\"maxSlots\"", first, max_slots,
                       (int64_t)lens_len) != 0)
    return NULL;
  return int32_result(env, read_loop(env, fd, s.slab, s.slot_size, NULL, first, max_slots,
                                     lens, stats));
}

/* ---------------------------------------------------------------------------------------- */
/* readBatchSlots(fd, slab: Uint8Array, slotSize, slots: Int32Array, start, count,
 *                lens: Int32Array, stats?: Int32Array) -> n
 *
 * Like readBatch, but the slots come from a list (a free list): packet i lands in slot
 * s = slots[start+i], at slab[s*slotSize], and its length goes to lens[s]. Reads until EAGAIN
 * or `count` packets; returns n, meaning slots[start .. start+n) were filled and the rest are
 * untouched. Every listed slot is bounds-checked before the first read. stats as readBatch.
 */
static napi_value js_read_batch_slots(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int fd;
  slotted_slab s;
  int64_t start, count;
  int32_t *slots, *lens, *stats;
  size_t slots_len, lens_len;

  if (get_args(env, info, 7, 8, argv, NULL) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  if (get_slotted_slab(env, argv + 1, &s) != 0) return NULL;
  if (get_typed(env, argv[3], napi_int32_array, "slots", "an Int32Array", (void **)&slots,
                &slots_len) != 0)
    return NULL;
  if (get_int(env, argv[4], "start", 0, INT32_MAX, &start) != 0) return NULL;
  if (get_int(env, argv[5], "count", 0, INT32_MAX, &count) != 0) return NULL;
  if (get_typed(env, argv[6], napi_int32_array, "lens", "an Int32Array", (void **)&lens,
                &lens_len) != 0)
    return NULL;
  if (get_stats(env, argv[7], 2, &stats, NULL) != 0) return NULL;
  if (check_slots(env, slots, start, count, slots_len, s.slot_size, s.slab_len,
                  (int64_t)lens_len) != 0)
    return NULL;
  return int32_result(env, read_loop(env, fd, s.slab, s.slot_size, slots, start, count, lens,
                                     stats));
}

/* ---------------------------------------------------------------------------------------- */
/* writeBatch(fd, slab: Uint8Array, offsets: Int32Array, lens: Int32Array, start, count,
 *            stats?: Int32Array) -> consumed
 *
 * Writes packets slab[offsets[start+i] .. +lens[start+i]] for i in [0, count). Stops at
 * EAGAIN (the fd is full: wait for writability and call again from start+consumed).
 * Returns the number of packets consumed = written + dropped, where "dropped" are packets the
 * kernel rejected as malformed (EIO, EINVAL, EFAULT, EMSGSIZE: e.g. not an IP packet, or a
 * bad vnet header); they are not retried.
 *
 * stats (optional, length >= 2) is overwritten on every call:
 *   stats[0]  packets dropped (counted in the return value)
 *   stats[1]  errno of the last drop, 0 if none
 *
 * Every (offset, length) pair is bounds-checked against the slab before anything is written;
 * a bad pair throws RangeError and nothing is written.
 */
/* write() one packet to fd. Returns 1 written, 0 dropped (malformed: EIO, EINVAL, EFAULT,
 * EMSGSIZE; *drop_errno set), -1 stop (EAGAIN, or another error in *err). */
static int write_packet(int fd, const uint8_t *p, int32_t len, int *err) {
  for (;;) {
    if (write(fd, p, (size_t)len) >= 0) return 1;
    *err = errno;
    if (*err == EINTR) continue;
    if (*err == EIO || *err == EINVAL || *err == EFAULT || *err == EMSGSIZE) return 0;
    return -1;
  }
}

/* The loop behind writeBatch (fds == NULL: every packet to fd) and writeBatchFds (packet i
 * to fds[i]; an fd < 0 is a drop with EBADF, an fd that fails with EBADF/EBADFD too). Returns
 * packets consumed, or -1 after throwing. */
static int32_t write_loop(napi_env env, int fd, const int32_t *fds, const packet_batch *b) {
  int32_t done = 0, dropped = 0, drop_errno = 0;
  while (done < b->count) {
    int64_t i = b->start + done;
    int f = fds != NULL ? fds[i] : fd, err = 0, r;
    if (f < 0) {
      r = 0;
      err = EBADF;
    } else {
      r = write_packet(f, b->slab + b->offsets[i], b->lens[i], &err);
      if (r < 0 && fds != NULL && (err == EBADF || err == EBADFD)) r = 0;
    }
    if (r > 0) {
      done++;
      continue;
    }
    if (r == 0) {
      done++;
      dropped++;
      drop_errno = err;
      continue;
    }
    if (err == EAGAIN || err == EWOULDBLOCK) break;
    if (done > 0) break; /* report progress; the error will recur on the next call */
    throw_sys(env, err, "write", "write to TUN device");
    return -1;
  }
  if (b->stats != NULL) {
    b->stats[0] = dropped;
    b->stats[1] = drop_errno;
  }
  return done;
}

static napi_value js_write_batch(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  int fd;
  packet_batch b;
  if (get_args(env, info, 6, 7, argv, NULL) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  if (get_packet_batch(env, argv + 1, &b) != 0) return NULL;
  return int32_result(env, write_loop(env, fd, NULL, &b));
}

/* ---------------------------------------------------------------------------------------- */
/* writeBatchFds(fds: Int32Array, slab, offsets, lens, start, count, stats?) -> consumed
 *
 * writeBatch with a destination per packet: packet i goes to fds[i]. Same return and stats.
 * Additionally an fd < 0, or one that fails with EBADF/EBADFD (closed, or its device was
 * deleted), counts as a drop (stats[1] = EBADF/EBADFD) instead of stopping the batch, so one
 * dead port cannot hold up the others. EAGAIN on any fd stops the batch there.
 */
static napi_value js_write_batch_fds(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  packet_batch b;
  int32_t *fds;
  if (get_args(env, info, 6, 7, argv, NULL) != 0) return NULL;
  if (get_packet_batch(env, argv + 1, &b) != 0) return NULL;
  if (get_batch_fds(env, argv[0], &b, &fds) != 0) return NULL;
  return int32_result(env, write_loop(env, -1, fds, &b));
}

/* ---------------------------------------------------------------------------------------- */
/* Readiness: pollStart(fd, cb(status, events)) -> handle; pollSet(handle, events);
 * pollStop(handle).
 *
 * Lifetime of a tun_poll (freed when both the libuv close callback has run and the JS handle
 * object was garbage collected, whichever comes last):
 *   ACTIVE  --pollStop / handle GC'd / env teardown-->  CLOSING  --uv close cb-->  CLOSED
 * The JS callback is held by a strong napi_ref from pollStart until the close callback, so it
 * cannot be collected while libuv may still call it. A GC'd handle stops the polling (the
 * wrapper keeps its handle in a field, so this only happens to a leaked handle).
 */

enum { POLL_ACTIVE = 0, POLL_CLOSING = 1, POLL_CLOSED = 2 };

typedef struct tun_poll {
  uv_poll_t handle;          /* first: libuv hands us &handle, handle.data points back */
  napi_env env;
  napi_ref cb;               /* strong ref to the JS callback */
  napi_async_context actx;   /* async_hooks context for napi_make_callback */
  int fd;
  int events;                /* UV_READABLE | UV_WRITABLE currently requested */
  int state;
  int finalized;             /* the JS handle object is gone */
  int env_gone;              /* env teardown started: no napi calls but the hook removal */
  napi_async_cleanup_hook_handle cleanup; /* NULL until registered, NULL again once removed */
} tun_poll;

static void poll_on_close(uv_handle_t *h) {
  tun_poll *p = (tun_poll *)h->data;
  p->state = POLL_CLOSED;
  if (!p->env_gone && p->cb != NULL) {
    napi_handle_scope scope;
    napi_open_handle_scope(p->env, &scope);
    napi_delete_reference(p->env, p->cb);
    napi_async_destroy(p->env, p->actx);
    napi_close_handle_scope(p->env, scope);
  }
  p->cb = NULL;
  p->actx = NULL;
  /* Unregisters the hook, or, during teardown, tells Node this handle is fully closed. */
  if (p->cleanup != NULL) {
    napi_async_cleanup_hook_handle h = p->cleanup;
    p->cleanup = NULL;
    napi_remove_async_cleanup_hook(h);
  }
  if (p->finalized) free(p);
}

static void poll_begin_close(tun_poll *p) {
  if (p->state != POLL_ACTIVE) return;
  p->state = POLL_CLOSING;
  uv_poll_stop(&p->handle);
  uv_close((uv_handle_t *)&p->handle, poll_on_close);
}

/* Environment teardown (worker exit, process exit): the addon may be unloaded right after,
 * so the close callback must run first. An *async* cleanup hook makes Node keep its loop
 * running until poll_on_close removes the hook. */
static void poll_env_cleanup(napi_async_cleanup_hook_handle handle, void *arg) {
  tun_poll *p = (tun_poll *)arg;
  p->env_gone = 1;
  poll_begin_close(p); /* no-op if already CLOSING: poll_on_close is on its way */
}

static void poll_finalize(napi_env env, void *data, void *hint) {
  tun_poll *p = (tun_poll *)data;
  p->finalized = 1;
  if (p->state == POLL_ACTIVE)
    poll_begin_close(p); /* frees in poll_on_close */
  else if (p->state == POLL_CLOSED)
    free(p);
  /* POLL_CLOSING: poll_on_close frees */
}

static void poll_on_event(uv_poll_t *h, int status, int events) {
  tun_poll *p = (tun_poll *)h->data;
  if (p->state != POLL_ACTIVE || p->env_gone) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2], result;
  if (napi_get_reference_value(env, p->cb, &cb) == napi_ok && cb != NULL) {
    napi_get_global(env, &recv);
    napi_create_int32(env, status, &argv[0]);
    napi_create_int32(env, events, &argv[1]);
    /* napi_make_callback (not napi_call_function) so async_hooks see the right context and
     * the nextTick / microtask queues are drained afterwards, as for any libuv callback. */
    napi_status s = napi_make_callback(env, p->actx, recv, cb, 2, argv, &result);
    if (s == napi_pending_exception) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      napi_fatal_exception(env, exc); /* -> process 'uncaughtException' */
    }
  }
  napi_close_handle_scope(env, scope);
}

static int get_poll(napi_env env, napi_value v, tun_poll **out) {
  napi_valuetype t;
  void *data = NULL;
  napi_typeof(env, v, &t);
  if (t != napi_external) {
    throw_type(env, "handle", "a handle returned by pollStart()");
    return -1;
  }
  napi_get_value_external(env, v, &data);
  *out = (tun_poll *)data;
  return 0;
}

static int get_events(napi_env env, napi_value v, int *events) {
  int64_t e;
  if (get_int(env, v, "events", 0, UV_READABLE | UV_WRITABLE, &e) != 0) return -1;
  *events = (int)e;
  return 0;
}

static napi_value js_poll_start(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd, events = UV_READABLE;
  napi_valuetype t;
  if (get_args(env, info, 2, 3, argv, NULL) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) {
    throw_type(env, "callback", "a function");
    return NULL;
  }
  napi_typeof(env, argv[2], &t);
  if (t != napi_undefined && get_events(env, argv[2], &events) != 0) return NULL;

  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, "ERR_TUN_NO_LOOP", "tun: no libuv loop for this environment");
    return NULL;
  }
  tun_poll *p = (tun_poll *)calloc(1, sizeof *p);
  if (p == NULL) {
    throw_sys(env, ENOMEM, "calloc", "allocating a poll handle");
    return NULL;
  }
  p->env = env;
  p->fd = fd;
  p->events = events;
  p->handle.data = p;
  int rc = uv_poll_init(loop, &p->handle, fd);
  if (rc != 0) {
    free(p); /* uv_poll_init failed: the handle was not registered, no uv_close needed */
    throw_sys(env, -rc, "uv_poll_init", "watching the TUN fd");
    return NULL;
  }
  p->handle.data = p;
  rc = uv_poll_start(&p->handle, events, poll_on_event);
  if (rc != 0) {
    p->finalized = 1; /* no JS handle will exist: free in the close callback */
    p->env_gone = 1;  /* nothing napi to release yet */
    p->state = POLL_ACTIVE;
    poll_begin_close(p);
    throw_sys(env, -rc, "uv_poll_start", "watching the TUN fd");
    return NULL;
  }
  napi_value name, handle;
  napi_create_reference(env, argv[1], 1, &p->cb);
  napi_create_string_utf8(env, "tunswitch:TunPoll", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, NULL, name, &p->actx);
  napi_add_async_cleanup_hook(env, poll_env_cleanup, p, &p->cleanup);
  if (napi_create_external(env, p, poll_finalize, NULL, &handle) != napi_ok) {
    p->finalized = 1;
    poll_begin_close(p);
    return NULL;
  }
  return handle;
}

static napi_value js_poll_set(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  tun_poll *p;
  int events;
  if (get_args(env, info, 2, 2, argv, NULL) != 0) return NULL;
  if (get_poll(env, argv[0], &p) != 0) return NULL;
  if (get_events(env, argv[1], &events) != 0) return NULL;
  if (p->state != POLL_ACTIVE) {
    napi_throw_error(env, "ERR_TUN_POLL_STOPPED", "tun: pollSet on a stopped poll handle");
    return NULL;
  }
  int rc = events == 0 ? uv_poll_stop(&p->handle)
                       : uv_poll_start(&p->handle, events, poll_on_event);
  if (rc != 0) {
    throw_sys(env, -rc, "uv_poll_start", "changing the watched events");
    return NULL;
  }
  p->events = events;
  return NULL;
}

static napi_value js_poll_stop(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  tun_poll *p;
  if (get_args(env, info, 1, 1, argv, NULL) != 0) return NULL;
  if (get_poll(env, argv[0], &p) != 0) return NULL;
  poll_begin_close(p); /* idempotent */
  return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* close(fd)                                                                                */

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (get_args(env, info, 1, 1, argv, NULL) != 0) return NULL;
  if (get_fd(env, argv[0], &fd) != 0) return NULL;
  /* Linux releases the fd even when close() reports EINTR: never retry. */
  if (close(fd) < 0 && errno != EINTR) {
    throw_sys(env, errno, "close", "close TUN fd");
    return NULL;
  }
  return NULL;
}

/* ---------------------------------------------------------------------------------------- */

void set_fn(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);
  napi_set_named_property(env, exports, name, f);
}

void set_int(napi_env env, napi_value exports, const char *name, int32_t v) {
  napi_value n;
  napi_create_int32(env, v, &n);
  napi_set_named_property(env, exports, name, n);
}

void udp_register(napi_env env, napi_value exports); /* udp.c: the underlay UDP socket */

static napi_value init(napi_env env, napi_value exports) {
  udp_register(env, exports);
  set_fn(env, exports, "open", js_open);
  set_fn(env, exports, "setOffload", js_set_offload);
  set_fn(env, exports, "readBatch", js_read_batch);
  set_fn(env, exports, "readBatchSlots", js_read_batch_slots);
  set_fn(env, exports, "writeBatch", js_write_batch);
  set_fn(env, exports, "writeBatchFds", js_write_batch_fds);
  set_fn(env, exports, "pollStart", js_poll_start);
  set_fn(env, exports, "pollSet", js_poll_set);
  set_fn(env, exports, "pollStop", js_poll_stop);
  set_fn(env, exports, "close", js_close);
  set_int(env, exports, "TUN_F_CSUM", TUN_F_CSUM);
  set_int(env, exports, "TUN_F_TSO4", TUN_F_TSO4);
  set_int(env, exports, "TUN_F_TSO6", TUN_F_TSO6);
  set_int(env, exports, "TUN_F_TSO_ECN", TUN_F_TSO_ECN);
  set_int(env, exports, "TUN_F_USO4", TUN_F_USO4);
  set_int(env, exports, "TUN_F_USO6", TUN_F_USO6);
  set_int(env, exports, "POLL_READABLE", UV_READABLE);
  set_int(env, exports, "POLL_WRITABLE", UV_WRITABLE);
  set_int(env, exports, "VNET_HDR_LEN", VNET_HDR_LEN);
  set_int(env, exports, "IFNAMSIZ", IFNAMSIZ);
  uring_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
