/* pynas._jpeg: decode only the part of a JPEG that a crop needs, at a reduced DCT scale.
 *
 * The streaming loader's training crop (RandomResizedCrop) covers on average about half of an
 * image and is then shrunk to 224x224. A full decode spends most of its time on pixels the crop
 * throws away or averages together. libjpeg-turbo can avoid both:
 *   - DCT scaling: the inverse DCT produces the image at M/8 of its size (M = 1..8) for a fraction
 *     of the work; we pick the smallest M at which the crop is still at least the output size in
 *     both directions, so the final resize only shrinks and quality is that of a full decode.
 *     (Pillow's `draft` offers only 1/2, 1/4, 1/8, which at ImageNet's sizes almost never applies.)
 *   - Region decode: rows below the crop are never read; rows above are entropy-decoded only
 *     (jpeg_skip_scanlines, no inverse DCT or colour conversion); columns outside the crop, rounded
 *     out to whole iMCUs, skip inverse DCT and colour conversion (jpeg_crop_scanline).
 * The resize itself stays in Python (Pillow's antialiased resize with a fractional box), so the
 * output is computed exactly as on the Pillow path from the decoded pixels.
 *
 * C-style C++ on the CPython API, no torch (torch's extension builder compiles every source as C++):
 * it links only against the system libjpeg-turbo and is built only where its headers are found
 * (setup.py); the loader falls back to Pillow without it. libjpeg reports fatal errors by calling
 * error_exit, which must not return: we longjmp back to decode_box's frame, so no frame in between
 * may own anything with a destructor (none does: plain pointers freed by hand), and report the reason.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <math.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct {
  struct jpeg_error_mgr base;
  jmp_buf escape;
  char message[JMSG_LENGTH_MAX];
  int truncated; /* libjpeg inserted a fake end of image: the file is cut short */
} ErrorState;

static void on_error(j_common_ptr cinfo) {
  ErrorState *state = (ErrorState *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, state->message);
  longjmp(state->escape, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
  /* Warnings (level -1) about corrupt entropy data are ignored, as Pillow does; a premature end of
   * file is recorded: libjpeg would fill the missing rows with grey, which Pillow refuses too. */
  ErrorState *state = (ErrorState *)cinfo->err;
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) state->truncated = 1;
}

/* Routes cinfo's errors to on_error/on_message with a cleared state (the caller then calls setjmp). */
static void install_errors(struct jpeg_decompress_struct *cinfo, ErrorState *err) {
  memset(err, 0, sizeof(*err));
  cinfo->err = jpeg_std_error(&err->base);
  err->base.error_exit = on_error;
  err->base.emit_message = on_message;
}

/* The smallest M in 1..8 (M/8 scale) at which a crop of crop_w x crop_h source pixels still spans at
 * least min_w x min_h output pixels; 8 when even the full size does not. */
static int pick_scale(double crop_w, double crop_h, int min_w, int min_h, int powers_of_two) {
  for (int m = 1; m < 8; ++m) {
    if (powers_of_two && (m & (m - 1))) continue;
    if (crop_w * m / 8.0 >= min_w && crop_h * m / 8.0 >= min_h) return m;
  }
  return 8;
}


/* ---------------------------------------------------------------- antialiased bilinear resize
 * The same separable triangle filter as Pillow's Image.resize(BILINEAR, box=...) (Pillow's
 * Resample.c: a filter widened by the downscale factor, coefficients normalised per output pixel,
 * 22-bit fixed point, horizontal pass rounded to 8 bits, then the vertical pass), so this path gives
 * the pixels Pillow's path gives from the same decoded pixels. No reducing_gap pre-shrink: the DCT
 * scale already keeps the resize under 2x except for images over 1792 pixels on the crop's side. */
#define PRECISION_BITS (32 - 8 - 2)

