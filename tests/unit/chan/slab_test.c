// SPDX-License-Identifier: MIT
/*
 * Endpoint-object storage (shim/chan/slab.c): objects are zeroed and
 * distinct, freed ones are reused, a fork()ed child's allocations and frees
 * leave the parent's objects alone, and threads allocating and freeing at
 * once never get the same object.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../../shim/chan/chan_int.h"

#define N 200   /* more than three chunks */

Test(slab, objects_are_zeroed_distinct_and_reused)
{
	/* Check that N objects are distinct and zeroed even when their
	 * memory was used before, and that freed ones are handed out again
	 * (the storage is kept, not mapped per object). */
	static struct xway_chan *o[N];

	for (int i = 0; i < N; i++) {
		o[i] = xw_slab_alloc();
		cr_assert_not_null(o[i]);
		for (size_t b = 0; b < sizeof(*o[i]); b++)
			cr_assert_eq(((unsigned char *)o[i])[b], 0, "object %d not zeroed", i);
		memset(o[i], 0xa5, sizeof(*o[i]));
		for (int j = 0; j < i; j++)
			cr_assert_neq(o[i], o[j]);
	}
	struct xway_chan *freed = o[N / 2];

	xw_slab_free(freed);
	o[N / 2] = xw_slab_alloc();
	cr_assert_eq(o[N / 2], freed, "a freed object was not reused");
	for (size_t b = 0; b < sizeof(*freed); b++)
		cr_assert_eq(((unsigned char *)freed)[b], 0, "reused object not zeroed");
	for (int i = 0; i < N; i++)
		xw_slab_free(o[i]);
}

Test(slab, fork_child_does_not_touch_parent_objects)
{
	/* Check that objects are private after fork: the child frees the
	 * parent's objects and allocates (getting the same addresses) and
	 * writes them; the parent's objects keep their content. */
	struct xway_chan *o[8];
	int st;

	for (int i = 0; i < 8; i++) {
		o[i] = xw_slab_alloc();
		cr_assert_not_null(o[i]);
		o[i]->side = 100 + i;
	}
	pid_t pid = fork();

	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int ok = 1;

		for (int i = 0; i < 8; i++)
			xw_slab_free(o[i]);
		for (int i = 0; i < 8; i++) {
			struct xway_chan *c = xw_slab_alloc();

			ok &= c != NULL;
			if (c)
				c->side = -1;
		}
		_exit(ok ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(o[i]->side, 100 + i, "the child's writes reached the parent");
		xw_slab_free(o[i]);
	}
}

struct worker {
	int id, bad;
};

static void *churn(void *arg)
{
	struct worker *w = arg;
	struct xway_chan *mine[16];

	for (int round = 0; round < 2000; round++) {
		for (int i = 0; i < 16; i++) {
			mine[i] = xw_slab_alloc();
			if (!mine[i]) {
				w->bad++;
				return NULL;
			}
			mine[i]->side = w->id;
			mine[i]->ncpu = i;
		}
		for (int i = 0; i < 16; i++) {
			if (mine[i]->side != w->id || mine[i]->ncpu != i)
				w->bad++;     /* another thread got it too */
			xw_slab_free(mine[i]);
		}
	}
	return NULL;
}

Test(slab, threads_never_share_an_object)
{
	/* Check that threads allocating and freeing at once never get the
	 * same object (each writes its id and checks it before the free). */
	pthread_t t[4];
	struct worker w[4];

	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){ .id = i + 1 };
		cr_assert_eq(pthread_create(&t[i], NULL, churn, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		cr_assert_eq(w[i].bad, 0, "thread %d saw %d objects taken by another", i, w[i].bad);
	}
}
