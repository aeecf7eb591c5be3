/*
 * NAME
 *   availd-http - the web's way into availd: HTTP/JSON, Server-Sent Events
 *   and a search page
 *
 * SUMMARY
 *   availd-http [-c FILE] [-n] [-f]
 *
 * DESCRIPTION
 *   An HTTP/1.1 server (libmicrohttpd, on the daemon's own event loop) on
 *   http.listen, a client of intake's request-reply endpoint like any
 *   frontend. It runs when availd.yaml has an `http:` section.
 *
 *   GET /v1/status?domain=a.com,b.net answers in the shape of the Domainr
 *   status API, {"status": [{"domain", "zone", "status", "summary"}]}
 *   (status "undelegated inactive" and summary "inactive" for an available
 *   name, "active" for a registered one, "reserved", "invalid", "unknown"),
 *   with availd's keys beside: availability (available, registered,
 *   reserved, invalid, unknown), name (the A-label), reason, registry,
 *   source, at (unix ms). `fresh=1` asks the registry even when the cache
 *   has an answer; `deadline_ms=N` bounds the wait.
 *
 *   POST /v1/check with {"names": [...], "fresh": false, "deadline_ms": N}
 *   (up to http.max_names, at most 1,000) answers all names in one body of
 *   the same shape.
 *
 *   GET /v1/stream?domain=... is a stream of Server-Sent Events: one
 *   `answer` event per name the moment it is final (cached names at once,
 *   the rest as their registries reply; its data is the name's JSON with
 *   `idx`, its position), then `done`.
 *
 *   GET /healthz is 200 when intake answered a ping within a second, 503
 *   otherwise. GET /metrics is Prometheus text, as `availctl metrics`
 *   writes it. GET /v1/config gives the search page its TLDs
 *   (http.tlds). GET / is the search page: plain HTML, CSS and JavaScript
 *   from http.www, no external scripts or fonts.
 *
 *   Fresh cached answers are read straight from the cache's LMDB
 *   (read-only, with the dispatcher's rules: the same normalisation and
 *   route, an entry only before it expires, never with `fresh`);
 *   http.cache_direct: false sends every name through intake.
 *
 *   Errors are JSON, {"error": {"code", "message"}}: 400 an invalid request
 *   (with the reason: not JSON, a name that is empty, too long or not
 *   UTF-8...), 401 an unknown API key, 404, 405, 413 a body past
 *   http.max_body_bytes (the rest read and dropped up to 16 MiB or twice
 *   the bound, so that the 413 is not lost to a TCP reset; before the
 *   body to a client that asks for 100 Continue) or more than
 *   http.max_names names, 429 with
 *   Retry-After when a client has spent its budget, 503 overloaded
 *   (http.max_pending names waiting for intake, http.max_streams open
 *   streams, intake's queue full) or stopping, 504 when intake said
 *   nothing within the deadline (the body holds what the cache knew, the
 *   rest unknown with reason deadline).
 *
 *   Clients are bounded: a budget of http.client_rate names a second
 *   (bursts of http.client_burst) per client, a client being its address
 *   (an IPv6 /64 counts as one) or, when http.api_keys names a file of
 *   `KEY [NAMES_PER_S [BURST]]` lines, its key (header X-API-Key or
 *   Authorization: Bearer KEY); at most http.max_clients tracked.
 *   Connections: at most http.max_connections (and
 *   http.max_connections_per_ip), closed after http.idle_timeout_s of
 *   silence (a half-sent request too); a request's line and headers share
 *   96 KiB per connection. cidr_allow and cidr_deny apply. CORS: an Origin
 *   listed in http.cors_origins ("*": any) may read the answers.
 *
 *   SIGHUP reloads budgets, keys, CORS origins, TLDs, the page's files and
 *   the routes (a client keeps what is left of its budget, within the new
 *   burst); http.listen and the connection limits need a restart.
 *   SIGTERM stops accepting, lets waiting requests and streams finish
 *   (within process.drain_ms), and exits. The listening socket may come
 *   from a socket unit (availd-http.socket).
 *
 * CONFIGURATION PARAMETERS
 *   http.listen, http.www, http.tlds, http.cors_origins, http.api_keys,
 *   http.max_connections, http.max_connections_per_ip,
 *   http.idle_timeout_s, http.max_body_bytes, http.max_names,
 *   http.client_rate, http.client_burst, http.max_clients,
 *   http.max_pending, http.max_streams, http.deadline_ms,
 *   http.cache_direct, endpoints.intake_router, cache.path, and the
 *   process settings.
 */
#include "http.h"

int
main(int argc, char **argv)
{
    return av_daemon_main(argc, argv,
                          &(av_daemon_hooks_t){
                              .name = "http",
                              .summary = "availd-http: HTTP/JSON, Server-Sent Events and the search page",
                              .init = http_init,
                              .on_reload = http_reload,
                              .restart_settings = http_restart_settings,
                              .on_stop = http_stop,
                              .fini = http_fini,
                          });
}
