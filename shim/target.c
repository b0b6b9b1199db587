/* SPDX-License-Identifier: MIT */
/*
 * Will the image an exec starts load libxway.so?  An accelerated
 * connection handed to an image without the shim is used through the
 * kernel socket while the peer reads and writes the ring: the new program
 * reads nothing and what it writes is lost (openbsd-inetd launders LD_* for
 * its services by default; `env -i`, sudo, a daemon building a clean
 * environment for a child do the same).  Such connections leave the
 * channel for TCP before the exec instead (lifecycle.c).
 *
 * The new image loads the shim when the dynamic loader will preload it:
 * its environment's LD_PRELOAD names our library (by file name, as
 * xway-run and users write it) or /etc/ld.so.preload does, and XWAY_DISABLE
 * is not set there.  It does not when the target is a static executable or
 * one of the other ELF class (no loader of ours runs), or a set-user/
 * group-ID program that changes credentials (secure mode: LD_PRELOAD paths
 * are ignored; /etc/ld.so.preload still applies).  What cannot be told (a
 * target we cannot read, a script) counts as loading it: the check errs
 * toward the hand-over that worked before.
 */
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chan/sys.h"
#include "lifecycle.h"

/* Our own file name (no directory), found once. */
static const char *xway_self_name(void)
{
	static char name[256];
	static int done;
	Dl_info di;

	if (!done) {
		done = 1;
		if (dladdr((void *)xway_self_name, &di) && di.dli_fname) {
			const char *b = strrchr(di.dli_fname, '/');
			snprintf(name, sizeof(name), "%s", b ? b + 1 : di.dli_fname);
		}
		if (!name[0])
			snprintf(name, sizeof(name), "libxway.so");
	}
	return name;
}

/* Does the list (LD_PRELOAD: separated by blanks or colons) name us? */
static int xway_list_names_us(const char *list)
{
	const char *me = xway_self_name(), *p = list;
	size_t ml = strlen(me);

	while (p && *p) {
		size_t n = strcspn(p, " \t\n:");
		const char *e = p + n, *b = e;

		while (b > p && b[-1] != '/')
			b--;
		if ((size_t)(e - b) == ml && memcmp(b, me, ml) == 0)
			return 1;
		p = *e ? e + 1 : e;
	}
	return 0;
}

static int xway_in_ld_so_preload(void)
{
	char buf[4096];
	int fd = open("/etc/ld.so.preload", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	xw_sys_close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return xway_list_names_us(buf);
}

static const char *xway_envp_get(char *const envp[], const char *name)
{
	size_t l = strlen(name);

	for (size_t i = 0; envp && envp[i]; i++)
		if (strncmp(envp[i], name, l) == 0 && envp[i][l] == '=')
			return envp[i] + l + 1;
	return NULL;
}

/*
 * 1 if the executable open at fd will run the dynamic loader of our class
 * (it has a PT_INTERP and our ELF class), 0 if not, -1 if it cannot be
 * told (not ELF: a script; unreadable).
 */
static int xway_elf_dynamic(int fd)
{
	ElfW(Ehdr) eh;
	ElfW(Phdr) ph;

	if (pread(fd, &eh, sizeof(eh), 0) != (ssize_t)sizeof(eh) ||
	    memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
		return -1;
	if (eh.e_ident[EI_CLASS] != (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32))
		return 0;      /* the other class: our library cannot load there */
	if (eh.e_phentsize != sizeof(ph) || eh.e_phnum > 4096)
		return -1;
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (ElfW(Off))i * sizeof(ph))) !=
		    (ssize_t)sizeof(ph))
			return -1;
		if (ph.p_type == PT_INTERP)
			return 1;
	}
	return 0;              /* static */
}

/* The file execvp() would run (PATH of the calling process), or NULL. */
static const char *xway_path_search(const char *file, char *buf, size_t len)
{
	const char *path = getenv("PATH"), *p;

	if (!file || !*file)
		return NULL;
	if (strchr(file, '/'))
		return file;
	if (!path)
		path = "/bin:/usr/bin";
	for (p = path; ; ) {
		size_t n = strcspn(p, ":");
		struct stat st;

		if ((size_t)snprintf(buf, len, "%.*s%s%s", (int)n, n ? p : ".",
				     "/", file) < len &&
		    access(buf, X_OK) == 0 && stat(buf, &st) == 0 && S_ISREG(st.st_mode))
			return buf;
		if (!p[n])
			return NULL;
		p += n + 1;
	}
}

int xway_exec_target_shimmed(char *const envp[], const struct xway_exec_target *t,
			     const char **why)
{
	const char *v = xway_envp_get(envp, "XWAY_DISABLE");
	int global = -1, fd = -1, r = 1;
	char buf[4096];
	const char *path = t->path;
	struct stat st;

	if (v && strcmp(v, "1") == 0) {
		*why = "XWAY_DISABLE=1 in its environment";
		return 0;
	}
	v = xway_envp_get(envp, "LD_PRELOAD");
	if (!v || !xway_list_names_us(v)) {
		global = xway_in_ld_so_preload();
		if (!global) {
			*why = "its environment's LD_PRELOAD does not name libxway";
			return 0;
		}
	}
	if (t->fd >= 0) {
		fd = t->fd;
	} else {
		if (t->search)
			path = xway_path_search(path, buf, sizeof(buf));
		if (!path)
			return 1;
		fd = openat(t->dirfd, path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return 1;          /* execute-only, or not there: the exec says */
	}
	if (fstat(fd, &st) == 0 &&
	    (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) ||
	     ((st.st_mode & S_ISGID) && st.st_gid != getegid()))) {
		if (global < 0)
			global = xway_in_ld_so_preload();
		if (!global) {
			*why = "it is a set-user/group-ID program (LD_PRELOAD is ignored)";
			r = 0;
		}
	}
	if (r && xway_elf_dynamic(fd) == 0) {
		*why = "it is a static executable (or of the other ELF class)";
		r = 0;
	}
	if (fd != t->fd)
		xw_sys_close(fd);
	return r;
}
