/* Unit tests of av_names: what av_name_normalize makes of a name as a user
 * typed it (case, blanks, root dot, U-labels to A-labels under UTS #46
 * non-transitional), one test per AV_INVALID_* reason with inputs that
 * produce it, and av_names_route over a config with nested suffixes. */
#include "av_names.h"
#include "av_proto.h" /* AV_REASON_UNSUPPORTED */

#include "unit_files.h"

#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* ---- helpers ------------------------------------------------------------ */

/* input (len bytes) must normalise to want. */
static void
assert_normalizes_n(const char *input, size_t len, const char *want)
{
    char out[AV_DOMAIN_MAX + 1];
    const char *reason = NULL;
    if (av_name_normalize(input, len, out, &reason) != 0)
        fail_msg("\"%.*s\": refused (%s), want \"%s\"", (int)len, input, reason ? reason : "no reason",
                 want);
    if (strcmp(out, want) != 0)
        fail_msg("\"%.*s\": want \"%s\", got \"%s\"", (int)len, input, want, out);
}

static void
assert_normalizes(const char *input, const char *want)
{
    assert_normalizes_n(input, strlen(input), want);
}

/* input (len bytes) must be refused for `want_reason`. */
static void
assert_refused_n(const char *input, size_t len, const char *want_reason)
{
    char out[AV_DOMAIN_MAX + 1];
    const char *reason = NULL;
    if (av_name_normalize(input, len, out, &reason) == 0)
        fail_msg("\"%.*s\": accepted as \"%s\", want %s", (int)len, input, out, want_reason);
    if (!reason || strcmp(reason, want_reason) != 0)
        fail_msg("\"%.*s\": want %s, got %s", (int)len, input, want_reason, reason ? reason : "no reason");
}

static void
assert_refused(const char *input, const char *want_reason)
{
    assert_refused_n(input, strlen(input), want_reason);
}

/* `count` copies of `c` into buf (which must hold count + 1); returns buf. */
static char *
repeat(char *buf, char c, size_t count)
{
    memset(buf, c, count);
    buf[count] = '\0';
    return buf;
}

/* A name of exactly `len` bytes: 63-byte labels of 'a', then a shorter last
 * label of 'b' (never a single label for len >= 3). */
static char *
name_of_length(char *buf, size_t len)
{
    size_t at = 0;
    while (len - at > AV_LABEL_MAX + 1) {
        memset(buf + at, 'a', AV_LABEL_MAX);
        at += AV_LABEL_MAX;
        buf[at++] = '.';
    }
    memset(buf + at, 'b', len - at);
    buf[len] = '\0';
    return buf;
}

/* ---- normalising -------------------------------------------------------- */

static void
test_ascii_name_is_lower_cased(void **state)
{
    (void)state;
    assert_normalizes("example.com", "example.com");
    assert_normalizes("Example.COM", "example.com");
    assert_normalizes("WWW-1.Example-Shop.ORG", "www-1.example-shop.org");
    assert_normalizes("0123456789.DE", "0123456789.de"); /* digits unchanged */
}

static void
test_trailing_root_dot_is_removed(void **state)
{
    (void)state;
    assert_normalizes("example.com.", "example.com");
    assert_normalizes("EXAMPLE.COM.", "example.com");
    assert_normalizes("xn--bcher-kva.de.", "xn--bcher-kva.de");
    assert_normalizes("b\xc3\xbc" "cher.de.", "xn--bcher-kva.de");
}

static void
test_two_trailing_dots_are_an_empty_label_not_a_root_dot(void **state)
{
    (void)state;
    /* Only the root's one dot may end a name: a second is an empty label,
     * as ".." inside a name is. Nor may the output keep a final dot. */
    assert_refused("example.com..", AV_INVALID_EMPTY_LABEL);
    assert_refused("b\xc3\xbc" "cher.de..", AV_INVALID_EMPTY_LABEL);
}

