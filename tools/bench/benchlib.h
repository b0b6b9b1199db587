/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the benchmark tools: monotonic time, pinning,
 * full reads/writes on file descriptors, percentiles, fatal errors.
 */
#ifndef XWAY_BENCHLIB_H
#define XWAY_BENCHLIB_H

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t bl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

#define bl_die(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
	_exit(2); } while (0)

/* Pin the calling process to one CPU; cpu < 0 restores the affinity the
 * process had at its first call (so one test's pinning never leaks into
 * the next). */
static inline void bl_pin(int cpu)
{
	static cpu_set_t orig;
	static int saved;
	cpu_set_t s;

	if (!saved) {
		if (sched_getaffinity(0, sizeof(orig), &orig) != 0)
			bl_die("sched_getaffinity: %s", strerror(errno));
		saved = 1;
	}
	if (cpu < 0) {
		sched_setaffinity(0, sizeof(orig), &orig);
		return;
	}
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	if (sched_setaffinity(0, sizeof(s), &s) != 0)
		bl_die("sched_setaffinity(cpu %d): %s", cpu, strerror(errno));
}

static inline void bl_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			bl_die("write: %s", n ? strerror(errno) : "0");
		p += n;
		len -= n;
	}
}

/* Read exactly len bytes; returns 0 on EOF before any, 1 when complete. */
static inline int bl_read_all(int fd, void *buf, size_t len)
{
	char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, p + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			bl_die("read: %s", strerror(errno));
		if (n == 0) {
			if (!got)
				return 0;
			bl_die("read: EOF inside a message");
		}
		got += n;
	}
	return 1;
}

static int bl_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts v in place; returns the p-th percentile (0..100). */
static inline uint64_t bl_percentile(uint64_t *v, size_t n, double p)
{
	size_t i;

	qsort(v, n, sizeof(*v), bl_cmp_u64);
	i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static inline int bl_ncpus(void)
{
	cpu_set_t s;

	if (sched_getaffinity(0, sizeof(s), &s) != 0)
		return 1;
	return CPU_COUNT(&s);
}

/* Two distinct CPUs we may run on (for cross-core placement). */
static inline void bl_two_cpus(int *a, int *b)
{
	cpu_set_t s;
	int n = 0;

	*a = *b = 0;
	if (sched_getaffinity(0, sizeof(s), &s) != 0)
		return;
	for (int i = 0; i < CPU_SETSIZE && n < 2; i++)
		if (CPU_ISSET(i, &s)) {
			if (n++ == 0)
				*a = *b = i;
			else
				*b = i;
		}
}

#endif
