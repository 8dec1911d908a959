/*
 * The matching kernel: merge joins of sorted digest lists, confirmed on all 32 bytes,
 * marking the rows that matched, in one pass and without the GIL.
 *
 * Every list holds the digests of one identifier type of one dataset, sorted by all 32
 * bytes (big-endian order, the order of `sort_digests`), with their 64-bit prefixes as a
 * contiguous array: the merge reads the prefixes, and touches a digest's other 24 bytes
 * only when its prefix equals another list's. Equal digests in several lists are a match
 * between those lists: each row of each is marked with the bits of the others.
 *
 * Python calls (see `cleanroom/matching/_kernel.pyi`; `memory.py` is the one caller):
 *   mark(sides)  -> None: sides is a sequence of
 *       (keys, words, rows, row_width, start, stop, bit, masks, mask_width, unique)
 *   pairs(x_keys, x_words, x_start, x_stop, y_keys, y_words, y_start, y_stop, out_i, out_j)
 *       -> number of pairs (written while they fit; call again with more room if larger)
 *   scatter(hits, width, rows, row_width, start, stop, masks) -> None:
 *       masks[rows[p]] |= hits[p] for p in [start, stop)
 *   histogram(masks, mask_width, codes, code_width, start, stop, values, out) -> None:
 *       out[code * values + mask] += 1 for each row in [start, stop) (codes None: code 0)
 *
 * Every length and row number is checked against its buffer before it is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_SIDES 64
#define WORDS 4

typedef struct {
    const uint64_t *keys;
    const uint64_t *words;
    const void *rows; /* NULL: the digest at position p is in row p */
    int row_width;    /* 0, 4 (int32) or 8 (int64) */
    Py_ssize_t start, stop;
    uint64_t bit;
    void *masks;
    Py_ssize_t mask_rows;
    int mask_width; /* 1, 2, 4 or 8 bytes per row */
    int unique;     /* no two digests of the list share a prefix */
} Side;

/* -1, 0 or 1 as digest a sorts before, with or after digest b, by bytes 8 to 31. */
static inline int compare_rest(const uint64_t *a, const uint64_t *b) {
    for (int w = 1; w < WORDS; w++) {
        if (a[w] != b[w]) {
            uint64_t x = __builtin_bswap64(a[w]), y = __builtin_bswap64(b[w]);
            return x < y ? -1 : 1;
        }
    }
    return 0;
}

static inline int same_rest(const uint64_t *a, const uint64_t *b) {
    return ((a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3])) == 0;
}

/* Marks the row holding position p of a side with `bits`; -1 for a row out of bounds. */
static inline int mark_row(const Side *s, Py_ssize_t p, uint64_t bits) {
    Py_ssize_t r;
    if (s->row_width == 0)
        r = p;
    else if (s->row_width == 4)
        r = ((const int32_t *)s->rows)[p];
    else
        r = (Py_ssize_t)((const int64_t *)s->rows)[p];
    if ((size_t)r >= (size_t)s->mask_rows)
        return -1;
    switch (s->mask_width) {
    case 1: ((uint8_t *)s->masks)[r] |= (uint8_t)bits; break;
    case 2: ((uint16_t *)s->masks)[r] |= (uint16_t)bits; break;
    case 4: ((uint32_t *)s->masks)[r] |= (uint32_t)bits; break;
    default: ((uint64_t *)s->masks)[r] |= bits; break;
    }
    return 0;
}

/*
 * Rows in sorted order are random rows (but for the type the rows are sorted by): the
 * mask of the row `PREFETCH` positions ahead is asked for now, so that its cache miss
 * overlaps the merge instead of stalling it.
 */
#define PREFETCH 24

static inline void prefetch_ahead(const Side *s, Py_ssize_t p) {
    if (s->row_width == 0 || p + PREFETCH >= s->stop)
        return;
    Py_ssize_t r = s->row_width == 4 ? ((const int32_t *)s->rows)[p + PREFETCH]
                                     : (Py_ssize_t)((const int64_t *)s->rows)[p + PREFETCH];
    if ((size_t)r < (size_t)s->mask_rows)
        __builtin_prefetch((const char *)s->masks + r * s->mask_width, 1, 1);
}

