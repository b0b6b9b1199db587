// SPDX-License-Identifier: MIT
/*
 * Multi-process tests of the local channel: a checksummed 256 MiB stream
 * with random write/read sizes (seed printed, XWAY_TEST_SEED replays it),
 * 10^6 blocking ping-pongs (the wake-up protocol: a lost wake-up hangs and
 * the alarm fails the test), an echo with two sleepers on one endpoint,
 * and two processes sharing one endpoint after fork (framed records never
 * interleave).  Children report through their exit status; every wait is
 * bounded by an alarm.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pair.h"
#include "../../../shim/chan/chan_int.h"

#define ALARM_S 300

/* The same counts under ASan+UBSan: 10^6 round trips took ~5 s plain
 * and ~6 s sanitized on a 2-vCPU machine of the CI kind. */
#define PINGPONGS     1000000
#define STREAM_BYTES  (256ull << 20)

static void die_child(const char *what, long a, long b)
{
	fprintf(stderr, "child: %s (%ld, %ld)\n", what, a, b);
	_exit(1);
}

/* Blocking send of all of buf (as a blocking socket would). */
static void send_all(struct xway_chan *c, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = xway_chan_send(c, p, len);

		if (n == -EAGAIN) {
			int m = xway_chan_wait(c, XWAY_EV_OUT, -1, -1);
			if (m < 0 || (m & XWAY_EV_ERR))
				die_child("wait out", m, 0);
			continue;
		}
		if (n <= 0)
			die_child("send", n, len);
		p += n;
		len -= n;
	}
}

/* Blocking receive of exactly len bytes; 0 at EOF before any. */
static size_t recv_some(struct xway_chan *c, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = xway_chan_recv(c, buf, len, 0);

		if (n == -EAGAIN) {
			int m = xway_chan_wait(c, XWAY_EV_IN, -1, -1);
			if (m < 0 || (m & XWAY_EV_ERR))
				die_child("wait in", m, 0);
			continue;
		}
		if (n < 0)
			die_child("recv", n, len);
		return n;
	}
}

static void recv_all(struct xway_chan *c, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		size_t n = recv_some(c, p, len);

		if (!n)
			die_child("early EOF", len, 0);
		p += n;
		len -= n;
	}
}

static int wait_child(pid_t pid)
{
	int st;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

/* Check a 256 MiB stream with random write and read sizes, random iovec
 * splits and random peeks: every byte arrives once, in order. */
Test(stress, random_stream, .timeout = ALARM_S)
{
	uint64_t seed = test_seed("random_stream");
	struct xway_chan *a, *b;
	pid_t pid;

	make_pair(16, 0, &a, &b);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		static uint8_t buf[300000];
		uint64_t s = seed ^ 1, pos = 0;

		alarm(ALARM_S);
		xway_chan_close(b);
		while (pos < STREAM_BYTES) {
			size_t n = rnd(&s) % sizeof(buf) + 1;
			if (rnd(&s) % 4 == 0)
				n = n % 64 + 1;
			if (n > STREAM_BYTES - pos)
				n = STREAM_BYTES - pos;
			for (size_t i = 0; i < n; i++)
				buf[i] = stream_byte(pos + i);
			size_t cut = rnd(&s) % (n + 1);
			struct iovec v[2] = { { buf, cut }, { buf + cut, n - cut } };
			size_t done = 0;
			while (done < n) {
				ssize_t k;
				if (done == 0)
					k = xway_chan_sendv(a, v, 2);
				else
					k = xway_chan_send(a, buf + done, n - done);
				if (k == -EAGAIN) {
					xway_chan_wait(a, XWAY_EV_OUT, -1, -1);
					continue;
				}
				if (k <= 0)
					die_child("send", k, n);
				done += k;
			}
			pos += n;
		}
		xway_chan_shutdown_wr(a);
		_exit(0);
	}
	xway_chan_close(a);
	static uint8_t buf[300000];
	uint64_t s = seed ^ 2, pos = 0;
	for (;;) {
		size_t n = rnd(&s) % sizeof(buf) + 1;
		if (rnd(&s) % 3 == 0)
			n = n % 100 + 1;
		if (rnd(&s) % 16 == 0) {
			ssize_t k = xway_chan_recv(b, buf, n, XWAY_RECV_PEEK);
			for (ssize_t i = 0; i < k; i++)
				cr_assert_eq(buf[i], stream_byte(pos + i),
					     "peek byte %llu", (unsigned long long)(pos + i));
		}
		size_t k = recv_some(b, buf, n);
		if (!k)
			break;
		for (size_t i = 0; i < k; i++)
			if (buf[i] != stream_byte(pos + i))
				cr_assert_fail("byte %llu wrong (seed %llu)",
					       (unsigned long long)(pos + i),
					       (unsigned long long)seed);
		pos += k;
	}
	cr_assert_eq(pos, STREAM_BYTES);
	cr_assert_eq(wait_child(pid), 0);
	struct xway_chan_stats st;
	xway_chan_get_stats(b, &st);
	cr_assert_eq(st.rx_bytes, STREAM_BYTES);
	xway_chan_close(b);
}

