// Dense and quantized linear kernels for CPU: y = x · Wᵀ (+ bias), W in one of four layouts, each built by
// prunekit/run/quant_pack.py into one uint8 tensor (see read_qpacked):
//   gemv:     the float weight as it is (float32, bfloat16 or float16), (rows, cols) row-major. The same
//             code quality as the sparse layouts with no mask, so a sparse speedup can be quoted against a
//             GEMV as good as ours (torch's streams well below the memory bandwidth at batch 1).
//   qdense:   integer levels (int8, or int4 two per byte) of every weight, rows padded to 64 columns.
//             int4: per 64-column block, byte j holds column j (low nibble) and column j + 32 (high).
//   qbitmask: a 16-bit mask word per 16 columns and the kept weights' levels, row after row (row_ptr: byte
//             offsets). int4: each word's levels in order, low nibble first, padded to a whole byte.
//   qnm:      2:4: per 64-column block, 32 levels (int4: byte j holds level j and level j + 16) and one
//             64-bit word of 2-bit positions: level k sits at column 4·(k / 2) + its position, which is
//             bits 16·(k % 4) + 2·(k / 4) of the word (so one shift per 16-bit lane extracts it).
// Quantized weights are scale · (level − zero) per row and group of columns (float16 scale, uint8 zero);
// groups are a multiple of 64 columns. With float32 inputs the kernels compute exactly those float32
// weights (as quant/grid.py's dequantize does) and accumulate in float32; with bfloat16 inputs and
// AVX512_BF16, int4 levels become level − zero in bfloat16 (exact), one pairwise dot product per 32
// columns sums (level − zero) · x exactly in float32 per group, and the group's scale multiplies the sum.
// Either way y equals the dequantized dense product to float32 rounding. int4 weights come from a 16-entry
// table per group (one permute), the 2:4 inputs from one two-register permute, the bitmask's from an expand.
//
// AVX-512 kernels, AVX2 + FMA kernels (float32 arithmetic, and their tile decoding), and portable scalar code.
// Batches up to `small_batch` rows run these kernels; larger ones decode tiles of rows and use dense GEMM.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernel_common.h"

namespace {

using namespace prunekit;

enum Kind : int64_t { kDense = 0, kQDense = 1, kQBitmask = 2, kQNM = 3 };
constexpr int64_t kMagic = 0x31514B50;  // "PKQ1"
constexpr int64_t kHeaderBytes = 128;
constexpr int64_t kBlock = 64;     // columns per kernel step; rows of levels are padded to it
constexpr int64_t kLevelPad = 16;  // bytes after a bitmask layout's levels, so 16-byte loads stay inside

struct QArgs {
  const float* x;        // (batch, xs) float32, zero past cols
  const uint16_t* xb;    // (batch, xs) bfloat16, zero past cols (the bf16 dot-product paths)
  int64_t xs;
  void* y;
  int y_dtype;
  const float* bias;
  int64_t batch, rows, cols, colsb, blocks, groups, gb;  // colsb: cols padded to kBlock; gb: blocks per group
  int64_t kind;
  int dtype, bits;
  const void* values;      // gemv
  const uint8_t* levels;   // quantized
  const uint16_t* scale;   // (rows, groups) float16 bits
  const uint8_t* zero;     // (rows, groups)
  const int64_t* row_ptr;  // qbitmask (rows + 1)
  const uint16_t* mask;    // qbitmask (rows, colsb / 16)
  const uint64_t* idx;     // qnm (rows, blocks)
};

inline float half_bits(uint16_t h) { return static_cast<float>(c10::Half(h, c10::Half::from_bits())); }

inline float dense_value(const QArgs& a, int64_t i) {
  if (a.dtype == kF32) return static_cast<const float*>(a.values)[i];
  uint16_t h = static_cast<const uint16_t*>(a.values)[i];
  if (a.dtype == kF16) return half_bits(h);
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Level k's position in its group of four, from its block's qnm word.
inline uint32_t nm_position(uint64_t word, int k) { return word >> (16 * (k % 4) + 2 * (k / 4)) & 3; }

// Level j of a block's int4 bytes, where byte j holds levels j and j + half.
inline uint32_t nibble(const uint8_t* bytes, int j, int half) { return bytes[j % half] >> (j < half ? 0 : 4) & 15; }

// Row r's weights as float32 into out (colsb entries, zero past cols): the scalar kernel's weights and
// the large-batch tiles.
void decode_row(const QArgs& a, int64_t r, float* out) {
  std::fill(out, out + a.colsb, 0.f);
  if (a.kind == kDense) {
    for (int64_t c = 0; c < a.cols; ++c) out[c] = dense_value(a, r * a.cols + c);
    return;
  }
  int64_t v = a.kind == kQBitmask ? a.row_ptr[r] : 0;  // bitmask: byte offset of the row's levels
  for (int64_t g = 0; g < a.groups; ++g) {
    const float s = half_bits(a.scale[r * a.groups + g]), z = a.zero[r * a.groups + g];
    auto deq = [&](uint32_t q) { return s * (static_cast<float>(q) - z); };
    for (int64_t k = g * a.gb; k < std::min(a.blocks, (g + 1) * a.gb); ++k) {
      float* o = out + kBlock * k;
      if (a.kind == kQDense) {
        const uint8_t* lv = a.levels + (r * a.colsb + kBlock * k) * a.bits / 8;
        for (int j = 0; j < kBlock; ++j) o[j] = deq(a.bits == 8 ? lv[j] : nibble(lv, j, 32));
      } else if (a.kind == kQNM) {
        const uint8_t* lv = a.levels + (r * a.colsb / 2 + 32 * k) * a.bits / 8;
        const uint64_t word = a.idx[r * a.blocks + k];
        for (int j = 0; j < 32; ++j) o[4 * (j / 2) + nm_position(word, j)] = deq(a.bits == 8 ? lv[j] : nibble(lv, j, 16));
      } else {
        for (int64_t c = 4 * k; c < 4 * k + 4; ++c) {
          uint32_t m = a.mask[r * (a.colsb / 16) + c];
          int n = 0;
          for (; m; m &= m - 1, ++n) {
            uint32_t q = a.bits == 8 ? a.levels[v + n] : a.levels[v + n / 2] >> (n & 1 ? 4 : 0) & 15;
            out[16 * c + __builtin_ctz(m)] = deq(q);
          }
          v += a.bits == 8 ? n : (n + 1) / 2;
        }
      }
    }
  }
}

void rows_scalar(const QArgs& a, int64_t r0, int64_t r1) {
  Scratch<float> w;
  w.resize_for_overwrite(a.colsb);
  for (int64_t r = r0; r < r1; ++r) {
    decode_row(a, r, w.data());
    for (int64_t b = 0; b < a.batch; ++b) {
      const float* x = a.x + b * a.xs;
      float acc = 0.f;
      for (int64_t c = 0; c < a.cols; ++c) acc += w[c] * x[c];
      put_value(a.y, a.y_dtype, b * a.rows + r, acc + (a.bias ? a.bias[r] : 0.f));
    }
  }
}

// ---------------------------------------------------------------- AVX-512, float32 inputs

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma,popcnt")))
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,f16c,fma,popcnt")))

// Levels 1 KB ahead into L1: the hardware prefetcher alone leaves these kernels waiting on memory (they
// consume bytes more slowly than a float GEMV, so it runs less far ahead). Measured on 4096x4096 int4:
// qdense 1118 → 632 µs, 2:4 1012 → 610 µs.
inline void prefetch_levels(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p) + 1024, _MM_HINT_T0); }

