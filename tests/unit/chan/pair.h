/* SPDX-License-Identifier: MIT */
/*
 * Test helpers for the channel tests: make a connected local channel pair
 * in one process (side 0 created, side 1 attached to dup'ed descriptors, as
 * the broker would hand them over), and a deterministic PRNG whose seed is
 * printed and can be replayed with XWAY_TEST_SEED.
 */
#ifndef XWAY_TEST_CHAN_PAIR_H
#define XWAY_TEST_CHAN_PAIR_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "xway/chan.h"

#define TEST_COOKIE 0x1122334455667788ull

static inline void make_pair(uint32_t order, uint32_t spin_ns,
			     struct xway_chan **a, struct xway_chan **b)
{
	struct xway_chan_params p = { .ring_order = order, .spin_ns = spin_ns };
	int fds[3], dfds[3];
	int r;

	r = xway_chan_local_create(&p, TEST_COOKIE, a, fds);
	cr_assert_eq(r, 0, "create: %d", r);
	for (int i = 0; i < 3; i++) {
		dfds[i] = dup(fds[i]);
		cr_assert_geq(dfds[i], 0);
	}
	r = xway_chan_local_attach(dfds, 1, TEST_COOKIE, &p, b);
	cr_assert_eq(r, 0, "attach: %d", r);
}

static inline uint64_t test_seed(const char *what)
{
	const char *s = getenv("XWAY_TEST_SEED");
	uint64_t seed;

	if (s && *s)
		seed = strtoull(s, NULL, 0);
	else
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
	fprintf(stderr, "%s: seed %llu (replay with XWAY_TEST_SEED=%llu)\n",
		what, (unsigned long long)seed, (unsigned long long)seed);
	return seed;
}

/* xorshift64*: fast, deterministic, good enough for sizes and payload. */
static inline uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* Byte i of the test stream: both processes compute it independently. */
static inline uint8_t stream_byte(uint64_t i)
{
	uint64_t x = i * 0x9E3779B97F4A7C15ull;

	return (uint8_t)(x >> 56) ^ (uint8_t)i;
}

#endif
