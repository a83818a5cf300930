/*
 * app.streaming._jsonescape: the inside of a JSON string for UTF-8 bytes, byte for byte
 * what json.dumps(ensure_ascii=False) writes (checked by tests/test_sse_encoder.py).
 *
 * Command output is the server's hot path: the json module escapes it one
 * character at a time (about 250 MB/s here), and the best pure-Python way
 * (bytes.translate to find the kinds of special bytes, then one replace per
 * kind) about 1.3 GB/s. Two passes over the bytes, one to size the result and
 * one to write it, each testing sixteen bytes at once (SSE2; eight with plain
 * word arithmetic elsewhere). No I/O, no state.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Bytes each input byte grows by: 0 for most, 1 for \" \\ \b \t \n \f \r, 5 for \u00XX. */
static unsigned char growth[256];
static const char hex[] = "0123456789abcdef";

static void init_growth(void)
{
    for (int c = 0; c < 0x20; c++)
        growth[c] = 5;
    growth['\b'] = growth['\t'] = growth['\n'] = growth['\f'] = growth['\r'] = 1;
    growth['"'] = growth['\\'] = 1;
}

#if defined(__SSE2__)
#include <emmintrin.h>
/* Sixteen bytes at a time: a bit set for each byte that needs escaping (at most 0x1f, '"' or '\\'). */
#define BLOCK 16
static inline unsigned block_mask(const unsigned char *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i low = _mm_set1_epi8(0x1f);
    __m128i control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
    __m128i quote = _mm_cmpeq_epi8(v, _mm_set1_epi8('"'));
    __m128i backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(control, _mm_or_si128(quote, backslash)));
}
#else
/* Eight bytes at a time, portably: nonzero if any byte needs escaping. The classic "has a byte
 * less than n" and "has a zero byte" word tricks, exact for these constants; bytes of 0x80 and
 * above (UTF-8) never match. */
#define BLOCK 8
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
static inline unsigned block_mask(const unsigned char *p)
{
    uint64_t w, quote, backslash;
    memcpy(&w, p, sizeof w);
    quote = w ^ (ONES * '"');
    backslash = w ^ (ONES * '\\');
    return (((w - ONES * 0x20) & ~w & HIGHS) | ((quote - ONES) & ~quote & HIGHS)
            | ((backslash - ONES) & ~backslash & HIGHS)) != 0;
}
#endif

static char *write_escaped(char *out, unsigned char c)
{
    *out++ = '\\';
    switch (c) {
    case '"': *out++ = '"'; break;
    case '\\': *out++ = '\\'; break;
    case '\b': *out++ = 'b'; break;
    case '\t': *out++ = 't'; break;
    case '\n': *out++ = 'n'; break;
    case '\f': *out++ = 'f'; break;
    case '\r': *out++ = 'r'; break;
    default:
        *out++ = 'u';
        *out++ = '0';
        *out++ = '0';
        *out++ = hex[c >> 4];
        *out++ = hex[c & 15];
    }
    return out;
}

/* Bytes the escaped form of src adds to its length. */
static Py_ssize_t escaped_growth(const unsigned char *src, Py_ssize_t length)
{
    Py_ssize_t extra = 0, i = 0;
    for (; i + BLOCK <= length; i += BLOCK) {
        if (block_mask(src + i))
            for (int k = 0; k < BLOCK; k++)
                extra += growth[src[i + k]];
    }
    for (; i < length; i++)
        extra += growth[src[i]];
    return extra;
}

/* Write the escaped form of src at out; returns the end of what was written. */
static char *write_escaped_text(char *out, const unsigned char *src, Py_ssize_t length)
{
    Py_ssize_t i;
    for (i = 0; i + BLOCK <= length; i += BLOCK) {
        if (!block_mask(src + i)) {
            memcpy(out, src + i, BLOCK);
            out += BLOCK;
            continue;
        }
        for (int k = 0; k < BLOCK; k++) {
            unsigned char c = src[i + k];
            if (growth[c])
                out = write_escaped(out, c);
            else
                *out++ = (char)c;
        }
    }
    for (; i < length; i++) {
        unsigned char c = src[i];
        if (growth[c])
            out = write_escaped(out, c);
        else
            *out++ = (char)c;
    }
    return out;
}

static PyObject *escape(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t extra = escaped_growth(view.buf, view.len);
    PyObject *result;
    if (extra == 0 && PyBytes_CheckExact(arg)) {
        result = Py_NewRef(arg);
    } else {
        result = PyBytes_FromStringAndSize(NULL, view.len + extra);
        if (result != NULL)
            write_escaped_text(PyBytes_AS_STRING(result), view.buf, view.len);
    }
    PyBuffer_Release(&view);
    return result;
}

