/* Unit tests of av_utf8_sanitize, which turns a registry's reply into UTF-8
 * a frontend's msgpack library will accept: each class of bad byte by
 * example, then every 1-3 byte input and every code point against a
 * reference decoder, and truncation at character boundaries. */
#include "av_proto.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- helpers ------------------------------------------------------------ */

/* Sanitising in (len bytes) into a roomy buffer must give want. */
static void
assert_sanitizes_n(const char *in, size_t len, const char *want)
{
    char out[256];
    size_t n = av_utf8_sanitize(out, sizeof out, in, len);
    if (n != strlen(want) || memcmp(out, want, n + 1) != 0)
        fail_msg("want \"%s\" (%zu), got \"%s\" (%zu)", want, strlen(want), out, n);
}

#define assert_sanitizes(literal, want) assert_sanitizes_n(literal, sizeof(literal) - 1, want)

/* The reference: length of the well-formed UTF-8 sequence at s (len bytes
 * left), 0 when none starts there. Decodes, then applies RFC 3629's rules
 * on the value (shortest form, no surrogates, at most U+10FFFF), a route
 * independent of the lead-byte tables of the code under test. NUL is kept
 * out as the code's contract says. */
static size_t
ref_sequence(const unsigned char *s, size_t len)
{
    size_t n;
    uint32_t cp, min;
    if (s[0] < 0x80)
        return s[0] ? 1 : 0;
    if ((s[0] & 0xe0) == 0xc0)
        n = 2, cp = s[0] & 0x1f, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0)
        n = 3, cp = s[0] & 0x0f, min = 0x800;
    else if ((s[0] & 0xf8) == 0xf0)
        n = 4, cp = s[0] & 0x07, min = 0x10000;
    else
        return 0;
    if (n > len)
        return 0;
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* The reference output of src into dst (room for 4 * len + 1); the end of
 * every output character is marked in ends[] (room for len + 1). Returns
 * the output length. */
static size_t
ref_sanitize(char *dst, const char *src, size_t len, size_t *ends, size_t *n_ends)
{
    size_t o = 0, i = 0, e = 0;
    while (i < len) {
        size_t n = ref_sequence((const unsigned char *)src + i, len - i);
        if (n) {
            memcpy(dst + o, src + i, n);
            o += n;
            i += n;
        } else {
            dst[o++] = '?';
            i++;
        }
        if (ends)
            ends[e++] = o;
    }
    dst[o] = '\0';
    if (n_ends)
        *n_ends = e;
    return o;
}

/* The code under test must agree with the reference on in (len bytes). */
static void
assert_agrees_with_reference(const unsigned char *in, size_t len)
{
    char want[64], got[64];
    size_t want_n = ref_sanitize(want, (const char *)in, len, NULL, NULL);
    size_t got_n = av_utf8_sanitize(got, sizeof got, (const char *)in, len);
    if (got_n != want_n || memcmp(got, want, want_n + 1) != 0) {
        char hex[64] = "";
        for (size_t i = 0; i < len; i++)
            snprintf(hex + 3 * i, sizeof hex - 3 * i, "%02x ", in[i]);
        fail_msg("input %s: want \"%s\" (%zu), got \"%s\" (%zu)", hex, want, want_n, got, got_n);
    }
}

/* UTF-8 of cp into out; returns its length. */
static size_t
encode(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80)
        return out[0] = (unsigned char)cp, 1;
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- what is kept ------------------------------------------------------- */

static void
test_ascii_is_copied_unchanged(void **state)
{
    (void)state;
    assert_sanitizes("Domain Name: EXAMPLE.COM", "Domain Name: EXAMPLE.COM");
    /* Line ends and tabs are text, not bad bytes. */
    assert_sanitizes("a\tb\r\nc\x7f", "a\tb\r\nc\x7f");
    assert_sanitizes("", "");
}

static void
test_two_three_and_four_byte_sequences_are_kept(void **state)
{
    (void)state;
    assert_sanitizes("caf\xc3\xa9", "caf\xc3\xa9");                  /* é */
    assert_sanitizes("\xc2\x80 \xdf\xbf", "\xc2\x80 \xdf\xbf");      /* U+0080, U+07FF */
    assert_sanitizes("\xe2\x82\xac", "\xe2\x82\xac");                /* € */
    assert_sanitizes("\xe0\xa0\x80 \xef\xbf\xbf", "\xe0\xa0\x80 \xef\xbf\xbf"); /* U+0800, U+FFFF */
    /* Either side of the surrogates. */
    assert_sanitizes("\xed\x9f\xbf \xee\x80\x80", "\xed\x9f\xbf \xee\x80\x80");
    assert_sanitizes("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");        /* 😀 */
    assert_sanitizes("\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf", "\xf0\x90\x80\x80 \xf4\x8f\xbf\xbf"); /* U+10000, U+10FFFF */
}

