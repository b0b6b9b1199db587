/* SPDX-License-Identifier: MIT */
/*
 * QUERY: the text behind `xwayctl status|peers|listeners|connections|stats`,
 * as JSON or as an ss-like table, split into TEXT packets of at most
 * XWAY_MSG_MAX bytes (hdr.flags MORE on all but the last).  A non-root
 * client only sees listeners and connections of its own uid.  The JSON of
 * `connections` is a fixed schema other tools parse (broker/README.md).
 */
#include <stdio.h>
#include <string.h>

#include "xwayd.h"

static void json_str(GString *o, const char *s)
{
	char buf[512];
	size_t n = xway_json_escape(s, buf, sizeof(buf));

	g_string_append_c(o, '"');
	if (n < sizeof(buf)) {
		g_string_append(o, buf);
	} else {
		char *big = g_malloc(n + 1);

		xway_json_escape(s, big, n + 1);
		g_string_append(o, big);
		g_free(big);
	}
	g_string_append_c(o, '"');
}

static void json_i64_or_null(GString *o, int64_t v)
{
	if (v < 0)
		g_string_append(o, "null");
	else
		g_string_append_printf(o, "%lld", (long long)v);
}

static const char *mode_name(void)
{
	return xd->cfg.mode == XWAYD_MODE_XEN ? "xen" : "local";
}

static bool visible(const struct xwayd_client *c, uid_t a, uid_t b)
{
	return c->uid == 0 || a == c->uid || b == c->uid;
}

static const char *state_name(enum xwayd_conn_state s)
{
	static const char *const n[] = { "pending", "accelerated", "closed", "fallback" };

	return n[s];
}

static const char *backend_name(const struct xwayd_conn *k)
{
	if (k->state == XC_FALLBACK)
		return "tcp";
	return k->backend == XWAY_BACKEND_XEN ? "xen" : "local";
}

/* A live accelerated connection's kernel TCP counters, per side, when
 * no REPORT CLOSED gave them yet and the socket is in our namespace. */
static void live_tcp(const struct xwayd_conn *k, struct xwayd_side out[2])
{
	out[0] = k->side[0];
	out[1] = k->side[1];
	if (k->state != XC_ACCELERATED)
		return;
	if (out[0].tcp_sent < 0 && k->netns_client == xd->netns &&
	    xwayd_tcp_counters(&k->side[0].addr, &k->side[1].addr,
			       &out[0].tcp_sent, &out[0].tcp_received))
		out[0].tcp_sent = out[0].tcp_received = -1;
	if (out[1].tcp_sent < 0 && k->netns_server == xd->netns &&
	    xwayd_tcp_counters(&k->side[1].addr, &k->side[0].addr,
			       &out[1].tcp_sent, &out[1].tcp_received))
		out[1].tcp_sent = out[1].tcp_received = -1;
}

static void side_json(GString *o, const struct xwayd_side *s)
{
	char a[80];

	g_string_append(o, "{\"addr\":");
	json_str(o, xway_addr_format(&s->addr, a, sizeof(a)));
	g_string_append_printf(o, ",\"pid\":%d,\"uid\":%lld,\"tcp_bytes_sent\":",
			       (int)s->pid, s->uid == (uid_t)-1 ? -1LL : (long long)s->uid);
	json_i64_or_null(o, s->tcp_sent);
	g_string_append(o, ",\"tcp_bytes_received\":");
	json_i64_or_null(o, s->tcp_received);
	g_string_append_c(o, '}');
}

