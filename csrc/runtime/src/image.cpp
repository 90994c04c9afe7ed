// Image files -> RGB as vrwkv_edge's loader (Pillow) gives them, and the tower preprocessing with Pillow's
// bicubic resampling reproduced in its own fixed-point arithmetic, so the pixels fed to vision.onnx are the
// Python runtime's.
#include <cstdio>  // before jpeglib.h, which needs FILE and size_t
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <setjmp.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <memory>

#include "vrwkv_runtime/runtime.hpp"

namespace vrwkv {

namespace {

[[noreturn]] void image_error(const std::string& path, const std::string& why) {
  throw Error(Error::Kind::Image, path + ": " + why);
}

struct File {
  FILE* f = nullptr;
  ~File() { if (f) std::fclose(f); }
};

// ---- EXIF orientation (the APP1 "Exif" TIFF block, tag 0x0112 of IFD0) --------------------------------------
int exif_orientation(const unsigned char* d, size_t n) {
  if (n < 14 || std::memcmp(d, "Exif\0\0", 6) != 0) return 1;
  d += 6;
  n -= 6;
  bool le = d[0] == 'I';
  auto u16 = [&](size_t o) -> unsigned { return o + 2 > n ? 0 : le ? d[o] | d[o + 1] << 8 : d[o] << 8 | d[o + 1]; };
  auto u32 = [&](size_t o) -> size_t {
    return o + 4 > n ? 0 : le ? size_t(d[o]) | size_t(d[o + 1]) << 8 | size_t(d[o + 2]) << 16 | size_t(d[o + 3]) << 24
                              : size_t(d[o]) << 24 | size_t(d[o + 1]) << 16 | size_t(d[o + 2]) << 8 | size_t(d[o + 3]);
  };
  size_t ifd = u32(4);
  unsigned entries = u16(ifd);
  for (unsigned k = 0; k < entries; ++k) {
    size_t e = ifd + 2 + 12 * k;
    if (e + 12 > n) break;
    if (u16(e) == 0x0112) {
      unsigned v = u16(e + 8);
      return v >= 1 && v <= 8 ? int(v) : 1;
    }
  }
  return 1;
}

// ImageOps.exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 cw, 7 transverse, 8 rotate 90 ccw.
Image orient(Image src, int o) {
  if (o <= 1) return src;
  int W = src.width, H = src.height;
  bool swap = o >= 5;
  Image out;
  out.width = swap ? H : W;
  out.height = swap ? W : H;
  out.rgb.resize(src.rgb.size());
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (o) {
        case 2: sx = W - 1 - x; break;
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;
        case 4: sy = H - 1 - y; break;
        case 5: sx = y; sy = x; break;
        case 6: sx = y; sy = H - 1 - x; break;
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;
        case 8: sx = W - 1 - y; sy = x; break;
      }
      std::memcpy(&out.rgb[(size_t(y) * out.width + x) * 3], &src.rgb[(size_t(sy) * W + sx) * 3], 3);
    }
  return out;
}

// Image.alpha_composite over an opaque white canvas (Pillow's fixed-point formula, PRECISION_BITS 7).
void composite_white(const unsigned char* rgba, unsigned char* rgb) {
  unsigned a = rgba[3];
  if (a == 0) { rgb[0] = rgb[1] = rgb[2] = 255; return; }
  const unsigned P = 7;
  unsigned blend = 255 * (255 - a);
  unsigned outa255 = a * 255 + blend;
  unsigned coef1 = a * 255 * 255 * (1u << P) / outa255;
  unsigned coef2 = 255 * (1u << P) - coef1;
  for (int c = 0; c < 3; ++c) {
    unsigned t = rgba[c] * coef1 + 255 * coef2 + (0x80u << P);
    rgb[c] = static_cast<unsigned char>(((((t >> 8) + t) >> 8)) >> P);
  }
}

// ---- JPEG --------------------------------------------------------------------------------------------------
struct JpegErr {
  jpeg_error_mgr mgr;
  jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
};

Image load_jpeg(FILE* f, const std::string& path) {
  jpeg_decompress_struct cinfo;
  JpegErr err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = [](j_common_ptr c) {
    auto* e = reinterpret_cast<JpegErr*>(c->err);
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
  };
  // Pillow refuses truncated files (they would decode as grey); everything else libjpeg warns about is ignored.
  err.mgr.emit_message = [](j_common_ptr c, int level) {
    auto* e = reinterpret_cast<JpegErr*>(c->err);
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
      std::snprintf(e->msg, sizeof e->msg, "image file is truncated");
      longjmp(e->jump, 1);
    }
  };
  Image img;
  std::vector<unsigned char> row;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    image_error(path, std::string("cannot decode the image (truncated or corrupt?): ") + err.msg);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(&cinfo, TRUE);
  int orientation = 1;
  for (auto* m = cinfo.marker_list; m; m = m->next)
    if (m->marker == JPEG_APP0 + 1) orientation = std::max(orientation, exif_orientation(m->data, m->data_length));
  bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  img.width = int(cinfo.output_width);
  img.height = int(cinfo.output_height);
  img.rgb.resize(size_t(img.width) * img.height * 3);
  row.resize(size_t(img.width) * cinfo.output_components);
  bool adobe_inverted = cmyk && cinfo.saw_Adobe_marker;
  while (cinfo.output_scanline < cinfo.output_height) {
    unsigned char* rp = row.data();
    size_t y = cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &rp, 1);
    unsigned char* out = &img.rgb[y * img.width * 3];
    if (!cmyk) { std::memcpy(out, rp, size_t(img.width) * 3); continue; }
    for (int x = 0; x < img.width; ++x) {  // Pillow: CMYK;I for Adobe files, then its cmyk2rgb
      unsigned v[4];
      for (int c = 0; c < 4; ++c) v[c] = adobe_inverted ? 255u - rp[x * 4 + c] : rp[x * 4 + c];
      unsigned nk = 255 - v[3];
      for (int c = 0; c < 3; ++c) {
        unsigned t = v[c] * nk + 128;
        int r = int(nk) - int((((t >> 8) + t) >> 8));
        out[x * 3 + c] = static_cast<unsigned char>(std::clamp(r, 0, 255));
      }
    }
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return orient(std::move(img), orientation);
}