static void
test_surrounding_blanks_are_trimmed(void **state)
{
    (void)state;
    assert_normalizes(" example.com", "example.com");
    assert_normalizes("example.com ", "example.com");
    assert_normalizes("\t Example.com \t", "example.com");
    assert_normalizes("example.com\r\n", "example.com"); /* a line from the gateway */
    assert_normalizes("  example.com. \r\n", "example.com"); /* blanks, then the root dot */
    assert_normalizes("  b\xc3\xbc" "cher.de.  ", "xn--bcher-kva.de");
    /* A blank inside is no slip: the name is wrong. */
    assert_refused("exa mple.com", AV_INVALID_CHARACTER);
    assert_refused("example .com", AV_INVALID_CHARACTER);
}

static void
test_only_len_bytes_of_the_input_are_read(void **state)
{
    (void)state;
    /* Input is a view into a message, not a C string. */
    assert_normalizes_n("example.comXYZ", 11, "example.com");
    assert_normalizes_n("b\xc3\xbc" "cher.de!!", 10, "xn--bcher-kva.de");
}

static void
test_u_labels_become_a_labels(void **state)
{
    (void)state;
    assert_normalizes("b\xc3\xbc" "cher.de", "xn--bcher-kva.de");
    assert_normalizes("B\xc3\x9c" "CHER.DE.", "xn--bcher-kva.de"); /* BÜCHER.DE. */
    assert_normalizes("B\xc3\xbc" "CHER.DE", "xn--bcher-kva.de");
    /* пример.рф: every label converted, the TLD too. */
    assert_normalizes("\xd0\xbf\xd1\x80\xd0\xb8\xd0\xbc\xd0\xb5\xd1\x80.\xd1\x80\xd1\x84",
                      "xn--e1afmkfd.xn--p1ai");
    /* A U-label beside ASCII labels. */
    assert_normalizes("WWW.b\xc3\xbc" "cher.de", "www.xn--bcher-kva.de");
}

static void
test_idna2008_non_transitional_keeps_sharp_s_and_final_sigma(void **state)
{
    (void)state;
    /* Transitional processing (IDNA2003) would map ß to "ss" and ς to σ,
     * and send the check to another name's owner. */
    assert_normalizes("fa\xc3\x9f.de", "xn--fa-hia.de");
    assert_normalizes("\xcf\x82.de", "xn--3xa.de");
    assert_normalizes("fass.de", "fass.de");
}

static void
test_uts46_mapping_folds_width_and_drops_ignored_code_points(void **state)
{
    (void)state;
    /* Full-width EXAMPLE, as typed on a CJK keyboard. */
    assert_normalizes("\xef\xbc\xa5\xef\xbc\xb8\xef\xbc\xa1\xef\xbc\xad\xef\xbc\xb0\xef\xbc\xac\xef\xbc\xa5.com",
                      "example.com");
    /* A soft hyphen (U+00AD) is ignored, not a character of the name. */
    assert_normalizes("exam\xc2\xadple.com", "example.com");
}

static void
test_valid_a_label_input_stays_as_it_is(void **state)
{
    (void)state;
    assert_normalizes("xn--bcher-kva.de", "xn--bcher-kva.de");
    assert_normalizes("XN--BCHER-KVA.DE", "xn--bcher-kva.de");
    assert_normalizes("xn--fa-hia.de", "xn--fa-hia.de"); /* not turned into fass.de */
    assert_normalizes("example.xn--p1ai", "example.xn--p1ai");
}

/* ---- one test per reason ------------------------------------------------ */

static void
test_empty_input_is_empty_name(void **state)
{
    (void)state;
    assert_refused("", AV_INVALID_EMPTY);
    assert_refused("   ", AV_INVALID_EMPTY);
    assert_refused("\t\r\n", AV_INVALID_EMPTY);
    assert_refused(".", AV_INVALID_EMPTY);     /* only the root */
    assert_refused(" . ", AV_INVALID_EMPTY);
}