static void conn_json(GString *o, struct xwayd_conn *k, bool *first)
{
	struct xwayd_side sides[2];

	live_tcp(k, sides);
	g_string_append(o, *first ? "" : ",");
	*first = false;
	xwayd_conn_refresh(k);
	g_string_append_printf(o, "{\"id\":\"%016llx\",\"state\":\"%s\",\"backend\":\"%s\","
			       "\"reason\":\"%s\",\"detail\":",
			       (unsigned long long)k->cookie, state_name(k->state),
			       backend_name(k), xway_reason_name(k->reason));
	json_str(o, k->detail);
	g_string_append(o, ",\"client\":");
	side_json(o, &sides[0]);
	g_string_append(o, ",\"server\":");
	side_json(o, &sides[1]);
	g_string_append_printf(o, ",\"bytes_c2s\":%llu,\"bytes_s2c\":%llu,\"started\":%.6f,"
			       "\"ended\":", (unsigned long long)k->bytes_c2s,
			       (unsigned long long)k->bytes_s2c, k->started);
	if (k->ended < 0)
		g_string_append(o, "null}");
	else
		g_string_append_printf(o, "%.6f}", k->ended);
}

static void conn_line(GString *o, struct xwayd_conn *k)
{
	char a[80], b[80];

	xwayd_conn_refresh(k);
	g_string_append_printf(o, "%016llx %-11s %-5s %-14s %-24s %-7d %-24s %-7d %12llu %12llu %s\n",
			       (unsigned long long)k->cookie, state_name(k->state),
			       backend_name(k),
			       k->reason ? xway_reason_name(k->reason) : "-",
			       xway_addr_format(&k->side[0].addr, a, sizeof(a)),
			       (int)k->side[0].pid,
			       xway_addr_format(&k->side[1].addr, b, sizeof(b)),
			       (int)k->side[1].pid,
			       (unsigned long long)k->bytes_c2s,
			       (unsigned long long)k->bytes_s2c, k->detail);
}

static gint conn_by_start(gconstpointer a, gconstpointer b)
{
	const struct xwayd_conn *x = *(struct xwayd_conn *const *)a;
	const struct xwayd_conn *y = *(struct xwayd_conn *const *)b;

	if (x->started != y->started)
		return x->started < y->started ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;   /* same clock tick */
}

static void q_connections(struct xwayd_client *c, bool json, GString *o)
{
	GPtrArray *all = g_ptr_array_new();
	GHashTableIter it;
	gpointer key, v;
	bool first = true;

	for (GList *n = xd->finished.head; n; n = n->next)
		g_ptr_array_add(all, n->data);
	g_hash_table_iter_init(&it, xd->live);
	while (g_hash_table_iter_next(&it, &key, &v))
		g_ptr_array_add(all, v);
	g_ptr_array_sort(all, conn_by_start);
	if (json)
		g_string_append(o, "{\"connections\":[");
	else
		g_string_append_printf(o, "%-16s %-11s %-5s %-14s %-24s %-7s %-24s %-7s %12s %12s %s\n",
				       "ID", "STATE", "BACK", "REASON", "CLIENT", "PID",
				       "SERVER", "PID", "C2S", "S2C", "DETAIL");
	for (guint i = 0; i < all->len; i++) {
		struct xwayd_conn *k = all->pdata[i];

		if (!visible(c, k->side[0].uid, k->side[1].uid))
			continue;
		if (json)
			conn_json(o, k, &first);
		else
			conn_line(o, k);
	}
	if (json)
		g_string_append(o, "]}\n");
	g_ptr_array_free(all, TRUE);
}

static void q_listeners(struct xwayd_client *c, bool json, GString *o)
{
	GHashTableIter it;
	gpointer key, v;
	bool first = true;
	char a[80];

	if (json)
		g_string_append(o, "{\"listeners\":[");
	else
		g_string_append_printf(o, "%-28s %-16s %-7s %-6s %s\n",
				       "ADDRESS", "NETNS", "PID", "UID", "REFS");
	g_hash_table_iter_init(&it, xd->listeners);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_listener *l = v;
		guint refs = 0;
		GHashTableIter ri;
		gpointer rk, rv;

		if (!visible(c, l->uid, l->uid))
			continue;
		g_hash_table_iter_init(&ri, l->refs);
		while (g_hash_table_iter_next(&ri, &rk, &rv))
			refs += GPOINTER_TO_UINT(rv);
		xway_addr_format(&l->addr, a, sizeof(a));
		if (json) {
			g_string_append(o, first ? "" : ",");
			first = false;
			g_string_append(o, "{\"addr\":");
			json_str(o, a);
			g_string_append_printf(o, ",\"netns\":\"%016llx\",\"pid\":%d,\"uid\":%u,"
					       "\"refs\":%u,\"clients\":%u,\"v6only\":%s,\"since\":%.6f}",
					       (unsigned long long)l->netns, (int)l->pid,
					       (unsigned)l->uid, refs, g_hash_table_size(l->refs),
					       l->v6only ? "true" : "false", l->since);
		} else {
			g_string_append_printf(o, "%-28s %016llx %-7d %-6u %u\n", a,
					       (unsigned long long)l->netns, (int)l->pid,
					       (unsigned)l->uid, refs);
		}
	}
	if (json)
		g_string_append(o, "]}\n");
}