/*
 * Marks, from position *p of a side on, every entry holding `digest` (one, unless the
 * list repeats digests), and moves *p past them. -1 for a row out of bounds.
 */
static inline int mark_run(const Side *s, Py_ssize_t *p, uint64_t key, const uint64_t *digest,
                           uint64_t bits) {
    do {
        if (mark_row(s, *p, bits) < 0)
            return -1;
        ++*p;
    } while (*p < s->stop && s->keys[*p] == key && same_rest(s->words + WORDS * *p, digest));
    return 0;
}

/* Two lists: the plain merge join. */
static int mark_two(const Side *x, const Side *y) {
    const uint64_t *xk = x->keys, *yk = y->keys;
    Py_ssize_t i = x->start, j = y->start;
    const Py_ssize_t xe = x->stop, ye = y->stop;
    while (i < xe && j < ye) {
        uint64_t a = xk[i], b = yk[j];
        if (a != b) {
            i += a < b;
            j += b < a;
            continue;
        }
        const uint64_t *u = x->words + WORDS * i, *v = y->words + WORDS * j;
        int order = same_rest(u, v) ? 0 : compare_rest(u, v);
        if (order < 0) {
            i++;
        } else if (order > 0) {
            j++;
        } else if (mark_run(x, &i, a, u, y->bit) < 0 || mark_run(y, &j, a, v, x->bit) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Any number of lists: a k-way merge, each digest's lists found in one step. */
static inline __attribute__((always_inline)) int merge_many(const Side *sides, const int k) {
    Py_ssize_t at[MAX_SIDES];
    uint64_t key[MAX_SIDES];
    uint64_t alive = 0;
    for (int d = 0; d < k; d++) {
        at[d] = sides[d].start;
        key[d] = UINT64_MAX;
        if (at[d] < sides[d].stop) {
            key[d] = sides[d].keys[at[d]];
            alive |= 1ULL << d;
        }
    }
    while (alive & (alive - 1)) { /* two lists left, or more */
        uint64_t least = UINT64_MAX;
        for (int d = 0; d < k; d++)
            least = key[d] < least ? key[d] : least;
        uint64_t tied = 0;
        for (int d = 0; d < k; d++)
            tied |= (uint64_t)(key[d] == least) << d;
        tied &= alive;
        uint64_t group = tied;
        const uint64_t *digest = NULL;
        if (tied & (tied - 1)) { /* a shared prefix: which lists hold the least digest */
            group = 0;
            for (uint64_t t = tied; t; t &= t - 1) {
                int d = __builtin_ctzll(t);
                const uint64_t *w = sides[d].words + WORDS * at[d];
                int order = digest == NULL ? -1 : (same_rest(w, digest) ? 0 : compare_rest(w, digest));
                if (order < 0) {
                    digest = w;
                    group = 0;
                }
                if (order <= 0)
                    group |= 1ULL << d;
            }
        }
        if (group & (group - 1)) {
            uint64_t bits = 0;
            for (uint64_t g = group; g; g &= g - 1)
                bits |= sides[__builtin_ctzll(g)].bit;
            for (uint64_t g = group; g; g &= g - 1) {
                int d = __builtin_ctzll(g);
                if (mark_run(&sides[d], &at[d], least, digest, bits & ~sides[d].bit) < 0)
                    return -1;
            }
        } else {
            at[__builtin_ctzll(group)]++;
        }
        for (uint64_t g = group; g; g &= g - 1) {
            int d = __builtin_ctzll(g);
            if (at[d] < sides[d].stop) {
                key[d] = sides[d].keys[at[d]];
            } else {
                key[d] = UINT64_MAX;
                alive &= ~(1ULL << d);
            }
        }
    }
    return 0;
}

/*
 * The k-way merge when no list repeats a prefix and none holds the prefix 2^64 - 1 (every
 * list of a stored dataset, but for a 2^-64 chance or a crafted upload): branch-free over
 * a fixed number of lists. Each step takes the least prefix, checks that every list
 * holding it holds the same digest (otherwise one generic step of `mark_many` would be
 * needed: returns 1 there, before touching anything), marks those lists' rows with the
 * others' bits, and moves them on. A list not holding the prefix gets an OR of nothing
 * into a spare mask: no branch to mispredict. An exhausted list reads a dummy digest.
 */
static inline __attribute__((always_inline)) int mark_unique(const Side *sides, const int k,
                                                             Py_ssize_t *at) {
    static const uint64_t nowhere[WORDS] = {0, 0, 0, 0};
    uint64_t key[MAX_SIDES];
    const uint64_t *word[MAX_SIDES];
    for (int d = 0; d < k; d++) {
        int left = at[d] < sides[d].stop;
        key[d] = left ? sides[d].keys[at[d]] : UINT64_MAX;
        word[d] = left ? sides[d].words + WORDS * at[d] : nowhere;
    }
    for (;;) {
        uint64_t least = key[0];
        for (int d = 1; d < k; d++)
            least = key[d] < least ? key[d] : least;
        if (least == UINT64_MAX)
            return 0;
        uint64_t tied = 0, same = 0, bits = 0;
        for (int d = 0; d < k; d++)
            tied |= (uint64_t)(key[d] == least) << d;
        const uint64_t *first = word[__builtin_ctzll(tied)];
        for (int d = 0; d < k; d++) {
            same |= (uint64_t)same_rest(word[d], first) << d;
            bits |= sides[d].bit & (0 - ((tied >> d) & 1));
        }
        if ((same & tied) != tied)
            return 1;
        for (uint64_t t = tied; t; t &= t - 1) {
            int d = __builtin_ctzll(t);
            const Side *s = &sides[d];
            if (mark_row(s, at[d], bits & ~s->bit) < 0)
                return -1;
            prefetch_ahead(s, at[d]);
            int left = ++at[d] < s->stop;
            key[d] = left ? s->keys[at[d]] : UINT64_MAX;
            word[d] = left ? s->words + WORDS * at[d] : nowhere;
        }
    }
}

static int mark_many(const Side *sides, int k);

/* One step of the generic merge from `at`: the least digest's lists marked and moved on. */
static int generic_step(const Side *sides, int k, Py_ssize_t *at) {
    Side rest[MAX_SIDES];
    uint64_t least = UINT64_MAX;
    for (int d = 0; d < k; d++)
        if (at[d] < sides[d].stop && sides[d].keys[at[d]] < least)
            least = sides[d].keys[at[d]];
    /* The lists from where they are, up to the end of the least prefix's run. */
    for (int d = 0; d < k; d++) {
        rest[d] = sides[d];
        rest[d].start = at[d];
        Py_ssize_t end = at[d];
        while (end < sides[d].stop && sides[d].keys[end] == least)
            end++;
        rest[d].stop = end;
        at[d] = end;
    }
    return mark_many(rest, k);
}

static int mark_fast(const Side *sides, const int k) {
    Py_ssize_t at[MAX_SIDES];
    for (int d = 0; d < k; d++)
        at[d] = sides[d].start;
    for (;;) {
        int done;
        switch (k) {
        case 3: done = mark_unique(sides, 3, at); break;
        case 4: done = mark_unique(sides, 4, at); break;
        case 5: done = mark_unique(sides, 5, at); break;
        case 6: done = mark_unique(sides, 6, at); break;
        case 7: done = mark_unique(sides, 7, at); break;
        case 8: done = mark_unique(sides, 8, at); break;
        default: done = mark_unique(sides, k, at); break;
        }
        if (done <= 0)
            return done;
        if (generic_step(sides, k, at) < 0)
            return -1;
    }
}

static int mark_many(const Side *sides, int k) {
    switch (k) { /* a fixed count unrolls the loops over the lists */
    case 3: return merge_many(sides, 3);
    case 4: return merge_many(sides, 4);
    case 5: return merge_many(sides, 5);
    case 6: return merge_many(sides, 6);
    case 7: return merge_many(sides, 7);
    case 8: return merge_many(sides, 8);
    default: return merge_many(sides, k);
    }
}

/* Buffers ---------------------------------------------------------------------------- */

typedef struct {
    Py_buffer views[4 * MAX_SIDES];
    int held;
} Views;

static void release(Views *v) {
    for (int n = 0; n < v->held; n++)
        PyBuffer_Release(&v->views[n]);
    v->held = 0;
}

/* A buffer of at least `items` items of `width` bytes, aligned to `width`. */
static const void *view(Views *v, PyObject *object, int writable, Py_ssize_t items, int width,
                        Py_ssize_t *count, const char *what) {
    Py_buffer *b = &v->views[v->held];
    if (PyObject_GetBuffer(object, b, (writable ? PyBUF_WRITABLE : PyBUF_SIMPLE)) < 0)
        return NULL;
    v->held++;
    if (b->len < items * width || ((uintptr_t)b->buf % (uintptr_t)width) != 0) {
        PyErr_Format(PyExc_ValueError, "%s: a buffer of %zd aligned items of %d bytes is needed",
                     what, items, width);
        return NULL;
    }
    if (count != NULL)
        *count = b->len / width;
    return b->buf;
}

static int width_ok(int width, int allow_zero) {
    return (allow_zero && width == 0) || width == 1 || width == 2 || width == 4 || width == 8;
}

static PyObject *kernel_mark(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *list;
    if (!PyArg_ParseTuple(args, "O", &list))
        return NULL;
    PyObject *seq = PySequence_Fast(list, "mark: a sequence of sides");
    if (seq == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    if (k > MAX_SIDES) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "mark: at most %d lists at once", MAX_SIDES);
    }
    Side sides[MAX_SIDES];
    Views views;
    views.held = 0;
    int failed = 0;
    for (Py_ssize_t d = 0; d < k && !failed; d++) {
        PyObject *keys, *words, *rows, *masks;
        Side *s = &sides[d];
        unsigned long long bit;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, d), "OOOinnKOip;mark: a side", &keys,
                              &words, &rows, &s->row_width, &s->start, &s->stop, &bit, &masks,
                              &s->mask_width, &s->unique)) {
            failed = 1;
            break;
        }
        s->bit = bit;
        if (!width_ok(s->row_width, 1) || s->row_width == 1 || s->row_width == 2 ||
            !width_ok(s->mask_width, 0) || s->start < 0 || s->stop < s->start) {
            PyErr_SetString(PyExc_ValueError, "mark: bad widths or range");
            failed = 1;
            break;
        }
        s->keys = view(&views, keys, 0, s->stop, 8, NULL, "keys");
        s->words = s->keys ? view(&views, words, 0, s->stop * WORDS, 8, NULL, "words") : NULL;
        s->rows = NULL;
        if (s->words && s->row_width)
            s->rows = view(&views, rows, 0, s->stop, s->row_width, NULL, "rows");
        s->masks = (s->words && (!s->row_width || s->rows))
                       ? (void *)view(&views, masks, 1, 0, s->mask_width, &s->mask_rows, "masks")
                       : NULL;
        if (s->masks == NULL)
            failed = 1;
        else if (!s->row_width && s->mask_rows < s->stop) {
            PyErr_SetString(PyExc_ValueError, "masks: fewer rows than digests");
            failed = 1;
        }
    }
    Py_DECREF(seq);
    if (failed) {
        release(&views);
        return NULL;
    }
    /* Lists with nothing in range take no part; the fast merge needs the others unique
       and free of the prefix it uses as the end (2^64 - 1). */
    int unique = 1;
    Py_ssize_t used = 0;
    for (Py_ssize_t d = 0; d < k; d++) {
        if (sides[d].start == sides[d].stop)
            continue;
        unique &= sides[d].unique && sides[d].keys[sides[d].stop - 1] != UINT64_MAX;
        sides[used++] = sides[d];
    }
    k = used;
    int result = 0;
    Py_BEGIN_ALLOW_THREADS;
    if (k == 2)
        result = mark_two(&sides[0], &sides[1]);
    else if (k > 2)
        result = unique ? mark_fast(sides, (int)k) : mark_many(sides, (int)k);
    Py_END_ALLOW_THREADS;
    release(&views);
    if (result < 0)
        return PyErr_Format(PyExc_ValueError, "rows: a row number is out of bounds");
    Py_RETURN_NONE;
}

