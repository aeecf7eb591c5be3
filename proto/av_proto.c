/* msgpack encoding and decoding of availd's messages. Decoding is the first
 * code that touches bytes from outside, so it bounds everything before
 * msgpack-c sees it and turns every kind of bad input into an error code. */
#include "av_proto.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[AV_STATUS_COUNT] = {
    "available", "registered", "reserved", "invalid", "unknown",
};
static const char *const source_names[AV_SOURCE_COUNT] = {
    "none", "cache", "whois", "das", "rdap", "dns", "epp",
};
static const char *const level_names[AV_LEVEL_COUNT] = {
    "err", "warning", "notice", "info", "debug",
};
static const char *const type_names[] = {
    [AV_MSG_CHECK] = "check",         [AV_MSG_ANSWER] = "answer",
    [AV_MSG_READY] = "ready",         [AV_MSG_HEARTBEAT] = "heartbeat",
    [AV_MSG_BYE] = "bye",             [AV_MSG_ERROR] = "error",
    [AV_MSG_PUT] = "put",             [AV_MSG_CTL] = "ctl",
    [AV_MSG_CTL_REPLY] = "ctl_reply", [AV_MSG_ANSWERS] = "answers",
};
#define N_TYPES (sizeof(type_names) / sizeof(type_names[0]))

bool
av_str_eq(av_str_t a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && (n == 0 || memcmp(a.ptr, s, n) == 0);
}

void
av_str_copy(char *dst, size_t size, av_str_t s)
{
    if (size == 0)
        return;
    size_t n = s.len < size - 1 ? s.len : size - 1;
    if (n)
        memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

size_t
av_utf8_sanitize(char *dst, size_t size, const char *src, size_t len)
{
    size_t o = 0, i = 0;
    if (size == 0)
        return 0;
    while (i < len) {
        unsigned char c = (unsigned char)src[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        bool ok = n > 0 && i + n <= len && !(n == 2 && c < 0xc2) && !(n == 4 && c > 0xf4);
        for (size_t k = 1; ok && k < n; k++)
            ok = ((unsigned char)src[i + k] & 0xc0) == 0x80;
        if (ok && n == 3) {
            unsigned char c1 = (unsigned char)src[i + 1];
            ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0); /* overlong, surrogates */
        }
        if (ok && n == 4) {
            unsigned char c1 = (unsigned char)src[i + 1];
            ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
        }
        if (!ok)
            n = 1;
        if (o + n >= size)
            break;
        if (ok && !(n == 1 && c == 0))
            memcpy(dst + o, src + i, n);
        else
            dst[o] = '?';
        o += n;
        i += n;
    }
    dst[o] = '\0';
    return o;
}

static int
parse_name(const char *const *names, size_t count, av_str_t s)
{
    for (size_t i = 0; i < count; i++)
        if (names[i] && av_str_eq(s, names[i]))
            return (int)i;
    return -1;
}

const char *
av_status_name(av_status_t status)
{
    return (unsigned)status < AV_STATUS_COUNT ? status_names[status] : "unknown";
}

int
av_status_parse(av_str_t s)
{
    return parse_name(status_names, AV_STATUS_COUNT, s);
}

const char *
av_source_name(av_source_t source)
{
    return (unsigned)source < AV_SOURCE_COUNT ? source_names[source] : "none";
}

int
av_source_parse(av_str_t s)
{
    return parse_name(source_names, AV_SOURCE_COUNT, s);
}

const char *
av_level_name(av_level_t level)
{
    return (unsigned)level < AV_LEVEL_COUNT ? level_names[level] : "err";
}

int
av_level_parse(av_str_t s)
{
    return parse_name(level_names, AV_LEVEL_COUNT, s);
}

const char *
av_msg_type_name(av_msg_type_t type)
{
    return (unsigned)type < N_TYPES && type_names[type] ? type_names[type] : "?";
}

const char *
av_proto_strerror(int err)
{
    switch (err) {
    case AV_PROTO_OK: return "ok";
    case AV_PROTO_E_TOO_BIG: return "message too big";
    case AV_PROTO_E_NOT_MSGPACK: return "not msgpack";
    case AV_PROTO_E_NOT_MAP: return "not a msgpack map";
    case AV_PROTO_E_MISSING: return "missing key";
    case AV_PROTO_E_TYPE: return "wrong type";
    case AV_PROTO_E_TOO_LONG: return "too long";
    case AV_PROTO_E_UNKNOWN_TYPE: return "unknown message type";
    case AV_PROTO_E_VALUE: return "bad value";
    case AV_PROTO_E_NOMEM: return "out of memory";
    default: return "error";
    }
}

const char *
av_msg_strerror(const av_msg_t *self, int err, char *buf, size_t size)
{
    if (self && self->bad_key)
        snprintf(buf, size, "%s '%s'", av_proto_strerror(err), self->bad_key);
    else
        snprintf(buf, size, "%s", av_proto_strerror(err));
    return buf;
}

/* ---- bounding scan ------------------------------------------------------
 * msgpack-c allocates room for a container's declared element count before
 * it reads the elements, so five bytes claiming a billion-entry array would
 * cost gigabytes. This scan walks the encoding once, checks each declared
 * count against the bytes left (an element takes at least one byte), bounds
 * the nesting, and requires exactly one complete value. */

static uint64_t
read_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

static int
scan_bounded(const unsigned char *p, size_t size)
{
    uint64_t pending[AV_DEPTH_MAX + 1]; /* elements left per open container */
    int depth = 0;
    size_t off = 0;

    pending[0] = 1;
    while (1) {
        while (depth > 0 && pending[depth] == 0)
            depth--;
        if (depth == 0 && pending[0] == 0)
            break;
        if (off >= size)
            return AV_PROTO_E_NOT_MSGPACK;
        pending[depth]--;
        unsigned char b = p[off++];
        uint64_t skip = 0, children = 0;
        int hdr = 0; /* bytes of length field that follow */
        bool container = false, is_map = false;

        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            skip = 0;
        } else if (b >= 0x80 && b <= 0x8f) {
            container = is_map = true;
            children = b & 0x0f;
        } else if (b >= 0x90 && b <= 0x9f) {
            container = true;
            children = b & 0x0f;
        } else if (b >= 0xa0 && b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4: case 0xd9: hdr = 1; break;
            case 0xc5: case 0xda: hdr = 2; break;
            case 0xc6: case 0xdb: hdr = 4; break;
            case 0xc7: hdr = 1; skip = 1; break;
            case 0xc8: hdr = 2; skip = 1; break;
            case 0xc9: hdr = 4; skip = 1; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc: container = true; hdr = 2; break;
            case 0xdd: container = true; hdr = 4; break;
            case 0xde: container = is_map = true; hdr = 2; break;
            case 0xdf: container = is_map = true; hdr = 4; break;
            default: return AV_PROTO_E_NOT_MSGPACK; /* 0xc1 */
            }
        }
        if (hdr) {
            if (size - off < (size_t)hdr)
                return AV_PROTO_E_NOT_MSGPACK;
            uint64_t n = read_be(p + off, hdr);
            off += hdr;
            if (container)
                children = n;
            else
                skip += n;
        }
        if (container) {
            if (is_map)
                children *= 2;
            if (children > size - off)
                return AV_PROTO_E_NOT_MSGPACK;
            if (children) {
                if (depth == AV_DEPTH_MAX)
                    return AV_PROTO_E_NOT_MSGPACK;
                pending[++depth] = children;
            }
        } else {
            if (skip > size - off)
                return AV_PROTO_E_NOT_MSGPACK;
            off += skip;
        }
    }
    return off == size ? 0 : AV_PROTO_E_NOT_MSGPACK;
}

