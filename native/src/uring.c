/*
 * tunswitch_tun, io_uring engine: multishot reads of TUN fds into slab slots on the main
 * thread, and batches of writes submitted with one io_uring_enter on each shard worker.
 * The read()/write() path in tun.c stays the fallback (Docker's default seccomp profile and
 * old kernels refuse io_uring); uringProbe() says which one can run.
 *
 * Reader (main thread, one per process; all calls from the thread that opened it):
 *   1. uringReaderOpen(slab, slotSize, ringEntries) sets up one ring (COOP_TASKRUN, see 7),
 *      an eventfd registered with it, and one provided-buffer ring (buffer group 0) of
 *      ringEntries entries whose buffers are slab slots: buffer id = slot index, address
 *      slab + slot*slotSize, length slotSize. The slab is kept alive by a napi reference.
 *   2. uringReaderProvide(slots) puts slots into the buffer ring (pure memory: add + one
 *      release store of the tail, no system call). From then until a reap reports the slot,
 *      the KERNEL owns it: the caller must not touch it. At most ringEntries slots may be
 *      provided and not yet reported (RangeError otherwise: a programmer error).
 *   3. uringReaderAdd(fd, port) arms one IORING_OP_READ_MULTISHOT with buffer select on fd
 *      (exactly one per fd, and one fd per port). Each packet the TUN queues is read by
 *      io_uring into the next buffer of the ring and posted as a CQE with
 *      IORING_CQE_F_MORE, bid = slot, res = length (incl. the 12-byte virtio header when
 *      the fd has IFF_VNET_HDR). user_data = kind | generation | port record.
 *   4. The CQE wakes the eventfd, libuv's epoll sees it (pollStart on the eventfd), JS calls
 *      uringReaderReap(): it drains the eventfd, then walks the CQ ring (no system call unless
 *      re-arms are pending or the kernel flagged task work / CQ overflow). Each packet CQE
 *      hands its slot back to the CALLER (reported in slots/lens/ports).
 *   5. A multishot read ends (a CQE without IORING_CQE_F_MORE) when the buffer ring ran dry
 *      (ENOBUFS), when the CQ ring overflowed, or on an error. ENOBUFS and other transient
 *      ends (res >= 0, EINTR, EAGAIN, ENOMEM, ECANCELED not asked for by us) leave the port
 *      IDLE: the next uringReaderProvide re-arms it, and so does a reap that drained the CQ
 *      while slots are in the kernel. Any other error (EBADFD: the device was deleted, EBADF,
 *      EIO, ...) is counted in stats and the port stays FAILED until removed and added again
 *      (re-arming it would spin on the same error).
 *   6. uringReaderRemove(port) cancels the read synchronously (IORING_REGISTER_SYNC_CANCEL,
 *      Linux 6.0; an async cancel SQE otherwise) and bumps the port record's generation.
 *      When it returns the request no longer exists, so closing the fd right after is safe
 *      (io_uring held its own file reference until then). Packets of that port that are
 *      still unreaped in the CQ ring carry the old generation: reap never reports them, it
 *      puts their slots straight back into the buffer ring (counted in stats[2]).
 *   7. Task work: a multishot read is poll-driven. The TUN's wake-up queues task work to the
 *      thread that submitted (the main thread), and the actual copy into the slot runs there.
 *      With IORING_SETUP_COOP_TASKRUN the kernel does not IPI a running thread (JS is not
 *      interrupted mid-batch; the work runs at its next system call), but it does wake a
 *      thread sleeping interruptibly, e.g. in libuv's epoll_wait, which then runs the work,
 *      posts the CQEs and signals the eventfd. DEFER_TASKRUN is NOT used for the reader: its
 *      work would run only inside io_uring_enter, and the eventfd is signalled only when the
 *      work list turns non-empty, which makes a lost wake-up easy. test/io/uring.test.ts
 *      proves packets arrive while the JS thread is idle in the event loop.
 *   8. uringReaderClose() cancels every armed read synchronously, then tears the ring down.
 *      On return the kernel writes no more into the slab: every slot that was provided and not
 *      reported is the caller's again (packets in unreaped CQEs are lost).
 *
 * Writer (one per shard worker thread, SINGLE_ISSUER + DEFER_TASKRUN: only that thread
 * submits, and completions are processed only while it waits in io_uring_enter):
 *   uringWriteBatch() puts one IORING_OP_WRITE per packet (to its own fd) in the SQ ring and
 *   calls io_uring_submit_and_wait(n): one io_uring_enter per ring-full of packets. It returns
 *   after every write completed, so the caller may reuse the slots at once. Per-packet
 *   results are scanned in index order. io_uring turns a TUN write's EAGAIN into a poll-wait
 *   by itself, so the EAGAIN stop of writeBatch practically never happens here; when it does,
 *   packets after it in the same batch may have been written too (reordering, not loss).
 *
 * What Debian's liburing 2.3 lacks, defined here:
 *   - IORING_OP_READ_MULTISHOT (opcode 49, Linux 6.7) and io_uring_prep_read_multishot():
 *     TS_OP_READ_MULTISHOT and prep_read_multishot() below.
 *   - io_uring_setup_buf_ring() (liburing 2.4): setup_buf_ring() mmaps the ring and registers
 *     it with io_uring_register_buf_ring() (IORING_REGISTER_PBUF_RING, Linux 5.19).
 * Built without liburing (no /usr/include/liburing.h at build time, see binding.gyp), the
 * engine is absent: uringProbe() says so and every other uring* call throws ENOSYS.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <node_api.h>

#include "napi_util.h"

static napi_value probe_result(napi_env env, bool available, const char *reason) {
  napi_value obj, a, r;
  napi_create_object(env, &obj);
  napi_get_boolean(env, available, &a);
  napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &r);
  napi_set_named_property(env, obj, "available", a);
  napi_set_named_property(env, obj, "reason", r);
  return obj;
}

#ifndef HAVE_LIBURING

static napi_value js_uring_probe(napi_env env, napi_callback_info info) {
  return probe_result(env, false, "built without liburing");
}

static napi_value js_uring_absent(napi_env env, napi_callback_info info) {
  throw_errno(env, ENOSYS, "io_uring_setup",
              "tun: the io_uring engine is not built (built without liburing): use the "
              "read/write engine");
  return NULL;
}

void uring_register(napi_env env, napi_value exports) {
  static const char *names[] = {"uringReaderOpen", "uringReaderEventFd", "uringReaderAdd",
                                "uringReaderRemove", "uringReaderProvide", "uringReaderReap",
                                "uringReaderClose", "uringWriterOpen", "uringWriteBatch",
                                "uringWriterClose"};
  set_fn(env, exports, "uringProbe", js_uring_probe);
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    set_fn(env, exports, names[i], js_uring_absent);
}

#else /* HAVE_LIBURING */