// The 16 int4 levels' weights of row r's group g: table[q] = scale · (q − zero).
AVX512 inline __m512 int4_table(const QArgs& a, int64_t r, int64_t g) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 z = _mm512_set1_ps(static_cast<float>(a.zero[r * a.groups + g]));
  return _mm512_mul_ps(_mm512_sub_ps(iota, z), _mm512_set1_ps(_cvtsh_ss(a.scale[r * a.groups + g])));
}

AVX512 inline __m512i bytes16(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// Row r's group g: its int4 table, and its zero point and scale for int8 levels.
struct Group {
  __m512 table;
  __m512i zero;
  __m512 scale;
  AVX512 Group(const QArgs& a, int64_t r, int64_t g)
      : table(a.bits == 4 ? int4_table(a, r, g) : _mm512_setzero_ps()),
        zero(_mm512_set1_epi32(a.zero[r * a.groups + g])),
        scale(_mm512_set1_ps(_cvtsh_ss(a.scale[r * a.groups + g]))) {}
};

// int8 levels (16, as int32 lanes) to weights: scale · (level − zero).
AVX512 inline __m512 int8_weights(__m512i q, __m512i zero, __m512 scale) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, zero)), scale);
}

// A block's 32 qnm input columns, as 16-bit lanes: 4·(k / 2) + position of level k.
AVX512 inline __m512i nm_columns16(uint64_t word) {
  const __m512i base = _mm512_set_epi16(60, 60, 56, 56, 52, 52, 48, 48, 44, 44, 40, 40, 36, 36, 32, 32,
                                        28, 28, 24, 24, 20, 20, 16, 16, 12, 12, 8, 8, 4, 4, 0, 0);
  const __m512i shift = _mm512_set_epi16(14, 14, 14, 14, 12, 12, 12, 12, 10, 10, 10, 10, 8, 8, 8, 8,
                                         6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
  __m512i pos = _mm512_and_si512(_mm512_srlv_epi16(_mm512_set1_epi64(static_cast<int64_t>(word)), shift), _mm512_set1_epi16(3));
  return _mm512_add_epi16(base, pos);
}

// Accumulators for BT inputs, four per input to hide the FMA latency.
template <int BT>
struct Acc {
  __m512 s[4][BT];
  AVX512 Acc() {
    for (int i = 0; i < 4; ++i)
      for (int t = 0; t < BT; ++t) s[i][t] = _mm512_setzero_ps();
  }
  // 16 columns from column c on: w · x[c, c + 16), into accumulator i
  AVX512 inline void fma(const QArgs& a, int64_t b0, int64_t c, __m512 w, int i) {
    for (int t = 0; t < BT; ++t) s[i][t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(a.x + (b0 + t) * a.xs + c), s[i][t]);
  }
  // w times the inputs at 16 columns `col` (< 32) of x[c, c + 32)
  AVX512 inline void fma_gather(const QArgs& a, int64_t b0, int64_t c, __m512 w, __m512i col, int i) {
    for (int t = 0; t < BT; ++t) {
      const float* x = a.x + (b0 + t) * a.xs + c;
      s[i][t] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(_mm512_loadu_ps(x), col, _mm512_loadu_ps(x + 16)), s[i][t]);
    }
  }
  AVX512 inline void finish(const QArgs& a, int64_t r, int64_t b0) {
    float bias = a.bias ? a.bias[r] : 0.f;
    for (int t = 0; t < BT; ++t) {
      __m512 sum = _mm512_add_ps(_mm512_add_ps(s[0][t], s[1][t]), _mm512_add_ps(s[2][t], s[3][t]));
      put_value(a.y, a.y_dtype, (b0 + t) * a.rows + r, _mm512_reduce_add_ps(sum) + bias);
    }
  }
};

// 16 gemv values from i on (n < 16: only n, the rest zero), as float32.
AVX512 inline __m512 dense16(const QArgs& a, int64_t i, int64_t n) {
  __mmask16 k = n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : static_cast<__mmask16>((1u << n) - 1);
  if (a.dtype == kF32) return _mm512_maskz_loadu_ps(k, static_cast<const float*>(a.values) + i);
  __m256i h = _mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(a.values) + i);
  if (a.dtype == kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

template <int BT>
AVX512 void dense_row(const QArgs& a, int64_t r, int64_t b0) {
  Acc<BT> acc;
  const int64_t base = r * a.cols;
  for (int64_t c = 0; c < a.cols; c += kBlock)
    for (int i = 0; i < 4; ++i) acc.fma(a, b0, c + 16 * i, dense16(a, base + c + 16 * i, a.cols - c - 16 * i), i);
  acc.finish(a, r, b0);
}

template <int BT>
AVX512 void qdense_row(const QArgs& a, int64_t r, int64_t b0) {
  Acc<BT> acc;
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    if (a.bits == 4) {
      const __m512 table = int4_table(a, r, g);
      const uint8_t* lv = a.levels + r * a.colsb / 2;
      for (; k < end; ++k) {
        prefetch_levels(lv + 32 * k);
        __m512i q0 = bytes16(lv + 32 * k), q1 = bytes16(lv + 32 * k + 16);  // columns 0-15 | 32-47, 16-31 | 48-63
        acc.fma(a, b0, 64 * k, _mm512_permutexvar_ps(q0, table), 0);
        acc.fma(a, b0, 64 * k + 16, _mm512_permutexvar_ps(q1, table), 1);
        acc.fma(a, b0, 64 * k + 32, _mm512_permutexvar_ps(_mm512_srli_epi32(q0, 4), table), 2);
        acc.fma(a, b0, 64 * k + 48, _mm512_permutexvar_ps(_mm512_srli_epi32(q1, 4), table), 3);
      }
    } else {
      const __m512i z = _mm512_set1_epi32(a.zero[r * a.groups + g]);
      const __m512 s = _mm512_set1_ps(_cvtsh_ss(a.scale[r * a.groups + g]));
      const uint8_t* lv = a.levels + r * a.colsb;
      for (; k < end; ++k) {
        prefetch_levels(lv + 64 * k);
        for (int i = 0; i < 4; ++i) acc.fma(a, b0, 64 * k + 16 * i, int8_weights(bytes16(lv + 64 * k + 16 * i), z, s), i);
      }
    }
  }
  acc.finish(a, r, b0);
}

