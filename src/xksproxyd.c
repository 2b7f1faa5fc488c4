/*
 * xksproxyd -- the XKS proxy daemon.  main() only parses the command line;
 * the work is in libxks.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "log.h"
#include "server.h"

#define DEFAULT_CONFIG SYSCONFDIR "/xksproxy/xksproxy.conf"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: xksproxyd [-c FILE] [-t] [--allow-root]\n"
	    "       xksproxyd --version\n"
	    "  -c, --config FILE  configuration file (default %s)\n"
	    "  -t, --test         check the configuration and exit\n"
	    "      --allow-root   run as root (not recommended)\n"
	    "  -V, --version      print the version and exit\n"
	    "  -h, --help         this help\n", DEFAULT_CONFIG);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "test", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ "allow-root", no_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = DEFAULT_CONFIG;
	struct cfg *cfg = NULL;
	char err[2048];
	int ch, r, test = 0, allow_root = 0;

	while ((ch = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'V':
			printf("xksproxyd %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case 'R':
			allow_root = 1;
			break;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 1;
	}
	if (cfg_load(path, &cfg, err, sizeof(err)) != 0) {
		log_err("%s", err);
		return 1;
	}
	log_configure(cfg->log.level, cfg->log.format);
	if (test) {
		r = server_check(cfg);
		if (r == 0)
			printf("%s: configuration OK\n", path);
		cfg_free(cfg);
		return r == 0 ? 0 : 1;
	}
	if (geteuid() == 0 && !allow_root) {
		log_err("refusing to run as root: run as a dedicated user (see "
		    "xksproxyd.service) or pass --allow-root");
		cfg_free(cfg);
		return 1;
	}
	/* from here on no loop thread waits for stderr (log.h) */
	if (log_writer_start() != 0)
		log_warn("cannot start the log writer thread: log records are "
		    "written directly");
	r = server_run(cfg);
	log_writer_stop();
	return r;
}