/* Ping-pong of 8-byte counters between two processes, blocking waits. */
static void pingpong(uint32_t spin_ns, long rounds)
{
	struct xway_chan *a, *b;
	pid_t pid;

	make_pair(12, spin_ns, &a, &b);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		uint64_t v;

		alarm(ALARM_S);
		xway_chan_close(a);
		for (long i = 0; i < rounds; i++) {
			recv_all(b, &v, sizeof(v));
			if (v != (uint64_t)i)
				die_child("sequence", v, i);
			v++;
			send_all(b, &v, sizeof(v));
		}
		_exit(0);
	}
	xway_chan_close(b);
	for (long i = 0; i < rounds; i++) {
		uint64_t v = i;

		send_all(a, &v, sizeof(v));
		recv_all(a, &v, sizeof(v));
		cr_assert_eq(v, (uint64_t)i + 1);
	}
	cr_assert_eq(wait_child(pid), 0);
	struct xway_chan_stats st;
	xway_chan_get_stats(a, &st);
	fprintf(stderr, "pingpong spin=%u: %ld rounds, %llu sleeps, %llu wake-ups sent\n",
		spin_ns, rounds, (unsigned long long)st.sleeps,
		(unsigned long long)st.wakeups_sent);
	xway_chan_close(a);
}

/* Check 10^6 round trips with the default adaptive spin: no hang. */
Test(stress, pingpong_default, .timeout = ALARM_S)
{
	pingpong(0, PINGPONGS);
}

/* Check round trips that always sleep (spin off): every round trip goes
 * through the notify-if-waiting handshake; a lost wake-up hangs. */
Test(stress, pingpong_sleeping, .timeout = ALARM_S)
{
	pingpong(UINT32_MAX, PINGPONGS / 10);
}

struct echo_arg {
	struct xway_chan *c;
	uint64_t bytes;
	uint64_t seed;
};

static void *echo_reader(void *p)
{
	struct echo_arg *e = p;
	static uint8_t buf[70000];
	uint64_t pos = 0;

	while (pos < e->bytes) {
		size_t k = recv_some(e->c, buf, sizeof(buf));
		if (!k)
			die_child("echo EOF", pos, 0);
		for (size_t i = 0; i < k; i++)
			if (buf[i] != stream_byte(pos + i))
				die_child("echo byte", pos + i, buf[i]);
		pos += k;
	}
	return NULL;
}

/* Check two sleepers on one endpoint: a writer thread blocked for room and
 * a reader thread blocked for data share one eventfd; the echo peer's
 * wake-ups must reach both (a lost one hangs). */