// A qnm block's 32 weights in column order: levels 0-15 (columns 0-31) into w0, 16-31 (columns 32-63) into w1.
AVX512 inline void nm_weights(const QArgs& a, int64_t r, int64_t k, const Group& grid, __m512& w0, __m512& w1) {
  const uint8_t* lv = a.levels + (r * a.colsb / 2 + 32 * k) * a.bits / 8;
  prefetch_levels(lv);
  if (a.bits == 4) {
    __m512i q = bytes16(lv);
    w0 = _mm512_permutexvar_ps(q, grid.table);
    w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), grid.table);
  } else {
    w0 = int8_weights(bytes16(lv), grid.zero, grid.scale);
    w1 = int8_weights(bytes16(lv + 16), grid.zero, grid.scale);
  }
}

template <int BT>
AVX512 void qnm_row(const QArgs& a, int64_t r, int64_t b0) {
  Acc<BT> acc;
  const uint64_t* words = a.idx + r * a.blocks;
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const Group grid(a, r, g);
    for (; k < end; ++k) {
      prefetch_levels(reinterpret_cast<const uint8_t*>(words + k));
      __m512i col = nm_columns16(words[k]);  // levels 0-15 gather from columns 0-31, levels 16-31 from 32-63
      __m512i col0 = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(col)), col1 = _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(col, 1));
      __m512 w0, w1;
      nm_weights(a, r, k, grid, w0, w1);
      acc.fma_gather(a, b0, 64 * k, w0, col0, 0);
      acc.fma_gather(a, b0, 64 * k + 32, w1, col1, 1);  // vpermt2ps reads 5 index bits: col − 32
    }
  }
  acc.finish(a, r, b0);
}

// One 16-column word of a bitmask row: its kept levels from byte v on (v advances past them), expanded.
AVX512 inline __m512 bitmask_int4(const uint8_t* lv, int64_t& v, __mmask16 m, __m512 table) {
  const __m128i pairs = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i alternate = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
  prefetch_levels(lv + v);
  __m128i b = _mm_shuffle_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(lv + v)), pairs);
  v += (_mm_popcnt_u32(m) + 1) >> 1;
  return _mm512_maskz_expand_ps(m, _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_cvtepu8_epi32(b), alternate), table));
}

AVX512 inline __m512 bitmask_int8(const uint8_t* lv, int64_t& v, __mmask16 m, __m512i z, __m512 s) {
  prefetch_levels(lv + v);
  __m512 w = _mm512_maskz_expand_ps(m, int8_weights(bytes16(lv + v), z, s));
  v += _mm_popcnt_u32(m);
  return w;
}

AVX512 inline __m512 bitmask_word(const QArgs& a, int64_t& v, __mmask16 m, const Group& grid) {
  return a.bits == 4 ? bitmask_int4(a.levels, v, m, grid.table) : bitmask_int8(a.levels, v, m, grid.zero, grid.scale);
}

template <int BT>
AVX512 void qbitmask_row(const QArgs& a, int64_t r, int64_t b0) {
  Acc<BT> acc;
  const uint16_t* mrow = a.mask + r * (a.colsb / 16);
  int64_t v = a.row_ptr[r];
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const Group grid(a, r, g);
    for (; k < end; ++k)
      for (int i = 0; i < 4; ++i) {
        __mmask16 m = mrow[4 * k + i];
        acc.fma(a, b0, 64 * k + 16 * i, bitmask_word(a, v, m, grid), i);
      }
  }
  acc.finish(a, r, b0);
}

// The column mask of each 16-column quarter of a qnm block (bit c: column c holds a stored level), from its
// position word: each level sets bit (column % 16) in its 16-bit lane, and the eight lanes of a quarter
// (one 128-bit lane of the register) are OR-ed together.
AVX512 inline void nm_masks(uint64_t word, __mmask16 m[4]) {
  __m512i bits = _mm512_sllv_epi16(_mm512_set1_epi16(1), _mm512_and_si512(nm_columns16(word), _mm512_set1_epi16(15)));
  bits = _mm512_or_si512(bits, _mm512_bsrli_epi128(bits, 8));
  bits = _mm512_or_si512(bits, _mm512_bsrli_epi128(bits, 4));
  bits = _mm512_or_si512(bits, _mm512_bsrli_epi128(bits, 2));
  alignas(64) uint16_t lanes[32];
  _mm512_store_si512(lanes, bits);
  for (int i = 0; i < 4; ++i) m[i] = lanes[8 * i];
}

// Row r's weights as float32 into out (colsb entries), vectorized: the large-batch tiles (the scalar
// decode_row costs more than the GEMM it feeds).
AVX512 void decode_row_avx512(const QArgs& a, int64_t r, float* out) {
  int64_t v = a.kind == kQBitmask ? a.row_ptr[r] : 0;
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const Group grid(a, r, g);
    for (; k < end; ++k) {
      float* o = out + kBlock * k;
      if (a.kind == kQDense && a.bits == 4) {
        const uint8_t* lv = a.levels + r * a.colsb / 2 + 32 * k;
        __m512i q0 = bytes16(lv), q1 = bytes16(lv + 16);
        _mm512_storeu_ps(o, _mm512_permutexvar_ps(q0, grid.table));
        _mm512_storeu_ps(o + 16, _mm512_permutexvar_ps(q1, grid.table));
        _mm512_storeu_ps(o + 32, _mm512_permutexvar_ps(_mm512_srli_epi32(q0, 4), grid.table));
        _mm512_storeu_ps(o + 48, _mm512_permutexvar_ps(_mm512_srli_epi32(q1, 4), grid.table));
      } else if (a.kind == kQDense) {
        const uint8_t* lv = a.levels + r * a.colsb + 64 * k;
        for (int i = 0; i < 4; ++i) _mm512_storeu_ps(o + 16 * i, int8_weights(bytes16(lv + 16 * i), grid.zero, grid.scale));
      } else if (a.kind == kQNM) {
        __m512 w0, w1;
        nm_weights(a, r, k, grid, w0, w1);
        __mmask16 m[4];
        nm_masks(a.idx[r * a.blocks + k], m);
        const __m512 src[4] = {w0, _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(w0), _mm512_castps_si512(w0), 8)),
                               w1, _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(w1), _mm512_castps_si512(w1), 8))};
        for (int i = 0; i < 4; ++i) _mm512_storeu_ps(o + 16 * i, _mm512_maskz_expand_ps(m[i], src[i]));
      } else {
        const uint16_t* mrow = a.mask + r * (a.colsb / 16);
        for (int i = 0; i < 4; ++i) {
          __mmask16 m = mrow[4 * k + i];
          _mm512_storeu_ps(o + 16 * i, bitmask_word(a, v, m, grid));
        }
      }
    }
  }
}