static PyObject *kernel_pairs(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *xk_o, *xw_o, *yk_o, *yw_o, *i_o, *j_o;
    Py_ssize_t xs, xe, ys, ye;
    if (!PyArg_ParseTuple(args, "OOnnOOnnOO", &xk_o, &xw_o, &xs, &xe, &yk_o, &yw_o, &ys, &ye,
                          &i_o, &j_o))
        return NULL;
    if (xs < 0 || xe < xs || ys < 0 || ye < ys)
        return PyErr_Format(PyExc_ValueError, "pairs: bad range");
    Views views;
    views.held = 0;
    Py_ssize_t room_i = 0, room_j = 0;
    const uint64_t *xk = view(&views, xk_o, 0, xe, 8, NULL, "x keys");
    const uint64_t *xw = xk ? view(&views, xw_o, 0, xe * WORDS, 8, NULL, "x words") : NULL;
    const uint64_t *yk = xw ? view(&views, yk_o, 0, ye, 8, NULL, "y keys") : NULL;
    const uint64_t *yw = yk ? view(&views, yw_o, 0, ye * WORDS, 8, NULL, "y words") : NULL;
    int64_t *out_i = yw ? (int64_t *)view(&views, i_o, 1, 0, 8, &room_i, "i") : NULL;
    int64_t *out_j = out_i ? (int64_t *)view(&views, j_o, 1, 0, 8, &room_j, "j") : NULL;
    if (out_j == NULL) {
        release(&views);
        return NULL;
    }
    Py_ssize_t room = room_i < room_j ? room_i : room_j, found = 0;
    Py_BEGIN_ALLOW_THREADS;
    Py_ssize_t i = xs, j = ys;
    while (i < xe && j < ye) {
        uint64_t a = xk[i], b = yk[j];
        if (a != b) {
            i += a < b;
            j += b < a;
            continue;
        }
        const uint64_t *u = xw + WORDS * i, *v = yw + WORDS * j;
        int order = same_rest(u, v) ? 0 : compare_rest(u, v);
        if (order < 0) {
            i++;
        } else if (order > 0) {
            j++;
        } else { /* every pair of the two runs of this digest */
            Py_ssize_t i_end = i, j_end = j;
            while (i_end < xe && xk[i_end] == a && same_rest(xw + WORDS * i_end, u))
                i_end++;
            while (j_end < ye && yk[j_end] == a && same_rest(yw + WORDS * j_end, u))
                j_end++;
            for (Py_ssize_t p = i; p < i_end; p++)
                for (Py_ssize_t q = j; q < j_end; q++, found++)
                    if (found < room) {
                        out_i[found] = p;
                        out_j[found] = q;
                    }
            i = i_end;
            j = j_end;
        }
    }
    Py_END_ALLOW_THREADS;
    release(&views);
    return PyLong_FromSsize_t(found);
}