/* ---- field readers ---------------------------------------------------- */

typedef struct {
    av_msg_t *msg;
    int err;
    unsigned seen; /* SEEN_* bits of required keys met so far */
} decoder_t;

static bool
fail(decoder_t *d, int err, const char *key)
{
    if (d->err == 0) {
        d->err = err;
        d->msg->bad_key = key;
    }
    return false;
}

static bool
get_str(decoder_t *d, const msgpack_object *o, const char *key, uint32_t max, av_str_t *out)
{
    if (o->type != MSGPACK_OBJECT_STR)
        return fail(d, AV_PROTO_E_TYPE, key);
    if (o->via.str.size > max)
        return fail(d, AV_PROTO_E_TOO_LONG, key);
    out->ptr = o->via.str.ptr;
    out->len = o->via.str.size;
    return true;
}

static bool
get_u64(decoder_t *d, const msgpack_object *o, const char *key, uint64_t *out)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return fail(d, AV_PROTO_E_TYPE, key);
    *out = o->via.u64;
    return true;
}

static bool
get_u32(decoder_t *d, const msgpack_object *o, const char *key, uint32_t *out)
{
    uint64_t v;
    if (!get_u64(d, o, key, &v))
        return false;
    if (v > UINT32_MAX)
        return fail(d, AV_PROTO_E_VALUE, key);
    *out = (uint32_t)v;
    return true;
}

static bool
get_bool(decoder_t *d, const msgpack_object *o, const char *key, bool *out)
{
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return fail(d, AV_PROTO_E_TYPE, key);
    *out = o->via.boolean;
    return true;
}

static bool
key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, s, n) == 0;
}

/* Walks a map: for each pair calls fn, which returns false on error. */
typedef bool (*pair_fn)(decoder_t *d, const msgpack_object *k, const msgpack_object *v);

static bool
each_pair(decoder_t *d, const msgpack_object *map, pair_fn fn)
{
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            continue; /* not ours: ignore, as any unknown key */
        if (!fn(d, &kv->key, &kv->val))
            return false;
    }
    return true;
}

/* Keys shared by answer and put. Returns 1 when k was one of them, 0 when
 * not, -1 on error. `seen` records required keys. */
enum { SEEN_ID = 1, SEEN_NAME = 2, SEEN_STATUS = 4, SEEN_NAMES = 8, SEEN_REG = 16,
       SEEN_LEVEL = 32, SEEN_CODE = 64, SEEN_TEXT = 128, SEEN_DAEMON = 256,
       SEEN_CMD = 512, SEEN_OK = 1024, SEEN_TTL = 2048 };