// ---------------------------------------------------------------- AVX512_BF16, bfloat16 inputs

// n (a multiple of 16) float32 values rounded to bf16, to nearest even (as Tensor.to(torch.bfloat16)).
AVX512BF16 void to_bf16(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(in + i)));
}

// bf16 weights and bf16 inputs: 32 columns per pairwise dot product (products exact, float32 sums). The
// weights 2 KB ahead into L1: measured 1.13-1.31x on this Xeon (weights rotated past the cache).
AVX512BF16 void dense_row_bf16dp(const QArgs& a, int64_t r, int64_t b) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
  const uint16_t* w = static_cast<const uint16_t*>(a.values) + r * a.cols;
  const uint16_t* x = a.xb + b * a.xs;
  const int64_t full = a.cols / 32;
  int64_t k = 0;
  for (; k + 2 <= full; k += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(w + 32 * k) + 2048, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + 32 * k) + 2048 + 64, _MM_HINT_T0);
    acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_loadu_si512(w + 32 * k), (__m512bh)_mm512_loadu_si512(x + 32 * k));
    acc1 = _mm512_dpbf16_ps(acc1, (__m512bh)_mm512_loadu_si512(w + 32 * k + 32), (__m512bh)_mm512_loadu_si512(x + 32 * k + 32));
  }
  for (; 32 * k < a.cols; ++k) {
    int64_t left = a.cols - 32 * k;
    __mmask32 m = left >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << left) - 1);
    acc0 = _mm512_dpbf16_ps(acc0, (__m512bh)_mm512_maskz_loadu_epi16(m, w + 32 * k), (__m512bh)_mm512_loadu_si512(x + 32 * k));
  }
  put_value(a.y, a.y_dtype, b * a.rows + r, _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + (a.bias ? a.bias[r] : 0.f));
}

// level − zero for the 16 int4 levels, as bfloat16 (exact: small integers), twice (32 lanes): a vpermw
// table that ignores bit 4 of its index.
AVX512BF16 inline __m512i int4_table_bf16(const QArgs& a, int64_t r, int64_t g) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m256i half = (__m256i)_mm512_cvtneps_pbh(_mm512_sub_ps(iota, _mm512_set1_ps(static_cast<float>(a.zero[r * a.groups + g]))));
  return _mm512_inserti64x4(_mm512_castsi256_si512(half), half, 1);
}

// One 2:4 int4 block with bf16 inputs: 32 levels from 16 bytes (both halves of the register hold them; the
// upper ones shift to their high nibbles), 32 inputs gathered from the block's 64 by one vpermt2w.
template <int BT>
AVX512BF16 inline void nm4_block_bf16(const QArgs& a, int64_t r, int64_t b0, int64_t k, const uint8_t* lv, __m512i table, __m512* sum) {
  const __m512i nibble_shift = _mm512_set_epi16(4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  const uint8_t* p = lv + 16 * k;
  prefetch_levels(p);
  prefetch_levels(reinterpret_cast<const uint8_t*>(a.idx + r * a.blocks + k));
  __m512i q = _mm512_cvtepu8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  __m512i w = _mm512_permutexvar_epi16(_mm512_srlv_epi16(q, nibble_shift), table);
  __m512i col = nm_columns16(a.idx[r * a.blocks + k]);
  for (int t = 0; t < BT; ++t) {
    const uint16_t* x = a.xb + (b0 + t) * a.xs + 64 * k;
    __m512i xg = _mm512_permutex2var_epi16(_mm512_loadu_si512(x), col, _mm512_loadu_si512(x + 32));
    sum[t] = _mm512_dpbf16_ps(sum[t], (__m512bh)w, (__m512bh)xg);
  }
}

// One int4 qdense block with bf16 inputs: 64 columns from 32 bytes (low nibbles: columns 0-31, high: 32-63).
template <int BT>
AVX512BF16 inline void qdense4_block_bf16(const QArgs& a, int64_t b0, int64_t k, const uint8_t* lv, __m512i table,
                                          __m512* sum0, __m512* sum1) {
  const uint8_t* p = lv + 32 * k;
  prefetch_levels(p);
  __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  __m512i w0 = _mm512_permutexvar_epi16(q, table), w1 = _mm512_permutexvar_epi16(_mm512_srli_epi16(q, 4), table);
  for (int t = 0; t < BT; ++t) {
    const uint16_t* x = a.xb + (b0 + t) * a.xs + 64 * k;
    sum0[t] = _mm512_dpbf16_ps(sum0[t], (__m512bh)w0, (__m512bh)_mm512_loadu_si512(x));
    sum1[t] = _mm512_dpbf16_ps(sum1[t], (__m512bh)w1, (__m512bh)_mm512_loadu_si512(x + 32));
  }
}

// int4 qdense and qnm with bf16 inputs: per group, Σ (level − zero) · x in float32 by pairwise dot products
// (two chains), then scale · that sum into the row's total. BT inputs share each decoded block.
template <int BT, bool NM>
AVX512BF16 void int4_row_bf16dp(const QArgs& a, int64_t r, int64_t b0) {
  __m512 total[BT];
  for (int t = 0; t < BT; ++t) total[t] = _mm512_setzero_ps();
  const uint8_t* lv = a.levels + r * a.colsb / (NM ? 4 : 2);
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const __m512i table = int4_table_bf16(a, r, g);
    __m512 sum0[BT], sum1[BT], sum2[BT], sum3[BT];
    for (int t = 0; t < BT; ++t) sum0[t] = sum1[t] = sum2[t] = sum3[t] = _mm512_setzero_ps();
    if (NM) {  // four blocks per step, one dot-product chain each (their latency, not throughput, bounds one)
      for (; k + 4 <= end; k += 4) {
        nm4_block_bf16<BT>(a, r, b0, k, lv, table, sum0);
        nm4_block_bf16<BT>(a, r, b0, k + 1, lv, table, sum1);
        nm4_block_bf16<BT>(a, r, b0, k + 2, lv, table, sum2);
        nm4_block_bf16<BT>(a, r, b0, k + 3, lv, table, sum3);
      }
      for (; k < end; ++k) nm4_block_bf16<BT>(a, r, b0, k, lv, table, sum0);
    } else {  // two blocks per step, two chains each
      for (; k + 2 <= end; k += 2) {
        qdense4_block_bf16<BT>(a, b0, k, lv, table, sum0, sum1);
        qdense4_block_bf16<BT>(a, b0, k + 1, lv, table, sum2, sum3);
      }
      for (; k < end; ++k) qdense4_block_bf16<BT>(a, b0, k, lv, table, sum0, sum1);
    }
    const __m512 s = _mm512_set1_ps(_cvtsh_ss(a.scale[r * a.groups + g]));
    for (int t = 0; t < BT; ++t)
      total[t] = _mm512_fmadd_ps(_mm512_add_ps(_mm512_add_ps(sum0[t], sum1[t]), _mm512_add_ps(sum2[t], sum3[t])), s, total[t]);
  }
  float bias = a.bias ? a.bias[r] : 0.f;
  for (int t = 0; t < BT; ++t) put_value(a.y, a.y_dtype, (b0 + t) * a.rows + r, _mm512_reduce_add_ps(total[t]) + bias);
}

