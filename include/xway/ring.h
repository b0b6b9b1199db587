/* SPDX-License-Identifier: MIT */
/*
 * The local channel's shared-memory ABI: what two processes (possibly
 * mutually distrusting) map from one memfd.  Fixed-width types only; the
 * layout is versioned.  Nothing here is trusted by the reader: every index
 * read from this memory is read once and validated (see shim/chan/ring.c).
 *
 * Layout of the memfd (all offsets from the start of the file):
 *
 *   0            struct xway_chan_shm      header, geometry, per-side words
 *   4096         ring 0 data (side 0 -> side 1), 1 << ring_order[0] bytes
 *   4096 + n0    ring 1 data (side 1 -> side 0), 1 << ring_order[1] bytes
 *
 * Side 0 is the endpoint that created the channel (the connecting client);
 * side 1 attached to it (the accepting server).
 */
#ifndef XWAY_RING_H
#define XWAY_RING_H

#include <stdint.h>

#define XWAY_CHAN_MAGIC      0x59415758u   /* "XWAY" little-endian */
#define XWAY_CHAN_VERSION    2u           /* 2: flags on their own line */
#define XWAY_CHAN_HDR_SIZE   4096u
#define XWAY_RING_ORDER_MIN  12u           /* 4 KiB  */
#define XWAY_RING_ORDER_MAX  26u           /* 64 MiB */
#define XWAY_CACHELINE       64

/*
 * attached: written only by the broker (the single place where "claimed"
 * and "withdrawn" are decided), then efd[0] is written so a sleeping client
 * notices.  A client that sees WITHDRAWN moves whatever it wrote into ring 0
 * onto the TCP socket itself and continues on TCP.
 */
#define XWAY_ATTACH_PENDING   0u
#define XWAY_ATTACH_CLAIMED   1u
#define XWAY_ATTACH_WITHDRAWN 2u

/* prod_flags: written only by the producer of that ring. */
#define XWAY_RING_F_EOF      0x1u   /* producer shut down writing (FIN) */
#define XWAY_RING_F_RST      0x2u   /* producer aborted the connection (RST) */
/* cons_flags: written only by the consumer of that ring. */
#define XWAY_RING_F_CLOSED   0x1u   /* consumer closed: writes get EPIPE */
/*
 * Revert to TCP (additive in version 2; a reader that predates it sees an
 * unknown flag and fails the channel with EPROTO: a reset, never silent).
 * Set by one side (the "leaver": it handed its socket by SCM_RIGHTS to a
 * process without the shim) in both its words, first the cons_flags of the
 * ring it consumes ("nothing more will be consumed": the peer takes back
 * what it produced there and nobody consumed, and writes it to TCP before
 * anything else it sends, as a withdrawn client does with ring 0), then the
 * prod_flags of the ring it produces ("what is published is final": the
 * peer reads it before any TCP byte).  Each with release after the
 * leaver's last consume/publish of that ring.  Never cleared.
 */
#define XWAY_RING_F_REVERT   0x4u

/*
 * Waiting words.  A consumer that is about to sleep stores 1 into
 * cons_waiting, re-checks prod, and only then sleeps; a producer that has
 * published data and sees cons_waiting != 0 clears it and notifies.  The
 * same holds for a producer waiting for space (prod_waiting).  This is
 * libxenvchan's notify-if-waiting protocol.  Each word has its own cache
 * line: sharing a line with an index cost 6-18x at 64-byte messages.
 *
 * Cache lines (version 2): each index with its statistics counter on a line
 * written by one side only; the flags of both sides on a line of their own,
 * written rarely, so that checking them on every call costs no cache miss
 * (in version 1 they shared the index lines, and every send missed on the
 * consumer's line).
 */
struct xway_ring_ctl {
	/* Written by the producer. */
	_Alignas(XWAY_CACHELINE) uint32_t prod;  /* free-running byte index */
	uint32_t pad0;
	uint64_t tx_bytes;                       /* statistics only */
	/* Written by the consumer. */
	_Alignas(XWAY_CACHELINE) uint32_t cons;  /* free-running byte index */
	uint32_t pad1;
	uint64_t rx_bytes;                       /* statistics only */
	/* State flags: prod_flags written only by the producer, cons_flags
	 * only by the consumer (atomic OR), both rarely. */
	_Alignas(XWAY_CACHELINE) uint32_t prod_flags;
	uint32_t cons_flags;
	/* Set by a sleeping consumer, cleared by the producer that wakes it. */
	_Alignas(XWAY_CACHELINE) uint32_t cons_waiting;
	/* Set by a sleeping producer, cleared by the consumer that wakes it. */
	_Alignas(XWAY_CACHELINE) uint32_t prod_waiting;
	/* Adaptive-spin hint, written only by the producer of this ring (side
	 * s writes ring[s].spinning): bit 31 set while that side is awake
	 * (not asleep in the channel's wait), low 16 bits = 1 + the CPU it
	 * last ran on.  A hint only: never trusted for memory access. */
	_Alignas(XWAY_CACHELINE) uint32_t spinning;
};

struct xway_chan_shm {
	uint32_t magic;            /* XWAY_CHAN_MAGIC */
	uint32_t version;          /* XWAY_CHAN_VERSION */
	uint32_t hdr_size;         /* XWAY_CHAN_HDR_SIZE */
	uint32_t ring_order[2];    /* log2 of each ring's data size */
	uint32_t attached;         /* XWAY_ATTACH_*: the broker's decision */
	uint64_t cookie;           /* random; binds the memfd to its connection */
	_Alignas(XWAY_CACHELINE) struct xway_ring_ctl ring[2];
};

_Static_assert(sizeof(struct xway_chan_shm) <= XWAY_CHAN_HDR_SIZE,
	       "channel header must fit its page");

#endif /* XWAY_RING_H */