static double triangle(double x) {
  if (x < 0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

/* For output pixels 0..out_size-1 over the source interval [in0, in1) of a line of in_size pixels:
 * the first tap (starts), the tap count (counts) and ksize fixed-point weights each (weights).
 * Returns ksize, or 0 when memory ran out. */
static int filter_taps(double in0, double in1, int in_size, int out_size, int **starts, int **counts,
                       int **weights) {
  const double scale = (in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filterscale; /* the triangle's support is 1 */
  const int ksize = (int)ceil(support) * 2 + 1;
  *starts = (int *)PyMem_RawMalloc(sizeof(int) * out_size);
  *counts = (int *)PyMem_RawMalloc(sizeof(int) * out_size);
  *weights = (int *)PyMem_RawMalloc(sizeof(int) * (size_t)out_size * ksize);
  double *k = (double *)PyMem_RawMalloc(sizeof(double) * ksize);
  if (!*starts || !*counts || !*weights || !k) {
    PyMem_RawFree(k);
    return 0;
  }
  const double inv = 1.0 / filterscale;
  for (int o = 0; o < out_size; ++o) {
    const double centre = in0 + (o + 0.5) * scale;
    int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in_size) hi = in_size;
    const int n = hi - lo;
    double total = 0.0;
    for (int t = 0; t < n; ++t) total += (k[t] = triangle((t + lo - centre + 0.5) * inv));
    int *w = *weights + (size_t)o * ksize;
    for (int t = 0; t < ksize; ++t) {
      const double v = t < n && total != 0.0 ? k[t] / total : 0.0;
      w[t] = (int)(v * (1 << PRECISION_BITS) + (v < 0 ? -0.5 : 0.5));
    }
    (*starts)[o] = lo;
    (*counts)[o] = n;
  }
  PyMem_RawFree(k);
  return ksize;
}

static inline unsigned char clip8(int v) {
  if (v >= (1 << PRECISION_BITS << 8)) return 255;
  if (v <= 0) return 0;
  return (unsigned char)(v >> PRECISION_BITS);
}

/* Resize the box [x0, x1) x [y0, y1) of the packed RGB image src (width x height) to out_w x out_h
 * into dst (packed RGB), mirrored left-right with `flip`. Returns 0 when memory ran out. */
static void horizontal_pass(const unsigned char *src, int width, int first, int rows, const int *starts,
                            const int *counts, const int *weights, int ksize, unsigned char *tmp, int out_w) {
  for (int r = 0; r < rows; ++r) {
    const unsigned char *line = src + (size_t)(first + r) * width * 3;
    unsigned char *out = tmp + (size_t)r * out_w * 3;
    for (int o = 0; o < out_w; ++o) {
      const unsigned char *p = line + (size_t)starts[o] * 3;
      const int *w = weights + (size_t)o * ksize;
      int s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
      for (int t = 0; t < counts[o]; ++t, p += 3) {
        s0 += p[0] * w[t];
        s1 += p[1] * w[t];
        s2 += p[2] * w[t];
      }
      out[3 * o] = clip8(s0);
      out[3 * o + 1] = clip8(s1);
      out[3 * o + 2] = clip8(s2);
    }
  }
}

/* A whole output row at a time: contiguous, so the compiler vectorizes it. */
static void vertical_pass(const unsigned char *tmp, int first, const int *starts, const int *counts,
                          const int *weights, int ksize, int *acc, unsigned char *dst, int out_w, int out_h,
                          int flip) {
  const int n = out_w * 3;
  for (int o = 0; o < out_h; ++o) {
    const int *w = weights + (size_t)o * ksize;
    for (int j = 0; j < n; ++j) acc[j] = 1 << (PRECISION_BITS - 1);
    for (int t = 0; t < counts[o]; ++t) {
      const unsigned char *p = tmp + (size_t)(starts[o] - first + t) * n;
      const int wt = w[t];
      for (int j = 0; j < n; ++j) acc[j] += p[j] * wt;
    }
    unsigned char *out = dst + (size_t)o * n;
    if (flip) {
      for (int c = 0; c < out_w; ++c) {
        unsigned char *q = out + 3 * (out_w - 1 - c);
        q[0] = clip8(acc[3 * c]);
        q[1] = clip8(acc[3 * c + 1]);
        q[2] = clip8(acc[3 * c + 2]);
      }
    } else {
      for (int j = 0; j < n; ++j) out[j] = clip8(acc[j]);
    }
  }
}

/* Resize the box [x0, x1) x [y0, y1) of the packed RGB image src (width x height) to out_w x out_h
 * into dst (packed RGB), mirrored left-right with `flip`. Returns 0 when memory ran out. */
static int resize_box(const unsigned char *src, int width, int height, double x0, double y0, double x1,
                      double y1, unsigned char *dst, int out_w, int out_h, int flip) {
  int *hs = NULL, *hn = NULL, *hw = NULL, *vs = NULL, *vn = NULL, *vw = NULL, *acc = NULL;
  unsigned char *tmp = NULL;
  const int hk = filter_taps(x0, x1, width, out_w, &hs, &hn, &hw);
  const int vk = hk ? filter_taps(y0, y1, height, out_h, &vs, &vn, &vw) : 0;
  int first = 0, rows = 0;
  if (vk) {
    /* Only the source rows some vertical tap reads go through the horizontal pass. */
    first = vs[0];
    rows = vs[out_h - 1] + vn[out_h - 1] - first;
    tmp = (unsigned char *)PyMem_RawMalloc((size_t)rows * out_w * 3);
    acc = (int *)PyMem_RawMalloc(sizeof(int) * (size_t)out_w * 3);
  }
  const int ok = vk && tmp && acc;
  if (ok) {
    horizontal_pass(src, width, first, rows, hs, hn, hw, hk, tmp, out_w);
    vertical_pass(tmp, first, vs, vn, vw, vk, acc, dst, out_w, out_h, flip);
  }
  PyMem_RawFree(hs), PyMem_RawFree(hn), PyMem_RawFree(hw), PyMem_RawFree(vs), PyMem_RawFree(vn),
      PyMem_RawFree(vw), PyMem_RawFree(tmp), PyMem_RawFree(acc);
  return ok;
}

/* Whether the file's last bytes hold the end-of-image marker (FF D9). Inside entropy-coded data an
 * FF byte is always followed by 00 or a restart marker, so FF D9 there is the real end. */
static int ends_with_eoi(const unsigned char *data, size_t size) {
  const size_t tail = size < 64 ? size : 64;
  for (size_t i = size - tail; i + 1 < size; ++i)
    if (data[i] == 0xFF && data[i + 1] == 0xD9) return 1;
  return 0;
}

/* What decode_box produced: the decoded pixels of (at least) the box, and where they sit. */
typedef struct {
  unsigned char *pixels; /* packed RGB, width x height, PyMem_RawMalloc'd */
  int width, height;     /* of the decoded part */
  int left, top;         /* its origin in the image decoded at scale (sx, sy) */
  double sx, sy;         /* decoded size / source size */
} Region;

enum { DECODED = 0, FAILED = 1, UNSUPPORTED = 2, NO_MEMORY = 3 };

/* Decodes the part of `data` covering `box` (source pixels) at the smallest DCT scale that keeps the
 * box at least min_w x min_h; runs without the GIL. On FAILED, `message` holds libjpeg's reason. */
static int decode_box(const unsigned char *data, size_t size, const double box[4], int min_w, int min_h,
                      int powers_of_two, Region *region, char *message) {
  struct jpeg_decompress_struct cinfo;
  ErrorState err;
  /* Read after a longjmp, hence volatile. */
  unsigned char *volatile pixels = NULL;
  volatile int status = FAILED;
  install_errors(&cinfo, &err);
  if (setjmp(err.escape)) {
    jpeg_destroy_decompress(&cinfo);
    PyMem_RawFree(pixels);
    memcpy(message, err.message, JMSG_LENGTH_MAX);
    return status;
  }
  jpeg_create_decompress(&cinfo);
  if (size == 0) {
    strcpy(err.message, "empty file");
    longjmp(err.escape, 1);
  }
  if (!ends_with_eoi(data, size)) {
    /* Cut short, or padded past the end marker: only a full decode can tell which (rows below the box
     * are never read here, so a cut would go unnoticed). */
    strcpy(err.message, "a JPEG without an end-of-image marker at its end");
    status = UNSUPPORTED;
    longjmp(err.escape, 1);
  }
  jpeg_mem_src(&cinfo, data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    snprintf(err.message, sizeof(err.message), "a CMYK/YCCK JPEG (colour space %d)", (int)cinfo.jpeg_color_space);
    status = UNSUPPORTED;
    longjmp(err.escape, 1);
  }
  const int src_w = (int)cinfo.image_width, src_h = (int)cinfo.image_height;
  const double left = box[0], top = box[1], right = box[2], bottom = box[3];
  if (!(left >= 0 && top >= 0 && right <= src_w && bottom <= src_h && left < right && top < bottom)) {
    snprintf(err.message, sizeof(err.message), "box (%g, %g, %g, %g) is not inside the %dx%d image", left, top,
             right, bottom, src_w, src_h);
    longjmp(err.escape, 1);
  }
  cinfo.out_color_space = JCS_RGB;
  cinfo.scale_num = (unsigned int)pick_scale(right - left, bottom - top, min_w, min_h, powers_of_two);
  cinfo.scale_denom = 8;
  cinfo.dct_method = JDCT_ISLOW; /* Pillow's default: the same pixels at full scale */
  jpeg_start_decompress(&cinfo);
  const int out_w = (int)cinfo.output_width, out_h = (int)cinfo.output_height;
  const double sx = (double)out_w / src_w, sy = (double)out_h / src_h;
  /* The box in decoded pixels, rounded out to whole pixels, plus one pixel each side: with chroma
   * subsampling, fancy upsampling at a cropped part's edge replicates the edge instead of reading the
   * neighbour, so the part's outermost pixels may differ from a full decode's; inside they are equal. */
  int x0 = (int)floor(left * sx) - 1, x1 = (int)ceil(right * sx) + 1, y0 = (int)floor(top * sy) - 1,
      y1 = (int)ceil(bottom * sy) + 1;
  if (x0 < 0) x0 = 0;
  if (y0 < 0) y0 = 0;
  if (x1 > out_w) x1 = out_w;
  if (y1 > out_h) y1 = out_h;
  if (x0 > x1 - 1) x0 = x1 - 1;
  if (y0 > y1 - 1) y0 = y1 - 1;
  JDIMENSION xoff = (JDIMENSION)x0, width = (JDIMENSION)(x1 - x0);
  if (width < (JDIMENSION)out_w) jpeg_crop_scanline(&cinfo, &xoff, &width); /* widens to whole iMCUs */
  const int rows = y1 - y0;
  pixels = (unsigned char *)PyMem_RawMalloc((size_t)width * rows * 3);
  if (!pixels) {
    strcpy(err.message, "out of memory");
    status = NO_MEMORY;
    longjmp(err.escape, 1);
  }
  if (y0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)y0); /* entropy decoding only */
  const size_t stride = (size_t)cinfo.output_width * 3;   /* the cropped width */
  for (int r = 0; r < rows;) {
    JSAMPROW row = pixels + (size_t)r * stride;
    const JDIMENSION got = jpeg_read_scanlines(&cinfo, &row, 1);
    if (got == 0) { /* a memory source never suspends; never loop forever anyway */
      strcpy(err.message, "libjpeg returned no scanline");
      longjmp(err.escape, 1);
    }
    r += (int)got;
  }
  if (err.truncated) {
    strcpy(err.message, "image file is truncated");
    longjmp(err.escape, 1);
  }
  /* Rows below the box are never decoded. */
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  region->pixels = pixels;
  region->width = (int)width;
  region->height = rows;
  region->left = (int)xoff;
  region->top = y0;
  region->sx = sx;
  region->sy = sy;
  return DECODED;
}

static PyObject *raise_for(int status, const char *message) {
  if (status == UNSUPPORTED) PyErr_Format(PyExc_NotImplementedError, "not decoded here: %s", message);
  else if (status == NO_MEMORY) PyErr_NoMemory();
  else PyErr_SetString(PyExc_ValueError, message);
  return NULL;
}

PyDoc_STRVAR(decode_region_doc,
"decode_region(data, box, min_size, powers_of_two=False) -> (pixels, width, height, left, top, scale_x, scale_y)\n"
"\n"
"Decode the part of the JPEG `data` (bytes-like) covering `box` = (left, top, right, bottom) in source\n"
"pixels, at the smallest M/8 DCT scale keeping the box at least `min_size` = (w, h) pixels (M = 1, 2,\n"
"4, 8 only with `powers_of_two`). Returns packed RGB bytes of width x height pixels whose pixel (0, 0)\n"
"is pixel (left, top) of the image decoded at (scale_x, scale_y) = decoded size / source size.\n"
"ValueError: data libjpeg cannot decode, a box outside the image (libjpeg's reason);\n"
"NotImplementedError: CMYK/YCCK JPEGs and files whose last 64 bytes hold no end-of-image marker\n"
"(cut short or padded: decode those in full another way, which tells the two apart).");

static PyObject *decode_region(PyObject *self, PyObject *args, PyObject *kwargs) {
  (void)self;
  static const char *keywords[] = {"data", "box", "min_size", "powers_of_two", NULL};
  Py_buffer view;
  double box[4];
  int min_w, min_h, powers_of_two = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*(dddd)(ii)|p", (char **)keywords, &view, &box[0], &box[1], &box[2],
                                   &box[3], &min_w, &min_h, &powers_of_two))
    return NULL;
  Region region;
  char message[JMSG_LENGTH_MAX];
  int status;
  Py_BEGIN_ALLOW_THREADS
  status = decode_box((const unsigned char *)view.buf, (size_t)view.len, box, min_w, min_h, powers_of_two,
                      &region, message);
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&view);
  if (status != DECODED) return raise_for(status, message);
  PyObject *pixels =
      PyBytes_FromStringAndSize((const char *)region.pixels, (Py_ssize_t)region.width * region.height * 3);
  PyMem_RawFree(region.pixels);
  if (!pixels) return NULL;
  return Py_BuildValue("(Niiiidd)", pixels, region.width, region.height, region.left, region.top, region.sx,
                       region.sy);
}

