/*
 * server.h -- the daemon: listeners, event-loop threads, connections,
 * request dispatch, config snapshots, reload and drain.
 */
#ifndef XKS_SERVER_H
#define XKS_SERVER_H

struct cfg;

/*
 * Run the daemon until SIGTERM/SIGINT.  Takes ownership of cfg.  Returns
 * the process exit status (0 after a clean drain, 1 when start-up failed,
 * with the reason logged).
 */
int server_run(struct cfg *cfg);

/*
 * What `xksproxyd -t` checks beyond parsing: TLS files, the HSM (module,
 * tokens, PIN, keys listed in key stores, the health key).  Logs each
 * problem; returns 0 when everything is usable, else -1.
 */
int server_check(const struct cfg *cfg);

#endif