#include <sys/eventfd.h>
#include <sys/mman.h>

#include <liburing.h>

/* ---------------------------------------------------------------------------------------- */
/* What liburing 2.3 lacks                                                                  */

#define TS_OP_READ_MULTISHOT 49 /* IORING_OP_READ_MULTISHOT, Linux 6.7 */

/* Multishot read into buffers of group bgid; len 0 = each buffer's own length. */
static void prep_read_multishot(struct io_uring_sqe *sqe, int fd, unsigned bgid) {
  io_uring_prep_rw(IORING_OP_NOP, sqe, fd, NULL, 0, 0);
  sqe->opcode = TS_OP_READ_MULTISHOT;
  sqe->buf_group = (__u16)bgid;
  sqe->flags |= IOSQE_BUFFER_SELECT;
}

/* mmap + IORING_REGISTER_PBUF_RING (io_uring_setup_buf_ring arrived in liburing 2.4). */
static struct io_uring_buf_ring *setup_buf_ring(struct io_uring *ring, unsigned entries,
                                                unsigned bgid, size_t *size, int *err) {
  *size = (size_t)entries * sizeof(struct io_uring_buf);
  void *p = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (p == MAP_FAILED) {
    *err = errno;
    return NULL;
  }
  struct io_uring_buf_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.ring_addr = (unsigned long)(uintptr_t)p;
  reg.ring_entries = entries;
  reg.bgid = (__u16)bgid;
  int rc = io_uring_register_buf_ring(ring, &reg, 0);
  if (rc < 0) {
    munmap(p, *size);
    *err = -rc;
    return NULL;
  }
  io_uring_buf_ring_init((struct io_uring_buf_ring *)p);
  return (struct io_uring_buf_ring *)p;
}

/* ---------------------------------------------------------------------------------------- */
/* Probe                                                                                    */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool probe_ok;
static char probe_reason[160];

static void probe_run(void) {
  struct io_uring ring;
  int rc = io_uring_queue_init(4, &ring, 0);
  if (rc < 0) {
    int err = -rc;
    if (err == EPERM)
      snprintf(probe_reason, sizeof probe_reason,
               "io_uring_setup: EPERM (blocked by seccomp, or sysctl kernel.io_uring_disabled)");
    else if (err == ENOSYS)
      snprintf(probe_reason, sizeof probe_reason,
               "io_uring_setup: ENOSYS (kernel built without io_uring, or blocked by seccomp)");
    else
      snprintf(probe_reason, sizeof probe_reason, "io_uring_setup: %s (%s)", errno_code(err),
               strerror(err));
    return;
  }
  struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
  if (p == NULL) {
    snprintf(probe_reason, sizeof probe_reason, "IORING_REGISTER_PROBE failed (kernel < 5.6)");
  } else if (!io_uring_opcode_supported(p, TS_OP_READ_MULTISHOT)) {
    snprintf(probe_reason, sizeof probe_reason,
             "kernel lacks IORING_OP_READ_MULTISHOT (needs Linux 6.7)");
  } else if (!io_uring_opcode_supported(p, IORING_OP_WRITE)) {
    snprintf(probe_reason, sizeof probe_reason, "kernel lacks IORING_OP_WRITE");
  } else if (!io_uring_opcode_supported(p, IORING_OP_ASYNC_CANCEL)) {
    snprintf(probe_reason, sizeof probe_reason, "kernel lacks IORING_OP_ASYNC_CANCEL");
  } else {
    probe_ok = true;
  }
  if (p != NULL) io_uring_free_probe(p);
  io_uring_queue_exit(&ring);
}

