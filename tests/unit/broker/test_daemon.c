/* SPDX-License-Identifier: MIT */
/*
 * Tests of xwayd as a program: configuration errors (exit 2 with file, line
 * and key; nothing started), the sd_notify readiness protocol against a
 * fake $NOTIFY_SOCKET (path and abstract), clean SIGTERM shutdown, and the
 * socket file rules (a live broker is not replaced, a stale file is).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helper.h"

static char dir[64];

static void mkdir_tmp(void)
{
	strcpy(dir, "/tmp/xwayd-daemon.XXXXXX");
	cr_assert(mkdtemp(dir));
}

static void rm_tmp(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

/* Run xwayd with args (NULL-terminated), env additions "K=V" or NULL,
 * collect stderr+stdout into out; returns the exit status or -1. */
static int run(const char *const *args, const char *env, char *out, size_t outlen)
{
	char bin[256];
	int p[2], st = -1;
	size_t got = 0;
	pid_t pid;

	tb_bin("xwayd", bin, sizeof(bin));
	cr_assert_eq(pipe(p), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		const char *argv[16] = { "xwayd" };
		int i;

		for (i = 0; args[i] && i < 14; i++)
			argv[i + 1] = args[i];
		argv[i + 1] = NULL;
		dup2(p[1], 1);
		dup2(p[1], 2);
		unsetenv("NOTIFY_SOCKET");
		if (env)
			putenv((char *)env);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	for (int i = 0; i < 1000; i++) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		ssize_t n;

		if (poll(&pf, 1, 10) == 1) {
			n = read(p[0], out + got, outlen - 1 - got);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	out[got] = 0;
	close(p[0]);
	for (int i = 0; i < 1000; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static int check_config(const char *text, char *out, size_t outlen)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/xwayd.conf", dir);
	f = fopen(path, "w");
	cr_assert(f);
	fputs(text, f);
	fclose(f);
	{
		const char *args[] = { "--check-config", "--config", path, NULL };

		return run(args, NULL, out, outlen);
	}
}

TestSuite(config, .init = mkdir_tmp, .fini = rm_tmp, .timeout = 60);

Test(config, errors_name_line_and_key)
{
	/* Check each kind of bad configuration exits 2 with a message that
	 * names where the problem is. */
	static const struct { const char *text, *want; } cases[] = {
		{ "[broker]\nsocket=/run/x.sock\nthis is not a key\n", ".conf:3: Key file contains" },
		{ "[brocker]\nsocket=/x\n", ":1: [brocker]" },
		{ "[broker]\n\nsokcet=/x\n", ":3: [broker] sokcet: unknown key" },
		{ "[broker]\nmode=turbo\n", ":2: [broker] mode: 'turbo' is not one of" },
		{ "[broker]\nclaim_timeout_ms=abc\n", "claim_timeout_ms" },
		{ "[broker]\nclaim_timeout_ms=0\n", "1..600000" },
		{ "[broker]\nsocket=relative.sock\n", "absolute path" },
		{ "[broker]\nlog_level=loud\n", "log_level" },
		{ "[broker]\nxen_vchan_pool=17\n", ":2: [broker] xen_vchan_pool: '17' is not a number of channel ends in 0..16" },
		{ "[broker]\nxen_vchan_pool=-1\n", "xen_vchan_pool" },
		{ "[rules]\nallow=port=5000\ndeny=port=99999\n", ":3: [rules] deny: bad value in rule term 'port=99999'" },
		{ "[rules]\nallow=port=1;colour=blue\n", "unknown rule term 'colour=blue'" },
	};
	char out[4096];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = check_config(cases[i].text, out, sizeof(out));

		cr_assert_eq(rc, 2, "case %zu: exit %d: %s", i, rc, out);
		cr_assert(strstr(out, cases[i].want), "case %zu: '%s' lacks '%s'", i, out,
			  cases[i].want);
	}
}

Test(config, valid_config_and_missing_file)
{
	/* Check a valid file is accepted with its rules counted, and that a
	 * missing explicit --config is an error. */
	char out[4096], path[128];
	const char *args[] = { "--check-config", "--config", path, NULL };

	cr_assert_eq(check_config("# comment\n[broker]\nsocket=/tmp/x.sock\nmode=auto\n"
				  "claim_timeout_ms=500\nlog_level=debug\nxen_vchan_pool=0\n[rules]\n"
				  "allow=port=5000-6000;addr=10.0.0.0/8\ndeny=uid=33 port=5001\n",
				  out, sizeof(out)), 0, "%s", out);
	cr_assert(strstr(out, "claim_timeout_ms 500, 2 allow and 1 deny rules"), "%s", out);
	snprintf(path, sizeof(path), "%s/does-not-exist.conf", dir);
	cr_assert_eq(run(args, NULL, out, sizeof(out)), 2, "%s", out);
	cr_assert(strstr(out, "does-not-exist.conf"), "%s", out);
}

Test(config, bad_config_starts_nothing)
{
	/* Check that xwayd with a bad config exits 2 without a socket. */
	char out[4096], conf[128], sock[128];
	const char *args[] = { "--foreground", "--config", conf, "--socket", sock, NULL };
	struct stat st;
	FILE *f;

	snprintf(conf, sizeof(conf), "%s/bad.conf", dir);
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	f = fopen(conf, "w");
	fputs("[rules]\ndeny=port=1-\n", f);
	fclose(f);
	cr_assert_eq(run(args, NULL, out, sizeof(out)), 2, "%s", out);
	cr_assert_neq(stat(sock, &st), 0, "socket created despite bad config");
}

/* ---- sd_notify ------------------------------------------------------------ */

static int notify_sock(const char *name, bool abstract)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0);
	if (abstract) {
		sa.sun_path[0] = 0;
		strcpy(sa.sun_path + 1, name);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	} else {
		strcpy(sa.sun_path, name);
		len = sizeof(sa);
	}
	cr_assert_eq(bind(fd, (void *)&sa, len), 0, "bind: %s", strerror(errno));
	return fd;
}

