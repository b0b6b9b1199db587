// SPDX-License-Identifier: MIT
/*
 * Unit tests of the pure ring functions (shim/chan/ring.c) on a ring in
 * ordinary memory: wrap-around, partial reads and writes, full and empty,
 * peek, discard, iovecs, and a hostile peer's indices.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../../../shim/chan/ring.h"

#define ORDER 12
#define SIZE  (1u << ORDER)

static struct xway_ring_ctl ctl;
static uint8_t data[SIZE];
static struct xw_ring r;
static uint32_t prod, cons;

static void setup(void)
{
	memset(&ctl, 0, sizeof(ctl));
	memset(data, 0, sizeof(data));
	xw_ring_init(&r, &ctl, data, ORDER);
	prod = cons = 0;
}

static ssize_t put(const void *b, size_t n)
{
	struct iovec v = { (void *)b, n };

	return xw_ring_writev(&r, &prod, &v, 1);
}

static ssize_t get(void *b, size_t n, int peek)
{
	struct iovec v = { b, n };

	return xw_ring_readv(&r, &cons, &v, 1, peek);
}

TestSuite(ring, .init = setup);

/* Check that a new ring is empty with full space, and reads say EAGAIN. */
Test(ring, empty)
{
	char b[8];

	cr_assert_eq(xw_ring_avail(&r, cons), 0);
	cr_assert_eq(xw_ring_space(&r, prod), SIZE);
	cr_assert_eq(get(b, sizeof(b), 0), -EAGAIN);
	cr_assert_eq(get(b, 0, 0), 0);
}

/* Check that a full ring takes nothing more and a write is cut to fit. */
Test(ring, full_and_partial_write)
{
	static uint8_t big[SIZE + 100];

	memset(big, 'x', sizeof(big));
	cr_assert_eq(put(big, 100), 100);
	cr_assert_eq(put(big, sizeof(big)), SIZE - 100);
	cr_assert_eq(xw_ring_space(&r, prod), 0);
	cr_assert_eq(put(big, 1), -EAGAIN);
	cr_assert_eq(ctl.prod, SIZE);
}

/* Check that data crossing the end of the buffer comes out intact, over
 * many laps, with free-running indices that also wrap at 2^32. */
Test(ring, wrap_around_and_index_wrap)
{
	uint8_t in[1000], out[1000];
	uint64_t k = 0;

	prod = cons = 0xFFFFF000u;     /* indices wrap during the test */
	ctl.prod = ctl.cons = prod;
	for (int lap = 0; lap < 50; lap++) {
		for (size_t i = 0; i < sizeof(in); i++)
			in[i] = (uint8_t)(k + i);
		cr_assert_eq(put(in, sizeof(in)), (ssize_t)sizeof(in));
		cr_assert_eq(get(out, sizeof(out), 0), (ssize_t)sizeof(out));
		cr_assert_arr_eq(in, out, sizeof(in));
		k += sizeof(in);
	}
	cr_assert_eq(prod, cons);
	cr_assert_eq(prod, 0xFFFFF000u + 50000u);
}

/* Check that a read larger than what is there returns what is there. */
Test(ring, partial_read)
{
	char b[64];

	cr_assert_eq(put("hello", 5), 5);
	cr_assert_eq(get(b, sizeof(b), 0), 5);
	cr_assert_arr_eq(b, "hello", 5);
	cr_assert_eq(get(b, sizeof(b), 0), -EAGAIN);
}

/* Check that peek copies without consuming, and a later read sees it. */
Test(ring, peek)
{
	char b[8] = { 0 };

	cr_assert_eq(put("abcdef", 6), 6);
	cr_assert_eq(get(b, 3, 1), 3);
	cr_assert_arr_eq(b, "abc", 3);
	cr_assert_eq(ctl.cons, 0);
	cr_assert_eq(cons, 0);
	cr_assert_eq(get(b, 6, 0), 6);
	cr_assert_arr_eq(b, "abcdef", 6);
	cr_assert_eq(ctl.cons, 6);
}

/* Check that a NULL iov_base discards, and xw_ring_discard consumes. */
Test(ring, discard)
{
	char b[4];
	struct iovec v[2] = { { NULL, 2 }, { b, 2 } };

	cr_assert_eq(put("123456", 6), 6);
	cr_assert_eq(xw_ring_readv(&r, &cons, v, 2, 0), 4);
	cr_assert_arr_eq(b, "34", 2);
	xw_ring_discard(&r, &cons, 1);
	cr_assert_eq(get(b, 4, 0), 1);
	cr_assert_eq(b[0], '6');
}