static napi_value js_uring_probe(napi_env env, napi_callback_info info) {
  pthread_once(&probe_once, probe_run);
  return probe_result(env, probe_ok, probe_ok ? "" : probe_reason);
}

/* A ring with the first flag set the kernel accepts (later entries are fallbacks). */
static int ring_init(struct io_uring *ring, unsigned entries, unsigned cq_entries,
                     const unsigned *flags, size_t nflags) {
  int rc = -EINVAL;
  for (size_t i = 0; i < nflags; i++) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = flags[i];
    if (cq_entries > 0) {
      p.flags |= IORING_SETUP_CQSIZE;
      p.cq_entries = cq_entries;
    }
    rc = io_uring_queue_init_params(entries, ring, &p);
    if (rc != -EINVAL) return rc;
  }
  return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Reader                                                                                   */

#define READER_MAGIC 0x75724452u /* "urDR" */
#define WRITER_MAGIC 0x75725752u /* "urWR" */
#define BGID 0
#define READER_SQ_ENTRIES 64

/* user_data: kind (8 bits) | generation (24 bits) | port record index (32 bits). */
#define UD_READ 1ull
#define UD_CANCEL 2ull
#define UD_KIND(u) ((u) >> 56)
#define UD_GEN(u) ((uint32_t)((u) >> 32) & 0xffffffu)
#define UD_REC(u) ((uint32_t)(u))
#define UD_MAKE(kind, gen, rec) (((kind) << 56) | ((uint64_t)((gen) & 0xffffffu) << 32) | (rec))

enum { PORT_FREE = 0, PORT_ARMED, PORT_IDLE, PORT_FAILED };

typedef struct ur_port {
  int fd;
  int32_t port;
  uint32_t gen;  /* bumped on remove: older CQEs are stale */
  int state;
} ur_port;

typedef struct ur_reader {
  uint32_t magic;
  int closed;
  int cleanup_added;
  napi_env env;
  struct io_uring ring;
  struct io_uring_buf_ring *br;
  size_t br_size;
  uint32_t entries;     /* buffer ring entries (ringEntries) */
  int mask;
  int efd;
  uint8_t *slab;
  size_t usable_len;    /* slab bytes addressable by a 16-bit buffer id */
  int64_t slot_size;
  napi_ref slab_ref;
  uint32_t outstanding; /* slots provided and not yet reported (recycled ones stay counted) */
  uint32_t n_idle;      /* ports waiting for a re-arm */
  ur_port *ports;
  uint32_t nports, cap;
} ur_reader;

static int transient_end(int err) {
  return err == 0 || err == ENOBUFS || err == EINTR || err == EAGAIN || err == ENOMEM ||
         err == ECANCELED;
}

static struct io_uring_sqe *get_sqe(struct io_uring *ring) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
  if (sqe == NULL) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

/* Queues the multishot read of record i (not submitted). */
static int arm_port(ur_reader *r, uint32_t i) {
  ur_port *p = &r->ports[i];
  struct io_uring_sqe *sqe = get_sqe(&r->ring);
  if (sqe == NULL) return -EBUSY;
  prep_read_multishot(sqe, p->fd, BGID);
  io_uring_sqe_set_data64(sqe, UD_MAKE(UD_READ, p->gen, i));
  if (p->state == PORT_IDLE) r->n_idle--;
  p->state = PORT_ARMED;
  return 0;
}

/* Queues the re-arm of every IDLE port; returns how many. */
static int rearm_idle(ur_reader *r) {
  int n = 0;
  for (uint32_t i = 0; i < r->nports && r->n_idle > 0; i++)
    if (r->ports[i].state == PORT_IDLE && arm_port(r, i) == 0) n++;
  return n;
}

/* Cancels the armed read of record i; returns when it is gone (or as soon as possible). */
static void cancel_port(ur_reader *r, uint32_t i) {
  ur_port *p = &r->ports[i];
  struct io_uring_sync_cancel_reg reg;
  memset(&reg, 0, sizeof reg);
  reg.addr = UD_MAKE(UD_READ, p->gen, i);
  reg.fd = -1;
  reg.timeout.tv_sec = -1;
  reg.timeout.tv_nsec = -1;
  int rc;
  do rc = io_uring_register_sync_cancel(&r->ring, &reg);
  while (rc == -EINTR);
  if (rc == -EINVAL || rc == -ENOSYS || rc == -EOPNOTSUPP) {
    /* No synchronous cancel (Linux < 6.0): an async one, submitted now. */
    struct io_uring_sqe *sqe = get_sqe(&r->ring);
    if (sqe != NULL) {
      io_uring_prep_cancel64(sqe, reg.addr, 0);
      io_uring_sqe_set_data64(sqe, UD_MAKE(UD_CANCEL, 0, 0));
      io_uring_submit(&r->ring);
    }
  }
}

