/* SPDX-License-Identifier: MIT */
/*
 * cfs-sign: signs a store's tags and checks them offline (lib/store/sign.h).
 *
 *   cfs-sign sign --key KEY.pem [--time SECONDS] STORE TAG
 *   cfs-sign verify --trust PUB.pem|DIR STORE TAG
 *   cfs-sign show STORE TAG
 *   cfs-sign key-id KEY.pem
 *
 * sign signs what TAG names now (tags/TAG): a second signer of the same
 * statement adds a line.  verify does what cfs-mount --trust does: exit 0
 * and "TAG sha256:... signed by KEYID at TIME" when a trusted key signed
 * it, else one line saying why and exit 1.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "digest.h"
#include "fetch.h"
#include "open.h"
#include "sign.h"
#include "store.h"
#include "util.h"

#define PROG "cfs-sign"

static void usage(FILE *f)
{
	fprintf(f, "usage: " PROG " sign --key KEY.pem [--time SECONDS] STORE TAG\n"
		   "       " PROG " verify --trust PUBKEY.pem|DIR STORE TAG\n"
		   "       " PROG " show STORE TAG\n"
		   "       " PROG " key-id KEY.pem\n"
		   "\n"
		   CFS_OPEN_STORE_USAGE
		   "\n"
		   "Keys are Ed25519 PEM files: openssl genpkey -algorithm ed25519 -out KEY.pem;\n"
		   "openssl pkey -in KEY.pem -pubout -out PUBKEY.pem.\n");
}

static void time_string(uint64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, size, "%llu", (unsigned long long)t);
}

/* key-id of a private or a public key file. */
static int key_id_cmd(const char *path)
{
	uint8_t id[CFS_KEY_ID_LEN];
	char hex[2 * CFS_KEY_ID_LEN + 1] = "";
	struct cfs_key *k;
	struct cfs_trust *t;
	int ret;

	ret = cfs_key_load(path, &k);
	if (!ret) {
		cfs_key_id(k, id);
		cfs_key_free(k);
	} else {
		/* A public key: the id through a one-key trust set. */
		ret = cfs_trust_load(path, &t);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", path,
				ret == -EINVAL ? "no Ed25519 key in it" : cfs_strerror(ret));
			return 1;
		}
		if (cfs_trust_count(t) != 1) {
			fprintf(stderr, PROG ": %s: holds %zu keys, give one\n", path,
				cfs_trust_count(t));
			cfs_trust_free(t);
			return 1;
		}
		cfs_trust_key_id(t, 0, id);
		cfs_trust_free(t);
	}
	cfs_hex_encode(id, sizeof(id), hex);
	printf("%s\n", hex);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ "time", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		CFS_OPEN_STORE_OPTIONS,
		CFS_OPEN_TRUST_OPTION,
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd, *key_path = NULL, *store_loc, *tag;
	char msg[512], ref[CFS_REF_STRLEN], when[64];
	struct cfs_open_opts oo;
	struct cfs_store *st = NULL;
	struct cfs_key *key = NULL;
	unsigned long time_s = 0;
	cfs_digest dg;
	int c, ret, rc = 1;

	cfs_log_setup(PROG, CFS_LOG_WARN, stderr);
	cfs_open_opts_init(&oo);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		usage(stdout);
		return 0;
	}
	argv++;
	argc--;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			key_path = optarg;
			break;
		case 'T':
			if (cfs_parse_uint(optarg, 1, (unsigned long)INT64_MAX, &time_s) < 0) {
				fprintf(stderr, PROG ": --time: seconds since 1970 expected\n");
				goto usage;
			}
			break;
		case 'h':
			usage(stdout);
			rc = 0;
			goto out;
		default:
			ret = cfs_open_opt(&oo, c, optarg, msg, sizeof(msg));
			if (ret < 0)
				fprintf(stderr, PROG ": %s\n", msg);
			else if (ret == 0)
				usage(stderr);
			if (ret <= 0)
				goto usage;
		}
	}
	if (!strcmp(cmd, "key-id")) {
		if (optind != argc - 1) {
			usage(stderr);
			goto usage;
		}
		rc = key_id_cmd(argv[optind]);
		goto out;
	}
	if (optind != argc - 2 || (strcmp(cmd, "sign") && strcmp(cmd, "verify") &&
				   strcmp(cmd, "show"))) {
		usage(stderr);
		goto usage;
	}
	store_loc = argv[optind];
	tag = argv[optind + 1];
	if (!cfs_tag_name_valid(tag)) {
		fprintf(stderr, PROG ": invalid tag name '%s'\n", tag);
		goto usage;
	}

	if (!strcmp(cmd, "sign")) {
		if (!key_path) {
			fprintf(stderr, PROG ": sign needs --key KEY.pem\n");
			goto usage;
		}
		ret = cfs_key_load(key_path, &key);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", key_path,
				ret == -EINVAL ? "not an Ed25519 private key (PEM)" : cfs_strerror(ret));
			goto out;
		}
	} else if (!strcmp(cmd, "verify")) {
		if (!oo.trust) {
			fprintf(stderr, PROG ": verify needs --trust PUBKEY.pem|DIR\n");
			goto usage;
		}
	}
	ret = cfs_open_store(&oo, store_loc, 0, &st, msg, sizeof(msg));
	if (ret < 0) {
		fprintf(stderr, PROG ": %s\n", msg);
		goto out;
	}

	if (!strcmp(cmd, "sign")) {
		ret = cfs_store_tag_get(st, tag, &dg);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", tag,
				ret == -ENOENT ? "no such tag in the store" : cfs_strerror(ret));
			goto out;
		}
		ret = cfs_store_sign(st, key, tag, &dg, time_s);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: writing sigs/%s: %s\n", store_loc, tag,
				cfs_strerror(ret));
			goto out;
		}
		cfs_digest_ref(&dg, ref);
		printf("%s %s signed\n", tag, ref);
	} else if (!strcmp(cmd, "verify")) {
		uint64_t signed_at;

		ret = cfs_open_resolve(&oo, st, tag, &dg, &signed_at, msg, sizeof(msg));
		if (ret < 0) {
			fprintf(stderr, PROG ": %s\n", msg);
			goto out;
		}
		cfs_digest_ref(&dg, ref);
		time_string(signed_at, when, sizeof(when));
		printf("%s %s signed at %s\n", tag, ref, when);
		ret = cfs_store_tag_get(st, tag, &dg);
		if (ret == 0) {
			char tref[CFS_REF_STRLEN];

			cfs_digest_ref(&dg, tref);
			if (strcmp(tref, ref))
				fprintf(stderr, PROG ": note: tags/%s names %s, which is not signed; "
					"cfs-mount --trust mounts the signed %s\n", tag, tref, ref);
		}
	} else {
		struct cfs_sig s;
		char idh[2 * CFS_KEY_ID_LEN + 1] = "";
		void *buf;
		size_t len;

		ret = cfs_store_sig_get(st, tag, CFS_SIG_FILE_MAX, &buf, &len);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: %s\n", tag,
				ret == -ENOENT ? "no signature" : cfs_strerror(ret));
			goto out;
		}
		ret = cfs_sig_parse(buf, len, &s);
		free(buf);
		if (ret < 0) {
			fprintf(stderr, PROG ": %s: malformed signature file\n", tag);
			goto out;
		}
		cfs_digest_ref(&s.ref, ref);
		time_string(s.time, when, sizeof(when));
		printf("tag %s\nref %s\ntime %s\n", s.tag, ref, when);
		for (unsigned i = 0; i < s.nsigs; i++) {
			cfs_hex_encode(s.sigs[i].key_id, CFS_KEY_ID_LEN, idh);
			printf("signer %s\n", idh);
		}
	}
	rc = 0;
	goto out;
usage:
	rc = 2;
out:
	cfs_key_free(key);
	cfs_store_free(st);
	cfs_open_opts_release(&oo);
	return rc;
}