static bool wait_msg(int fd, const char *want, int timeout_ms)
{
	char buf[256];

	for (int i = 0; i < 10; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, timeout_ms) != 1)
			return false;
		n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n < 0)
			return false;
		buf[n] = 0;
		if (strstr(buf, want))
			return true;
	}
	return false;
}

static void notify_case(bool abstract)
{
	char name[128], env[160], sock[128], bin[256];
	int nfd, st;
	pid_t pid;
	struct stat sb;

	if (abstract)
		snprintf(name, sizeof(name), "xway-test-notify-%d", (int)getpid());
	else
		snprintf(name, sizeof(name), "%s/notify", dir);
	nfd = notify_sock(name, abstract);
	snprintf(env, sizeof(env), "NOTIFY_SOCKET=%s%s", abstract ? "@" : "", name);
	snprintf(sock, sizeof(sock), "%s/xwayd.sock", dir);
	tb_bin("xwayd", bin, sizeof(bin));
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(devnull, 2);
		putenv(env);
		execl(bin, "xwayd", "--foreground", "--config", "/nonexistent/xwayd.conf",
		      "--socket", sock, (char *)NULL);
		_exit(127);
	}
	/* Note: an explicit missing --config is an error; the broker must
	 * then exit 2 and never say READY. */
	cr_assert(!wait_msg(nfd, "READY=1", 2000), "READY despite a missing config");
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);

	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(devnull, 2);
		putenv(env);
		execl(bin, "xwayd", "--foreground", "--socket", sock, (char *)NULL);
		_exit(127);
	}
	cr_assert(wait_msg(nfd, "READY=1", 10000), "no READY=1 on $NOTIFY_SOCKET");
	cr_assert_eq(stat(sock, &sb), 0, "READY before the socket exists");
	cr_assert(S_ISSOCK(sb.st_mode));
	cr_assert_eq(sb.st_mode & 0777, 0666);
	kill(pid, SIGTERM);
	cr_assert(wait_msg(nfd, "STOPPING=1", 10000), "no STOPPING=1");
	waitpid(pid, &st, 0);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status 0x%x", st);
	cr_assert_neq(stat(sock, &sb), 0, "socket not unlinked on SIGTERM");
	close(nfd);
}

TestSuite(notify, .init = mkdir_tmp, .fini = rm_tmp, .timeout = 60);