static int
answer_pair(decoder_t *d, av_answer_t *a, const msgpack_object *k, const msgpack_object *v)
{
    bool ok = true;
    if (key_is(k, "id")) {
        ok = get_str(d, v, "id", AV_ID_MAX, &a->id);
        d->seen |= SEEN_ID;
    } else if (key_is(k, "name")) {
        ok = get_str(d, v, "name", AV_NAME_MAX, &a->name);
        d->seen |= SEEN_NAME;
    } else if (key_is(k, "query")) {
        ok = get_str(d, v, "query", AV_NAME_MAX, &a->query);
    } else if (key_is(k, "status")) {
        av_str_t s;
        ok = get_str(d, v, "status", 32, &s);
        if (ok) {
            int st = av_status_parse(s);
            if (st < 0)
                ok = fail(d, AV_PROTO_E_VALUE, "status");
            else
                a->status = (av_status_t)st;
        }
        d->seen |= SEEN_STATUS;
    } else if (key_is(k, "reason")) {
        ok = get_str(d, v, "reason", AV_REASON_MAX, &a->reason);
    } else if (key_is(k, "registry")) {
        ok = get_str(d, v, "registry", AV_REGISTRY_MAX, &a->registry);
    } else if (key_is(k, "source")) {
        av_str_t s;
        ok = get_str(d, v, "source", 32, &s);
        if (ok) {
            int src = av_source_parse(s);
            if (src < 0)
                ok = fail(d, AV_PROTO_E_VALUE, "source");
            else
                a->source = (av_source_t)src;
        }
    } else if (key_is(k, "at")) {
        ok = get_u64(d, v, "at", &a->at_ms);
    } else if (key_is(k, "latency_us")) {
        ok = get_u64(d, v, "latency_us", &a->latency_us);
    } else if (key_is(k, "raw")) {
        ok = get_str(d, v, "raw", AV_RAW_MAX, &a->raw);
    } else if (key_is(k, "matched")) {
        ok = get_str(d, v, "matched", AV_REASON_MAX, &a->matched);
    } else if (key_is(k, "batches")) {
        ok = get_bool(d, v, "batches", &a->batches);
    } else if (key_is(k, "rid")) {
        ok = get_u64(d, v, "rid", &a->rid);
    } else if (key_is(k, "idx")) {
        ok = get_u32(d, v, "idx", &a->idx);
        a->has_idx = ok;
    } else {
        return 0;
    }
    return ok ? 1 : -1;
}

/* The keys of one check; 1 handled, 0 not a check key, -1 error. */
static int
check_field(decoder_t *d, av_check_t *c, const msgpack_object *k, const msgpack_object *v)
{
    bool ok;
    if (key_is(k, "id")) {
        d->seen |= SEEN_ID;
        ok = get_str(d, v, "id", AV_ID_MAX, &c->id);
    } else if (key_is(k, "name")) {
        d->seen |= SEEN_NAME;
        ok = get_str(d, v, "name", AV_NAME_MAX, &c->name);
    } else if (key_is(k, "names")) {
        d->seen |= SEEN_NAMES;
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return fail(d, AV_PROTO_E_TYPE, "names") ? 1 : -1;
        if (v->via.array.size == 0)
            return fail(d, AV_PROTO_E_VALUE, "names") ? 1 : -1;
        if (v->via.array.size > AV_BATCH_MAX)
            return fail(d, AV_PROTO_E_TOO_LONG, "names") ? 1 : -1;
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            av_str_t s;
            if (!get_str(d, &v->via.array.ptr[i], "names", AV_NAME_MAX, &s))
                return -1;
        }
        c->names = v;
        c->n_names = v->via.array.size;
        ok = true;
    } else if (key_is(k, "fresh")) {
        ok = get_bool(d, v, "fresh", &c->fresh);
    } else if (key_is(k, "raw")) {
        ok = get_bool(d, v, "raw", &c->raw);
    } else if (key_is(k, "deadline_ms")) {
        ok = get_u32(d, v, "deadline_ms", &c->deadline_ms);
    } else if (key_is(k, "rid")) {
        ok = get_u64(d, v, "rid", &c->rid);
    } else if (key_is(k, "idx")) {
        ok = get_u32(d, v, "idx", &c->idx);
    } else if (key_is(k, "batches")) {
        ok = get_bool(d, v, "batches", &c->batches);
    } else if (key_is(k, "registry")) {
        ok = get_str(d, v, "registry", AV_REGISTRY_MAX, &c->registry);
    } else {
        return 0;
    }
    return ok ? 1 : -1;
}

/* `more`: an array of maps, each read by field (1/0/-1 as above) and
 * required to hold `want` (SEEN_* bits; `alt` may stand in for a bit). */
typedef int (*field_fn)(decoder_t *d, void *target, const msgpack_object *k, const msgpack_object *v);

static bool
read_more(decoder_t *d, const msgpack_object *v, void *scratch, size_t scratch_size, field_fn field, unsigned want,
          unsigned alt)
{
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return fail(d, AV_PROTO_E_TYPE, "more");
    if (v->via.array.size > AV_MORE_MAX)
        return fail(d, AV_PROTO_E_TOO_LONG, "more");
    unsigned seen = d->seen;
    for (uint32_t i = 0; i < v->via.array.size; i++) {
        const msgpack_object *m = &v->via.array.ptr[i];
        if (m->type != MSGPACK_OBJECT_MAP)
            return fail(d, AV_PROTO_E_TYPE, "more");
        d->seen = 0;
        memset(scratch, 0, scratch_size);
        for (uint32_t j = 0; j < m->via.map.size; j++)
            if (m->via.map.ptr[j].key.type == MSGPACK_OBJECT_STR &&
                field(d, scratch, &m->via.map.ptr[j].key, &m->via.map.ptr[j].val) < 0)
                return false;
        unsigned have = d->seen | ((d->seen & alt) ? want : 0);
        if ((have & want) != want)
            return fail(d, AV_PROTO_E_MISSING, "more");
    }
    d->seen = seen;
    return true;
}