static void
test_label_of_64_bytes_is_label_too_long_and_63_is_accepted(void **state)
{
    (void)state;
    char label[AV_LABEL_MAX + 2], name[AV_LABEL_MAX + 8], want[AV_LABEL_MAX + 8];
    snprintf(name, sizeof name, "%s.de", repeat(label, 'a', AV_LABEL_MAX));
    assert_normalizes(name, name);
    snprintf(name, sizeof name, "%s.DE", repeat(label, 'A', AV_LABEL_MAX));
    snprintf(want, sizeof want, "%s.de", repeat(label, 'a', AV_LABEL_MAX));
    assert_normalizes(name, want);
    snprintf(name, sizeof name, "%s.de", repeat(label, 'a', AV_LABEL_MAX + 1));
    assert_refused(name, AV_INVALID_LABEL_LONG);
    snprintf(name, sizeof name, "www.%s.de", repeat(label, 'a', AV_LABEL_MAX + 1)); /* not the first */
    assert_refused(name, AV_INVALID_LABEL_LONG);
}

static void
test_u_label_whose_a_label_passes_63_bytes_is_label_too_long(void **state)
{
    (void)state;
    /* "ü" + 55 'a' is the 63-byte A-label "xn--" + 55 'a' + "-oxf"; one
     * more 'a' makes it 64: too long a label, whichever way it was typed. */
    char name[128], a[64];
    snprintf(name, sizeof name, "\xc3\xbc%s.de", repeat(a, 'a', 55));
    char out[AV_DOMAIN_MAX + 1];
    const char *reason = NULL;
    assert_int_equal(av_name_normalize(name, strlen(name), out, &reason), 0);
    assert_int_equal(strchr(out, '.') - out, AV_LABEL_MAX);
    snprintf(name, sizeof name, "\xc3\xbc%s.de", repeat(a, 'a', 56));
    assert_refused(name, AV_INVALID_LABEL_LONG);
}

static void
test_name_of_254_bytes_is_name_too_long_and_253_is_accepted(void **state)
{
    (void)state;
    char name[AV_DOMAIN_MAX + 16], with_dot[AV_DOMAIN_MAX + 16];
    name_of_length(name, AV_DOMAIN_MAX);
    assert_int_equal(strlen(name), 253);
    assert_normalizes(name, name);
    /* The root's dot is not counted: 253 bytes plus "." is still fine. */
    snprintf(with_dot, sizeof with_dot, "%s.", name);
    assert_normalizes(with_dot, name);
    assert_refused(name_of_length(name, AV_DOMAIN_MAX + 1), AV_INVALID_TOO_LONG);
    assert_refused(name_of_length(name, AV_DOMAIN_MAX + 10), AV_INVALID_TOO_LONG);
}

static void
test_name_too_long_after_idna_conversion_is_name_too_long(void **state)
{
    (void)state;
    /* Ten labels "ü" + 19 'a' and "de": 222 bytes typed, but each label
     * grows by "xn--", a '-' and its punycode digits (at least 6 bytes)
     * once converted, past 253. */
    char name[512] = "", a[32];
    repeat(a, 'a', 19);
    for (int i = 0; i < 10; i++) {
        strcat(name, "\xc3\xbc");
        strcat(name, a);
        strcat(name, ".");
    }
    strcat(name, "de");
    assert_int_equal(strlen(name), 222);
    assert_refused(name, AV_INVALID_TOO_LONG);
}

static void
test_input_far_longer_than_any_name_is_refused_without_overflow(void **state)
{
    (void)state;
    /* Longer than the function's own work buffer: refused before copying. */
    size_t n = 5000;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'a', n);
    memcpy(big + n - 3, ".de", 3);
    assert_refused_n(big, n, AV_INVALID_TOO_LONG);
    big[10] = '\xc3'; /* and with non-ASCII bytes, which take the IDNA path */
    big[11] = '\xbc';
    assert_refused_n(big, n, AV_INVALID_TOO_LONG);
    free(big);
}

static void
test_empty_label_is_refused(void **state)
{
    (void)state;
    assert_refused("a..de", AV_INVALID_EMPTY_LABEL);
    assert_refused(".example.com", AV_INVALID_EMPTY_LABEL);
    assert_refused("www..example.com", AV_INVALID_EMPTY_LABEL);
    assert_refused("xn--bcher-kva..de", AV_INVALID_EMPTY_LABEL);
}