PyDoc_STRVAR(decode_crop_doc,
"decode_crop(data, box, size, flip=False, powers_of_two=False) -> bytes\n"
"\n"
"The region `box` = (left, top, right, bottom) (source pixels) of the JPEG `data` resized to `size` =\n"
"(w, h) with Pillow's antialiased bilinear filter, mirrored left-right with `flip`: packed RGB bytes\n"
"of h rows of w pixels. Only the part of the file the box needs is decoded, at the smallest M/8 DCT\n"
"scale keeping the box at least `size` (see decode_region). Errors as decode_region.");

static PyObject *decode_crop(PyObject *self, PyObject *args, PyObject *kwargs) {
  (void)self;
  static const char *keywords[] = {"data", "box", "size", "flip", "powers_of_two", NULL};
  Py_buffer view;
  double box[4];
  int out_w, out_h, flip = 0, powers_of_two = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*(dddd)(ii)|pp", (char **)keywords, &view, &box[0], &box[1], &box[2],
                                   &box[3], &out_w, &out_h, &flip, &powers_of_two))
    return NULL;
  if (out_w < 1 || out_h < 1 || out_w > 65535 || out_h > 65535) {
    PyBuffer_Release(&view);
    PyErr_Format(PyExc_ValueError, "size must be two sides in 1..65535, got (%d, %d)", out_w, out_h);
    return NULL;
  }
  PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out_w * out_h * 3);
  if (!out) {
    PyBuffer_Release(&view);
    return NULL;
  }
  Region region;
  char message[JMSG_LENGTH_MAX];
  int status, resized = 0;
  Py_BEGIN_ALLOW_THREADS
  status = decode_box((const unsigned char *)view.buf, (size_t)view.len, box, out_w, out_h, powers_of_two,
                      &region, message);
  if (status == DECODED) {
    /* The box in the decoded part's own pixels; float error must not leave the part. */
    double x0 = box[0] * region.sx - region.left, y0 = box[1] * region.sy - region.top;
    double x1 = box[2] * region.sx - region.left, y1 = box[3] * region.sy - region.top;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > region.width) x1 = region.width;
    if (y1 > region.height) y1 = region.height;
    resized = resize_box(region.pixels, region.width, region.height, x0, y0, x1, y1,
                         (unsigned char *)PyBytes_AS_STRING(out), out_w, out_h, flip);
    PyMem_RawFree(region.pixels);
  }
  Py_END_ALLOW_THREADS
  PyBuffer_Release(&view);
  if (status != DECODED) {
    Py_DECREF(out);
    return raise_for(status, message);
  }
  if (!resized) {
    Py_DECREF(out);
    return PyErr_NoMemory();
  }
  return out;
}

