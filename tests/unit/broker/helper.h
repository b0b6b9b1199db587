/* SPDX-License-Identifier: MIT */
/*
 * Helpers for the broker tests: start a private xwayd on a temporary
 * socket, speak the protocol as a raw client (any packet, any descriptors),
 * and build the pieces an OFFER needs (bound TCP socket, sealed channel
 * memfd, eventfds).  Every wait is bounded.
 */
#ifndef XWAY_TEST_BROKER_HELPER_H
#define XWAY_TEST_BROKER_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <xway/proto.h>
#include <xway/ring.h>

struct tbroker {
	pid_t pid;
	char dir[64];
	char sock[128];
	char log[128];
};

/* Start xwayd with the given config text (NULL: none).  Returns 0 or
 * -errno; on failure the log is printed to stderr. */
int tb_start(struct tbroker *b, const char *config);
/* SIGTERM and reap; returns the exit status (or -1). */
int tb_stop(struct tbroker *b);
bool tb_alive(struct tbroker *b);
/* Path of a built program: $B/name (B defaults to "build"). */
const char *tb_bin(const char *name, char *buf, size_t size);

int tb_connect(const char *sock);
/* Send one raw packet with descriptors. */
int tb_send_raw(int fd, const void *buf, size_t len, const int *fds, unsigned nfds);
/* Send a well-formed message. */
int tb_send(int fd, uint16_t type, uint32_t seq, const void *body, size_t len,
	    const int *fds, unsigned nfds);
/* Receive one packet (5 s limit).  Returns its length, 0 on EOF, -errno.
 * Descriptors go to rfds (up to 8), their count to *nrfds. */
ssize_t tb_recv(int fd, void *buf, size_t size, int *rfds, unsigned *nrfds);
/* Send, receive the reply; returns the reply type or -errno; the body is
 * copied to out (up to outlen), descriptors to rfds. */
int tb_call(int fd, uint16_t type, const void *body, size_t len,
	    const int *fds, unsigned nfds, void *out, size_t outlen,
	    int *rfds, unsigned *nrfds);
/* RESULT-returning call; fills *res, returns reply type. */
int tb_call_result(int fd, uint16_t type, const void *body, size_t len,
		   const int *fds, unsigned nfds, struct xway_result *res);

void tb_addr_v4(struct xway_addr *a, const char *ip, uint16_t port_host);
void tb_addr_v6(struct xway_addr *a, const char *ip, uint16_t port_host);
int tb_sock_name(int fd, bool peer, struct xway_addr *a);

/* A listening socket on ip:0 (ip "127.0.0.1", "0.0.0.0", "::", ...);
 * its address in *a. */
int tb_listener(const char *ip, struct xway_addr *a);
/* A bound (unconnected) TCP socket of the family of ip. */
int tb_bound(const char *ip, struct xway_addr *a);

struct tchan {
	int fds[3];              /* memfd, efd0, efd1 */
	struct xway_chan_shm *hdr;
	uint64_t cookie;
};
/* A channel memfd as the shim makes it (sealed, header filled). */
int tb_chan(struct tchan *c, uint64_t cookie, uint32_t order);
void tb_chan_close(struct tchan *c);
uint64_t tb_random64(void);

/* Register a listener, returns RESULT status. */
int tb_listen_add(int bfd, int lfd, const struct xway_addr *a);
/* OFFER dst from a new socket bound to src_ip; fills *src and *offer_id;
 * returns RESULT status (1 pending) and the reason in *reason. */
int tb_offer(int bfd, const struct xway_addr *dst, int sock,
	     const struct xway_addr *src, struct tchan *ch,
	     uint64_t *offer_id, uint32_t *reason);
/* QUERY: the whole TEXT reply (malloc'd, NUL-terminated) or NULL. */
char *tb_query(int bfd, uint32_t what, bool json);

#endif /* XWAY_TEST_BROKER_HELPER_H */