// Rows [r0, r1) of every input: tiles of 4 inputs share each decoded block, then single inputs.
#define ROWS_OF(NAME, TARGET, ...)                                    \
  TARGET void NAME(const QArgs& a, int64_t r0, int64_t r1) {         \
    for (int64_t r = r0; r < r1; ++r) {                                \
      int64_t b = 0;                                                   \
      for (; b + 4 <= a.batch; b += 4) __VA_ARGS__<4>(a, r, b);        \
      for (; b < a.batch; ++b) __VA_ARGS__<1>(a, r, b);                \
    }                                                                  \
  }
ROWS_OF(dense_rows, AVX512, dense_row)
ROWS_OF(qdense_rows, AVX512, qdense_row)
ROWS_OF(qnm_rows, AVX512, qnm_row)
ROWS_OF(qbitmask_rows, AVX512, qbitmask_row)

template <int BT>
AVX512BF16 void qdense4_row_bf16dp(const QArgs& a, int64_t r, int64_t b0) { int4_row_bf16dp<BT, false>(a, r, b0); }
template <int BT>
AVX512BF16 void qnm4_row_bf16dp(const QArgs& a, int64_t r, int64_t b0) { int4_row_bf16dp<BT, true>(a, r, b0); }
ROWS_OF(qdense4_rows_bf16dp, AVX512BF16, qdense4_row_bf16dp)
ROWS_OF(qnm4_rows_bf16dp, AVX512BF16, qnm4_row_bf16dp)

AVX512BF16 void dense_rows_bf16dp(const QArgs& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t b = 0; b < a.batch; ++b) dense_row_bf16dp(a, r, b);
}

// ---------------------------------------------------------------- AVX2 + FMA, float32 inputs

// 8 levels (int32 lanes) to weights: scale · (level − zero), as dequantize computes them (the difference is
// exact in int32 and in float32, so the one rounding is the product's).
AVX2 inline __m256 deq8(__m256i q, __m256i zero, __m256 scale) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zero)), scale);
}

AVX2 inline __m256i bytes8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }

// 8 int4 levels from nibble `o` on of the bytes at p.
AVX2 inline __m256i nibbles8(const uint8_t* p, int64_t o) {
  uint64_t u;
  std::memcpy(&u, p + o / 2, 8);
  const __m256i shift = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  __m256i q = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(u >> (4 * (o & 1)))));
  return _mm256_and_si256(_mm256_srlv_epi32(q, shift), _mm256_set1_epi32(15));
}

// A qnm block's levels 8i..8i+7 (int8: 32 bytes a block; int4: 16, byte j holding levels j and j + 16).
AVX2 inline __m256i nm_levels8(const uint8_t* block, int bits, int i) {
  if (bits == 8) return bytes8(block + 8 * i);
  return i < 2 ? _mm256_and_si256(bytes8(block + 8 * i), _mm256_set1_epi32(15)) : _mm256_srli_epi32(bytes8(block + 8 * (i - 2)), 4);
}

struct Grid8 {
  __m256i zero;
  __m256 scale;
  AVX2 Grid8(const QArgs& a, int64_t r, int64_t g)
      : zero(_mm256_set1_epi32(a.zero[r * a.groups + g])), scale(_mm256_set1_ps(_cvtsh_ss(a.scale[r * a.groups + g]))) {}
};

// Accumulators for BT inputs: four per input for one input, two each for a tile (16 ymm registers in all).
template <int BT>
struct Acc8 {
  static constexpr int N = BT == 1 ? 4 : 2;
  __m256 s[N][BT];
  AVX2 Acc8() {
    for (int i = 0; i < N; ++i)
      for (int t = 0; t < BT; ++t) s[i][t] = _mm256_setzero_ps();
  }
  // 8 columns from column c on: w · x[c, c + 8), into accumulator i (mod N)
  AVX2 inline void fma(const QArgs& a, int64_t b0, int64_t c, __m256 w, int i) {
    for (int t = 0; t < BT; ++t) s[i % N][t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(a.x + (b0 + t) * a.xs + c), s[i % N][t]);
  }
  AVX2 inline void finish(const QArgs& a, int64_t r, int64_t b0) {
    float bias = a.bias ? a.bias[r] : 0.f;
    for (int t = 0; t < BT; ++t) {
      __m256 sum = s[0][t];
      for (int i = 1; i < N; ++i) sum = _mm256_add_ps(sum, s[i][t]);
      put_value(a.y, a.y_dtype, (b0 + t) * a.rows + r, hsum8(sum) + bias);
    }
  }
};

// 8 gemv values from i on (n < 8: only n, the rest zero), as float32.
AVX2 inline __m256 dense8(const QArgs& a, int64_t i, int64_t n) {
  if (n < 8) {
    alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t j = 0; j < n; ++j) tmp[j] = dense_value(a, i + j);
    return _mm256_load_ps(tmp);
  }
  if (a.dtype == kF32) return _mm256_loadu_ps(static_cast<const float*>(a.values) + i);
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(a.values) + i));
  if (a.dtype == kBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

template <int BT>
AVX2 void dense_row_avx2(const QArgs& a, int64_t r, int64_t b0) {
  Acc8<BT> acc;
  for (int64_t c = 0; c < a.cols; c += 8) acc.fma(a, b0, c, dense8(a, r * a.cols + c, a.cols - c), static_cast<int>(c / 8));
  acc.finish(a, r, b0);
}

template <int BT>
AVX2 void qdense_row_avx2(const QArgs& a, int64_t r, int64_t b0) {
  Acc8<BT> acc;
  const uint8_t* lv = a.levels + r * a.colsb * a.bits / 8;
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const Grid8 grid(a, r, g);
    for (; k < end; ++k) {
      prefetch_levels(lv + 8 * a.bits * k);
      if (a.bits == 4) {
        for (int i = 0; i < 4; ++i) {  // bytes 8i..8i+7: columns 8i.. (low nibbles) and 32 + 8i.. (high)
          __m256i q = bytes8(lv + 32 * k + 8 * i);
          acc.fma(a, b0, 64 * k + 8 * i, deq8(_mm256_and_si256(q, _mm256_set1_epi32(15)), grid.zero, grid.scale), i);
          acc.fma(a, b0, 64 * k + 32 + 8 * i, deq8(_mm256_srli_epi32(q, 4), grid.zero, grid.scale), i + 1);
        }
      } else {
        for (int i = 0; i < 8; ++i) acc.fma(a, b0, 64 * k + 8 * i, deq8(bytes8(lv + 64 * k + 8 * i), grid.zero, grid.scale), i);
      }
    }
  }
  acc.finish(a, r, b0);
}

