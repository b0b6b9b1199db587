/* SPDX-License-Identifier: MIT */
/*
 * xwayd.conf: a GKeyFile with [broker] socket=, mode=, claim_timeout_ms=,
 * log_level=, xen_link=, xen_vchan_pool= and [rules] allow=, deny= (';'-separated rule lists, see
 * proto.h for the rule language and precedence).  Loading is all or
 * nothing: every group and key is checked, unknown ones are errors (a typo
 * must not silently disable a deny rule), and the first problem is reported
 * with its file, line and key.  The caller exits 2 on error.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "xwayd.h"

static void config_defaults(struct xwayd_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->socket_path = g_strdup(XWAY_BROKER_SOCK_DEFAULT);
	cfg->mode = XWAYD_MODE_LOCAL;
	cfg->claim_timeout_ms = 2000;
	cfg->log_level = 6;
	cfg->xen_link = true;
	cfg->xen_vchan_pool = XWAYD_VCHAN_POOL_DEFAULT;
}

void xwayd_config_free(struct xwayd_config *cfg)
{
	g_free(cfg->socket_path);
	g_free(cfg->allow);
	g_free(cfg->deny);
	memset(cfg, 0, sizeof(*cfg));
}

/* Line number of "key" inside [group] in text, for error messages; 0 when
 * not found (GKeyFile does not keep line numbers). */
static int key_line(const char *text, const char *group, const char *key)
{
	gchar **lines = g_strsplit(text, "\n", -1);
	bool in = group == NULL;
	int found = 0;

	for (int i = 0; lines[i] && !found; i++) {
		char *l = g_strstrip(lines[i]);

		if (l[0] == '[') {
			in = group && strlen(l) == strlen(group) + 2 &&
			     !strncmp(l + 1, group, strlen(group));
			if (!key && in)
				found = i + 1;
			continue;
		}
		if (in && key) {
			size_t n = strlen(key);

			if (!strncmp(l, key, n) && (l[n] == '=' || l[n] == ' ' ||
						    l[n] == '\t' || l[n] == '['))
				found = i + 1;
		}
	}
	g_strfreev(lines);
	return found;
}

/* The first line GKeyFile cannot have accepted: not blank, not a comment,
 * not a [group] and without '='; 0 if none (e.g. a bad encoding). */
static int syntax_error_line(const char *text)
{
	gchar **lines = g_strsplit(text, "\n", -1);
	int found = 0;

	for (int i = 0; lines[i] && !found; i++) {
		char *l = g_strstrip(lines[i]);

		if (!*l || *l == '#')
			continue;
		if ((*l == '[' && l[strlen(l) - 1] == ']') || strchr(l, '='))
			continue;
		found = i + 1;
	}
	g_strfreev(lines);
	return found;
}

#define BAD(...) do { \
	*err = g_strdup_printf("%s:%d: [%s] %s: %s", path, \
			       key_line(text, group, key), group, key ? key : "", \
			       tmp = g_strdup_printf(__VA_ARGS__)); \
	g_free(tmp); \
	goto out; \
} while (0)

static int parse_level(const char *v)
{
	static const char *const names[] = {
		"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
	};
	for (int i = 0; i < 8; i++)
		if (!g_ascii_strcasecmp(v, names[i]))
			return i;
	if (!g_ascii_strcasecmp(v, "error"))
		return 3;
	if (!g_ascii_strcasecmp(v, "warn"))
		return 4;
	if (v[0] >= '0' && v[0] <= '7' && !v[1])
		return v[0] - '0';
	return -1;
}

static int parse_rules(const char *path, const char *text, GKeyFile *kf,
		       const char *key, struct xway_rule **out, size_t *n,
		       char **err)
{
	const char *group = "rules";
	char msg[160], *tmp;
	gsize len = 0;
	gchar **list = g_key_file_get_string_list(kf, group, key, &len, NULL);
	int r = -EINVAL;

	*out = g_new0(struct xway_rule, len ? len : 1);
	*n = 0;
	for (gsize i = 0; i < len; i++) {
		char *s = g_strstrip(list[i]);

		if (!*s)
			continue;
		if (xway_rule_parse(s, &(*out)[*n], msg, sizeof(msg)))
			BAD("%s", msg);
		(*n)++;
	}
	r = 0;
out:
	g_strfreev(list);
	return r;
}