static inline uint64_t load_unsigned(const void *p, Py_ssize_t r, int width) {
    switch (width) {
    case 1: return ((const uint8_t *)p)[r];
    case 2: return ((const uint16_t *)p)[r];
    case 4: return ((const uint32_t *)p)[r];
    default: return ((const uint64_t *)p)[r];
    }
}

static inline int64_t load_signed(const void *p, Py_ssize_t r, int width) {
    switch (width) {
    case 1: return ((const int8_t *)p)[r];
    case 2: return ((const int16_t *)p)[r];
    case 4: return ((const int32_t *)p)[r];
    default: return ((const int64_t *)p)[r];
    }
}

static PyObject *kernel_histogram(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *masks_o, *codes_o, *out_o;
    int width, code_width;
    Py_ssize_t start, stop, values;
    if (!PyArg_ParseTuple(args, "OiOinnnO", &masks_o, &width, &codes_o, &code_width, &start,
                          &stop, &values, &out_o))
        return NULL;
    if (!width_ok(width, 0) || !width_ok(code_width, 1) || start < 0 || stop < start ||
        values < 1)
        return PyErr_Format(PyExc_ValueError, "histogram: bad widths or range");
    Views views;
    views.held = 0;
    Py_ssize_t cells = 0;
    const void *masks = view(&views, masks_o, 0, stop, width, NULL, "masks");
    const void *codes = NULL;
    if (masks != NULL && code_width)
        codes = view(&views, codes_o, 0, stop, code_width, NULL, "codes");
    int64_t *out = (masks != NULL && (codes != NULL || !code_width))
                       ? (int64_t *)view(&views, out_o, 1, values, 8, &cells, "out")
                       : NULL;
    if (out == NULL) {
        release(&views);
        return NULL;
    }
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t r = start; r < stop; r++) {
        uint64_t m = load_unsigned(masks, r, width);
        int64_t code = codes == NULL ? 0 : load_signed(codes, r, code_width);
        uint64_t cell = (uint64_t)code * (uint64_t)values + m;
        if (code < 0 || m >= (uint64_t)values || cell >= (uint64_t)cells) {
            bad = 1;
            break;
        }
        out[cell]++;
    }
    Py_END_ALLOW_THREADS;
    release(&views);
    if (bad)
        return PyErr_Format(PyExc_ValueError, "histogram: a mask or code is out of bounds");
    Py_RETURN_NONE;
}