// qnm: levels 8i..8i+7 of a block sit in its columns [16i, 16i + 16), level 8i + j at 4·(j / 2) + its position;
// position bits 16·(j % 4) + 2·(2i + j / 4) of the block's word. x's 16 columns are gathered by two permutes.
template <int BT>
AVX2 void qnm_row_avx2(const QArgs& a, int64_t r, int64_t b0) {
  Acc8<BT> acc;
  const uint8_t* lv = a.levels + r * a.colsb / 2 * a.bits / 8;
  const uint64_t* words = a.idx + r * a.blocks;
  const __m256i base_shift = _mm256_setr_epi32(0, 16, 0, 16, 2, 18, 2, 18), base_col = _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12);
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const Grid8 grid(a, r, g);
    for (; k < end; ++k) {
      const uint8_t* p = lv + 4 * a.bits * k;  // 32 levels per block
      prefetch_levels(p);
      const uint64_t word = words[k];
      __m256i halves = _mm256_blend_epi32(_mm256_set1_epi32(static_cast<int>(word)), _mm256_set1_epi32(static_cast<int>(word >> 32)), 0xCC);
      for (int i = 0; i < 4; ++i) {
        __m256 w = deq8(nm_levels8(p, a.bits, i), grid.zero, grid.scale);
        __m256i pos = _mm256_and_si256(_mm256_srlv_epi32(halves, _mm256_add_epi32(base_shift, _mm256_set1_epi32(4 * i))), _mm256_set1_epi32(3));
        __m256i col = _mm256_add_epi32(base_col, pos);
        __m256 high = _mm256_castsi256_ps(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(7)));
        for (int t = 0; t < BT; ++t) {
          const float* x = a.x + (b0 + t) * a.xs + 64 * k + 16 * i;
          __m256 xg = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(x), col),
                                       _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 8), col), high);
          acc.s[i % Acc8<BT>::N][t] = _mm256_fmadd_ps(w, xg, acc.s[i % Acc8<BT>::N][t]);
        }
      }
    }
  }
  acc.finish(a, r, b0);
}

// One 16-column qbitmask word m: its two 8-column halves' weights, from the kept levels at byte v on (v
// advances past them), expanded by a permute.
AVX2 inline void bitmask_halves(const QArgs& a, int64_t& v, uint32_t m, const Grid8& grid, __m256& w0, __m256& w1) {
  prefetch_levels(a.levels + v);
  const uint32_t n0 = _mm_popcnt_u32(m & 0xFF), n = _mm_popcnt_u32(m);
  __m256i q0 = a.bits == 8 ? bytes8(a.levels + v) : nibbles8(a.levels + v, 0);
  __m256i q1 = a.bits == 8 ? bytes8(a.levels + v + n0) : nibbles8(a.levels + v, n0);
  w0 = expand8_ps(m & 0xFF, deq8(q0, grid.zero, grid.scale));
  w1 = expand8_ps(m >> 8, deq8(q1, grid.zero, grid.scale));
  v += a.bits == 8 ? n : (n + 1) / 2;
}

// qbitmask: each 16-column word as two 8-column halves.
template <int BT>
AVX2 void qbitmask_row_avx2(const QArgs& a, int64_t r, int64_t b0) {
  Acc8<BT> acc;
  const uint16_t* mrow = a.mask + r * (a.colsb / 16);
  int64_t v = a.row_ptr[r];
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const Grid8 grid(a, r, g);
    for (int64_t c = 4 * k; c < 4 * end; ++c) {  // c: 16-column words
      __m256 w0, w1;
      bitmask_halves(a, v, mrow[c], grid, w0, w1);
      acc.fma(a, b0, 16 * c, w0, 0);
      acc.fma(a, b0, 16 * c + 8, w1, 1);
    }
    k = end;
  }
  acc.finish(a, r, b0);
}

// Row r's weights as float32 into out (colsb entries): the large-batch tiles on AVX2.
AVX2 void decode_row_avx2(const QArgs& a, int64_t r, float* out) {
  const uint8_t* lv = a.levels + r * a.colsb * a.bits / 8 / (a.kind == kQNM ? 2 : 1);
  int64_t v = a.kind == kQBitmask ? a.row_ptr[r] : 0;
  for (int64_t g = 0, k = 0; g < a.groups; ++g) {
    const int64_t end = std::min(a.blocks, k + a.gb);
    const Grid8 grid(a, r, g);
    for (; k < end; ++k) {
      float* o = out + kBlock * k;
      if (a.kind == kQDense && a.bits == 4) {
        for (int i = 0; i < 4; ++i) {
          __m256i q = bytes8(lv + 32 * k + 8 * i);
          _mm256_storeu_ps(o + 8 * i, deq8(_mm256_and_si256(q, _mm256_set1_epi32(15)), grid.zero, grid.scale));
          _mm256_storeu_ps(o + 32 + 8 * i, deq8(_mm256_srli_epi32(q, 4), grid.zero, grid.scale));
        }
      } else if (a.kind == kQDense) {
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(o + 8 * i, deq8(bytes8(lv + 64 * k + 8 * i), grid.zero, grid.scale));
      } else if (a.kind == kQNM) {
        const uint8_t* p = lv + 4 * a.bits * k;
        const uint64_t word = a.idx[r * a.blocks + k];
        for (int i = 0; i < 4; ++i) {  // levels 8i..8i+7 fill columns [16i, 16i + 16), two per four, in order
          __m256 w = deq8(nm_levels8(p, a.bits, i), grid.zero, grid.scale);
          uint32_t lo = 0, hi = 0;
          for (int j = 0; j < 8; ++j) {
            uint32_t col = 4 * (j / 2) + nm_position(word, 8 * i + j);
            (j < 4 ? lo : hi) |= 1u << (col & 7);
          }
          _mm256_storeu_ps(o + 16 * i, expand8_ps(lo, w));
          _mm256_storeu_ps(o + 16 * i + 8, expand8_ps(hi, _mm256_permutevar8x32_ps(w, _mm256_setr_epi32(4, 5, 6, 7, 0, 0, 0, 0))));
        }
      } else {
        for (int64_t c = 4 * k; c < 4 * k + 4; ++c) {
          __m256 w0, w1;
          bitmask_halves(a, v, a.mask[r * (a.colsb / 16) + c], grid, w0, w1);
          _mm256_storeu_ps(out + 16 * c, w0);
          _mm256_storeu_ps(out + 16 * c + 8, w1);
        }
      }
    }
  }
}

ROWS_OF(dense_rows_avx2, AVX2, dense_row_avx2)
ROWS_OF(qdense_rows_avx2, AVX2, qdense_row_avx2)
ROWS_OF(qnm_rows_avx2, AVX2, qnm_row_avx2)
ROWS_OF(qbitmask_rows_avx2, AVX2, qbitmask_row_avx2)

