/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the broker's pure functions: broker/proto.c is
 * included whole (wireguard-tools fuzz/uapi.c style).  Input: byte 0 is the
 * number of descriptors that "came with" the packet, the rest is the packet.
 * Also feeds the input as a rule string, an address (xenstore entries), a
 * broker-link record (another domain's broker writes those) and through the
 * JSON escaper.
 * Built and run by tests/fuzz/run.sh (clang -fsanitize=fuzzer,address).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../broker/proto.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xway_req req;
	const char *why = NULL;
	char text[512], out[256], errbuf[160];
	struct xway_rule rule;
	size_t n;

	if (size < 1)
		return 0;
	if (xway_msg_parse(data + 1, size - 1, data[0] % 9, &req, &why) == 0) {
		char a[80];

		/* Whatever parsed must be safe to use as the broker does. */
		switch (req.hdr.type) {
		case XWAY_MSG_OFFER:
			xway_addr_format(&req.u.offer.dst, a, sizeof(a));
			xway_addr_is_loopback(&req.u.offer.dst);
			break;
		case XWAY_MSG_REPORT:
			xway_json_escape(req.u.report.text, out, sizeof(out));
			xway_reason_name(req.u.report.reason);
			break;
		default:
			break;
		}
	} else if (!why) {
		abort();   /* every refusal must say why */
	}
	n = size - 1 < sizeof(text) - 1 ? size - 1 : sizeof(text) - 1;
	memcpy(text, data + 1, n);
	text[n] = 0;
	if (xway_rule_parse(text, &rule, errbuf, sizeof(errbuf)) == 0) {
		struct xway_addr d = { .port = 0x5000 };

		xway_rule_match(&rule, &d, 33);
	}
	xway_json_escape(text, out, sizeof(out));
	{
		char rec[XWAY_LINK_REC];
		struct xway_link_msg m;

		memset(rec, 0, sizeof(rec));
		memcpy(rec, data + 1, size - 1 < sizeof(rec) ? size - 1 : sizeof(rec));
		why = NULL;
		if (xway_link_parse(rec, sizeof(rec), &m, &why) == 0) {
			/* What parsed formats back to an accepted slot. */
			if (xway_link_format(&m, rec) != 0)
				abort();
		} else if (!why) {
			abort();
		}
	}
	{
		struct xway_addr a;

		if (xway_addr_parse(text, &a) == 0)
			xway_addr_format(&a, out, sizeof(out));
	}
	return 0;
}
