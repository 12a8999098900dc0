/*
 * The `grey` filter plugin, written in C: keeps only grey or only colour images.
 *
 * Parameter `keep` (text, default "any"): "grey" keeps 1-channel images, "colour" keeps colour
 * ones (any other channel count, 3 in practice), "any" keeps everything. Values are matched
 * ignoring ASCII case and surrounding whitespace; "gray" and "color" are accepted too.
 * Code 1: a colour image where only grey is kept; code 2: a grey image where only colour is kept.
 *
 * It implements the `filter` world of plugins/wit/filter.wit through the C bindings that
 * `wit-bindgen c` generates (filter.h / filter.c, written by scripts/build-c-plugins.sh into
 * plugins/filters-c/target/; never committed). Ownership follows those bindings: the arguments
 * belong to the callee, which frees them; everything returned must come from malloc, because the
 * generated post-return functions free it once the host has copied it out.
 *
 * Only malloc/realloc/free, memcpy/memset and abort come from the C library (wasi-libc's, none of
 * which calls WASI); the module must import nothing, so no stdio here.
 */
#include "filter.h"

#include <stdlib.h>
#include <string.h>

#define NAME "grey"
#define VERSION "1.0.0"
#define DESCRIPTION \
    "Keeps only grey (1-channel) or only colour images, by the source image's channel count."

#define PARAM_KEEP "keep"
#define KEEP_DEFAULT "any"
#define KEEP_VALUES "grey, colour or any"
#define KEEP_DESCRIPTION \
    "Which images to keep: grey (1 channel), colour (3 channels) or any (gray and color work too)."

/* Drop codes (0 keeps the row). */
#define CODE_COLOUR 1 /* colour image where only grey is kept */
#define CODE_GREY 2   /* grey image where only colour is kept */

enum keep { KEEP_ANY, KEEP_GREY, KEEP_COLOUR };

/* The configuration: the default until `configure` succeeds; a failed one leaves it as it was. */
static enum keep keep = KEEP_ANY;

/* ---- small helpers ----------------------------------------------------------------------------*/

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort(); /* a trap: the host reports the plugin as out of memory */
    return p;
}

/* A malloc'd copy of a NUL-terminated literal, as a component-model string. */
static filter_string_t str(const char *s) {
    filter_string_t out;
    filter_string_dup(&out, s);
    return out;
}

/* A growing malloc'd text, for error messages (no snprintf: stdio stays out of the module). */
typedef struct {
    char *ptr;
    size_t len, cap;
} text_t;

static void text_add_n(text_t *t, const char *s, size_t n) {
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->len + n) cap *= 2;
        char *p = realloc(t->ptr, cap);
        if (!p) abort();
        t->ptr = p;
        t->cap = cap;
    }
    memcpy(t->ptr + t->len, s, n);
    t->len += n;
}

static void text_add(text_t *t, const char *s) { text_add_n(t, s, strlen(s)); }

static filter_string_t text_done(text_t *t) {
    filter_string_t out = {(uint8_t *)t->ptr, t->len};
    return out;
}

static int is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static uint8_t lower(uint8_t c) { return c >= 'A' && c <= 'Z' ? (uint8_t)(c - 'A' + 'a') : c; }

/* Whether the `n` bytes at `s` equal the literal `lit` (ASCII case-insensitively if `fold`). */
static int equals(const uint8_t *s, size_t n, const char *lit, int fold) {
    size_t m = strlen(lit);
    if (n != m) return 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t a = fold ? lower(s[i]) : s[i];
        if (a != (uint8_t)lit[i]) return 0;
    }
    return 1;
}

/* Parses a `keep` value; returns 0 on success. */
static int parse_keep(const uint8_t *s, size_t n, enum keep *out) {
    while (n > 0 && is_space(s[0])) s++, n--;
    while (n > 0 && is_space(s[n - 1])) n--;
    if (equals(s, n, "any", 1)) *out = KEEP_ANY;
    else if (equals(s, n, "grey", 1) || equals(s, n, "gray", 1)) *out = KEEP_GREY;
    else if (equals(s, n, "colour", 1) || equals(s, n, "color", 1)) *out = KEEP_COLOUR;
    else return -1;
    return 0;
}