// ---- PNG ---------------------------------------------------------------------------------------------------
Image load_png(FILE* f, const std::string& path) {
  // libpng prints to stderr unless given handlers: keep its message for ours, ignore its warnings.
  static thread_local std::string png_msg;
  png_msg.clear();
  png_structp png = png_create_read_struct(
      PNG_LIBPNG_VER_STRING, nullptr,
      [](png_structp p, png_const_charp m) { png_msg = m; png_longjmp(p, 1); }, [](png_structp, png_const_charp) {});
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) image_error(path, "cannot initialise libpng");
  Image img;
  std::vector<unsigned char> data;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    image_error(path, "cannot decode the image (truncated or corrupt?): " + png_msg);
  }
  png_init_io(png, f);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
  if (uint64_t(w) * h > 178956970ull) image_error(path, "image too large to decode safely");
  // Pillow's modes: palette -> P (RGBA when it has tRNS), grey -> L (or I;16 at 16 bits, scaled by 255/65535),
  // 16-bit colour -> the high byte; tRNS of grey/RGB images is not applied (to_rgb ignores it there).
  bool grey16 = depth == 16 && type == PNG_COLOR_TYPE_GRAY;
  bool palette_alpha = type == PNG_COLOR_TYPE_PALETTE && png_get_valid(png, info, PNG_INFO_tRNS);
  if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (palette_alpha) png_set_tRNS_to_alpha(png);
  if ((type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16 && !grey16) png_set_strip_16(png);
  if (grey16) png_set_swap(png);  // host order 16-bit samples
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int channels = png_get_channels(png, info);
  size_t rowbytes = png_get_rowbytes(png, info);
  data.resize(rowbytes * h);
  rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) rows[y] = data.data() + y * rowbytes;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  img.width = int(w);
  img.height = int(h);
  img.rgb.resize(size_t(w) * h * 3);
  for (size_t y = 0; y < h; ++y)
    for (size_t x = 0; x < w; ++x) {
      unsigned char* o = &img.rgb[(y * w + x) * 3];
      const unsigned char* p = rows[y] + x * size_t(channels) * (grey16 ? 2 : 1);
      if (grey16) {
        uint16_t v;
        std::memcpy(&v, p, 2);
        o[0] = o[1] = o[2] = static_cast<unsigned char>(std::clamp(std::nearbyint(v * (255.0 / 65535.0)), 0.0, 255.0));
      } else if (channels == 1) {
        o[0] = o[1] = o[2] = p[0];
      } else if (channels == 2) {
        unsigned char rgba[4] = {p[0], p[0], p[0], p[1]};
        composite_white(rgba, o);
      } else if (channels == 3) {
        std::memcpy(o, p, 3);
      } else {
        composite_white(p, o);
      }
    }
  return img;
}

}  // namespace

Image load_image(const std::string& path) {
  File file;
  file.f = std::fopen(path.c_str(), "rb");
  if (!file.f) {
    if (errno == ENOENT) image_error(path, "image not found");
    if (errno == EISDIR) image_error(path, "is a directory, expected an image file");
    image_error(path, std::string("cannot open: ") + std::strerror(errno));
  }
  unsigned char magic[8] = {0};
  size_t got = std::fread(magic, 1, 8, file.f);
  if (got == 0 && std::ferror(file.f)) image_error(path, "is a directory or unreadable, expected an image file");
  std::rewind(file.f);
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return load_jpeg(file.f, path);
  if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) return load_png(file.f, path);
  image_error(path, "not a recognised image format (JPEG and PNG are supported)");
}