static void
test_leading_or_trailing_hyphen_is_bad_hyphen(void **state)
{
    (void)state;
    assert_refused("-example.com", AV_INVALID_HYPHEN);
    assert_refused("example-.com", AV_INVALID_HYPHEN);
    assert_refused("example.-com", AV_INVALID_HYPHEN);
    assert_refused("example.com-", AV_INVALID_HYPHEN);
    assert_refused("-.de", AV_INVALID_HYPHEN);
    /* The contrast: hyphens inside a label are fine. */
    assert_normalizes("ex-am-ple.com", "ex-am-ple.com");
    assert_normalizes("a--b.de", "a--b.de"); /* hyphens at 2-3, not 3-4 */
}

static void
test_hyphens_at_third_and_fourth_place_are_bad_hyphen_unless_xn(void **state)
{
    (void)state;
    /* RFC 5891 4.2.3.1: "??--" is reserved for ACE prefixes. */
    assert_refused("ab--cd.de", AV_INVALID_HYPHEN);
    assert_refused("AB--CD.de", AV_INVALID_HYPHEN);
    assert_refused("www.zz--top.de", AV_INVALID_HYPHEN);
    assert_refused("ab--.de", AV_INVALID_HYPHEN);
    /* xn-- is the one ACE prefix, and only as valid punycode. */
    assert_normalizes("xn--bcher-kva.de", "xn--bcher-kva.de");
}

static void
test_xn_label_that_is_not_valid_punycode_is_idna_error(void **state)
{
    (void)state;
    assert_refused("xn--zz.de", AV_INVALID_IDNA);
    assert_refused("XN--ZZ.DE", AV_INVALID_IDNA);
    assert_refused("xn--.de", AV_INVALID_IDNA);
    assert_refused("www.xn--zz.de", AV_INVALID_IDNA);
    /* Valid punycode that decodes to what IDNA2008 disallows (U+2603 ☃). */
    assert_refused("xn--n3h.com", AV_INVALID_IDNA);
}

static void
test_u_label_idna2008_disallows_is_idna_error(void **state)
{
    (void)state;
    assert_refused("\xe2\x98\x83.com", AV_INVALID_IDNA); /* ☃ (a symbol) */
    assert_refused("a\xff.de", AV_INVALID_IDNA);         /* not UTF-8 at all */
    assert_refused("b\xc3\xbc--cher.de", AV_INVALID_IDNA); /* hyphens 3-4 in a U-label */
}

static void
test_characters_outside_letters_digits_hyphen_are_bad_character(void **state)
{
    (void)state;
    const char *bad[] = {
        "a_b.de", "a b.de", "a/b.de", "a@b.de", "*.example.com", "exa\"mple.com", "a:b.de", "a\x7f.de",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_refused(bad[i], AV_INVALID_CHARACTER);
    /* Also when the rest of the name is a U-label (the IDNA path). */
    assert_refused("b\xc3\xbc_cher.de", AV_INVALID_CHARACTER);
    assert_refused("b\xc3\xbc" "cher/x.de", AV_INVALID_CHARACTER);
}

static void
test_nul_byte_inside_is_bad_character(void **state)
{
    (void)state;
    /* A NUL would cut the name short wherever it is next handled as a C
     * string: "example.com" must not be what gets checked. */
    assert_refused_n("example.com\0.evil", 17, AV_INVALID_CHARACTER);
    assert_refused_n("exa\0mple.com", 12, AV_INVALID_CHARACTER);
    assert_refused_n("b\xc3\xbc" "cher.de\0", 11, AV_INVALID_CHARACTER);
}

static void
test_single_label_is_single_label(void **state)
{
    (void)state;
    assert_refused("de", AV_INVALID_SINGLE_LABEL);
    assert_refused("DE.", AV_INVALID_SINGLE_LABEL);
    assert_refused("localhost", AV_INVALID_SINGLE_LABEL);
    assert_refused("b\xc3\xbc" "cher", AV_INVALID_SINGLE_LABEL);
}

/* ---- routing ------------------------------------------------------------ */

typedef struct {
    char *dir;
    char path[PATH_MAX];
    char err[AV_CONFIG_ERR_MAX];
    av_config_t *cfg;
    av_names_t *names;
} route_fixture_t;

#define REGISTRY(name, tlds)           \
    "  " name ":\n"                     \
    "    tlds: " tlds "\n"              \
    "    protocol: whois\n"             \
    "    host: whois." name ".example\n"

static int
route_setup(void **state)
{
    route_fixture_t *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = unit_tmpdir_new("names"))) {
        free(f);
        return -1;
    }
    unit_path(f->path, sizeof f->path, f->dir, "availd.yaml");
    *state = f;
    if (unit_write_file(f->path,
                        "registries:\n"
                        REGISTRY("uk", "uk")
                        REGISTRY("couk", "[co.uk, org.uk]")
                        REGISTRY("com", "[com]")
                        REGISTRY("rf", "xn--p1ai")
                        REGISTRY("io", "io")
                        REGISTRY("euorg", "eu.org")) != 0 ||
        av_config_load(f->path, &f->cfg, f->err, sizeof f->err) != 0) {
        print_error("config refused: %s\n", f->err);
        return -1;
    }
    return (f->names = av_names_new(f->cfg)) ? 0 : -1;
}

