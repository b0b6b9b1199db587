/* SPDX-License-Identifier: MIT */
/*
 * A stand-in libxenstore.so.4 for testing xwayd's Xen mode on a machine
 * without Xen: the store is a directory tree ($XWAY_FAKE_XENSTORE; relative
 * paths resolve under local/domain/self/), watches are inotify on that
 * tree.  Only the calls broker/xen.c uses, with the real library's memory
 * conventions (xs_directory and xs_check_watch return one allocation).
 * Test code only: never installed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

struct xs_handle {
	char root[PATH_MAX / 2];
	int ino;
	char wpath[256], token[64];
};

struct xs_handle *xs_open(unsigned long flags);
void xs_close(struct xs_handle *h);
void *xs_read(struct xs_handle *h, uint32_t t, const char *path, unsigned *len);
bool xs_write(struct xs_handle *h, uint32_t t, const char *path, const void *data, unsigned len);
char **xs_directory(struct xs_handle *h, uint32_t t, const char *path, unsigned *num);
bool xs_watch(struct xs_handle *h, const char *path, const char *token);
int xs_fileno(struct xs_handle *h);
char **xs_check_watch(struct xs_handle *h);
bool xs_rm(struct xs_handle *h, uint32_t t, const char *path);

static void fs_path(struct xs_handle *h, const char *p, char *out, size_t n)
{
	if (p[0] == '/')
		snprintf(out, n, "%s%s", h->root, p);
	else
		snprintf(out, n, "%s/local/domain/self/%s", h->root, p);
}

struct xs_handle *xs_open(unsigned long flags)
{
	const char *r = getenv("XWAY_FAKE_XENSTORE");
	struct xs_handle *h;

	(void)flags;
	if (!r || !*r) {
		errno = ENOENT;
		return NULL;
	}
	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	snprintf(h->root, sizeof(h->root), "%s", r);
	h->ino = -1;
	return h;
}

void xs_close(struct xs_handle *h)
{
	if (h && h->ino >= 0)
		close(h->ino);
	free(h);
}

void *xs_read(struct xs_handle *h, uint32_t t, const char *path, unsigned *len)
{
	char p[PATH_MAX], *buf;
	FILE *f;
	size_t n;

	(void)t;
	fs_path(h, path, p, sizeof(p));
	if (!(f = fopen(p, "re")))
		return NULL;
	buf = malloc(65537);
	n = buf ? fread(buf, 1, 65536, f) : 0;
	fclose(f);
	if (!buf)
		return NULL;
	buf[n] = 0;
	if (len)
		*len = (unsigned)n;
	return buf;
}

static void mkdirs(char *p)
{
	for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = 0;
		mkdir(p, 0755);
		*s = '/';
	}
}

bool xs_write(struct xs_handle *h, uint32_t t, const char *path, const void *data, unsigned len)
{
	char p[PATH_MAX], tmp[PATH_MAX + 8];
	int fd;

	(void)t;
	fs_path(h, path, p, sizeof(p));
	mkdirs(p);
	snprintf(tmp, sizeof(tmp), "%s.tmp", p);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return false;
	if (write(fd, data, len) != (ssize_t)len) {
		close(fd);
		return false;
	}
	close(fd);
	return rename(tmp, p) == 0;
}

char **xs_directory(struct xs_handle *h, uint32_t t, const char *path, unsigned *num)
{
	char p[PATH_MAX], **out, *str;
	struct dirent *e;
	size_t n = 0, bytes = 0;
	DIR *d;

	(void)t;
	fs_path(h, path, p, sizeof(p));
	if (!(d = opendir(p)))
		return NULL;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && !strstr(e->d_name, ".tmp")) {
			n++;
			bytes += strlen(e->d_name) + 1;
		}
	rewinddir(d);
	out = malloc((n + 1) * sizeof(char *) + bytes);
	if (!out) {
		closedir(d);
		return NULL;
	}
	str = (char *)(out + n + 1);
	*num = 0;
	while ((e = readdir(d)) && *num < n)
		if (e->d_name[0] != '.' && !strstr(e->d_name, ".tmp")) {
			strcpy(str, e->d_name);
			out[(*num)++] = str;
			str += strlen(str) + 1;
		}
	out[*num] = NULL;
	closedir(d);
	return out;
}

static void watch_tree(struct xs_handle *h, const char *dir, int depth)
{
	DIR *d;
	struct dirent *e;

	inotify_add_watch(h->ino, dir, IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_CLOSE_WRITE);
	if (depth > 4 || !(d = opendir(dir)))
		return;
	while ((e = readdir(d))) {
		char sub[PATH_MAX];
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
		if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			watch_tree(h, sub, depth + 1);
	}
	closedir(d);
}

bool xs_watch(struct xs_handle *h, const char *path, const char *token)
{
	char p[PATH_MAX];

	if (h->ino < 0)
		h->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (h->ino < 0)
		return false;
	snprintf(h->wpath, sizeof(h->wpath), "%s", path);
	snprintf(h->token, sizeof(h->token), "%s", token);
	fs_path(h, path, p, sizeof(p));
	mkdirs(strcat(p, "/"));
	watch_tree(h, p, 0);
	return true;
}

int xs_fileno(struct xs_handle *h)
{
	return h->ino;
}

char **xs_check_watch(struct xs_handle *h)
{
	char buf[4096] __attribute__((aligned(8))), p[PATH_MAX], **out;
	size_t a = strlen(h->wpath) + 1, b = strlen(h->token) + 1;

	if (read(h->ino, buf, sizeof(buf)) <= 0) {
		errno = EAGAIN;
		return NULL;
	}
	/* New subdirectories need their own watches. */
	fs_path(h, h->wpath, p, sizeof(p));
	watch_tree(h, p, 0);
	out = malloc(3 * sizeof(char *) + a + b);
	if (!out)
		return NULL;
	out[0] = (char *)(out + 3);
	out[1] = out[0] + a;
	out[2] = NULL;
	memcpy(out[0], h->wpath, a);
	memcpy(out[1], h->token, b);
	return out;
}

/* Remove a node and everything below it (bounded depth). */
static void rm_tree(const char *p, int depth)
{
	DIR *d;
	struct dirent *e;
	char sub[PATH_MAX];

	if (depth < 8 && (d = opendir(p))) {
		while ((e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			snprintf(sub, sizeof(sub), "%s/%s", p, e->d_name);
			rm_tree(sub, depth + 1);
		}
		closedir(d);
		rmdir(p);
		return;
	}
	unlink(p);
}

bool xs_rm(struct xs_handle *h, uint32_t t, const char *path)
{
	char p[PATH_MAX];

	(void)t;
	fs_path(h, path, p, sizeof(p));
	rm_tree(p, 0);
	return true;
}