static void q_peers(struct xwayd_client *c, bool json, GString *o)
{
	GHashTableIter it;
	gpointer key, v;
	bool first = true;

	/* The processes connected to this broker; in Xen mode also the other
	 * domains' brokers seen in xenstore. */
	if (json)
		g_string_append_printf(o, "{\"mode\":\"%s\",\"peers\":[", mode_name());
	else
		g_string_append_printf(o, "%-7s %-6s %-6s %-16s %-9s %s\n",
				       "PID", "UID", "GID", "COMM", "LISTENERS", "OFFERS");
	g_hash_table_iter_init(&it, xd->clients);
	while (g_hash_table_iter_next(&it, &key, &v)) {
		struct xwayd_client *p = v;

		if (!visible(c, p->uid, p->uid))
			continue;
		if (json) {
			g_string_append(o, first ? "" : ",");
			first = false;
			g_string_append_printf(o, "{\"pid\":%d,\"uid\":%u,\"gid\":%u,\"comm\":",
					       (int)p->pid, (unsigned)p->uid, (unsigned)p->gid);
			json_str(o, p->comm);
			g_string_append_printf(o, ",\"listeners\":%u,\"offers\":%u}",
					       p->nlisten, p->noffers);
		} else {
			g_string_append_printf(o, "%-7d %-6u %-6u %-16s %-9u %u\n",
					       (int)p->pid, (unsigned)p->uid, (unsigned)p->gid,
					       p->comm, p->nlisten, p->noffers);
		}
	}
	if (json) {
		g_string_append(o, "],\"domains\":[");
		xwayd_xen_peers(o, true);
		g_string_append(o, "]}\n");
	} else {
		xwayd_xen_peers(o, false);
	}
}

static void q_status(bool json, GString *o)
{
	unsigned pending = 0, accel = 0;
	GHashTableIter it;
	gpointer key, v;

	g_hash_table_iter_init(&it, xd->live);
	while (g_hash_table_iter_next(&it, &key, &v))
		((struct xwayd_conn *)v)->state == XC_PENDING ? pending++ : accel++;
	if (json) {
		g_string_append_printf(o, "{\"version\":%u,\"mode\":\"%s\",\"instance\":\"%016llx\","
				       "\"pid\":%d,\"uptime\":%.3f,\"socket\":",
				       XWAYD_VERSION, mode_name(), (unsigned long long)xd->instance,
				       (int)getpid(), xwayd_now() - xd->started);
		json_str(o, xd->cfg.socket_path);
		g_string_append_printf(o, ",\"claim_timeout_ms\":%u,\"clients\":%u,\"listeners\":%u,"
				       "\"pending\":%u,\"accelerated\":%u,\"finished\":%u,"
				       "\"listener_gen\":%llu}\n",
				       xd->cfg.claim_timeout_ms, g_hash_table_size(xd->clients),
				       g_hash_table_size(xd->listeners), pending, accel,
				       g_queue_get_length(&xd->finished),
				       (unsigned long long)xd->gen->listener_gen);
	} else {
		g_string_append_printf(o, "xwayd %u running (pid %d), mode %s, instance %016llx\n"
				       "socket:       %s\nuptime:       %.0f s\n"
				       "claim timeout: %u ms\nclients:      %u\nlisteners:    %u\n"
				       "connections:  %u pending, %u accelerated, %u finished records\n",
				       XWAYD_VERSION, (int)getpid(), mode_name(),
				       (unsigned long long)xd->instance, xd->cfg.socket_path, xwayd_now() - xd->started,
				       xd->cfg.claim_timeout_ms, g_hash_table_size(xd->clients),
				       g_hash_table_size(xd->listeners), pending, accel,
				       g_queue_get_length(&xd->finished));
	}
}