static int
check_field_any(decoder_t *d, void *target, const msgpack_object *k, const msgpack_object *v)
{
    return check_field(d, target, k, v);
}

static bool
check_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    av_check_t *c = &d->msg->u.check;
    int r = check_field(d, c, k, v);
    if (r != 0)
        return r > 0;
    if (key_is(k, "more")) {
        av_check_t scratch;
        if (!read_more(d, v, &scratch, sizeof scratch, check_field_any, SEEN_ID | SEEN_NAME, SEEN_NAMES))
            return false;
        c->more = v;
        c->n_more = v->via.array.size;
    }
    return true;
}

static void
read_back(const msgpack_object *m, void *out, field_fn field)
{
    decoder_t d = { 0 };
    av_msg_t scratch;
    memset(&scratch, 0, sizeof scratch);
    d.msg = &scratch;
    for (uint32_t j = 0; j < m->via.map.size; j++)
        if (m->via.map.ptr[j].key.type == MSGPACK_OBJECT_STR)
            field(&d, out, &m->via.map.ptr[j].key, &m->via.map.ptr[j].val);
}

int
av_check_more_at(const av_check_t *check, uint32_t i, av_check_t *out)
{
    memset(out, 0, sizeof *out);
    if (!check->more || i >= check->n_more)
        return AV_PROTO_E_VALUE;
    read_back(&check->more->via.array.ptr[i], out, check_field_any);
    return 0;
}

static int
answer_field_any(decoder_t *d, void *target, const msgpack_object *k, const msgpack_object *v)
{
    return answer_pair(d, target, k, v);
}

static bool
answer_only_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    av_answer_t *a = &d->msg->u.answer;
    int r = answer_pair(d, a, k, v);
    if (r != 0)
        return r > 0;
    if (key_is(k, "more")) {
        av_answer_t scratch;
        if (!read_more(d, v, &scratch, sizeof scratch, answer_field_any, SEEN_NAME | SEEN_STATUS, 0))
            return false;
        a->more = v;
        a->n_more = v->via.array.size;
    }
    return true;
}

int
av_answer_more_at(const av_answer_t *answer, uint32_t i, av_answer_t *out)
{
    memset(out, 0, sizeof *out);
    out->status = AV_STATUS_UNKNOWN;
    if (!answer->more || i >= answer->n_more)
        return AV_PROTO_E_VALUE;
    read_back(&answer->more->via.array.ptr[i], out, answer_field_any);
    return 0;
}

static bool
put_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    av_put_t *p = &d->msg->u.put;
    int r = answer_pair(d, &p->answer, k, v);
    if (r != 0)
        return r > 0;
    if (key_is(k, "ttl_s")) {
        d->seen |= SEEN_TTL;
        return get_u32(d, v, "ttl_s", &p->ttl_s);
    }
    if (key_is(k, "timing"))
        return get_bool(d, v, "timing", &p->timing);
    return true;
}

static bool
ready_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    av_ready_t *r = &d->msg->u.ready;
    if (key_is(k, "registry")) {
        d->seen |= SEEN_REG;
        return get_str(d, v, "registry", AV_REGISTRY_MAX, &r->registry);
    }
    if (key_is(k, "credit"))
        return get_u32(d, v, "credit", &r->credit);
    if (key_is(k, "pid"))
        return get_u32(d, v, "pid", &r->pid);
    if (key_is(k, "registries")) {
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return fail(d, AV_PROTO_E_TYPE, "registries");
        if (v->via.array.size > AV_REGISTRIES_MAX)
            return fail(d, AV_PROTO_E_TOO_LONG, "registries");
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            const msgpack_object *e = &v->via.array.ptr[i];
            if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2 ||
                e->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
                e->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return fail(d, AV_PROTO_E_TYPE, "registries");
            if (e->via.array.ptr[0].via.str.size == 0 || e->via.array.ptr[0].via.str.size > AV_REGISTRY_MAX ||
                e->via.array.ptr[1].via.u64 > UINT32_MAX)
                return fail(d, AV_PROTO_E_VALUE, "registries");
        }
        r->registries = v;
        r->n_registries = v->via.array.size;
        return true;
    }
    if (key_is(k, "ids")) {
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return fail(d, AV_PROTO_E_TYPE, "ids");
        if (v->via.array.size > AV_HANDBACK_MAX)
            return fail(d, AV_PROTO_E_TOO_LONG, "ids");
        for (uint32_t i = 0; i < v->via.array.size; i++)
            if (v->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return fail(d, AV_PROTO_E_TYPE, "ids");
        r->ids = v;
        r->n_ids = v->via.array.size;
        return true;
    }
    return true;
}