static void reader_release(ur_reader *r, bool napi_ok) {
  if (r->closed) return;
  r->closed = 1;
  /* Cancel every armed read first, so nothing is copied into the slab after we return. */
  for (uint32_t i = 0; i < r->nports; i++)
    if (r->ports[i].state == PORT_ARMED) cancel_port(r, i);
  io_uring_queue_exit(&r->ring);
  if (r->br != NULL) munmap(r->br, r->br_size);
  r->br = NULL;
  if (r->efd >= 0) close(r->efd);
  r->efd = -1;
  free(r->ports);
  r->ports = NULL;
  r->nports = r->cap = 0;
  if (napi_ok && r->slab_ref != NULL) napi_delete_reference(r->env, r->slab_ref);
  r->slab_ref = NULL;
}

static void reader_env_cleanup(void *arg) {
  ur_reader *r = (ur_reader *)arg;
  r->cleanup_added = 0;
  reader_release(r, false);
}

static void reader_finalize(napi_env env, void *data, void *hint) {
  ur_reader *r = (ur_reader *)data;
  if (r->cleanup_added) napi_remove_env_cleanup_hook(env, reader_env_cleanup, r);
  r->cleanup_added = 0;
  reader_release(r, true);
  free(r);
}

static int get_reader(napi_env env, napi_value v, ur_reader **out) {
  napi_valuetype t;
  void *data = NULL;
  napi_typeof(env, v, &t);
  if (t == napi_external) napi_get_value_external(env, v, &data);
  if (data == NULL || ((ur_reader *)data)->magic != READER_MAGIC) {
    throw_type(env, "r", "a handle returned by uringReaderOpen()");
    return -1;
  }
  *out = (ur_reader *)data;
  if ((*out)->closed) {
    napi_throw_error(env, "ERR_URING_CLOSED", "tun: the io_uring reader is closed");
    return -1;
  }
  return 0;
}

/* uringReaderOpen(slab: Uint8Array, slotSize, ringEntries) -> handle */
static napi_value js_reader_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  slotted_slab s;
  int64_t entries;
  if (get_args(env, info, 3, 3, argv, NULL) != 0) return NULL;
  if (get_slotted_slab(env, argv, &s) != 0) return NULL;
  uint8_t *slab = s.slab;
  size_t slab_len = s.slab_len;
  int64_t slot_size = s.slot_size;
  if (get_int(env, argv[2], "ringEntries", 1, 32768, &entries) != 0) return NULL;
  if ((entries & (entries - 1)) != 0) {
    char buf[128];
    snprintf(buf, sizeof buf, "tun: argument \"ringEntries\" must be a power of two, got %lld",
             (long long)entries);
    throw_range(env, buf);
    return NULL;
  }
  if ((size_t)slot_size > slab_len) {
    char buf[128];
    snprintf(buf, sizeof buf, "tun: argument \"slotSize\" (%lld) exceeds the slab (%zu bytes)",
             (long long)slot_size, slab_len);
    throw_range(env, buf);
    return NULL;
  }

  ur_reader *r = (ur_reader *)calloc(1, sizeof *r);
  if (r == NULL) {
    throw_sys(env, ENOMEM, "calloc", "allocating the io_uring reader");
    return NULL;
  }
  r->magic = READER_MAGIC;
  r->env = env;
  r->efd = -1;
  r->slab = slab;
  r->slot_size = slot_size;
  r->entries = (uint32_t)entries;
  r->mask = io_uring_buf_ring_mask((uint32_t)entries);
  uint64_t max_bytes = (uint64_t)65536 * (uint64_t)slot_size;
  r->usable_len = slab_len < max_bytes ? slab_len : (size_t)max_bytes;

  /* CQ: one CQE per buffer at most, plus a few per port; twice the buffers is plenty. */
  unsigned cq = (unsigned)entries * 2 < 64 ? 64 : (unsigned)entries * 2;
  static const unsigned flags[] = {
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
      IORING_SETUP_SUBMIT_ALL, 0};
  int rc = ring_init(&r->ring, READER_SQ_ENTRIES, cq, flags, sizeof flags / sizeof flags[0]);
  if (rc < 0) {
    free(r);
    throw_sys(env, -rc, "io_uring_setup", "setting up the io_uring reader");
    return NULL;
  }
  int err = 0;
  r->br = setup_buf_ring(&r->ring, (unsigned)entries, BGID, &r->br_size, &err);
  if (r->br == NULL) {
    io_uring_queue_exit(&r->ring);
    free(r);
    throw_sys(env, err, "io_uring_register(IORING_REGISTER_PBUF_RING)",
              "registering the provided-buffer ring");
    return NULL;
  }
  r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->efd < 0) {
    err = errno;
    r->closed = 0;
    reader_release(r, false);
    free(r);
    throw_sys(env, err, "eventfd", "creating the io_uring reader's eventfd");
    return NULL;
  }
  rc = io_uring_register_eventfd(&r->ring, r->efd);
  if (rc < 0) {
    reader_release(r, false);
    free(r);
    throw_sys(env, -rc, "io_uring_register(IORING_REGISTER_EVENTFD)",
              "registering the io_uring reader's eventfd");
    return NULL;
  }
  napi_value handle;
  if (napi_create_reference(env, argv[0], 1, &r->slab_ref) != napi_ok ||
      napi_create_external(env, r, reader_finalize, NULL, &handle) != napi_ok) {
    reader_release(r, true);
    free(r);
    return NULL;
  }
  if (napi_add_env_cleanup_hook(env, reader_env_cleanup, r) == napi_ok) r->cleanup_added = 1;
  return handle;
}