PyDoc_STRVAR(image_size_doc,
"image_size(data) -> (width, height)\n"
"\n"
"The size of the JPEG `data` (bytes-like) from its header; ValueError when libjpeg cannot read one.");

static PyObject *image_size(PyObject *self, PyObject *args) {
  (void)self;
  Py_buffer view;
  if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
  struct jpeg_decompress_struct cinfo;
  ErrorState err;
  install_errors(&cinfo, &err);
  if (setjmp(err.escape)) {
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&view);
    PyErr_SetString(PyExc_ValueError, err.message);
    return NULL;
  }
  jpeg_create_decompress(&cinfo);
  if (view.len <= 0) {
    strcpy(err.message, "empty file");
    longjmp(err.escape, 1);
  }
  jpeg_mem_src(&cinfo, (const unsigned char *)view.buf, (unsigned long)view.len);
  jpeg_read_header(&cinfo, TRUE);
  const int width = (int)cinfo.image_width, height = (int)cinfo.image_height;
  jpeg_destroy_decompress(&cinfo);
  PyBuffer_Release(&view);
  return Py_BuildValue("(ii)", width, height);
}

static PyMethodDef methods[] = {
    {"decode_region", (PyCFunction)(void (*)(void))decode_region, METH_VARARGS | METH_KEYWORDS,
     decode_region_doc},
    {"decode_crop", (PyCFunction)(void (*)(void))decode_crop, METH_VARARGS | METH_KEYWORDS, decode_crop_doc},
    {"image_size", image_size, METH_VARARGS, image_size_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pynas._jpeg",
                                    "Region and DCT-scaled JPEG decoding on libjpeg-turbo, with the crop's resize (see decode_crop).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jpeg(void) {
  PyObject *m = PyModule_Create(&module);
  if (m && PyModule_AddIntConstant(m, "LIBJPEG_VERSION", JPEG_LIB_VERSION) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