static bool
error_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    av_error_t *e = &d->msg->u.error;
    if (key_is(k, "daemon")) {
        d->seen |= SEEN_DAEMON;
        return get_str(d, v, "daemon", AV_DAEMON_MAX, &e->daemon);
    }
    if (key_is(k, "registry"))
        return get_str(d, v, "registry", AV_REGISTRY_MAX, &e->registry);
    if (key_is(k, "level")) {
        av_str_t s;
        d->seen |= SEEN_LEVEL;
        if (!get_str(d, v, "level", 16, &s))
            return false;
        int lv = av_level_parse(s);
        if (lv < 0)
            return fail(d, AV_PROTO_E_VALUE, "level");
        e->level = (av_level_t)lv;
        return true;
    }
    if (key_is(k, "code")) {
        d->seen |= SEEN_CODE;
        return get_str(d, v, "code", AV_CODE_MAX, &e->code);
    }
    if (key_is(k, "text")) {
        d->seen |= SEEN_TEXT;
        return get_str(d, v, "text", AV_TEXT_MAX, &e->text);
    }
    if (key_is(k, "at"))
        return get_u64(d, v, "at", &e->at_ms);
    if (key_is(k, "pid"))
        return get_u32(d, v, "pid", &e->pid);
    if (key_is(k, "seq"))
        return get_u64(d, v, "seq", &e->seq);
    if (key_is(k, "received"))
        return get_u64(d, v, "received", &e->received_ms);
    return true;
}

static bool
ctl_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    if (key_is(k, "cmd")) {
        d->seen |= SEEN_CMD;
        return get_str(d, v, "cmd", 64, &d->msg->u.ctl.cmd);
    }
    return true;
}

static bool
ctl_reply_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    av_ctl_reply_t *r = &d->msg->u.ctl_reply;
    if (key_is(k, "ok")) {
        d->seen |= SEEN_OK;
        return get_bool(d, v, "ok", &r->ok);
    }
    if (key_is(k, "error"))
        return get_str(d, v, "error", AV_TEXT_MAX, &r->error);
    return true;
}

static bool
answers_pair(decoder_t *d, const msgpack_object *k, const msgpack_object *v)
{
    av_answers_t *a = &d->msg->u.answers;
    if (key_is(k, "id")) {
        d->seen |= SEEN_ID;
        return get_str(d, v, "id", AV_ID_MAX, &a->id);
    }
    if (key_is(k, "answers")) {
        d->seen |= SEEN_NAMES;
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return fail(d, AV_PROTO_E_TYPE, "answers");
        if (v->via.array.size > AV_BATCH_MAX)
            return fail(d, AV_PROTO_E_TOO_LONG, "answers");
        for (uint32_t i = 0; i < v->via.array.size; i++) {
            av_answer_t one;
            const msgpack_object *m = &v->via.array.ptr[i];
            if (m->type != MSGPACK_OBJECT_MAP)
                return fail(d, AV_PROTO_E_TYPE, "answers");
            unsigned seen = d->seen;
            d->seen = 0;
            memset(&one, 0, sizeof one);
            for (uint32_t j = 0; j < m->via.map.size; j++)
                if (answer_pair(d, &one, &m->via.map.ptr[j].key, &m->via.map.ptr[j].val) < 0)
                    return false;
            if (!(d->seen & SEEN_NAME) || !(d->seen & SEEN_STATUS))
                return fail(d, AV_PROTO_E_MISSING, "answers");
            d->seen = seen;
        }
        a->list = v;
        a->count = v->via.array.size;
        return true;
    }
    return true;
}

int
av_answers_at(const av_answers_t *answers, uint32_t i, av_answer_t *out)
{
    decoder_t d = { 0 };
    av_msg_t scratch;
    memset(out, 0, sizeof *out);
    out->status = AV_STATUS_UNKNOWN;
    if (!answers->list || i >= answers->count)
        return AV_PROTO_E_VALUE;
    memset(&scratch, 0, sizeof scratch);
    d.msg = &scratch;
    const msgpack_object *m = &answers->list->via.array.ptr[i];
    for (uint32_t j = 0; j < m->via.map.size; j++)
        if (answer_pair(&d, out, &m->via.map.ptr[j].key, &m->via.map.ptr[j].val) < 0)
            return d.err;
    return 0;
}

static bool
require(decoder_t *d, unsigned have, unsigned want, const char *key)
{
    if ((have & want) == want)
        return true;
    return fail(d, AV_PROTO_E_MISSING, key);
}

void
av_msg_init(av_msg_t *self)
{
    memset(self, 0, sizeof *self);
}

void
av_msg_release(av_msg_t *self)
{
    if (self->zone_ready)
        msgpack_zone_destroy(&self->zone);
    memset(self, 0, sizeof *self);
}

/* Forgets the previous message but keeps the zone's memory. */
static void
reset(av_msg_t *self)
{
    msgpack_zone zone = self->zone;
    bool ready = self->zone_ready;
    memset(self, 0, sizeof *self);
    self->zone = zone;
    self->zone_ready = ready;
    if (ready)
        msgpack_zone_clear(&self->zone);
}