static void
test_every_unicode_scalar_value_is_kept(void **state)
{
    (void)state;
    for (uint32_t cp = 1; cp <= 0x10ffff; cp++) {
        if (cp >= 0xd800 && cp <= 0xdfff)
            continue;
        unsigned char in[4];
        char out[8];
        size_t n = encode(cp, in);
        if (av_utf8_sanitize(out, sizeof out, (const char *)in, n) != n || memcmp(out, in, n) != 0 ||
            out[n] != '\0')
            fail_msg("U+%04X not kept", (unsigned)cp);
    }
}

/* ---- what becomes '?' --------------------------------------------------- */

static void
test_latin1_bytes_become_question_marks(void **state)
{
    (void)state;
    /* The usual whois case: "café" and "Müller" in ISO-8859-1. */
    assert_sanitizes("caf\xe9", "caf?");
    assert_sanitizes("M\xfcller GmbH", "M?ller GmbH");
    assert_sanitizes("\xe9t\xe9", "?t?");
    /* A Latin-1 letter before ASCII does not swallow the ASCII. */
    assert_sanitizes("\xc3" "A", "?A");
    assert_sanitizes("\xe9" "ab", "?ab");
}

static void
test_overlong_forms_become_question_marks(void **state)
{
    (void)state;
    assert_sanitizes("\xc0\x80", "??");         /* NUL in two bytes */
    assert_sanitizes("\xc1\xbf", "??");         /* U+007F in two bytes */
    assert_sanitizes("\xe0\x80\x80", "???");    /* NUL in three */
    assert_sanitizes("\xe0\x80\xaf", "???");    /* '/' in three: the path-traversal classic */
    assert_sanitizes("\xe0\x9f\xbf", "???");    /* U+07FF in three */
    assert_sanitizes("\xf0\x80\x80\x80", "????");
    assert_sanitizes("\xf0\x8f\xbf\xbf", "????"); /* U+FFFF in four */
}

static void
test_surrogates_become_question_marks(void **state)
{
    (void)state;
    assert_sanitizes("\xed\xa0\x80", "???");    /* U+D800 */
    assert_sanitizes("\xed\xbf\xbf", "???");    /* U+DFFF */
    /* A CESU-8 pair (U+1F600 as two surrogates) is two invalid halves. */
    assert_sanitizes("\xed\xa0\xbd\xed\xb8\x80", "??????");
}

static void
test_code_points_above_u10ffff_become_question_marks(void **state)
{
    (void)state;
    assert_sanitizes("\xf4\x90\x80\x80", "????"); /* U+110000 */
    assert_sanitizes("\xf5\x80\x80\x80", "????");
    assert_sanitizes("\xf7\xbf\xbf\xbf", "????");
    assert_sanitizes("\xf8\x88\x80\x80\x80", "?????"); /* the old 5-byte form */
    assert_sanitizes("\xfc\x84\x80\x80\x80\x80", "??????");
    assert_sanitizes("\xfe\xff", "??");
}

static void
test_truncated_sequence_at_the_end_becomes_question_marks(void **state)
{
    (void)state;
    assert_sanitizes("ok\xc3", "ok?");
    assert_sanitizes("ok\xe2\x82", "ok??");
    assert_sanitizes("ok\xf0\x9f\x98", "ok???");
    /* Cut in the middle: what follows the cut is read afresh. */
    assert_sanitizes("\xe2\x82x\xe2\x82\xac", "??x\xe2\x82\xac");
    assert_sanitizes("\xf0\x9f\xc3\xa9", "??\xc3\xa9");
}

static void
test_lone_continuation_bytes_become_question_marks(void **state)
{
    (void)state;
    assert_sanitizes("\x80", "?");
    assert_sanitizes("a\x80\xbf" "b", "a??b");
    assert_sanitizes("\xc3\xa9\xa9", "\xc3\xa9?"); /* one too many */
}

static void
test_nul_becomes_question_mark(void **state)
{
    (void)state;
    char out[16];
    /* The output is a C string: a NUL inside would hide what follows. */
    size_t n = av_utf8_sanitize(out, sizeof out, "a\0b\0", 4);
    assert_int_equal(n, 4);
    assert_string_equal(out, "a?b?");
    assert_int_equal(strlen(out), n);
}