/* Check that gather writes and scatter reads keep byte order. */
Test(ring, iovecs)
{
	struct iovec w[3] = { { "ab", 2 }, { "", 0 }, { "cde", 3 } };
	char x[1], y[10];
	struct iovec rd[2] = { { x, 1 }, { y, sizeof(y) } };

	cr_assert_eq(xw_ring_writev(&r, &prod, w, 3), 5);
	cr_assert_eq(xw_ring_readv(&r, &cons, rd, 2, 0), 5);
	cr_assert_eq(x[0], 'a');
	cr_assert_arr_eq(y, "bcde", 4);
}

/* Check that big writes publish the index at least every 64 KiB: after a
 * 200 KiB write into a 256 KiB ring the shared prod equals the private one,
 * and a write that stops early still published everything it copied. */
Test(ring, big_write_publishes)
{
	static uint8_t mem[1 << 18], buf[200 * 1024];

	xw_ring_init(&r, &ctl, mem, 18);
	cr_assert_eq(put(buf, sizeof(buf)), (ssize_t)sizeof(buf));
	cr_assert_eq(ctl.prod, sizeof(buf));
	cr_assert_eq(get(buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	cr_assert_eq(ctl.cons, sizeof(buf));
}

/* Check that a peer claiming more than a ring of data (prod far ahead)
 * gives -EPROTO and copies nothing. */
Test(ring, hostile_prod_far_ahead)
{
	char b[16];

	ctl.prod = SIZE + 1;
	cr_assert_eq(xw_ring_avail(&r, cons), -EPROTO);
	cr_assert_eq(get(b, sizeof(b), 0), -EPROTO);
	cr_assert_eq(cons, 0);
	ctl.prod = 0x80000000u;
	cr_assert_eq(get(b, sizeof(b), 1), -EPROTO);
}

/* Check that a consumer index beyond our producer index (or too far
 * behind) gives -EPROTO on write, never a huge copy. */
Test(ring, hostile_cons_beyond_prod)
{
	cr_assert_eq(put("abc", 3), 3);
	ctl.cons = 10;                 /* consumed more than was written */
	cr_assert_eq(xw_ring_space(&r, prod), -EPROTO);
	cr_assert_eq(put("x", 1), -EPROTO);
	ctl.cons = prod - SIZE - 1;    /* more than a ring in flight */
	cr_assert_eq(put("x", 1), -EPROTO);
	cr_assert_eq(prod, 3);
}

/* Check that exactly `size` bytes in flight is legal (the boundary). */
Test(ring, boundary_is_legal)
{
	ctl.prod = SIZE;
	cr_assert_eq(xw_ring_avail(&r, 0), SIZE);
	ctl.cons = 0;
	cr_assert_eq(xw_ring_space(&r, SIZE), 0);
}

/* Check random interleavings of writes and reads against a model. */
Test(ring, random_against_model)
{
	static uint8_t model[1 << 16], out[SIZE * 2], in[SIZE * 2];
	uint64_t wpos = 0, rpos = 0, s = 12345;

	for (int i = 0; i < 20000; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		size_t n = (s >> 33) % (SIZE + 200);

		if (s & 1) {
			for (size_t j = 0; j < n; j++)
				in[j] = model[(wpos + j) % sizeof(model)] = (uint8_t)(s >> 20) + j;
			ssize_t k = put(in, n);
			size_t exp = SIZE - (wpos - rpos);
			if (exp > n) exp = n;
			if (n && !exp)
				cr_assert_eq(k, -EAGAIN);
			else
				cr_assert_eq(k, (ssize_t)exp);
			if (k > 0) wpos += k;
		} else {
			int peek = (s >> 7) & 1;
			ssize_t k = get(out, n, peek);
			size_t exp = wpos - rpos < n ? wpos - rpos : n;
			if (n && !exp) {
				cr_assert_eq(k, -EAGAIN);
				continue;
			}
			cr_assert_eq(k, (ssize_t)exp);
			for (ssize_t j = 0; j < k; j++)
				cr_assert_eq(out[j], model[(rpos + j) % sizeof(model)]);
			if (!peek) rpos += k;
		}
	}
}
