/* Per-client budgets: a token bucket of names a second for each client, by
 * its address (an IPv6 /64 counts as one) or by its API key when a keys
 * file is configured. The table is bounded (http.max_clients): when it is
 * full, clients whose bucket has refilled are forgotten (they lose
 * nothing); newcomers past that share one bucket. */
#include "http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 128
#define KEYS_MAX 100000
#define OVERFLOW_CLIENT "overflow"

typedef struct {
    double tokens;
    uint64_t at_us;
    uint32_t rate;
    uint32_t burst;
} bucket_t;

typedef struct {
    uint32_t line;       /* its line in the file: the client is "key:LINE" */
    uint32_t rate;
    uint32_t burst;
    char key[KEY_MAX];
} key_t_;

struct budgets {
    zhashx_t *buckets;   /* client -> bucket_t */
    zhashx_t *keys;      /* API key -> key_t_ */
    zhashx_t *key_clients; /* "key:LINE" -> the key_t_ of keys */
    uint32_t rate;
    uint32_t burst;
    uint32_t max_clients;
};

static void
free_item(void **item)
{
    free(*item);
    *item = NULL;
}

/* KEY [NAMES_PER_S [BURST]] a line; '#' starts a comment. */
static int
load_keys(budgets_t *self, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1;
    char line[512];
    uint32_t no = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        no++;
        line[strcspn(line, "#\r\n")] = '\0';
        char key[KEY_MAX + 1];
        unsigned long rate = self->rate, burst = 0;
        char extra;
        int n = sscanf(line, "%128s %lu %lu %c", key, &rate, &burst, &extra);
        if (n <= 0)
            continue;
        if (n == 4 || strlen(key) >= KEY_MAX || rate < 1 || rate > 100000000 || burst > 100000000) {
            snprintf(err, errlen, "%s:%u: want KEY [NAMES_PER_S [BURST]] (a key of at most %d characters)", path, no,
                     KEY_MAX - 1);
            rc = -1;
            break;
        }
        if (zhashx_lookup(self->keys, key)) {
            snprintf(err, errlen, "%s:%u: this key is listed twice", path, no);
            rc = -1;
            break;
        }
        if (zhashx_size(self->keys) >= KEYS_MAX) {
            snprintf(err, errlen, "%s:%u: more than %d keys", path, no, KEYS_MAX);
            rc = -1;
            break;
        }
        key_t_ *k = malloc(sizeof *k);
        if (!k) {
            rc = -1;
            break;
        }
        k->line = no;
        k->rate = (uint32_t)rate;
        k->burst = burst >= rate ? (uint32_t)burst : (uint32_t)rate * 2;
        snprintf(k->key, sizeof k->key, "%s", key);
        char client[32];
        snprintf(client, sizeof client, "key:%u", no);
        zhashx_insert(self->keys, key, k);
        zhashx_insert(self->key_clients, client, k);
    }
    fclose(f);
    return rc;
}

budgets_t *
budgets_new(const av_http_cfg_t *cfg, char *err, size_t errlen)
{
    budgets_t *self = calloc(1, sizeof *self);
    if (!self)
        return snprintf(err, errlen, "out of memory"), NULL;
    self->rate = cfg->client_rate;
    self->burst = cfg->client_burst;
    self->max_clients = cfg->max_clients;
    self->buckets = zhashx_new();
    self->keys = zhashx_new();
    self->key_clients = zhashx_new();
    if (!self->buckets || !self->keys || !self->key_clients) {
        budgets_destroy(&self);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    zhashx_set_destructor(self->buckets, free_item);
    zhashx_set_destructor(self->keys, free_item);
    if (cfg->api_keys && *cfg->api_keys && load_keys(self, cfg->api_keys, err, errlen) < 0)
        budgets_destroy(&self);
    return self;
}

void
budgets_destroy(budgets_t **self_p)
{
    budgets_t *self = self_p ? *self_p : NULL;
    if (!self)
        return;
    zhashx_destroy(&self->buckets);
    zhashx_destroy(&self->key_clients);
    zhashx_destroy(&self->keys);
    free(self);
    *self_p = NULL;
}

int
budgets_client(const budgets_t *self, const char *api_key, const struct sockaddr *addr, char *out, size_t size)
{
    if (api_key && zhashx_size(self->keys)) {
        const key_t_ *k = strlen(api_key) < KEY_MAX ? zhashx_lookup(self->keys, api_key) : NULL;
        if (!k)
            return -1;
        snprintf(out, size, "key:%u", k->line);
        return 0;
    }
    char text[INET6_ADDRSTRLEN] = "?";
    if (addr && addr->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, text, sizeof text);
    } else if (addr && addr->sa_family == AF_INET6) {
        struct in6_addr a = ((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&a)) {
            inet_ntop(AF_INET, &a.s6_addr[12], text, sizeof text);
        } else {
            memset(&a.s6_addr[8], 0, 8); /* one /64: one client */
            inet_ntop(AF_INET6, &a, text, sizeof text);
        }
    }
    snprintf(out, size, "ip:%s", text);
    return 0;
}