// ---------------------------------------------------------------- the packed weight

// header (16 int64): magic, kind, rows, cols, dtype (dense values), bits, groupsize, then (offset, bytes)
// of up to four parts (dense: values; quantized: levels, scale, zero, index), then the checksum (slot 15,
// which the kernel does not read). Every size is checked against the shape here, on each call.
struct QPacked {
  int64_t kind, rows, cols, dtype, bits, groupsize;
  const uint8_t* part[4];
};

QPacked read_qpacked(const at::Tensor& blob) {
  TORCH_CHECK(blob.scalar_type() == at::kByte && blob.dim() == 1 && blob.is_contiguous() && blob.numel() >= kHeaderBytes,
              "the packed weight must be a contiguous 1-D uint8 tensor with prunekit's header");
  const uint8_t* base = blob.data_ptr<uint8_t>();
  int64_t h[16];
  std::memcpy(h, base, sizeof(h));
  TORCH_CHECK(h[0] == kMagic, "not a prunekit dense or quantized packed weight (wrong magic number)");
  QPacked p{h[1], h[2], h[3], h[4], h[5], h[6], {}};
  constexpr int64_t kMaxDim = int64_t{1} << 31;
  TORCH_CHECK(p.kind >= kDense && p.kind <= kQNM && p.rows >= 0 && p.rows < kMaxDim && p.cols >= 0 && p.cols < kMaxDim,
              "corrupt packed weight header");
  TORCH_CHECK(p.kind == kDense ? (p.dtype >= kF32 && p.dtype <= kF16) : ((p.bits == 4 || p.bits == 8) && p.groupsize >= 0 && p.groupsize % kBlock == 0),
              "corrupt packed weight header");
  const int nparts = p.kind == kDense ? 1 : p.kind == kQDense ? 3 : 4;
  int64_t bytes[4] = {0, 0, 0, 0};
  for (int k = 0; k < nparts; ++k) {
    int64_t off = h[7 + 2 * k];
    bytes[k] = h[8 + 2 * k];
    TORCH_CHECK(off >= kHeaderBytes && off % 64 == 0 && bytes[k] >= 0 && off + bytes[k] <= blob.numel(),
                "corrupt packed weight: part ", k, " lies outside the tensor");
    p.part[k] = base + off;
  }
  const int64_t colsb = (p.cols + kBlock - 1) / kBlock * kBlock;
  if (p.kind == kDense) {
    TORCH_CHECK(bytes[0] == p.rows * p.cols * (p.dtype == kF32 ? 4 : 2), "corrupt packed weight: sizes");
    return p;
  }
  const int64_t groups = p.groupsize ? (p.cols + p.groupsize - 1) / p.groupsize : 1;
  TORCH_CHECK(bytes[1] == p.rows * groups * 2 && bytes[2] == p.rows * groups, "corrupt packed weight: grid sizes");
  if (p.kind == kQDense) {
    TORCH_CHECK(bytes[0] == p.rows * colsb * p.bits / 8, "corrupt packed weight: sizes");
  } else if (p.kind == kQNM) {
    TORCH_CHECK(bytes[0] == p.rows * colsb / 2 * p.bits / 8 && bytes[3] == p.rows * (colsb / kBlock) * 8, "corrupt packed weight: sizes");
  } else {
    TORCH_CHECK(bytes[3] == (p.rows + 1) * 8 + p.rows * (colsb / 16) * 2, "corrupt packed weight: sizes");
    int64_t stored = reinterpret_cast<const int64_t*>(p.part[3])[p.rows];
    TORCH_CHECK(stored >= 0 && stored + kLevelPad <= bytes[0], "corrupt packed weight: levels must hold every kept level plus padding");
  }
  return p;
}

QArgs qargs(const QPacked& p, int64_t batch, void* y, int y_dtype, const c10::optional<at::Tensor>& bias) {
  QArgs a{};
  a.y = y;
  a.y_dtype = y_dtype;
  a.batch = batch;
  a.rows = p.rows;
  a.cols = p.cols;
  a.colsb = (p.cols + kBlock - 1) / kBlock * kBlock;
  a.blocks = a.colsb / kBlock;
  a.kind = p.kind;
  a.dtype = static_cast<int>(p.dtype);
  a.bits = static_cast<int>(p.bits);
  a.groups = p.groupsize ? (p.cols + p.groupsize - 1) / p.groupsize : 1;
  a.gb = p.groupsize ? p.groupsize / kBlock : a.blocks;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == p.rows && bias->is_contiguous(), "bias must be float32 (rows)");
    a.bias = bias->data_ptr<float>();
  }
  if (p.kind == kDense) {
    a.values = p.part[0];
    return a;
  }
  a.levels = p.part[0];
  a.scale = reinterpret_cast<const uint16_t*>(p.part[1]);
  a.zero = p.part[2];
  if (p.kind == kQBitmask) {
    a.row_ptr = reinterpret_cast<const int64_t*>(p.part[3]);
    a.mask = reinterpret_cast<const uint16_t*>(p.part[3] + (p.rows + 1) * 8);
  } else if (p.kind == kQNM) {
    a.idx = reinterpret_cast<const uint64_t*>(p.part[3]);
  }
  return a;
}

void run(const QArgs& a, void (*rows_fn)(const QArgs&, int64_t, int64_t)) {
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, a.cols * a.batch));
  at::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) { rows_fn(a, r0, r1); });
}

// x (batch, cols) into (batch, colsb) float32 rows, zero past cols (or x itself when it already is that).
const float* padded_f32(const at::Tensor& x, int64_t batch, int64_t cols, int64_t colsb, Scratch<float>& buf) {
  if (x.scalar_type() == at::kFloat && cols == colsb) return x.data_ptr<float>();
  Scratch<float> flat;
  const float* src = x_as_f32(x, flat);
  buf.assign(batch * colsb, 0.f);
  for (int64_t b = 0; b < batch; ++b) std::memcpy(&buf[b * colsb], src + b * cols, 4 * cols);
  return buf.data();
}