Test(notify, ready_and_stopping_path)
{
	/* Check READY=1 after listening and STOPPING=1 on SIGTERM, with a
	 * filesystem $NOTIFY_SOCKET. */
	notify_case(false);
}

Test(notify, ready_and_stopping_abstract)
{
	/* Check the same with an abstract '@' $NOTIFY_SOCKET. */
	notify_case(true);
}

/* ---- the socket file ------------------------------------------------------- */

TestSuite(sockfile, .timeout = 60);

Test(sockfile, live_broker_not_replaced_stale_file_is)
{
	/* Check that a second xwayd refuses a socket a live broker answers
	 * on (exit 1, first still serving), and that a stale socket file
	 * left by a dead broker is replaced. */
	struct tbroker b;
	char out[4096];
	const char *args[] = { "--foreground", "--socket", b.sock, NULL };
	int fd;

	cr_assert_eq(tb_start(&b, NULL), 0);
	cr_assert_eq(run(args, NULL, out, sizeof(out)), 1, "%s", out);
	cr_assert(strstr(out, "another xwayd"), "%s", out);
	fd = tb_connect(b.sock);
	cr_assert_geq(fd, 0, "first broker disturbed");
	close(fd);
	/* SIGKILL leaves the socket file behind. */
	kill(b.pid, SIGKILL);
	waitpid(b.pid, NULL, 0);
	b.pid = -1;
	{
		struct stat st;

		cr_assert_eq(stat(b.sock, &st), 0, "stale socket file expected");
	}
	{
		pid_t pid = fork();
		char bin[256];
		int ok = 0;

		tb_bin("xwayd", bin, sizeof(bin));
		if (pid == 0) {
			int devnull = open("/dev/null", O_WRONLY);

			dup2(devnull, 2);
			execl(bin, "xwayd", "--foreground", "--socket", b.sock, (char *)NULL);
			_exit(127);
		}
		for (int i = 0; i < 1000 && !ok; i++) {
			fd = tb_connect(b.sock);
			if (fd >= 0) {
				ok = 1;
				close(fd);
			} else {
				usleep(10000);
			}
		}
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
		cr_assert(ok, "broker did not take over a stale socket file");
	}
	b.pid = -1;
	tb_stop(&b);
}

/* The CapEff line of /proc/<pid>/status, or "" */
static void cap_eff(pid_t pid, char *out, size_t n)
{
	char path[64], line[256];
	FILE *f;

	out[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "r")))
		return;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "CapEff:", 7)) {
			snprintf(out, n, "%s", line + 7 + strspn(line + 7, " \t"));
			out[strcspn(out, "\n")] = 0;
		}
	fclose(f);
}

/* Stopped by the suite's fini, so a failed assertion leaves no broker. */
static struct tbroker caps_b = { .pid = -1 };

static void caps_fini(void)
{
	if (caps_b.pid > 0)
		tb_stop(&caps_b);
}

TestSuite(caps, .fini = caps_fini, .timeout = 60);

Test(caps, local_mode_drops_every_capability)
{
	/* Check that a broker started with capabilities (as root by hand, or
	 * under the unit's bounding set) holds none once it serves in local
	 * mode: only Xen mode uses CAP_NET_ADMIN / CAP_SYS_PTRACE. */
	struct tbroker *bp = &caps_b;
	char mine[64], its[64];
	int fd;

	cap_eff(getpid(), mine, sizeof(mine));
	if (!mine[0] || !strcmp(mine, "0000000000000000"))
		cr_skip_test("the test itself holds no capability");
	cr_assert_eq(tb_start(bp, NULL), 0);
	fd = tb_connect(bp->sock);
	cr_assert_geq(fd, 0);
	/* An answer comes from the main loop: the drop came before it. */
	char *q = tb_query(fd, XWAY_Q_STATUS, false);
	cr_assert(q, "no status answer");
	free(q);
	close(fd);
	cap_eff(bp->pid, its, sizeof(its));
	cr_assert_str_eq(its, "0000000000000000", "local-mode xwayd CapEff %s (ours %s)", its, mine);
	cr_assert_eq(tb_stop(bp), 0);
	bp->pid = -1;
}