int
av_msg_decode(av_msg_t *self, const void *data, size_t size)
{
    decoder_t d = { .msg = self, .err = 0 };
    reset(self);

    if (size > AV_MSG_MAX_BYTES)
        return AV_PROTO_E_TOO_BIG;
    if (size == 0 || !data)
        return AV_PROTO_E_NOT_MSGPACK;
    int rc = scan_bounded(data, size);
    if (rc)
        return rc;
    if (!self->zone_ready) {
        if (!msgpack_zone_init(&self->zone, 2048))
            return AV_PROTO_E_NOMEM;
        self->zone_ready = true;
    }
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(data, size, &off, &self->zone, &self->root);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return AV_PROTO_E_NOMEM;
    if (ur != MSGPACK_UNPACK_SUCCESS || off != size)
        return AV_PROTO_E_NOT_MSGPACK;
    const msgpack_object *root = &self->root;
    if (root->type != MSGPACK_OBJECT_MAP)
        return AV_PROTO_E_NOT_MAP;

    const msgpack_object *t = av_obj_get(root, "t");
    const msgpack_object *v = av_obj_get(root, "v");
    av_str_t tname;
    uint64_t version;
    if (!t) {
        fail(&d, AV_PROTO_E_MISSING, "t");
        return d.err;
    }
    if (!get_str(&d, t, "t", 32, &tname))
        return d.err;
    if (!v) {
        fail(&d, AV_PROTO_E_MISSING, "v");
        return d.err;
    }
    if (!get_u64(&d, v, "v", &version))
        return d.err;
    if (version < 1 || version > UINT32_MAX) {
        fail(&d, AV_PROTO_E_VALUE, "v");
        return d.err;
    }
    self->v = (uint32_t)version;
    int type = parse_name(type_names, N_TYPES, tname);
    if (type <= 0) {
        fail(&d, AV_PROTO_E_UNKNOWN_TYPE, "t");
        return d.err;
    }
    self->type = (av_msg_type_t)type;

        switch (self->type) {
    case AV_MSG_CHECK:
        if (!each_pair(&d, root, check_pair) || !require(&d, d.seen, SEEN_ID, "id"))
            break;
        if (!(d.seen & (SEEN_NAME | SEEN_NAMES)))
            fail(&d, AV_PROTO_E_MISSING, "name");
        break;
    case AV_MSG_ANSWER:
        self->u.answer.status = AV_STATUS_UNKNOWN;
        if (each_pair(&d, root, answer_only_pair))
            require(&d, d.seen, SEEN_ID, "id") && require(&d, d.seen, SEEN_NAME, "name") &&
                require(&d, d.seen, SEEN_STATUS, "status");
        break;
    case AV_MSG_PUT:
        self->u.put.answer.status = AV_STATUS_UNKNOWN;
        if (each_pair(&d, root, put_pair))
            require(&d, d.seen, SEEN_NAME, "name") &&
                require(&d, d.seen, SEEN_STATUS, "status") &&
                require(&d, d.seen, SEEN_TTL, "ttl_s");
        break;
    case AV_MSG_READY:
        if (each_pair(&d, root, ready_pair))
            require(&d, d.seen, SEEN_REG, "registry");
        break;
    case AV_MSG_HEARTBEAT:
    case AV_MSG_BYE:
        each_pair(&d, root, ready_pair);
        break;
    case AV_MSG_ERROR:
        if (each_pair(&d, root, error_pair))
            require(&d, d.seen, SEEN_DAEMON, "daemon") &&
                require(&d, d.seen, SEEN_LEVEL, "level") &&
                require(&d, d.seen, SEEN_CODE, "code") &&
                require(&d, d.seen, SEEN_TEXT, "text");
        break;
    case AV_MSG_CTL:
        self->u.ctl.body = root;
        if (each_pair(&d, root, ctl_pair))
            require(&d, d.seen, SEEN_CMD, "cmd");
        break;
    case AV_MSG_CTL_REPLY:
        self->u.ctl_reply.body = root;
        if (each_pair(&d, root, ctl_reply_pair))
            require(&d, d.seen, SEEN_OK, "ok");
        break;
    case AV_MSG_ANSWERS:
        if (each_pair(&d, root, answers_pair))
            require(&d, d.seen, SEEN_ID, "id") && require(&d, d.seen, SEEN_NAMES, "answers");
        break;
    }
    return d.err;
}

av_str_t
av_check_name_at(const av_check_t *check, uint32_t i)
{
    if (check->n_names == 0)
        return i == 0 ? check->name : (av_str_t){ "", 0 };
    if (i >= check->n_names)
        return (av_str_t){ "", 0 };
    if (check->name_views)
        return check->name_views[i];
    const msgpack_object *o = &check->names->via.array.ptr[i];
    return (av_str_t){ o->via.str.ptr, o->via.str.size };
}

uint32_t
av_check_count(const av_check_t *check)
{
    return check->n_names ? check->n_names : 1;
}

/* ---- encoding ----------------------------------------------------------- */

void
av_pack_strn(msgpack_packer *pk, av_str_t s)
{
    msgpack_pack_str(pk, s.len);
    if (s.len)
        msgpack_pack_str_body(pk, s.ptr, s.len);
}

void
av_pack_str(msgpack_packer *pk, const char *s)
{
    av_pack_strn(pk, av_str(s ? s : ""));
}

void
av_pack_kv_str(msgpack_packer *pk, const char *key, const char *val)
{
    av_pack_str(pk, key);
    av_pack_str(pk, val);
}

void
av_pack_kv_strn(msgpack_packer *pk, const char *key, av_str_t val)
{
    av_pack_str(pk, key);
    av_pack_strn(pk, val);
}

void
av_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t val)
{
    av_pack_str(pk, key);
    msgpack_pack_uint64(pk, val);
}