/* uringReaderEventFd(r) -> fd */
static napi_value js_reader_eventfd(napi_env env, napi_callback_info info) {
  napi_value argv[1], res;
  ur_reader *r;
  if (get_args(env, info, 1, 1, argv, NULL) != 0) return NULL;
  if (get_reader(env, argv[0], &r) != 0) return NULL;
  napi_create_int32(env, r->efd, &res);
  return res;
}

/* uringReaderAdd(r, fd, port): arms the multishot read (now if slots are provided, else at
 * the next provide). Throws EEXIST if the port or the fd is already added. */
static napi_value js_reader_add(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  ur_reader *r;
  int fd;
  int64_t port;
  if (get_args(env, info, 3, 3, argv, NULL) != 0) return NULL;
  if (get_reader(env, argv[0], &r) != 0) return NULL;
  if (get_fd(env, argv[1], &fd) != 0) return NULL;
  if (get_int(env, argv[2], "port", 0, 65535, &port) != 0) return NULL;
  uint32_t slot = UINT32_MAX;
  for (uint32_t i = 0; i < r->nports; i++) {
    ur_port *p = &r->ports[i];
    if (p->state == PORT_FREE) {
      if (slot == UINT32_MAX) slot = i;
      continue;
    }
    if (p->port == port || p->fd == fd) {
      char buf[160];
      snprintf(buf, sizeof buf, "tun: uringReaderAdd(fd %d, port %lld): %s %d is already added",
               fd, (long long)port, p->port == port ? "port" : "fd",
               p->port == port ? p->port : p->fd);
      throw_errno(env, EEXIST, "uringReaderAdd", buf);
      return NULL;
    }
  }
  if (slot == UINT32_MAX) {
    if (r->nports == r->cap) {
      uint32_t cap = r->cap == 0 ? 16 : r->cap * 2;
      ur_port *np = (ur_port *)realloc(r->ports, cap * sizeof *np);
      if (np == NULL) {
        throw_sys(env, ENOMEM, "realloc", "growing the io_uring port table");
        return NULL;
      }
      r->ports = np;
      r->cap = cap;
    }
    slot = r->nports++;
    r->ports[slot].gen = 0;
  }
  ur_port *p = &r->ports[slot];
  p->fd = fd;
  p->port = (int32_t)port;
  p->gen = (p->gen + 1) & 0xffffffu;
  p->state = PORT_IDLE;
  r->n_idle++;
  if (r->outstanding > 0) {
    int rc = arm_port(r, slot);
    if (rc == 0) rc = io_uring_submit(&r->ring);
    if (rc < 0) {
      if (p->state == PORT_IDLE) r->n_idle--;
      p->state = PORT_FREE;
      throw_sys(env, -rc, "io_uring_enter", "arming the multishot read");
      return NULL;
    }
  }
  return NULL;
}

/* uringReaderRemove(r, port): no-op for a port that is not added. */
static napi_value js_reader_remove(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ur_reader *r;
  int64_t port;
  if (get_args(env, info, 2, 2, argv, NULL) != 0) return NULL;
  if (get_reader(env, argv[0], &r) != 0) return NULL;
  if (get_int(env, argv[1], "port", 0, 65535, &port) != 0) return NULL;
  for (uint32_t i = 0; i < r->nports; i++) {
    ur_port *p = &r->ports[i];
    if (p->state == PORT_FREE || p->port != port) continue;
    if (p->state == PORT_ARMED) cancel_port(r, i);
    if (p->state == PORT_IDLE) r->n_idle--;
    p->state = PORT_FREE;
    p->gen = (p->gen + 1) & 0xffffffu; /* CQEs still queued for it are stale now */
    p->fd = -1;
    p->port = -1;
    break;
  }
  return NULL;
}