static int
route_teardown(void **state)
{
    route_fixture_t *f = *state;
    av_names_destroy(&f->names);
    av_config_free(&f->cfg);
    unit_tmpdir_remove(&f->dir);
    free(f);
    return 0;
}

/* input must route to `registry` as the normalised `want_name`. */
static void
assert_routes(const route_fixture_t *f, const char *input, const char *registry, const char *want_name)
{
    char out[AV_DOMAIN_MAX + 1];
    const av_registry_cfg_t *r = NULL;
    const char *reason = NULL;
    av_route_t rc = av_names_route(f->names, input, strlen(input), out, &r, &reason);
    if (rc != AV_ROUTE_OK)
        fail_msg("\"%s\": route %d (%s), want registry %s", input, rc, reason ? reason : "-", registry);
    assert_non_null(r);
    if (strcmp(r->name, registry) != 0)
        fail_msg("\"%s\": want registry %s, got %s", input, registry, r->name);
    assert_null(reason);
    assert_string_equal(out, want_name);
}

/* input must not route: `want_rc` with `want_reason` and no registry. */
static void
assert_not_routed(const route_fixture_t *f, const char *input, av_route_t want_rc, const char *want_reason)
{
    char out[AV_DOMAIN_MAX + 1];
    const av_registry_cfg_t *r = (const av_registry_cfg_t *)1;
    const char *reason = NULL;
    av_route_t rc = av_names_route(f->names, input, strlen(input), out, &r, &reason);
    if (rc != want_rc || !reason || strcmp(reason, want_reason) != 0)
        fail_msg("\"%s\": want route %d (%s), got %d (%s)", input, want_rc, want_reason, rc,
                 reason ? reason : "-");
    assert_null(r);
}

static void
test_route_picks_the_longest_configured_suffix(void **state)
{
    route_fixture_t *f = *state;
    assert_routes(f, "example.co.uk", "couk", "example.co.uk");
    assert_routes(f, "example.org.uk", "couk", "example.org.uk");
    assert_routes(f, "example.uk", "uk", "example.uk");
    assert_routes(f, "example.com", "com", "example.com");
}

static void
test_route_normalises_before_it_looks_up(void **state)
{
    route_fixture_t *f = *state;
    assert_routes(f, " B\xc3\x9c" "CHER.Co.UK. ", "couk", "xn--bcher-kva.co.uk");
    /* пример.рф: the TLD is configured as its A-label. */
    assert_routes(f, "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xbc\xd0\xb5\xd1\x80.\xd1\x80\xd1\x84", "rf",
                  "xn--e1afmkfd.xn--p1ai");
}