static PyObject *kernel_scatter(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *hits_o, *rows_o, *masks_o;
    int width, row_width;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "OiOinnO", &hits_o, &width, &rows_o, &row_width, &start, &stop,
                          &masks_o))
        return NULL;
    if (!width_ok(width, 0) || (row_width != 4 && row_width != 8) || start < 0 || stop < start)
        return PyErr_Format(PyExc_ValueError, "scatter: bad widths or range");
    Views views;
    views.held = 0;
    Py_ssize_t mask_rows = 0;
    const void *hits = view(&views, hits_o, 0, stop, width, NULL, "hits");
    const void *rows = hits ? view(&views, rows_o, 0, stop, row_width, NULL, "rows") : NULL;
    void *masks = rows ? (void *)view(&views, masks_o, 1, 0, width, &mask_rows, "masks") : NULL;
    if (masks == NULL) {
        release(&views);
        return NULL;
    }
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS;
    for (Py_ssize_t p = start; p < stop; p++) {
        if (p + PREFETCH < stop) {
            int64_t ahead = load_signed(rows, p + PREFETCH, row_width);
            if ((uint64_t)ahead < (uint64_t)mask_rows)
                __builtin_prefetch((char *)masks + ahead * width, 1, 1);
        }
        int64_t r = load_signed(rows, p, row_width);
        if ((uint64_t)r >= (uint64_t)mask_rows) {
            bad = 1;
            break;
        }
        uint64_t v = load_unsigned(hits, p, width);
        switch (width) {
        case 1: ((uint8_t *)masks)[r] |= (uint8_t)v; break;
        case 2: ((uint16_t *)masks)[r] |= (uint16_t)v; break;
        case 4: ((uint32_t *)masks)[r] |= (uint32_t)v; break;
        default: ((uint64_t *)masks)[r] |= v; break;
        }
    }
    Py_END_ALLOW_THREADS;
    release(&views);
    if (bad)
        return PyErr_Format(PyExc_ValueError, "rows: a row number is out of bounds");
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"mark", kernel_mark, METH_VARARGS, "Merge-joins sorted digest lists and marks matched rows."},
    {"pairs", kernel_pairs, METH_VARARGS, "Every pair of positions holding the same digest."},
    {"scatter", kernel_scatter, METH_VARARGS, "ORs marks by position into masks by row."},
    {"histogram", kernel_histogram, METH_VARARGS, "Rows per (code, mask) over a range of rows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_kernel",
    .m_doc = "The compiled matching kernel (see kernel.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