static void q_stats(bool json, GString *o)
{
	const struct xwayd_stats *s = &xd->st;
	const struct { const char *name; uint64_t v; } f[] = {
		{ "clients_total", s->clients_total }, { "offers", s->offers },
		{ "offers_connecting", s->offers_connecting },
		{ "claims", s->claims }, { "claim_misses", s->claim_misses },
		{ "claims_read_first", s->claims_read_first },
		{ "withdrawals", s->withdrawals }, { "expiries", s->expiries },
		{ "fallbacks", s->fallbacks }, { "reports", s->reports },
		{ "proto_errors", s->proto_errors }, { "queries", s->queries },
		{ "listener_adds", s->listener_adds }, { "listener_dels", s->listener_dels },
		{ "disconnects_forced", s->disconnects_forced },
		{ "xen_serves", s->xen_serves }, { "xen_serve_us", s->xen_serve_us },
		{ "xen_attaches", s->xen_attaches }, { "xen_attach_us", s->xen_attach_us },
		{ "xen_decided", s->xen_decided }, { "xen_decide_us", s->xen_decide_us },
		{ "xen_serves_pooled", s->xen_serves_pooled },
		{ "xen_pool_ready", xwayd_vchan_pool_ready() },
		{ "xen_attaches_early", s->xen_attaches_early },
	};
	size_t i;

	if (json)
		g_string_append_c(o, '{');
	for (i = 0; i < G_N_ELEMENTS(f); i++)
		g_string_append_printf(o, json ? "%s\"%s\":%llu" : "%s%-20s %llu\n",
				       json && i ? "," : "", f[i].name,
				       (unsigned long long)f[i].v);
	if (json)
		g_string_append(o, ",\"fallback_reasons\":{");
	for (unsigned r = 1, n = 0; r < XWAY_R__MAX; r++) {
		if (json)
			g_string_append_printf(o, "%s\"%s\":%llu", n++ ? "," : "",
					       xway_reason_name(r),
					       (unsigned long long)s->by_reason[r]);
		else if (s->by_reason[r])
			g_string_append_printf(o, "fallback %-11s %llu\n", xway_reason_name(r),
					       (unsigned long long)s->by_reason[r]);
	}
	if (json)
		g_string_append(o, "}}\n");
}

void xwayd_query(struct xwayd_client *c, const struct xway_req *r)
{
	const size_t chunk = XWAY_MSG_MAX - sizeof(struct xway_msg_hdr);
	bool json = r->u.query.json;
	GString *o = g_string_new(NULL);
	size_t off = 0;

	xd->st.queries++;
	switch (r->u.query.what) {
	case XWAY_Q_STATUS:      q_status(json, o); break;
	case XWAY_Q_PEERS:       q_peers(c, json, o); break;
	case XWAY_Q_LISTENERS:   q_listeners(c, json, o); break;
	case XWAY_Q_CONNECTIONS: q_connections(c, json, o); break;
	case XWAY_Q_STATS:       q_stats(json, o); break;
	}
	do {
		size_t n = MIN(chunk, o->len - off);

		xwayd_send(c, XWAY_MSG_TEXT, r->hdr.seq,
			   off + n < o->len ? XWAY_HDR_F_MORE : 0, o->str + off, n, NULL, 0);
		off += n;
	} while (off < o->len && !c->dead);
	g_string_free(o, TRUE);
}