// ---- Pillow's resampling (libImaging/Resample.c): separable, horizontal pass first, 22-bit fixed point --------
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output pixel: first input index, tap count, and ksize fixed-point weights.
int coefficients(int in_size, int out_size, std::vector<int>& bounds, std::vector<int32_t>& kk) {
  double scale = double(in_size) / out_size, filterscale = std::max(scale, 1.0);
  double support = 2.0 * filterscale;
  int ksize = int(std::ceil(support)) * 2 + 1;
  bounds.assign(size_t(out_size) * 2, 0);
  kk.assign(size_t(out_size) * ksize, 0);
  std::vector<double> k(static_cast<size_t>(ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
    int xmin = std::max(int(center - support + 0.5), 0);
    int xmax = std::min(int(center + support + 0.5), in_size) - xmin;
    for (int x = 0; x < xmax; ++x) ww += (k[size_t(x)] = bicubic((x + xmin - center + 0.5) * ss));
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? k[size_t(x)] / ww : k[size_t(x)];
      kk[size_t(xx) * ksize + x] = int32_t(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    bounds[size_t(xx) * 2] = xmin;
    bounds[size_t(xx) * 2 + 1] = xmax;
  }
  return ksize;
}

inline unsigned char clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<unsigned char>(v >> kPrecisionBits);
}

}  // namespace

Image resize_bicubic(const Image& img, int width, int height) {
  if (width < 1 || height < 1) throw Error(Error::Kind::Argument, "resize: size must be positive");
  if (width == img.width && height == img.height) return img;
  std::vector<int> bh, bv;
  std::vector<int32_t> kh, kv;
  int ksh = coefficients(img.width, width, bh, kh);
  int ksv = coefficients(img.height, height, bv, kv);
  const Image* src = &img;
  Image tmp;
  int y_first = 0;
  if (width != img.width) {
    // only the rows the vertical pass reads
    y_first = bv[0];
    int y_last = bv[size_t(height) * 2 - 2] + bv[size_t(height) * 2 - 1];
    if (height == img.height) { y_first = 0; y_last = img.height; }
    tmp.width = width;
    tmp.height = y_last - y_first;
    tmp.rgb.resize(size_t(tmp.width) * tmp.height * 3);
    for (int y = 0; y < tmp.height; ++y) {
      const unsigned char* in = &img.rgb[size_t(y + y_first) * img.width * 3];
      unsigned char* out = &tmp.rgb[size_t(y) * width * 3];
      for (int xx = 0; xx < width; ++xx) {
        int xmin = bh[size_t(xx) * 2], xmax = bh[size_t(xx) * 2 + 1];
        const int32_t* k = &kh[size_t(xx) * ksh];
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < xmax; ++x) {
          const unsigned char* p = in + size_t(x + xmin) * 3;
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        out[xx * 3] = clip8(s0);
        out[xx * 3 + 1] = clip8(s1);
        out[xx * 3 + 2] = clip8(s2);
      }
    }
    src = &tmp;
  }
  if (height == img.height) return tmp;
  Image out;
  out.width = width;
  out.height = height;
  out.rgb.resize(size_t(width) * height * 3);
  for (int yy = 0; yy < height; ++yy) {
    int ymin = bv[size_t(yy) * 2] - y_first, ymax = bv[size_t(yy) * 2 + 1];
    const int32_t* k = &kv[size_t(yy) * ksv];
    unsigned char* o = &out.rgb[size_t(yy) * width * 3];
    for (int xx = 0; xx < width * 3; ++xx) {
      int32_t s = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < ymax; ++y) s += src->rgb[size_t(y + ymin) * width * 3 + xx] * k[y];
      o[xx] = clip8(s);
    }
  }
  return out;
}

std::vector<float> preprocess(const Image& img, const PixelInput& p) {
  if (img.width < 1 || img.height < 1 || img.rgb.size() != size_t(img.width) * img.height * 3)
    throw Error(Error::Kind::Argument, "preprocess: not an RGB image");
  Image r;
  int x0 = 0, y0 = 0, S = p.size;
  if (p.mode == "resize") {
    r = resize_bicubic(img, p.size, p.size);
  } else {  // clip: shortest side to size (the long side int(size * long / short)), center crop
    int w = img.width, h = img.height;
    bool portrait = w <= h;
    int shorter = portrait ? w : h, longer = portrait ? h : w;
    int new_long = int(double(int64_t(p.size) * longer) / double(shorter));
    r = resize_bicubic(img, portrait ? p.size : new_long, portrait ? new_long : p.size);
    S = p.crop ? p.crop : p.size;
    y0 = (r.height - S) / 2;
    x0 = (r.width - S) / 2;
    if (y0 < 0 || x0 < 0)
      throw Error(Error::Kind::Argument, "image " + std::to_string(r.width) + "x" + std::to_string(r.height) +
                                             " is smaller than the " + std::to_string(S) + "x" + std::to_string(S) + " crop");
  }
  std::vector<float> out(3 * size_t(S) * S);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        unsigned char u = r.rgb[(size_t(y + y0) * r.width + size_t(x + x0)) * 3 + size_t(c)];
        // clip: transformers rescales in float64 then casts; resize: torchvision's float32 / 255
        float v = p.mode == "clip" ? float(double(u) * (1.0 / 255)) : float(u) / 255.0f;
        float centred = v - p.mean[c];
        out[(size_t(c) * S + size_t(y)) * S + size_t(x)] = centred / p.std[c];
      }
  return out;
}

}  // namespace vrwkv