static void
test_every_input_of_one_to_three_bytes_agrees_with_the_reference(void **state)
{
    (void)state;
    unsigned char in[3];
    for (unsigned a = 0; a < 256; a++) {
        in[0] = (unsigned char)a;
        assert_agrees_with_reference(in, 1);
        for (unsigned b = 0; b < 256; b++) {
            in[1] = (unsigned char)b;
            assert_agrees_with_reference(in, 2);
            for (unsigned c = 0; c < 256; c++) {
                in[2] = (unsigned char)c;
                assert_agrees_with_reference(in, 3);
            }
        }
    }
}

static void
test_four_byte_inputs_agree_with_the_reference(void **state)
{
    (void)state;
    /* Every first two bytes; the last two from the edges of each class. */
    static const unsigned char edges[] = { 0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xf4, 0xff };
    unsigned char in[4];
    for (unsigned a = 0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (size_t c = 0; c < sizeof edges; c++)
                for (size_t d = 0; d < sizeof edges; d++) {
                    in[0] = (unsigned char)a;
                    in[1] = (unsigned char)b;
                    in[2] = edges[c];
                    in[3] = edges[d];
                    assert_agrees_with_reference(in, 4);
                }
}

/* ---- bounds ------------------------------------------------------------- */

/* One of each kind of character and of bad byte: 1 to 4 bytes out each. */
static const char mixed[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xe9" "b\xed\xa0\x80\xf0\x9f\x98";

static void
test_output_is_nul_terminated_and_never_past_size(void **state)
{
    (void)state;
    size_t len = sizeof mixed - 1;
    for (size_t size = 1; size <= len + 2; size++) {
        char out[64];
        memset(out, 'X', sizeof out);
        size_t n = av_utf8_sanitize(out, size, mixed, len);
        if (n >= size || out[n] != '\0' || strlen(out) != n)
            fail_msg("size %zu: returned %zu, strlen %zu", size, n, strlen(out));
        for (size_t i = size; i < sizeof out; i++)
            if (out[i] != 'X')
                fail_msg("size %zu: byte %zu written", size, i);
    }
}

static void
test_small_buffer_truncates_at_a_character_boundary(void **state)
{
    (void)state;
    size_t len = sizeof mixed - 1, ends[64], n_ends;
    char want[128];
    ref_sanitize(want, mixed, len, ends, &n_ends);
    for (size_t size = 1; size <= len + 2; size++) {
        /* The longest run of whole characters that fits with the NUL. */
        size_t fit = 0;
        for (size_t e = 0; e < n_ends && ends[e] < size; e++)
            fit = ends[e];
        char out[64];
        size_t n = av_utf8_sanitize(out, size, mixed, len);
        if (n != fit || memcmp(out, want, n) != 0)
            fail_msg("size %zu: want the first %zu bytes of the full output, got %zu", size, fit, n);
    }
    /* Concretely: "aé" has no room for € in 6 bytes (5 + NUL). */
    char out[8];
    assert_int_equal(av_utf8_sanitize(out, 6, "a\xc3\xa9\xe2\x82\xac", 6), 3);
    assert_string_equal(out, "a\xc3\xa9");
    assert_int_equal(av_utf8_sanitize(out, 1, "abc", 3), 0);
    assert_string_equal(out, "");
}

static void
test_size_zero_writes_nothing(void **state)
{
    (void)state;
    char out[4] = "xyz";
    assert_int_equal(av_utf8_sanitize(out, 0, "abc", 3), 0);
    assert_string_equal(out, "xyz");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_is_copied_unchanged),
        cmocka_unit_test(test_two_three_and_four_byte_sequences_are_kept),
        cmocka_unit_test(test_every_unicode_scalar_value_is_kept),
        cmocka_unit_test(test_latin1_bytes_become_question_marks),
        cmocka_unit_test(test_overlong_forms_become_question_marks),
        cmocka_unit_test(test_surrogates_become_question_marks),
        cmocka_unit_test(test_code_points_above_u10ffff_become_question_marks),
        cmocka_unit_test(test_truncated_sequence_at_the_end_becomes_question_marks),
        cmocka_unit_test(test_lone_continuation_bytes_become_question_marks),
        cmocka_unit_test(test_nul_becomes_question_mark),
        cmocka_unit_test(test_every_input_of_one_to_three_bytes_agrees_with_the_reference),
        cmocka_unit_test(test_four_byte_inputs_agree_with_the_reference),
        cmocka_unit_test(test_output_is_nul_terminated_and_never_past_size),
        cmocka_unit_test(test_small_buffer_truncates_at_a_character_boundary),
        cmocka_unit_test(test_size_zero_writes_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
