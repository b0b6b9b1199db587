/* SPDX-License-Identifier: MIT */
/*
 * Test helper for tests/integration/broker/offer_claim.sh: a tiny protocol
 * client playing both shims over real loopback TCP.  It registers a
 * listener, offers a channel, connects, accepts, claims, then moves
 * payload through the shared memfd the way a channel would (bytes in ring
 * 0's data area, counters in the ring control words) and checks the
 * server sees them; it also makes one offer to a port without listener
 * (a fallback).  Then it waits for a line on stdin (the script looks at
 * `xwayctl connections` meanwhile), sends REPORT CLOSED for both ends and
 * waits for a second line before exiting.
 *
 *   xway_proto_client SOCKET BYTES
 * prints "port <listener port> cookie <hex> fallback-port <port>".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../unit/broker/helper.h"

static int die(const char *what)
{
	fprintf(stderr, "xway_proto_client: %s\n", what);
	return 1;
}

int main(int argc, char **argv)
{
	struct xway_addr la, src, dead, fsrc;
	struct xway_claim cl;
	struct xway_claimed ok;
	struct xway_report rep;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct tchan ch, fch;
	struct xway_chan_shm *sh;
	uint8_t *cdata, *sdata;
	size_t nbytes, size;
	int cb, sb, lfd, cfd, afd, ffd, rfds[8], dl;
	unsigned nr = 0;
	char line[16];

	if (argc != 3)
		return die("usage: xway_proto_client SOCKET BYTES");
	nbytes = strtoul(argv[2], NULL, 10);
	if (nbytes == 0 || nbytes > 4096)
		return die("BYTES must be 1..4096 (one ring of 4 KiB)");
	cb = tb_connect(argv[1]);
	sb = tb_connect(argv[1]);
	if (cb < 0 || sb < 0)
		return die("cannot connect to the broker");

	/* Server: a registered listener. */
	lfd = tb_listener("127.0.0.1", &la);
	if (lfd < 0 || tb_listen_add(sb, lfd, &la) != 0)
		return die("LISTEN_ADD failed");
	/* Client: offer, then connect for real. */
	cfd = tb_bound("127.0.0.1", &src);
	if (tb_chan(&ch, tb_random64(), 12) ||
	    tb_offer(cb, &la, cfd, &src, &ch, NULL, NULL) != 1)
		return die("OFFER was not pending");
	memcpy(&sa.sin_addr, la.ip + 12, 4);
	sa.sin_port = la.port;
	if (connect(cfd, (void *)&sa, sizeof(sa)) < 0)
		return die("connect failed");
	afd = accept(lfd, NULL, NULL);
	if (afd < 0)
		return die("accept failed");
	tb_sock_name(afd, false, &cl.local);
	tb_sock_name(afd, true, &cl.peer);
	if (tb_call(sb, XWAY_MSG_CLAIM, &cl, sizeof(cl), &afd, 1, &ok, sizeof(ok), rfds, &nr) !=
	    XWAY_MSG_CLAIMED || nr != 3 || ok.cookie != ch.cookie)
		return die("CLAIM was not CLAIMED");
	if (__atomic_load_n(&ch.hdr->attached, __ATOMIC_ACQUIRE) != XWAY_ATTACH_CLAIMED)
		return die("client does not see the claim");

	/* Payload through the shared memory: the client writes ring 0, the
	 * server reads it through the memfd the broker handed over. */
	size = XWAY_CHAN_HDR_SIZE + 2 * 4096;
	cdata = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, ch.fds[0], 0);
	sdata = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, rfds[0], 0);
	if (cdata == MAP_FAILED || sdata == MAP_FAILED)
		return die("mmap of the channel failed");
	for (size_t i = 0; i < nbytes; i++)
		cdata[XWAY_CHAN_HDR_SIZE + i] = (uint8_t)(i * 7 + 1);
	/* Release: data before the index and counter that publish it. */
	__atomic_store_n(&ch.hdr->ring[0].tx_bytes, nbytes, __ATOMIC_RELAXED);
	__atomic_store_n(&ch.hdr->ring[0].prod, (uint32_t)nbytes, __ATOMIC_RELEASE);
	sh = (struct xway_chan_shm *)sdata;
	if (__atomic_load_n(&sh->ring[0].prod, __ATOMIC_ACQUIRE) != nbytes)
		return die("server does not see the client's index");
	for (size_t i = 0; i < nbytes; i++)
		if (sdata[XWAY_CHAN_HDR_SIZE + i] != (uint8_t)(i * 7 + 1))
			return die("payload differs on the server side");
	__atomic_store_n(&sh->ring[0].cons, (uint32_t)nbytes, __ATOMIC_RELEASE);
	__atomic_store_n(&sh->ring[0].rx_bytes, nbytes, __ATOMIC_RELAXED);
	__atomic_store_n(&sh->ring[1].tx_bytes, 7, __ATOMIC_RELAXED);   /* a short answer */

	/* A fallback: offer to a port nobody registered. */
	dl = tb_listener("127.0.0.1", &dead);
	close(dl);   /* port now free: no xway listener there */
	ffd = tb_bound("127.0.0.1", &fsrc);
	if (tb_chan(&fch, tb_random64(), 12) ||
	    tb_offer(cb, &dead, ffd, &fsrc, &fch, NULL, NULL) != -ENOENT)
		return die("offer to a dead port was not refused");

	printf("port %u cookie %016llx fallback-port %u\n", ntohs(la.port),
	       (unsigned long long)ch.cookie, ntohs(dead.port));
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return die("stdin closed early");

	/* Both ends close: their final counters. */
	memset(&rep, 0, sizeof(rep));
	rep.kind = XWAY_REP_CLOSED;
	rep.cookie = ch.cookie;
	rep.side = 0;
	tb_sock_name(cfd, false, &rep.local);
	tb_sock_name(cfd, true, &rep.peer);
	rep.chan_tx_bytes = (int64_t)nbytes;
	rep.chan_rx_bytes = 7;
	rep.tcp_bytes_sent = rep.tcp_bytes_received = 0;
	if (tb_send(cb, XWAY_MSG_REPORT, 1, &rep, sizeof(rep), NULL, 0))
		return die("REPORT failed");
	rep.side = 1;
	rep.local = cl.local;
	rep.peer = cl.peer;
	rep.chan_tx_bytes = 7;
	rep.chan_rx_bytes = (int64_t)nbytes;
	if (tb_send(sb, XWAY_MSG_REPORT, 1, &rep, sizeof(rep), NULL, 0))
		return die("REPORT failed");
	/* Round trips: both reports are processed before we answer. */
	free(tb_query(cb, XWAY_Q_STATUS, false));
	free(tb_query(sb, XWAY_Q_STATUS, false));
	printf("closed\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 0;
	return 0;
}