void
av_pack_kv_bool(msgpack_packer *pk, const char *key, bool val)
{
    av_pack_str(pk, key);
    if (val)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

static void
pack_header(msgpack_packer *pk, av_msg_type_t type, uint32_t pairs)
{
    msgpack_pack_map(pk, pairs + 2);
    av_pack_kv_str(pk, "t", av_msg_type_name(type));
    av_pack_kv_uint(pk, "v", AV_PROTO_VERSION);
}

/* msgpack-c's sbuffer write callback returns -1 on allocation failure but
 * the packer functions drop it; we detect it by the buffer not growing. */
static int
finish(msgpack_sbuffer *sbuf, size_t before)
{
    return sbuf->size > before ? 0 : AV_PROTO_E_NOMEM;
}

static uint32_t
check_pair_count(const av_check_t *c)
{
    return 2 + (c->fresh ? 1 : 0) + (c->raw ? 1 : 0) + (c->deadline_ms ? 1 : 0) + (c->rid ? 2 : 0) +
           (c->batches ? 1 : 0) + (c->registry.len ? 1 : 0);
}

static void
pack_check_pairs(msgpack_packer *pk, const av_check_t *c)
{
    av_pack_kv_strn(pk, "id", c->id);
    if (c->n_names) {
        av_pack_str(pk, "names");
        msgpack_pack_array(pk, c->n_names);
        for (uint32_t i = 0; i < c->n_names; i++)
            av_pack_strn(pk, av_check_name_at(c, i));
    } else {
        av_pack_kv_strn(pk, "name", c->name);
    }
    if (c->fresh)
        av_pack_kv_bool(pk, "fresh", true);
    if (c->raw)
        av_pack_kv_bool(pk, "raw", true);
    if (c->deadline_ms)
        av_pack_kv_uint(pk, "deadline_ms", c->deadline_ms);
    if (c->rid) {
        av_pack_kv_uint(pk, "rid", c->rid);
        av_pack_kv_uint(pk, "idx", c->idx);
    }
    if (c->batches)
        av_pack_kv_bool(pk, "batches", true);
    if (c->registry.len)
        av_pack_kv_strn(pk, "registry", c->registry);
}

int
av_encode_check(msgpack_sbuffer *sbuf, const av_check_t *c)
{
    return av_encode_checks(sbuf, c, 1);
}

int
av_encode_checks(msgpack_sbuffer *sbuf, const av_check_t *checks, uint32_t n)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    pack_header(&pk, AV_MSG_CHECK, check_pair_count(&checks[0]) + (n > 1 ? 1 : 0));
    pack_check_pairs(&pk, &checks[0]);
    if (n > 1) {
        av_pack_str(&pk, "more");
        msgpack_pack_array(&pk, n - 1);
        for (uint32_t i = 1; i < n; i++) {
            msgpack_pack_map(&pk, check_pair_count(&checks[i]));
            pack_check_pairs(&pk, &checks[i]);
        }
    }
    return finish(sbuf, before);
}

uint32_t
av_answer_pair_count(const av_answer_t *a)
{
    return 5 + (a->query.len ? 1 : 0) + (a->reason.len ? 1 : 0) + (a->registry.len ? 1 : 0) +
           (a->latency_us ? 1 : 0) + (a->raw.len ? 1 : 0) + (a->matched.len ? 1 : 0) + (a->rid ? 1 : 0) +
           (a->rid || a->has_idx ? 1 : 0) + (a->batches ? 1 : 0);
}

void
av_pack_answer_pairs(msgpack_packer *pk, const av_answer_t *a)
{
    av_pack_kv_strn(pk, "id", a->id);
    av_pack_kv_strn(pk, "name", a->name);
    av_pack_kv_str(pk, "status", av_status_name(a->status));
    av_pack_kv_str(pk, "source", av_source_name(a->source));
    av_pack_kv_uint(pk, "at", a->at_ms);
    if (a->query.len)
        av_pack_kv_strn(pk, "query", a->query);
    if (a->reason.len)
        av_pack_kv_strn(pk, "reason", a->reason);
    if (a->registry.len)
        av_pack_kv_strn(pk, "registry", a->registry);
    if (a->latency_us)
        av_pack_kv_uint(pk, "latency_us", a->latency_us);
    if (a->raw.len)
        av_pack_kv_strn(pk, "raw", a->raw);
    if (a->matched.len)
        av_pack_kv_strn(pk, "matched", a->matched);
    if (a->rid)
        av_pack_kv_uint(pk, "rid", a->rid);
    if (a->rid || a->has_idx)
        av_pack_kv_uint(pk, "idx", a->idx);
    if (a->batches)
        av_pack_kv_bool(pk, "batches", true);
}

int
av_encode_answer(msgpack_sbuffer *sbuf, const av_answer_t *a)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    pack_header(&pk, AV_MSG_ANSWER, av_answer_pair_count(a));
    av_pack_answer_pairs(&pk, a);
    return finish(sbuf, before);
}

void
av_pack_answers_begin(msgpack_packer *pk, av_str_t id, uint32_t count)
{
    pack_header(pk, AV_MSG_ANSWERS, 2);
    av_pack_kv_strn(pk, "id", id);
    av_pack_str(pk, "answers");
    msgpack_pack_array(pk, count);
}

void
av_pack_answer_map(msgpack_packer *pk, const av_answer_t *a)
{
    msgpack_pack_map(pk, av_answer_pair_count(a));
    av_pack_answer_pairs(pk, a);
}

int
av_encode_put(msgpack_sbuffer *sbuf, const av_put_t *p)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    pack_header(&pk, AV_MSG_PUT, av_answer_pair_count(&p->answer) + 2);
    av_pack_answer_pairs(&pk, &p->answer);
    av_pack_kv_uint(&pk, "ttl_s", p->ttl_s);
    av_pack_kv_bool(&pk, "timing", p->timing);
    return finish(sbuf, before);
}