static void
test_route_of_a_public_suffix_itself_is_invalid(void **state)
{
    route_fixture_t *f = *state;
    /* co.uk is where names are registered, not a name one can register. */
    assert_not_routed(f, "co.uk", AV_ROUTE_INVALID, AV_INVALID_PUBLIC_SUFFIX);
    assert_not_routed(f, "CO.UK.", AV_ROUTE_INVALID, AV_INVALID_PUBLIC_SUFFIX);
    /* ac.uk too, though no registry serves it here */
    assert_not_routed(f, "ac.uk", AV_ROUTE_INVALID, AV_INVALID_PUBLIC_SUFFIX);
}

/* Registrable names under a public suffix are never subdomains: they go to
 * the registry that lists that suffix, or are unsupported. */
static void
test_route_of_a_name_under_a_suffix_without_a_registry_is_unsupported(void **state)
{
    route_fixture_t *f = *state;
    /* ac.uk is the list's (ICANN section), uk is served, ac.uk is not: not
     * uk's registry (JISC runs ac.uk), not a subdomain */
    assert_not_routed(f, "example.ac.uk", AV_ROUTE_UNSUPPORTED, AV_REASON_UNSUPPORTED);
    /* za.org is in the list's private section; org is not served here */
    assert_not_routed(f, "example.za.org", AV_ROUTE_UNSUPPORTED, AV_REASON_UNSUPPORTED);
    /* github.io (private section) is no registry: a name under it is not
     * .io's to answer, and github.io itself is a name of .io */
    assert_not_routed(f, "example.github.io", AV_ROUTE_UNSUPPORTED, AV_REASON_UNSUPPORTED);
    assert_routes(f, "github.io", "io", "github.io");
    assert_routes(f, "GitHub.IO", "io", "github.io");
    /* below a registrable name under a private suffix: a subdomain */
    assert_not_routed(f, "www.example.github.io", AV_ROUTE_INVALID, AV_INVALID_SUBDOMAIN);
}

static void
test_route_of_a_suffix_with_a_registry_of_its_own(void **state)
{
    route_fixture_t *f = *state;
    /* a suffix the config gives a registry of its own, whatever section */
    assert_routes(f, "example.eu.org", "euorg", "example.eu.org");
    assert_not_routed(f, "www.example.eu.org", AV_ROUTE_INVALID, AV_INVALID_SUBDOMAIN);
    /* wildcard rules of the list: *.ck makes every example.ck a suffix */
    assert_not_routed(f, "example.ck", AV_ROUTE_INVALID, AV_INVALID_PUBLIC_SUFFIX);
}

static void
test_route_of_a_name_below_the_registrable_level_is_subdomain(void **state)
{
    route_fixture_t *f = *state;
    assert_not_routed(f, "a.b.co.uk", AV_ROUTE_INVALID, AV_INVALID_SUBDOMAIN);
    assert_not_routed(f, "www.example.co.uk", AV_ROUTE_INVALID, AV_INVALID_SUBDOMAIN);
    assert_not_routed(f, "www.example.com", AV_ROUTE_INVALID, AV_INVALID_SUBDOMAIN);
    assert_not_routed(f, "www.example.uk", AV_ROUTE_INVALID, AV_INVALID_SUBDOMAIN);
}

static void
test_route_of_an_unserved_tld_is_unsupported(void **state)
{
    route_fixture_t *f = *state;
    assert_not_routed(f, "example.org", AV_ROUTE_UNSUPPORTED, "unsupported_tld");
    assert_not_routed(f, "example.org", AV_ROUTE_UNSUPPORTED, AV_REASON_UNSUPPORTED);
    /* Deeper names under it are below a registrable name all the same. */
    assert_not_routed(f, "www.example.org", AV_ROUTE_INVALID, AV_INVALID_SUBDOMAIN);
    /* A suffix is matched label by label, not as a string tail. */
    assert_not_routed(f, "example.xcom", AV_ROUTE_UNSUPPORTED, "unsupported_tld");
    assert_not_routed(f, "example.ouk", AV_ROUTE_UNSUPPORTED, "unsupported_tld");
}