int xwayd_config_load(struct xwayd_config *out, const char *path,
		      bool must_exist, char **err)
{
	static const char *const broker_keys[] = {
		"socket", "mode", "claim_timeout_ms", "log_level", "xen_link",
		"xen_vchan_pool", NULL,
	};
	struct xwayd_config cfg;
	GKeyFile *kf = g_key_file_new();
	GError *gerr = NULL;
	gchar *text = NULL, **groups = NULL, **keys = NULL, *v = NULL, *tmp;
	const char *group = NULL, *key = NULL;
	gsize len;
	int r = -EINVAL;

	config_defaults(&cfg);
	*err = NULL;
	if (!g_file_get_contents(path, &text, &len, &gerr)) {
		if (!must_exist && g_error_matches(gerr, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
			g_clear_error(&gerr);
			r = 0;
			goto done;
		}
		*err = g_strdup_printf("%s: %s", path, gerr->message);
		goto out;
	}
	if (!g_key_file_load_from_data(kf, text, len, G_KEY_FILE_NONE, &gerr)) {
		/* GKeyFile names the offending text but not its line. */
		*err = g_strdup_printf("%s:%d: %s", path, syntax_error_line(text),
				       gerr->message);
		goto out;
	}
	groups = g_key_file_get_groups(kf, NULL);
	for (int i = 0; groups[i]; i++) {
		group = groups[i];
		key = NULL;
		if (strcmp(group, "broker") && strcmp(group, "rules"))
			BAD("unknown group (known: [broker], [rules])");
		keys = g_key_file_get_keys(kf, group, NULL, NULL);
		for (int j = 0; keys && keys[j]; j++) {
			bool known = false;

			key = keys[j];
			if (!strcmp(group, "broker")) {
				for (int k = 0; broker_keys[k]; k++)
					known |= !strcmp(key, broker_keys[k]);
			} else {
				known = !strcmp(key, "allow") || !strcmp(key, "deny");
			}
			if (!known)
				BAD("unknown key");
		}
		g_strfreev(keys);
		keys = NULL;
	}

	group = "broker";
	if ((v = g_key_file_get_string(kf, group, key = "socket", NULL))) {
		g_strstrip(v);
		if (v[0] != '/' || strlen(v) >= 108)
			BAD("'%s' is not an absolute path shorter than 108 bytes", v);
		g_free(cfg.socket_path);
		cfg.socket_path = v;
		v = NULL;
	}
	if ((v = g_key_file_get_string(kf, group, key = "mode", NULL))) {
		g_strstrip(v);
		cfg.mode_auto = !strcmp(v, "auto");
		if (!strcmp(v, "local") || cfg.mode_auto)
			cfg.mode = XWAYD_MODE_LOCAL;
		else if (!strcmp(v, "xen"))
			cfg.mode = XWAYD_MODE_XEN;
		else
			BAD("'%s' is not one of local, xen, auto", v);
		g_free(v);
		v = NULL;
	}
	if ((v = g_key_file_get_string(kf, group, key = "claim_timeout_ms", NULL))) {
		guint64 ms;

		g_strstrip(v);
		if (!g_ascii_string_to_unsigned(v, 10, 1, 600000, &ms, NULL))
			BAD("'%s' is not a number of milliseconds in 1..600000", v);
		cfg.claim_timeout_ms = (uint32_t)ms;
		g_free(v);
		v = NULL;
	}
	if ((v = g_key_file_get_string(kf, group, key = "log_level", NULL))) {
		g_strstrip(v);
		if ((cfg.log_level = parse_level(v)) < 0)
			BAD("'%s' is not a level (err, warning, notice, info, debug or 0-7)", v);
		g_free(v);
		v = NULL;
	}
	if ((v = g_key_file_get_string(kf, group, key = "xen_link", NULL))) {
		g_strstrip(v);
		if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1"))
			cfg.xen_link = true;
		else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0"))
			cfg.xen_link = false;
		else
			BAD("'%s' is not a boolean (true or false)", v);
		g_free(v);
		v = NULL;
	}
	if ((v = g_key_file_get_string(kf, group, key = "xen_vchan_pool", NULL))) {
		guint64 n;

		g_strstrip(v);
		if (!g_ascii_string_to_unsigned(v, 10, 0, XWAYD_VCHAN_POOL_MAX, &n, NULL))
			BAD("'%s' is not a number of channel ends in 0..%u", v,
			    XWAYD_VCHAN_POOL_MAX);
		cfg.xen_vchan_pool = (uint32_t)n;
		g_free(v);
		v = NULL;
	}
	if (parse_rules(path, text, kf, "allow", &cfg.allow, &cfg.nallow, err) ||
	    parse_rules(path, text, kf, "deny", &cfg.deny, &cfg.ndeny, err))
		goto out;
	r = 0;
done:
	if (!cfg.allow)
		cfg.allow = g_new0(struct xway_rule, 1);
	if (!cfg.deny)
		cfg.deny = g_new0(struct xway_rule, 1);
	*out = cfg;
	cfg.socket_path = NULL;
	cfg.allow = cfg.deny = NULL;
out:
	if (gerr)
		g_error_free(gerr);
	xwayd_config_free(&cfg);
	g_free(v);
	g_strfreev(keys);
	g_strfreev(groups);
	g_free(text);
	g_key_file_free(kf);
	return r;
}
