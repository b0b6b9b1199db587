/* SPDX-License-Identifier: MIT */
/*
 * Every memory-ordering primitive the channel layer uses, in one place, on
 * <stdatomic.h>.  The shared ring words are plain fixed-width integers in
 * the ABI (include/xway/ring.h); these helpers access them as atomics of
 * the same size and alignment (as liburing's barrier.h does).  Each call
 * site says what its ordering is for ("this before that").
 */
#ifndef XWAY_CHAN_BARRIER_H
#define XWAY_CHAN_BARRIER_H

#include <stdatomic.h>
#include <stdint.h>

#define XW_A32(p) ((_Atomic uint32_t *)(p))
#define XW_A64(p) ((_Atomic uint64_t *)(p))

/* Plain single-copy-atomic access: no ordering, just no tearing. */
static inline uint32_t xw_load_relaxed(const uint32_t *p)
{
	return atomic_load_explicit(XW_A32(p), memory_order_relaxed);
}

static inline void xw_store_relaxed(uint32_t *p, uint32_t v)
{
	atomic_store_explicit(XW_A32(p), v, memory_order_relaxed);
}

static inline void xw_store_relaxed64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit(XW_A64(p), v, memory_order_relaxed);
}

static inline uint64_t xw_load_relaxed64(const uint64_t *p)
{
	return atomic_load_explicit(XW_A64(p), memory_order_relaxed);
}

/* Index load: the index before the data it covers. */
static inline uint32_t xw_load_acquire(const uint32_t *p)
{
	return atomic_load_explicit(XW_A32(p), memory_order_acquire);
}

/* Index store: the data (or the copy-out) before the index. */
static inline void xw_store_release(uint32_t *p, uint32_t v)
{
	atomic_store_explicit(XW_A32(p), v, memory_order_release);
}

/* Flag set: everything published before, before the flag. */
static inline void xw_or_release(uint32_t *p, uint32_t v)
{
	atomic_fetch_or_explicit(XW_A32(p), v, memory_order_release);
}

/*
 * The notify-if-waiting handshake (Dekker): the sleeper stores its waiting
 * word then loads the ring index; the publisher stores the index then
 * loads the waiting word.  Each side's store must be ordered before its
 * own load of the other's word, which needs sequential consistency (a
 * full StoreLoad barrier); acquire/release is not enough.
 */
static inline void xw_store_seq(uint32_t *p, uint32_t v)
{
	atomic_store_explicit(XW_A32(p), v, memory_order_seq_cst);
}

static inline uint32_t xw_load_seq(const uint32_t *p)
{
	return atomic_load_explicit(XW_A32(p), memory_order_seq_cst);
}

static inline uint32_t xw_xchg_seq(uint32_t *p, uint32_t v)
{
	return atomic_exchange_explicit(XW_A32(p), v, memory_order_seq_cst);
}

/* Full fence: the publisher's index store before its waiting-word load. */
static inline void xw_fence_seq(void)
{
	atomic_thread_fence(memory_order_seq_cst);
}

static inline void xw_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	atomic_signal_fence(memory_order_seq_cst);
#endif
}

#endif /* XWAY_CHAN_BARRIER_H */