static void
refill(bucket_t *b, uint64_t now_us)
{
    if (now_us > b->at_us) {
        b->tokens += (double)(now_us - b->at_us) * b->rate / 1e6;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
    }
    b->at_us = now_us;
}

/* Forgets clients whose bucket is full again: they would start afresh. */
static void
sweep(budgets_t *self, uint64_t now_us)
{
    zlistx_t *keys = zhashx_keys(self->buckets);
    if (!keys)
        return;
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        bucket_t *b = zhashx_lookup(self->buckets, k);
        refill(b, now_us);
        if (b->tokens >= b->burst)
            zhashx_delete(self->buckets, k);
    }
    zlistx_destroy(&keys);
}

uint32_t
budgets_take(budgets_t *self, const char *client, uint32_t n, uint64_t now_us)
{
    bucket_t *b = zhashx_lookup(self->buckets, client);
    if (!b) {
        if (zhashx_size(self->buckets) >= self->max_clients)
            sweep(self, now_us);
        if (zhashx_size(self->buckets) >= self->max_clients) {
            client = OVERFLOW_CLIENT;
            b = zhashx_lookup(self->buckets, client);
        }
    }
    if (!b) {
        if (!(b = calloc(1, sizeof *b)))
            return 1;
        b->rate = self->rate;
        b->burst = self->burst;
        const key_t_ *k = zhashx_lookup(self->key_clients, client);
        if (k) { /* its own limits, from the keys file */
            b->rate = k->rate;
            b->burst = k->burst;
        }
        b->tokens = b->burst;
        b->at_us = now_us;
        zhashx_insert(self->buckets, client, b);
    }
    refill(b, now_us);
    double cost = n < b->burst ? n : b->burst; /* a batch larger than the burst waits for a full bucket */
    if (b->tokens >= cost) {
        b->tokens -= cost;
        return 0;
    }
    double wait_s = (cost - b->tokens) / b->rate;
    return wait_s < 1 ? 1 : (uint32_t)(wait_s + 0.999);
}

uint32_t
budgets_count(const budgets_t *self)
{
    return self ? (uint32_t)zhashx_size(self->buckets) : 0;
}

/* A reload must not hand every client a full bucket: what each has left
 * goes over to the new table, under its new limits (no more than its new
 * burst), an API key's under its line in the new file, and a key that is
 * gone with it. */
void
budgets_carry_over(budgets_t *next, const budgets_t *prev)
{
    if (!prev)
        return;
    for (const bucket_t *b = zhashx_first(prev->buckets); b && zhashx_size(next->buckets) < next->max_clients;
         b = zhashx_next(prev->buckets)) {
        const char *client = zhashx_cursor(prev->buckets);
        char moved[32];
        const key_t_ *k = NULL;
        if (strncmp(client, "key:", 4) == 0) {
            const key_t_ *was = zhashx_lookup(prev->key_clients, client);
            if (!was || !(k = zhashx_lookup(next->keys, was->key)))
                continue;
            snprintf(moved, sizeof moved, "key:%u", k->line);
            client = moved;
        }
        bucket_t *copy = malloc(sizeof *copy);
        if (!copy)
            return;
        copy->rate = k ? k->rate : next->rate;
        copy->burst = k ? k->burst : next->burst;
        copy->tokens = b->tokens < copy->burst ? b->tokens : copy->burst;
        copy->at_us = b->at_us;
        if (zhashx_insert(next->buckets, client, copy) != 0)
            free(copy);
    }
}