/* uringReaderProvide(r, slots: Int32Array, start, count) */
static napi_value js_reader_provide(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  ur_reader *r;
  int32_t *slots;
  size_t slots_len;
  int64_t start, count;
  if (get_args(env, info, 4, 4, argv, NULL) != 0) return NULL;
  if (get_reader(env, argv[0], &r) != 0) return NULL;
  if (get_typed(env, argv[1], napi_int32_array, "slots", "an Int32Array", (void **)&slots,
                &slots_len) != 0)
    return NULL;
  if (get_int(env, argv[2], "start", 0, INT32_MAX, &start) != 0) return NULL;
  if (get_int(env, argv[3], "count", 0, INT32_MAX, &count) != 0) return NULL;
  if (check_slots(env, slots, start, count, slots_len, r->slot_size, r->usable_len, -1) != 0)
    return NULL;
  if ((int64_t)r->outstanding + count > (int64_t)r->entries) {
    char buf[192];
    snprintf(buf, sizeof buf,
             "tun: uringReaderProvide: %u slots are already with the kernel, %lld more exceed "
             "ringEntries (%u)", r->outstanding, (long long)count, r->entries);
    throw_range(env, buf);
    return NULL;
  }
  for (int64_t i = 0; i < count; i++) {
    int32_t s = slots[start + i];
    io_uring_buf_ring_add(r->br, r->slab + (int64_t)s * r->slot_size, (unsigned)r->slot_size,
                          (unsigned short)s, r->mask, (int)i);
  }
  io_uring_buf_ring_advance(r->br, (int)count);
  r->outstanding += (uint32_t)count;
  if (r->n_idle > 0 && r->outstanding > 0 && rearm_idle(r) > 0) {
    int rc = io_uring_submit(&r->ring);
    if (rc < 0) {
      throw_sys(env, -rc, "io_uring_enter", "re-arming multishot reads");
      return NULL;
    }
  }
  return NULL;
}

/* stats slots written by reap */
#define RS_ERRORS 0
#define RS_ERRNO 1
#define RS_STALE 2

/* uringReaderReap(r, slots, lens, ports, max, stats?) -> n */
static napi_value js_reader_reap(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  ur_reader *r;
  int32_t *slots, *lens, *ports, *stats;
  size_t slots_len, lens_len, ports_len, stats_len = 0;
  int64_t max;
  if (get_args(env, info, 5, 6, argv, NULL) != 0) return NULL;
  if (get_reader(env, argv[0], &r) != 0) return NULL;
  if (get_typed(env, argv[1], napi_int32_array, "slots", "an Int32Array", (void **)&slots,
                &slots_len) != 0)
    return NULL;
  if (get_typed(env, argv[2], napi_int32_array, "lens", "an Int32Array", (void **)&lens,
                &lens_len) != 0)
    return NULL;
  if (get_typed(env, argv[3], napi_int32_array, "ports", "an Int32Array", (void **)&ports,
                &ports_len) != 0)
    return NULL;
  if (get_int(env, argv[4], "max", 0, INT32_MAX, &max) != 0) return NULL;
  if (get_stats(env, argv[5], 2, &stats, &stats_len) != 0) return NULL;
  if ((size_t)max > slots_len || (size_t)max > lens_len || (size_t)max > ports_len) {
    char buf[160];
    snprintf(buf, sizeof buf,
             "tun: argument \"max\" (%lld) exceeds slots (%zu), lens (%zu) or ports (%zu)",
             (long long)max, slots_len, lens_len, ports_len);
    throw_range(env, buf);
    return NULL;
  }

  /* 1. Drain the eventfd BEFORE looking at the CQ: a CQE posted after this read signals it
   *    again, so no wake-up is lost. (Returning to user space from this read also runs any
   *    pending COOP task work, which posts its CQEs.) */
  uint64_t ev;
  ssize_t rd = read(r->efd, &ev, sizeof ev);
  (void)rd;
  /* 2. Pending SQEs (re-arms), task work flagged, or an overflowed CQ: one io_uring_enter. */
  unsigned sqf = IO_URING_READ_ONCE(*r->ring.sq.kflags);
  if (io_uring_sq_ready(&r->ring) > 0 || (sqf & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)))
    io_uring_submit_and_get_events(&r->ring);

  /* 3. Walk the CQ. */
  int32_t n = 0, errors = 0, last_errno = 0, stale = 0;
  int recycled = 0;
  unsigned head, seen = 0;
  struct io_uring_cqe *cqe;
  io_uring_for_each_cqe(&r->ring, head, cqe) {
    if (n >= max) break;
    seen++;
    uint64_t ud = cqe->user_data;
    if (UD_KIND(ud) != UD_READ) continue;
    uint32_t idx = UD_REC(ud);
    ur_port *p = idx < r->nports ? &r->ports[idx] : NULL;
    bool live = p != NULL && p->state != PORT_FREE && p->gen == UD_GEN(ud);
    int res = cqe->res;
    bool has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
    if (has_buf) {
      int32_t bid = (int32_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
      if (live && res > 0 && res < r->slot_size) {
        slots[n] = bid;
        lens[n] = res;
        ports[n] = p->port;
        n++;
        r->outstanding--;
      } else {
        /* Stale (port removed), truncated (res == slotSize: TUN cuts a longer packet) or
         * empty: the slot goes straight back to the kernel. */
        if (!live) stale++;
        else if (res >= r->slot_size) {
          errors++;
          last_errno = EMSGSIZE;
        }
        io_uring_buf_ring_add(r->br, r->slab + (int64_t)bid * r->slot_size,
                              (unsigned)r->slot_size, (unsigned short)bid, r->mask, recycled);
        recycled++;
      }
    }
    int err = res < 0 ? -res : 0;
    if (err != 0 && err != ENOBUFS && err != ECANCELED && live) {
      errors++;
      last_errno = err;
    }
    if (live && !(cqe->flags & IORING_CQE_F_MORE) && p->state == PORT_ARMED) {
      if (transient_end(err)) {
        p->state = PORT_IDLE;
        r->n_idle++;
      } else {
        p->state = PORT_FAILED;
      }
    }
  }
  io_uring_cq_advance(&r->ring, seen);
  if (recycled > 0) io_uring_buf_ring_advance(r->br, recycled);

  /* 4. More CQEs than max: keep the eventfd readable so the loop calls us again. Else re-arm
   *    ports that ended for lack of buffers if slots are with the kernel again. */
  if (io_uring_cq_ready(&r->ring) > 0) {
    eventfd_write(r->efd, 1);
  } else if (r->n_idle > 0 && r->outstanding > 0 && rearm_idle(r) > 0) {
    io_uring_submit(&r->ring);
  }
  if (stats != NULL) {
    stats[RS_ERRORS] = errors;
    stats[RS_ERRNO] = last_errno;
    if (stats_len > RS_STALE) stats[RS_STALE] = stale;
  }
  return int32_result(env, n);
}