void small(const QPacked& p, const at::Tensor& x, at::Tensor& y, const c10::optional<at::Tensor>& bias, int64_t level) {
  QArgs a = qargs(p, inputs(x), y.data_ptr(), x_dtype(x), bias);
  a.xs = a.colsb;
  const bool dp = level >= kAvx512Bf16 && x.scalar_type() == at::kBFloat16 &&
                  (p.kind == kDense ? p.dtype == kBF16 : p.bits == 4 && (p.kind == kQDense || p.kind == kQNM));
  if (dp) {  // bf16 inputs as they are, rows zero-padded to whole blocks
    Scratch<uint16_t> xb;
    a.xb = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
    if (a.cols != a.colsb) {
      xb.assign(a.batch * a.colsb, 0);
      for (int64_t b = 0; b < a.batch; ++b) std::memcpy(&xb[b * a.colsb], a.xb + b * a.cols, 2 * a.cols);
      a.xb = xb.data();
    }
    return run(a, p.kind == kDense ? dense_rows_bf16dp : p.kind == kQDense ? qdense4_rows_bf16dp : qnm4_rows_bf16dp);
  }
  Scratch<float> buf;
  a.x = padded_f32(x, a.batch, a.cols, a.colsb, buf);
  if (level < kAvx2) return run(a, rows_scalar);
  if (level < kAvx512) {
    switch (p.kind) {
      case kDense: return run(a, dense_rows_avx2);
      case kQDense: return run(a, qdense_rows_avx2);
      case kQNM: return run(a, qnm_rows_avx2);
      default: return run(a, qbitmask_rows_avx2);
    }
  }
  switch (p.kind) {
    case kDense: return run(a, dense_rows);
    case kQDense: return run(a, qdense_rows);
    case kQNM: return run(a, qnm_rows);
    default: return run(a, qbitmask_rows);
  }
}

// Large batches: the dense layout is a plain (rows, cols) tensor for GEMM; the quantized ones decode tiles
// of `tile_rows` rows to float32, in x's dtype for GEMM (as nn.Linear would run).
at::Tensor tiled(const QPacked& p, const at::Tensor& x, const c10::optional<at::Tensor>& bias, int64_t tile_rows,
                 int64_t level) {
  auto dt = x.scalar_type();
  c10::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->to(dt);
  if (p.kind == kDense) {
    const at::ScalarType types[] = {at::kFloat, at::kBFloat16, at::kHalf};
    at::Tensor w = at::from_blob(const_cast<uint8_t*>(p.part[0]), {p.rows, p.cols}, x.options().dtype(types[p.dtype]));
    return at::linear(x, w.scalar_type() == dt ? w : w.to(dt), b);
  }
  QArgs a = qargs(p, x.size(0), nullptr, x_dtype(x), bias);
  // bf16 models: each row decoded in float32 and rounded straight into a bf16 tile (as Tensor.to rounds)
  const bool bf16 = dt == at::kBFloat16 && level >= kAvx512Bf16;
  at::Tensor tile = at::empty({std::min(tile_rows, a.rows), a.colsb}, x.options().dtype(bf16 ? at::kBFloat16 : at::kFloat));
  auto decoded = [&](int64_t r0, int64_t r1) {  // rows [r0, r1) as a (r1 - r0, cols) tensor of x's dtype
    at::parallel_for(r0, r1, 8, [&](int64_t s0, int64_t s1) {
      Scratch<float> row;
      row.resize_for_overwrite(a.colsb);
      for (int64_t r = s0; r < s1; ++r) {
        float* out = bf16 ? row.data() : tile.data_ptr<float>() + (r - r0) * a.colsb;
        if (level >= kAvx512) decode_row_avx512(a, r, out);
        else if (level >= kAvx2) decode_row_avx2(a, r, out);
        else decode_row(a, r, out);
        if (bf16) to_bf16(out, reinterpret_cast<uint16_t*>(tile.data_ptr<at::BFloat16>()) + (r - r0) * a.colsb, a.colsb);
      }
    });
    at::Tensor dense = tile.narrow(0, 0, r1 - r0).narrow(1, 0, a.cols);
    return dense.scalar_type() == dt ? dense : dense.to(dt);
  };
  if (a.rows <= tile_rows) return at::linear(x, decoded(0, a.rows), b);  // one tile: exactly what nn.Linear runs
  at::Tensor yt = at::empty({a.rows, a.batch}, x.options());  // (rows, batch): each tile's rows are contiguous
  at::Tensor xt = x.t();
  for (int64_t r0 = 0; r0 < a.rows; r0 += tile_rows) {
    int64_t r1 = std::min(a.rows, r0 + tile_rows);
    at::Tensor dense = decoded(r0, r1);
    at::Tensor ys = yt.narrow(0, r0, r1 - r0);
    if (b) at::addmm_out(ys, b->narrow(0, r0, r1 - r0).unsqueeze(1), dense, xt);
    else at::mm_out(ys, dense, xt);
  }
  return yt.t().contiguous();
}

// nn.Linear's forward for a checked weight, in one call: x (..., cols), y in x's dtype.
at::Tensor forward(const QPacked& p, const at::Tensor& x, const c10::optional<at::Tensor>& bias, int64_t isa,
                   int64_t small_batch, int64_t tile_rows) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == p.cols, "x must end in a dimension of ", p.cols, " features, got shape ", x.sizes());
  x_dtype(x);
  at::Tensor xc = x.contiguous();
  int64_t batch = inputs(x);
  at::DimVector shape(x.sizes());
  shape.back() = p.rows;
  if (batch <= small_batch) {
    at::Tensor y = at::empty(shape, x.options());
    small(p, xc, y, bias, resolve_isa(isa));
    return y;
  }
  if (tile_rows <= 0) tile_rows = std::max<int64_t>(64, (int64_t{1} << 21) / std::max<int64_t>(p.cols, 1));  // ~8 MB
  return tiled(p, xc.view({batch, p.cols}), bias, tile_rows, resolve_isa(isa)).view(shape);
}

bool on_cpu(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& bias) {
  return x.is_cpu() && w.is_cpu() && (!bias.has_value() || !bias->defined() || bias->is_cpu());
}

// A dense or quantized packed weight (see read_qpacked).
at::Tensor quant_forward(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias, int64_t isa,
                         int64_t small_batch, int64_t tile_rows) {
  TORCH_CHECK(on_cpu(x, packed, bias), "the kernel runs on CPU tensors only");
  return forward(read_qpacked(packed), x, bias, isa, small_batch, tile_rows);
}

// A plain (rows, cols) float32, bfloat16 or float16 weight, read where it lies (the gemv kernel without a
// packed copy: an output head tied to its embedding stays one tensor). Its tail is read with masked loads.
at::Tensor dense_forward(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias, int64_t isa,
                         int64_t small_batch) {
  TORCH_CHECK(on_cpu(x, weight, bias), "the kernel runs on CPU tensors only");
  const auto t = weight.scalar_type();
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf),
              "the weight must be a contiguous 2-D float32, bfloat16 or float16 tensor");
  const int64_t dtype = t == at::kFloat ? kF32 : t == at::kBFloat16 ? kBF16 : kF16;
  QPacked p{kDense, weight.size(0), weight.size(1), dtype, 0, 0, {static_cast<const uint8_t*>(weight.data_ptr())}};
  return forward(p, x, bias, isa, small_batch, 0);
}

}  // namespace

void bind_dense_quant_linear(pybind11::module_& m) {
  m.def("quant_forward", &quant_forward, "nn.Linear forward for a dense or quantized packed W (any leading dims)");
  m.def("dense_forward", &dense_forward, "nn.Linear forward for a plain float W on the gemv kernel (any leading dims)");
}