Test(stress, echo_two_sleepers, .timeout = ALARM_S)
{
	const uint64_t total = STREAM_BYTES / 4;
	uint64_t seed = test_seed("echo_two_sleepers");
	struct xway_chan *a, *b;
	pthread_t th;
	pid_t pid;

	make_pair(12, UINT32_MAX, &a, &b);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		static uint8_t buf[5000];
		uint64_t s = seed, pos = 0;

		alarm(ALARM_S);
		xway_chan_close(a);
		while (pos < total) {
			size_t k = recv_some(b, buf, rnd(&s) % sizeof(buf) + 1);
			if (!k)
				die_child("EOF", pos, 0);
			send_all(b, buf, k);
			pos += k;
		}
		_exit(0);
	}
	xway_chan_close(b);
	struct echo_arg e = { .c = a, .bytes = total, .seed = seed };
	cr_assert_eq(pthread_create(&th, NULL, echo_reader, &e), 0);
	static uint8_t buf[10000];
	uint64_t s = seed ^ 7, pos = 0;
	while (pos < total) {
		size_t n = rnd(&s) % sizeof(buf) + 1;
		if (n > total - pos)
			n = total - pos;
		for (size_t i = 0; i < n; i++)
			buf[i] = stream_byte(pos + i);
		send_all(a, buf, n);
		pos += n;
	}
	pthread_join(th, NULL);
	cr_assert_eq(wait_child(pid), 0);
	xway_chan_close(a);
}

struct rec {
	uint32_t magic;
	uint32_t writer;
	uint64_t seq;
	uint64_t payload[6];
};
_Static_assert(sizeof(struct rec) == 64, "records are 64 bytes");

#define REC_MAGIC 0x52454331u
#define RECS      500000

static void fill_rec(struct rec *r, uint32_t w, uint64_t seq)
{
	r->magic = REC_MAGIC;
	r->writer = w;
	r->seq = seq;
	for (int i = 0; i < 6; i++)
		r->payload[i] = (seq * 6 + i) ^ ((uint64_t)w << 40);
}

static void send_recs(struct xway_chan *c, uint32_t w, uint64_t from, uint64_t n)
{
	struct rec r;

	for (uint64_t i = from; i < from + n; i++) {
		fill_rec(&r, w, i);
		/* Every write and read is a multiple of 64 bytes in a ring
		 * of 1 MiB, so free space is too: a record is never split,
		 * and only the per-direction lock keeps two writers' copies
		 * from landing on the same bytes. */
		send_all(c, &r, sizeof(r));
	}
}

/* A process that reads whole records from b until EOF, checks that each
 * writer's records arrive complete and in order, and that writer w sent
 * want[w] of them (-1: any number).  Exit status 0 when all held. */
static pid_t start_reader(struct xway_chan *a, struct xway_chan *b,
			  int64_t want0, int64_t want1)
{
	pid_t reader = fork();

	cr_assert_geq(reader, 0);
	if (reader == 0) {
		static struct rec recs[64];
		uint64_t next[2] = { 0, 0 };

		alarm(ALARM_S);
		xway_chan_close(a);
		for (;;) {
			size_t k = recv_some(b, recs, sizeof(recs));
			if (!k)
				break;
			if (k % sizeof(struct rec))
				die_child("partial record", k, 0);
			for (size_t i = 0; i < k / sizeof(struct rec); i++) {
				struct rec want, *r = &recs[i];
				if (r->magic != REC_MAGIC || r->writer > 1)
					die_child("bad record", r->magic, r->writer);
				fill_rec(&want, r->writer, next[r->writer]);
				if (memcmp(&want, r, sizeof(want)))
					die_child("record out of order", r->writer, r->seq);
				next[r->writer]++;
			}
		}
		if ((want0 >= 0 && next[0] != (uint64_t)want0) ||
		    (want1 >= 0 && next[1] != (uint64_t)want1))
			die_child("record count", next[0], next[1]);
		_exit(0);
	}
	return reader;
}

/* Check that after fork parent and child both send on one endpoint and
 * the stream stays consistent: whole records, each writer's in order;
 * after the child closed its copy the parent still sends. */