/* uringReaderClose(r): idempotent. */
static napi_value js_reader_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  napi_valuetype t;
  void *data = NULL;
  if (get_args(env, info, 1, 1, argv, NULL) != 0) return NULL;
  napi_typeof(env, argv[0], &t);
  if (t == napi_external) napi_get_value_external(env, argv[0], &data);
  if (data == NULL || ((ur_reader *)data)->magic != READER_MAGIC) {
    throw_type(env, "r", "a handle returned by uringReaderOpen()");
    return NULL;
  }
  ur_reader *r = (ur_reader *)data;
  if (r->cleanup_added) napi_remove_env_cleanup_hook(env, reader_env_cleanup, r);
  r->cleanup_added = 0;
  reader_release(r, true);
  return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Writer                                                                                   */

typedef struct ur_writer {
  uint32_t magic;
  int closed;
  int cleanup_added;
  struct io_uring ring;
  uint32_t sq_entries;
  int32_t *res; /* per-packet result of the chunk in flight, sq_entries long */
} ur_writer;

static void writer_release(ur_writer *w) {
  if (w->closed) return;
  w->closed = 1;
  io_uring_queue_exit(&w->ring);
  free(w->res);
  w->res = NULL;
}

static void writer_env_cleanup(void *arg) {
  ur_writer *w = (ur_writer *)arg;
  w->cleanup_added = 0;
  writer_release(w);
}

static void writer_finalize(napi_env env, void *data, void *hint) {
  ur_writer *w = (ur_writer *)data;
  if (w->cleanup_added) napi_remove_env_cleanup_hook(env, writer_env_cleanup, w);
  w->cleanup_added = 0;
  writer_release(w);
  free(w);
}

static ur_writer *writer_of(napi_env env, napi_value v) {
  napi_valuetype t;
  void *data = NULL;
  napi_typeof(env, v, &t);
  if (t == napi_external) napi_get_value_external(env, v, &data);
  if (data == NULL || ((ur_writer *)data)->magic != WRITER_MAGIC) {
    throw_type(env, "w", "a handle returned by uringWriterOpen()");
    return NULL;
  }
  return (ur_writer *)data;
}

/* uringWriterOpen(entries) -> handle */
static napi_value js_writer_open(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int64_t entries;
  if (get_args(env, info, 1, 1, argv, NULL) != 0) return NULL;
  if (get_int(env, argv[0], "entries", 1, 32768, &entries) != 0) return NULL;
  ur_writer *w = (ur_writer *)calloc(1, sizeof *w);
  if (w == NULL) {
    throw_sys(env, ENOMEM, "calloc", "allocating the io_uring writer");
    return NULL;
  }
  w->magic = WRITER_MAGIC;
  static const unsigned flags[] = {
      IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL, IORING_SETUP_SUBMIT_ALL, 0};
  int rc = ring_init(&w->ring, (unsigned)entries, 0, flags, sizeof flags / sizeof flags[0]);
  if (rc < 0) {
    free(w);
    throw_sys(env, -rc, "io_uring_setup", "setting up the io_uring writer");
    return NULL;
  }
  w->sq_entries = w->ring.sq.ring_entries;
  w->res = (int32_t *)calloc(w->sq_entries, sizeof *w->res);
  napi_value handle;
  if (w->res == NULL) {
    writer_release(w);
    free(w);
    throw_sys(env, ENOMEM, "calloc", "allocating the io_uring writer");
    return NULL;
  }
  if (napi_create_external(env, w, writer_finalize, NULL, &handle) != napi_ok) {
    writer_release(w);
    free(w);
    return NULL;
  }
  if (napi_add_env_cleanup_hook(env, writer_env_cleanup, w) == napi_ok) w->cleanup_added = 1;
  return handle;
}