void
av_ready_credit_at(const av_ready_t *r, uint32_t i, av_credit_t *out)
{
    if (r->credits) {
        *out = r->credits[i];
        return;
    }
    const msgpack_object *e = &r->registries->via.array.ptr[i];
    out->registry = (av_str_t){ e->via.array.ptr[0].via.str.ptr, e->via.array.ptr[0].via.str.size };
    out->credit = (uint32_t)e->via.array.ptr[1].via.u64;
}

static void
pack_credits(msgpack_packer *pk, const av_ready_t *r)
{
    av_pack_str(pk, "registries");
    msgpack_pack_array(pk, r->n_registries);
    for (uint32_t i = 0; i < r->n_registries; i++) {
        msgpack_pack_array(pk, 2);
        av_pack_strn(pk, r->credits[i].registry);
        msgpack_pack_uint32(pk, r->credits[i].credit);
    }
}

int
av_encode_ready(msgpack_sbuffer *sbuf, av_msg_type_t type, const av_ready_t *r)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    bool group = r->credits && r->n_registries;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    pack_header(&pk, type, 3 + (group ? 1 : 0));
    av_pack_kv_strn(&pk, "registry", r->registry);
    av_pack_kv_uint(&pk, "credit", r->credit);
    av_pack_kv_uint(&pk, "pid", r->pid);
    if (group)
        pack_credits(&pk, r);
    return finish(sbuf, before);
}

int
av_encode_bye(msgpack_sbuffer *sbuf, const av_ready_t *bye, const uint64_t *ids, uint32_t n)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    bool some = bye->credits && bye->n_registries;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    pack_header(&pk, AV_MSG_BYE, 2 + (some ? 1 : 0));
    av_pack_kv_strn(&pk, "registry", bye->registry);
    if (some)
        pack_credits(&pk, bye);
    av_pack_str(&pk, "ids");
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++)
        msgpack_pack_uint64(&pk, ids[i]);
    return finish(sbuf, before);
}

uint64_t
av_bye_id_at(const av_ready_t *bye, uint32_t i)
{
    return bye->ids && i < bye->n_ids ? bye->ids->via.array.ptr[i].via.u64 : 0;
}

/* The event's own pairs; seq and received, where it is stored, go before
 * them in a listing and after them in a published message. */
#define ERROR_PAIRS 7

static void
pack_error_pairs(msgpack_packer *pk, const av_error_t *e)
{
    av_pack_kv_strn(pk, "daemon", e->daemon);
    av_pack_kv_strn(pk, "registry", e->registry);
    av_pack_kv_str(pk, "level", av_level_name(e->level));
    av_pack_kv_strn(pk, "code", e->code);
    av_pack_kv_strn(pk, "text", e->text);
    av_pack_kv_uint(pk, "at", e->at_ms);
    av_pack_kv_uint(pk, "pid", e->pid);
}

static uint32_t
error_stored_pairs(const av_error_t *e)
{
    return e->seq ? 2 : 0;
}

static void
pack_error_stored(msgpack_packer *pk, const av_error_t *e)
{
    if (!e->seq)
        return;
    av_pack_kv_uint(pk, "seq", e->seq);
    av_pack_kv_uint(pk, "received", e->received_ms);
}

int
av_encode_error(msgpack_sbuffer *sbuf, const av_error_t *e)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    pack_header(&pk, AV_MSG_ERROR, ERROR_PAIRS + error_stored_pairs(e));
    pack_error_pairs(&pk, e);
    pack_error_stored(&pk, e);
    return finish(sbuf, before);
}

void
av_pack_error_map(msgpack_packer *pk, const av_error_t *e)
{
    msgpack_pack_map(pk, ERROR_PAIRS + error_stored_pairs(e));
    pack_error_stored(pk, e);
    pack_error_pairs(pk, e);
}

void
av_pack_ctl_begin(msgpack_packer *pk, const char *cmd, uint32_t extra_pairs)
{
    pack_header(pk, AV_MSG_CTL, 1 + extra_pairs);
    av_pack_kv_str(pk, "cmd", cmd);
}

void
av_pack_ctl_reply_begin(msgpack_packer *pk, bool ok, const char *error, uint32_t extra_pairs)
{
    pack_header(pk, AV_MSG_CTL_REPLY, 1 + (ok ? 0 : 1) + extra_pairs);
    av_pack_kv_bool(pk, "ok", ok);
    if (!ok)
        av_pack_kv_str(pk, "error", error ? error : "error");
}

int
av_encode_ctl(msgpack_sbuffer *sbuf, const char *cmd)
{
    size_t before = sbuf->size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
    av_pack_ctl_begin(&pk, cmd, 0);
    return finish(sbuf, before);
}

/* ---- reading open-ended maps ------------------------------------------- */

const msgpack_object *
av_obj_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, key))
            return &map->via.map.ptr[i].val;
    return NULL;
}

bool
av_obj_get_str(const msgpack_object *map, const char *key, av_str_t *out)
{
    const msgpack_object *o = av_obj_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return false;
    out->ptr = o->via.str.ptr;
    out->len = o->via.str.size;
    return true;
}

bool
av_obj_get_uint(const msgpack_object *map, const char *key, uint64_t *out)
{
    const msgpack_object *o = av_obj_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

bool
av_obj_get_bool(const msgpack_object *map, const char *key, bool *out)
{
    const msgpack_object *o = av_obj_get(map, key);
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *out = o->via.boolean;
    return true;
}