Test(stress, fork_shared_sender, .timeout = ALARM_S)
{
	struct xway_chan *a, *b;
	pid_t reader, child;
	int st[2];

	make_pair(20, 0, &a, &b);
	reader = start_reader(a, b, RECS + 1000, RECS);
	xway_chan_close(b);
	child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		alarm(ALARM_S);
		send_recs(a, 1, 0, RECS);
		xway_chan_close(a);      /* only the child's copy */
		_exit(0);
	}
	send_recs(a, 0, 0, RECS);
	st[0] = wait_child(child);
	cr_assert_eq(st[0], 0);
	send_recs(a, 0, RECS, 1000); /* the child's close left ours working */
	cr_assert_eq(xway_chan_shutdown_wr(a), 0);
	st[1] = wait_child(reader);
	cr_assert_eq(st[1], 0);
	xway_chan_close(a);
}

/* ---- the single-owner fast path (shim/chan/excl.c) ---------------------- */

struct sender_arg {
	struct xway_chan *c;
	uint32_t w;
	uint64_t n;
};

static void *sender_thread(void *p)
{
	struct sender_arg *a = p;

	send_recs(a->c, a->w, 0, a->n);
	return NULL;
}

/* The first thread owns the direction and sends on the fast path; a
 * second thread starts sending in the middle and takes the direction
 * over: records from both stay whole and in order. */
Test(stress, thread_takes_over_sender, .timeout = ALARM_S)
{
	struct xway_chan *a, *b;
	struct sender_arg arg[2];
	pthread_t t[2];
	pid_t reader;

	make_pair(20, 0, &a, &b);
	reader = start_reader(a, b, RECS, RECS);
	xway_chan_close(b);
	arg[0] = (struct sender_arg){ a, 0, RECS };
	arg[1] = (struct sender_arg){ a, 1, RECS };
	cr_assert_eq(pthread_create(&t[0], NULL, sender_thread, &arg[0]), 0);
	usleep(2000);
	cr_assert_eq(pthread_create(&t[1], NULL, sender_thread, &arg[1]), 0);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	cr_assert_eq(xway_chan_shutdown_wr(a), 0);
	cr_assert_eq(wait_child(reader), 0);
	xway_chan_close(a);
}

/* The owner of a direction is killed with SIGKILL at a random moment of a
 * tight send loop (often inside its critical section): the next sender
 * must neither hang nor corrupt the stream. */
Test(stress, owner_killed_mid_send, .timeout = ALARM_S)
{
	uint64_t seed = test_seed("owner_killed_mid_send");

	for (int round = 0; round < 12; round++) {
		struct xway_chan *a, *b;
		pid_t reader, owner;

		make_pair(20, 0, &a, &b);
		reader = start_reader(a, b, -1, 1000);
		xway_chan_close(b);
		owner = fork();
		cr_assert_geq(owner, 0);
		if (owner == 0) {
			alarm(ALARM_S);
			send_recs(a, 0, 0, UINT32_MAX);
			_exit(0);
		}
		usleep(500 + rnd(&seed) % 20000);
		kill(owner, SIGKILL);
		cr_assert_eq(wait_child(owner), 128 + SIGKILL);
		send_recs(a, 1, 0, 1000);
		cr_assert_eq(xway_chan_shutdown_wr(a), 0);
		cr_assert_eq(wait_child(reader), 0, "round %d", round);
		xway_chan_close(a);
	}
}

/* A seccomp filter that kills the process at membarrier(2), the call the
 * fast path needs to hand a direction over. */