/* uringWriteBatch(w, fds, slab, offsets, lens, start, count, stats?) -> consumed */
static napi_value js_write_batch_uring(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  packet_batch b;
  int32_t *fds;
  if (get_args(env, info, 7, 8, argv, NULL) != 0) return NULL;
  ur_writer *w = writer_of(env, argv[0]);
  if (w == NULL) return NULL;
  if (w->closed) {
    napi_throw_error(env, "ERR_URING_CLOSED", "tun: the io_uring writer is closed");
    return NULL;
  }
  if (get_packet_batch(env, argv + 2, &b) != 0) return NULL;
  if (get_batch_fds(env, argv[1], &b, &fds) != 0) return NULL;

  int64_t i = b.start, end = b.start + b.count;
  int32_t consumed = 0, dropped = 0, drop_errno = 0;
  bool stop = false;
  while (i < end && !stop) {
    /* 1. One SQE per packet, up to a ring-full; fd < 0 is a drop without an SQE. */
    uint32_t k = 0, queued = 0;
    for (; i + k < end && k < w->sq_entries; k++) {
      int64_t j = i + k;
      if (fds[j] < 0) {
        w->res[k] = -EBADF;
        continue;
      }
      struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
      if (sqe == NULL) break; /* cannot happen: the ring is drained after every chunk */
      io_uring_prep_write(sqe, fds[j], b.slab + b.offsets[j], (unsigned)b.lens[j], 0);
      io_uring_sqe_set_data64(sqe, k);
      w->res[k] = INT32_MIN;
      queued++;
    }
    /* 2. Submit and wait for all of them: one io_uring_enter. */
    uint32_t got = 0;
    while (got < queued) {
      struct io_uring_cqe *first;
      int rc = io_uring_sq_ready(&w->ring) > 0 ? io_uring_submit_and_wait(&w->ring, queued - got)
                                               : io_uring_wait_cqe_nr(&w->ring, &first, queued - got);
      if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME) {
        throw_sys(env, -rc, "io_uring_enter", "submitting writes");
        return NULL;
      }
      unsigned head, seen = 0;
      struct io_uring_cqe *cqe;
      io_uring_for_each_cqe(&w->ring, head, cqe) {
        uint64_t ud = cqe->user_data;
        if (ud < w->sq_entries) w->res[ud] = cqe->res;
        seen++;
      }
      io_uring_cq_advance(&w->ring, seen);
      got += seen;
    }
    /* 3. Results in index order. */
    for (uint32_t m = 0; m < k; m++) {
      int res = w->res[m];
      if (res >= 0) {
        consumed++;
      } else if (res == -EAGAIN) {
        stop = true;
        break;
      } else {
        consumed++;
        dropped++;
        drop_errno = -res;
      }
    }
    i += k;
  }
  if (b.stats != NULL) {
    b.stats[0] = dropped;
    b.stats[1] = drop_errno;
  }
  return int32_result(env, consumed);
}

/* uringWriterClose(w): idempotent. */
static napi_value js_writer_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, 1, argv, NULL) != 0) return NULL;
  ur_writer *w = writer_of(env, argv[0]);
  if (w == NULL) return NULL;
  if (w->cleanup_added) napi_remove_env_cleanup_hook(env, writer_env_cleanup, w);
  w->cleanup_added = 0;
  writer_release(w);
  return NULL;
}

void uring_register(napi_env env, napi_value exports) {
  set_fn(env, exports, "uringProbe", js_uring_probe);
  set_fn(env, exports, "uringReaderOpen", js_reader_open);
  set_fn(env, exports, "uringReaderEventFd", js_reader_eventfd);
  set_fn(env, exports, "uringReaderAdd", js_reader_add);
  set_fn(env, exports, "uringReaderRemove", js_reader_remove);
  set_fn(env, exports, "uringReaderProvide", js_reader_provide);
  set_fn(env, exports, "uringReaderReap", js_reader_reap);
  set_fn(env, exports, "uringReaderClose", js_reader_close);
  set_fn(env, exports, "uringWriterOpen", js_writer_open);
  set_fn(env, exports, "uringWriteBatch", js_write_batch_uring);
  set_fn(env, exports, "uringWriterClose", js_writer_close);
}

#endif /* HAVE_LIBURING */