/* ---- the exports ------------------------------------------------------------------------------*/

void exports_filter_describe(filter_info_t *ret) {
    ret->name = str(NAME);
    ret->version = str(VERSION);
    ret->description = str(DESCRIPTION);

    ret->params.len = 1;
    ret->params.ptr = xmalloc(sizeof *ret->params.ptr);
    ret->params.ptr[0].name = str(PARAM_KEEP);
    ret->params.ptr[0].kind = DINOFLOW_FILTER_TYPES_PARAM_KIND_TEXT;
    ret->params.ptr[0].default_value = str(KEEP_DEFAULT);
    ret->params.ptr[0].description = str(KEEP_DESCRIPTION);

    ret->reasons.len = 2;
    ret->reasons.ptr = xmalloc(2 * sizeof *ret->reasons.ptr);
    ret->reasons.ptr[0].code = CODE_COLOUR;
    ret->reasons.ptr[0].text = str("colour image where only grey is kept");
    ret->reasons.ptr[1].code = CODE_GREY;
    ret->reasons.ptr[1].text = str("grey image where only colour is kept");

    /* Only the channel counts: every other column arrives empty. */
    ret->reads = DINOFLOW_FILTER_TYPES_COLUMNS_CHANNELS;
}

bool exports_filter_configure(filter_list_param_t *params, filter_string_t *err) {
    enum keep parsed = KEEP_ANY; /* missing parameters take their defaults */
    int seen_keep = 0;
    text_t msg = {0};
    for (size_t i = 0; i < params->len && msg.len == 0; i++) {
        const filter_string_t *name = &params->ptr[i].name;
        const filter_string_t *value = &params->ptr[i].value;
        if (!equals(name->ptr, name->len, PARAM_KEEP, 0)) {
            text_add(&msg, "unknown parameter '");
            text_add_n(&msg, (const char *)name->ptr, name->len);
            text_add(&msg, "' for filter '" NAME "' (its parameters: " PARAM_KEEP ")");
        } else if (seen_keep) {
            text_add(&msg, "parameter '" PARAM_KEEP "' of filter '" NAME "' is given twice");
        } else if (parse_keep(value->ptr, value->len, &parsed) != 0) {
            text_add(&msg, "parameter '" PARAM_KEEP "' expects " KEEP_VALUES ", got \"");
            text_add_n(&msg, (const char *)value->ptr, value->len);
            text_add(&msg, "\"");
        }
        seen_keep = 1; /* the only known name: any other ended the loop with an error */
    }
    filter_list_param_free(params);
    if (msg.len > 0) {
        *err = text_done(&msg); /* freed by the generated post-return */
        return false;
    }
    keep = parsed;
    return true;
}

void exports_filter_filter(filter_batch_t *batch, filter_list_u8_t *ret) {
    size_t n = batch->rows;
    const uint8_t *channels = batch->channels.ptr;
    /* A column we read has one entry per row; a short one is the host's bug: trap, as Rust
     * panics. */
    if (batch->channels.len != n) abort();
    uint8_t *out = n ? xmalloc(n) : NULL; /* post-return frees it when n > 0 */
    switch (keep) {
    case KEEP_ANY:
        if (n) memset(out, 0, n);
        break;
    case KEEP_GREY:
        for (size_t i = 0; i < n; i++) out[i] = channels[i] != 1 ? CODE_COLOUR : 0;
        break;
    case KEEP_COLOUR:
        for (size_t i = 0; i < n; i++) out[i] = channels[i] == 1 ? CODE_GREY : 0;
        break;
    }
    filter_batch_free(batch);
    ret->ptr = out;
    ret->len = n;
}