static void forbid_membarrier(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_membarrier, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	cr_assert_eq(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
	cr_assert_eq(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
}

/* xway_chan_before_sandbox() puts the endpoints on the mutex while
 * membarrier() is still allowed: after a filter forbids it, a second
 * thread taking over a direction owned by the first does not die. */
Test(stress, direction_taken_over_in_sandbox, .timeout = ALARM_S)
{
	struct xway_chan *a, *b;
	struct sender_arg arg = { 0 };
	pthread_t t;
	pid_t reader;

	make_pair(20, 0, &a, &b);
	reader = start_reader(a, b, 20000, 10000);
	xway_chan_close(b);
	send_recs(a, 0, 0, 10000);          /* this thread owns tx now */
	xway_chan_before_sandbox();
	forbid_membarrier();
	arg = (struct sender_arg){ a, 1, 10000 };
	cr_assert_eq(pthread_create(&t, NULL, sender_thread, &arg), 0);
	send_recs(a, 0, 10000, 10000);
	pthread_join(t, NULL);
	cr_assert_eq(xway_chan_shutdown_wr(a), 0);
	cr_assert_eq(wait_child(reader), 0);
	xway_chan_close(a);
}

/* Two sibling processes forked before either used the endpoint both
 * send: each must get an owner token of its own (they share the
 * death-detector region made at load time), so one of them takes the
 * direction over and the records never interleave. */
Test(stress, sibling_senders, .timeout = ALARM_S)
{
	struct xway_chan *a, *b;
	pid_t reader, kid[2];

	make_pair(20, 0, &a, &b);
	reader = start_reader(a, b, RECS / 2, RECS / 2);
	xway_chan_close(b);
	for (int w = 0; w < 2; w++) {
		kid[w] = fork();
		cr_assert_geq(kid[w], 0);
		if (kid[w] == 0) {
			alarm(ALARM_S);
			send_recs(a, (uint32_t)w, 0, RECS / 2);
			_exit(0);
		}
	}
	cr_assert_eq(wait_child(kid[0]), 0);
	cr_assert_eq(wait_child(kid[1]), 0);
	cr_assert_eq(xway_chan_shutdown_wr(a), 0);
	cr_assert_eq(wait_child(reader), 0);
	xway_chan_close(a);
}

/* A sibling process that never claimed anything itself takes a direction
 * over while the owner sits inside its critical section: it must wait for
 * the owner, however long, not take it for dead.  (The liveness check once
 * looked the owner's slot up through a pointer that only a claim sets, took
 * every live owner for dead after ~1000 spins, and let two senders into a
 * ring at once: sibling_senders interleaved records in about one ASan run
 * in five in CI.)  Driven at the exclusion level, so the owner's critical
 * section can be made long on purpose. */
Test(stress, converter_waits_for_live_owner, .timeout = 60)
{
	struct shared {
		struct xw_excl x;
		_Atomic int inside, owner_in, done;
	} *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t owner, conv;

	cr_assert_neq(sh, MAP_FAILED);
	cr_assert_eq(xw_lock_init(&sh->x), 0);
	owner = fork();
	cr_assert_geq(owner, 0);
	if (owner == 0) {
		alarm(60);
		if (xw_lock(&sh->x))
			_exit(2);
		/* Only valid if this took the fast path (owner set). */
		if (atomic_load(&sh->x.owner) == 0 || atomic_load(&sh->x.owner) == UINT64_MAX)
			_exit(3);
		atomic_store(&sh->inside, 1);
		atomic_store(&sh->owner_in, 1);
		usleep(300000);          /* far beyond the converter's spins */
		atomic_store(&sh->inside, 0);
		xw_unlock(&sh->x);
		_exit(0);
	}
	while (!atomic_load(&sh->owner_in))
		usleep(1000);
	conv = fork();
	cr_assert_geq(conv, 0);
	if (conv == 0) {
		alarm(60);
		if (xw_lock(&sh->x))
			_exit(2);
		if (atomic_load(&sh->inside))
			_exit(4);        /* both inside at once */
		xw_unlock(&sh->x);
		_exit(0);
	}
	cr_assert_eq(wait_child(conv), 0, "the converter entered beside a live owner");
	cr_assert_eq(wait_child(owner), 0);
	munmap(sh, sizeof(*sh));
}