/* head + escape(text) + tail in one allocation: a whole SSE frame of command output in one call. */
static PyObject *escape_between(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "escape_between(head, text, tail) takes three bytes arguments");
        return NULL;
    }
    for (int k = 0; k < 3; k++) {
        if (!PyBytes_Check(args[k])) {
            PyErr_Format(PyExc_TypeError, "escape_between: argument %d must be bytes, not %.50s", k + 1,
                         Py_TYPE(args[k])->tp_name);
            return NULL;
        }
    }
    const unsigned char *src = (const unsigned char *)PyBytes_AS_STRING(args[1]);
    Py_ssize_t length = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t head = PyBytes_GET_SIZE(args[0]), tail = PyBytes_GET_SIZE(args[2]);
    Py_ssize_t extra = escaped_growth(src, length);
    PyObject *result = PyBytes_FromStringAndSize(NULL, head + length + extra + tail);
    if (result == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(result);
    memcpy(out, PyBytes_AS_STRING(args[0]), head);
    out = write_escaped_text(out + head, src, length);
    memcpy(out, PyBytes_AS_STRING(args[2]), tail);
    return result;
}

/* Byte classes for unescape: 0 as is, 1 a backslash, 2 never in an ASCII string body (control, '"', >= 0x80). */
static unsigned char ascii_class[256];

/* Nonzero if none of the BLOCK bytes at p needs a look: no control byte, quote, backslash, nor byte >= 0x80. */
static inline int plain_ascii_block(const unsigned char *p)
{
    uint64_t first, last;
    memcpy(&first, p, sizeof first);
    memcpy(&last, p + BLOCK - sizeof last, sizeof last);
    return !block_mask(p) && !((first | last) & 0x8080808080808080ULL);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The text of an ASCII JSON string body, frame[start:end]: one pass, no Python objects but the result.
 * None for anything else (non-ASCII, an escape escape() never writes, a stray quote or control byte):
 * the caller then asks the json module, which knows every form. */
static PyObject *unescape(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "unescape(frame, start, end) takes bytes and two ints");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), end = PyLong_AsSsize_t(args[2]);
    if ((start == -1 || end == -1) && PyErr_Occurred())
        return NULL;
    if (start < 0 || end > PyBytes_GET_SIZE(args[0]) || start > end) {
        PyErr_SetString(PyExc_ValueError, "unescape: start and end must lie within the frame");
        return NULL;
    }
    const unsigned char *src = (const unsigned char *)PyBytes_AS_STRING(args[0]) + start;
    Py_ssize_t length = end - start, i = 0;
    PyObject *result = PyBytes_FromStringAndSize(NULL, length);
    if (result == NULL)
        return NULL;
    unsigned char *begin = (unsigned char *)PyBytes_AS_STRING(result), *out = begin;
    while (i < length) {
        if (i + BLOCK <= length && plain_ascii_block(src + i)) {
            memcpy(out, src + i, BLOCK);
            out += BLOCK;
            i += BLOCK;
            continue;
        }
        unsigned char c = src[i];
        unsigned char kind = ascii_class[c];
        if (kind == 0) {
            *out++ = c;
            i++;
            continue;
        }
        if (kind == 2 || i + 1 >= length)
            goto other;
        switch (src[i + 1]) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case 'b': *out++ = '\b'; break;
        case 't': *out++ = '\t'; break;
        case 'n': *out++ = '\n'; break;
        case 'f': *out++ = '\f'; break;
        case 'r': *out++ = '\r'; break;
        case 'u': {
            if (i + 5 >= length || src[i + 2] != '0' || src[i + 3] != '0')
                goto other;
            int high = hex_value(src[i + 4]), low = hex_value(src[i + 5]);
            if (high < 0 || high > 7 || low < 0)
                goto other;
            *out++ = (unsigned char)(high * 16 + low);
            i += 4;
            break;
        }
        default:
            goto other;
        }
        i += 2;
    }
    if (_PyBytes_Resize(&result, out - begin) < 0)
        return NULL;
    return result;
other:
    Py_DECREF(result);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(unescape_doc,
"unescape(frame: bytes, start: int, end: int) -> bytes | None\n\n"
"The ASCII text that the JSON string body ``frame[start:end]`` holds (the inverse of escape() for ASCII),\n"
"or None if the body is not plain ASCII with only the escapes JSON defines for it (ask the json module).");

PyDoc_STRVAR(escape_doc,
"escape(data: bytes) -> bytes\n\n"
"The inside of a JSON string holding the UTF-8 text ``data``, as json.dumps(ensure_ascii=False)\n"
"writes it: \\\" \\\\ \\b \\t \\n \\f \\r, \\u00XX for other control bytes, every other byte as it is.\n"
"Returns ``data`` itself when nothing needs escaping.");

PyDoc_STRVAR(escape_between_doc,
"escape_between(head: bytes, text: bytes, tail: bytes) -> bytes\n\n"
"``head + escape(text) + tail``, built in one allocation (an SSE frame of command output).");

static PyMethodDef methods[] = {
    {"escape", escape, METH_O, escape_doc},
    {"escape_between", (PyCFunction)(void (*)(void))escape_between, METH_FASTCALL, escape_between_doc},
    {"unescape", (PyCFunction)(void (*)(void))unescape, METH_FASTCALL, unescape_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "app.streaming._jsonescape", "JSON string escaping of UTF-8 bytes (command output).", -1, methods,
};

PyMODINIT_FUNC PyInit__jsonescape(void)
{
    init_growth();
    for (int c = 0; c < 256; c++)
        ascii_class[c] = (c < 0x20 || c == '"' || c >= 0x80) ? 2 : c == '\\' ? 1 : 0;
    return PyModule_Create(&module);
}
