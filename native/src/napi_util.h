/*
 * Helpers shared by the compilation units of the tunswitch_tun binding (defined in tun.c):
 * errors thrown as JS Errors with code/errno/syscall, and argument parsing that names the
 * argument. Every get_* / check_* returns 0 on success, -1 after throwing.
 */
#ifndef TUNSWITCH_NAPI_UTIL_H
#define TUNSWITCH_NAPI_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <node_api.h>

/* The errno name ("EBUSY"), "EUNKNOWN" for one we do not list. */
const char *errno_code(int err);
/* Error(message) with .code = errno name, .errno = err, .syscall = syscall. */
void throw_errno(napi_env env, int err, const char *syscall, const char *message);
/* "tun: <what> failed: <strerror> (CODE)". */
void throw_sys(napi_env env, int err, const char *syscall, const char *what);
/* TypeError ERR_INVALID_ARG_TYPE: tun: argument "<arg>" must be <want>. */
void throw_type(napi_env env, const char *arg, const char *want);
/* RangeError ERR_OUT_OF_RANGE with the given message. */
void throw_range(napi_env env, const char *msg);

/* At least want_min of at most max arguments; missing ones are undefined. */
int get_args(napi_env env, napi_callback_info info, size_t want_min, size_t max, napi_value *argv,
             size_t *argc_out);
/* An integer-valued number in [lo, hi]. */
int get_int(napi_env env, napi_value v, const char *arg, int64_t lo, int64_t hi, int64_t *out);
/* An fd in [0, INT_MAX]. */
int get_fd(napi_env env, napi_value v, int *fd);
/* A typed array of the given element type; data already includes its byteOffset. */
int get_typed(napi_env env, napi_value v, napi_typedarray_type want, const char *arg,
              const char *want_name, void **data, size_t *len);
/* The optional `stats` argument: undefined -> *stats = NULL; else an Int32Array of at least
 * min_len elements; its length in *len_out when not NULL (0 when undefined). */
int get_stats(napi_env env, napi_value v, size_t min_len, int32_t **stats, size_t *len_out);

/*
 * A batch of packets described by (offset, length) pairs into a slab, entries
 * [start, start+count): the argument tail shared by writeBatch, writeBatchFds and
 * uringWriteBatch: (slab, offsets, lens, start, count, stats?) at argv[0..5]. Every pair is
 * bounds-checked against the slab; on success nothing needs checking again.
 */
typedef struct packet_batch {
  uint8_t *slab;
  size_t slab_len;
  int32_t *offsets;
  int32_t *lens;
  int32_t *stats; /* NULL when not given */
  int64_t start;
  int64_t count;
} packet_batch;
int get_packet_batch(napi_env env, napi_value *argv, packet_batch *b);
/* fds (an Int32Array) covers entries [b->start, b->start + b->count). */
int get_batch_fds(napi_env env, napi_value v, const packet_batch *b, int32_t **fds);

/* (slab: Uint8Array, slotSize) at argv[0..1]: a slab cut into slots of slot_size >= 1 bytes,
 * shared by readBatch, readBatchSlots and uringReaderOpen. */
typedef struct slotted_slab {
  uint8_t *slab;
  size_t slab_len;
  int64_t slot_size;
} slotted_slab;
int get_slotted_slab(napi_env env, napi_value *argv, slotted_slab *s);
/* Slots [first, first+count) lie inside the slab and, when lens_len >= 0, inside lens. */
int check_slot_range(napi_env env, const slotted_slab *s, const char *what, int64_t first,
                     int64_t count, int64_t lens_len);
/* The return value of a batch call: n as a JS number, or NULL when n < 0 (already thrown). */
napi_value int32_result(napi_env env, int32_t n);

/*
 * slots[start .. start+count) each name a slot inside the slab (slot * slot_size + slot_size
 * <= slab_len) and, when lens_len >= 0, inside lens (slot < lens_len).
 */
int check_slots(napi_env env, const int32_t *slots, int64_t start, int64_t count,
                size_t slots_len, int64_t slot_size, size_t slab_len, int64_t lens_len);

/* exports[name] = a function / an int32. */
void set_fn(napi_env env, napi_value exports, const char *name, napi_callback fn);
void set_int(napi_env env, napi_value exports, const char *name, int32_t v);

/* native/src/uring.c: adds the uring* functions to exports. */
void uring_register(napi_env env, napi_value exports);

#endif