static void
test_route_of_an_invalid_name_is_invalid_with_its_reason(void **state)
{
    route_fixture_t *f = *state;
    assert_not_routed(f, "", AV_ROUTE_INVALID, AV_INVALID_EMPTY);
    assert_not_routed(f, "a..co.uk", AV_ROUTE_INVALID, AV_INVALID_EMPTY_LABEL);
    assert_not_routed(f, "uk", AV_ROUTE_INVALID, AV_INVALID_SINGLE_LABEL);
    assert_not_routed(f, "a_b.com", AV_ROUTE_INVALID, AV_INVALID_CHARACTER);
    assert_not_routed(f, "-ab.com", AV_ROUTE_INVALID, AV_INVALID_HYPHEN);
    assert_not_routed(f, "xn--zz.com", AV_ROUTE_INVALID, AV_INVALID_IDNA);
}

static void
test_names_destroy_clears_the_pointer_and_tolerates_null(void **state)
{
    route_fixture_t *f = *state;
    av_names_destroy(&f->names);
    assert_null(f->names);
    av_names_destroy(&f->names); /* a second destroy is harmless */
    av_names_destroy(NULL);
}

int
main(void)
{
#define R(fn) cmocka_unit_test_setup_teardown(fn, route_setup, route_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_name_is_lower_cased),
        cmocka_unit_test(test_trailing_root_dot_is_removed),
        cmocka_unit_test(test_two_trailing_dots_are_an_empty_label_not_a_root_dot),
        cmocka_unit_test(test_surrounding_blanks_are_trimmed),
        cmocka_unit_test(test_only_len_bytes_of_the_input_are_read),
        cmocka_unit_test(test_u_labels_become_a_labels),
        cmocka_unit_test(test_idna2008_non_transitional_keeps_sharp_s_and_final_sigma),
        cmocka_unit_test(test_uts46_mapping_folds_width_and_drops_ignored_code_points),
        cmocka_unit_test(test_valid_a_label_input_stays_as_it_is),
        cmocka_unit_test(test_empty_input_is_empty_name),
        cmocka_unit_test(test_label_of_64_bytes_is_label_too_long_and_63_is_accepted),
        cmocka_unit_test(test_u_label_whose_a_label_passes_63_bytes_is_label_too_long),
        cmocka_unit_test(test_name_of_254_bytes_is_name_too_long_and_253_is_accepted),
        cmocka_unit_test(test_name_too_long_after_idna_conversion_is_name_too_long),
        cmocka_unit_test(test_input_far_longer_than_any_name_is_refused_without_overflow),
        cmocka_unit_test(test_empty_label_is_refused),
        cmocka_unit_test(test_leading_or_trailing_hyphen_is_bad_hyphen),
        cmocka_unit_test(test_hyphens_at_third_and_fourth_place_are_bad_hyphen_unless_xn),
        cmocka_unit_test(test_xn_label_that_is_not_valid_punycode_is_idna_error),
        cmocka_unit_test(test_u_label_idna2008_disallows_is_idna_error),
        cmocka_unit_test(test_characters_outside_letters_digits_hyphen_are_bad_character),
        cmocka_unit_test(test_nul_byte_inside_is_bad_character),
        cmocka_unit_test(test_single_label_is_single_label),
        R(test_route_picks_the_longest_configured_suffix),
        R(test_route_normalises_before_it_looks_up),
        R(test_route_of_a_public_suffix_itself_is_invalid),
        R(test_route_of_a_name_under_a_suffix_without_a_registry_is_unsupported),
        R(test_route_of_a_suffix_with_a_registry_of_its_own),
        R(test_route_of_a_name_below_the_registrable_level_is_subdomain),
        R(test_route_of_an_unserved_tld_is_unsupported),
        R(test_route_of_an_invalid_name_is_invalid_with_its_reason),
        R(test_names_destroy_clears_the_pointer_and_tolerates_null),
    };
#undef R
    return cmocka_run_group_tests(tests, NULL, NULL);
}
