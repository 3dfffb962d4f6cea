// Sparse linear kernels for CPU: y = x · Wᵀ (+ bias) with W stored compressed.
//
// Two layouts, both built by prunekit/kernel.py into one uint8 tensor per layer (see read_packed):
//   bitmask: mask (rows, chunks) of 16-bit words, bit j of word c <=> W[r, 16c + j] != 0;
//            values = the nonzeros in row-major order (padded with 32 zeros so vector loads
//            never leave the buffer); row_ptr (rows + 1) = offset of each row in values.
//   sell:    sliced ELLPACK: rows sorted by nonzero count, 16 per slice; where (rows, int32) = each
//            row's lane (16 · slice + lane); slice s's entries are [slice_ptr[s], slice_ptr[s + 1]),
//            slot k holding the k-th nonzero of each of its 16 rows (column in col, int16 or int32;
//            value in values; padding: column 0, value 0). The kernel writes each slice's 16 lanes
//            with one store into a buffer in slice order, then gathers y in row order, so threads
//            never share y's cache lines. Reads no mask, and one step serves 16 rows: the fastest
//            layout at high sparsity.
// Values may be float32, bfloat16 or float16; so may x (computed in float32, y returned in x's dtype).
// With bf16 values, bf16 x and AVX512_BF16, products of bf16 pairs accumulate in float32 (vdpbf16ps).
//
// Parallel over output rows (bitmask) or slices (sell) with at::parallel_for. The ISA is chosen at
// run time: AVX-512, AVX2+FMA, or portable scalar code; `isa` may force a lower one (the tests do).
//
// Decompressing values under a mask is one vexpand instruction. On AMD Zen it is slow (measured
// here: one per ~5 cycles, slower still on 2:4 masks), so on AMD (the `avx512_permute` level) the
// kernels compute each lane's source index (the popcount of the mask bits below it) and permute
// instead, with bit-identical results. Measured on 4096x4096 at batch 1: bf16 1.6-2.2x faster at
// 70-50% sparsity, fp32 1.1-1.2x at 50-90% and 2.1x on 2:4; batch tiles of 2-8 inputs up to 2.6x.
// Unpacking prefill tiles measured the same either way and keeps vexpand.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/SmallVector.h>
#include <immintrin.h>

#include "kernel_common.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

namespace {

using namespace prunekit;

// Stored entries × inputs per sell task. Two threads on a cold 192x576 layer at 90% (11k entries)
// measured 0.4-0.6 µs faster per call, but whole-model decode at 90% no faster (66-68 vs 68-70 tok/s).
constexpr int64_t kSellTaskEntries = 16384;

// Arguments shared by every row range of one call.
struct Args {
  const float* x;        // (batch, cols), float32
  void* y;               // (batch, rows), in y_dtype (x's dtype)
  int y_dtype;
  const float* bias;     // (rows) or nullptr
  const void* values;
  int dtype;
  int64_t batch, rows, cols;
  // bitmask
  const uint16_t* mask;  // (rows, chunks)
  const int64_t* row_ptr;
  int64_t chunks;
  // sell
  const int64_t* slice_ptr;  // (slices + 1)
  const int32_t* where;      // (rows): the lane of each row
  float* lanes;              // (batch, 16 · slices): the kernel's results in slice order
  int64_t lanes_stride;
  const void* col;
  bool col16;
  // bf16 dot-product path: x as bf16, rows padded with zeros to a multiple of 32 columns
  const uint16_t* xb;
  int64_t xb_stride;
};

// y[i] = v, rounded to y's dtype (round to nearest even, as Tensor.to does).
inline void put_y(const Args& a, int64_t i, float v) { put_value(a.y, a.y_dtype, i, v); }

// ---------------------------------------------------------------- scalar (portable)

inline float scalar_value(const void* values, int dtype, int64_t i) {
  if (dtype == kF32) return static_cast<const float*>(values)[i];
  uint16_t h = static_cast<const uint16_t*>(values)[i];
  if (dtype == kBF16) {
    uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  return static_cast<float>(c10::Half(h, c10::Half::from_bits()));
}

void bitmask_rows_scalar(const Args& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t b = 0; b < a.batch; ++b) {
      const float* x = a.x + b * a.cols;
      int64_t v = a.row_ptr[r];
      float acc = 0.f;
      for (int64_t c = 0; c < a.chunks; ++c) {
        uint32_t m = a.mask[r * a.chunks + c];
        while (m) {
          int j = __builtin_ctz(m);
          acc += scalar_value(a.values, a.dtype, v++) * x[c * 16 + j];
          m &= m - 1;
        }
      }
      put_y(a, b * a.rows + r, acc + (a.bias ? a.bias[r] : 0.f));
    }
  }
}

// sell: slot k of slice s holds the k-th nonzero of each of the slice's 16 rows, so one 16-lane step
// serves 16 rows at once and the result needs no horizontal sum (see kernel.py's pack_sell).
inline int64_t col_at(const Args& a, int64_t i) {
  return a.col16 ? static_cast<const int16_t*>(a.col)[i] : static_cast<const int32_t*>(a.col)[i];
}

// Entries 1024 ahead of slot i into L1. The hardware prefetcher alone left a cold 192x576 layer's
// kernel ~1 µs slower (measured here: 4.6 → 3.5 µs; 256-2048 ahead all help, 8192 does not).
inline void prefetch_ahead(const Args& a, int64_t i) {
  constexpr int64_t kAhead = 1024;
  _mm_prefetch(static_cast<const char*>(a.values) + (i + kAhead) * (a.dtype == kF32 ? 4 : 2), _MM_HINT_T0);
  _mm_prefetch(static_cast<const char*>(a.col) + (i + kAhead) * (a.col16 ? 2 : 4), _MM_HINT_T0);
}

void sell_slices_scalar(const Args& a, int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; ++s) {
    for (int64_t b = 0; b < a.batch; ++b) {
      const float* x = a.x + b * a.cols;
      float* acc = a.lanes + b * a.lanes_stride + s * 16;
      std::fill(acc, acc + 16, 0.f);
      for (int64_t i = a.slice_ptr[s]; i < a.slice_ptr[s + 1]; i += 16)
        for (int l = 0; l < 16; ++l) acc[l] += scalar_value(a.values, a.dtype, i + l) * x[col_at(a, i + l)];
    }
  }
}

// ---------------------------------------------------------------- AVX-512

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma,popcnt")))

// Values 1024 entries (and 128 bytes) ahead, and mask words 1 KB ahead, into L1: the hardware
// prefetcher alone leaves a cold layer's loads waiting on memory (as in sell, see prefetch_ahead).
// Measured on the float32 path: 1536x576 at 50% 56 → 43 µs; on the bf16 dot-product path (Xeon,
// weights rotated past the cache, both orders of the alternation) 1.27-1.57x at 50-90%.
inline void prefetch_bitmask(const Args& a, int64_t v, const void* mask) {
  const char* values = static_cast<const char*>(a.values) + (v + 1024) * (a.dtype == kF32 ? 4 : 2);
  _mm_prefetch(values, _MM_HINT_T0);
  _mm_prefetch(values + 64, _MM_HINT_T0);
  _mm_prefetch(static_cast<const char*>(mask) + 1024, _MM_HINT_T0);
}

// Load 16 consecutive values as float32 (bf16 is the high half of a float32).
AVX512 inline __m512 load16(const void* values, int dtype, int64_t i) {
  if (dtype == kF32) return _mm512_loadu_ps(static_cast<const float*>(values) + i);
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(values) + i));
  if (dtype == kBF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

// x chunk c of 16 columns; the last one is loaded under a mask so it never reads past the row.
AVX512 inline __m512 load_x(const float* x, int64_t c, int64_t cols) {
  int64_t left = cols - c * 16;
  if (left >= 16) return _mm512_loadu_ps(x + c * 16);
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1), x + c * 16);
}

// Batch tile of BT inputs: each 16-column chunk of W is decompressed once and used BT times.
#define BITMASK_TILE_F32(EXPAND)                                                                       \
  __m512 acc[BT];                                                                                      \
  for (int t = 0; t < BT; ++t) acc[t] = _mm512_setzero_ps();                                           \
  const uint16_t* mrow = a.mask + r * a.chunks;                                                        \
  const float* x = a.x + b0 * a.cols;                                                                  \
  int64_t v = a.row_ptr[r], full = a.cols / 16;                                                        \
  for (int64_t c = 0; c < full; ++c) { /* whole chunks: plain loads, no per-input tail test */         \
    __mmask16 m = mrow[c];                                                                             \
    __m512 w = EXPAND(m, load16(a.values, a.dtype, v));                                                \
    v += _mm_popcnt_u32(m);                                                                            \
    for (int t = 0; t < BT; ++t) acc[t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + t * a.cols + c * 16), acc[t]); \
  }                                                                                                    \
  if (full < a.chunks) {                                                                               \
    __m512 w = EXPAND(mrow[full], load16(a.values, a.dtype, v));                                       \
    for (int t = 0; t < BT; ++t) acc[t] = _mm512_fmadd_ps(w, load_x(x + t * a.cols, full, a.cols), acc[t]); \
  }                                                                                                    \
  float bias = a.bias ? a.bias[r] : 0.f;                                                               \
  for (int t = 0; t < BT; ++t) put_y(a, (b0 + t) * a.rows + r, _mm512_reduce_add_ps(acc[t]) + bias);

template <int BT>
AVX512 void bitmask_tile_avx512(const Args& a, int64_t r, int64_t b0) { BITMASK_TILE_F32(_mm512_maskz_expand_ps) }

// Batch 1: four independent accumulators hide the FMA latency. EXPAND(mask, values) decompresses
// 16 float32 lanes (vexpandps, or a permute on the avx512_permute level).
#define BITMASK_ROW1_F32(EXPAND)                                                                                                \
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;                                                     \
  const uint16_t* mrow = a.mask + r * a.chunks;                                                                                 \
  const float* x = a.x + b * a.cols;                                                                                            \
  int64_t v = a.row_ptr[r];                                                                                                     \
  int64_t full = a.cols / 16, c = 0;                                                                                            \
  for (; c + 4 <= full; c += 4) {                                                                                               \
    prefetch_bitmask(a, v, mrow + c);                                                                                           \
    __mmask16 m0 = mrow[c], m1 = mrow[c + 1], m2 = mrow[c + 2], m3 = mrow[c + 3];                                               \
    int64_t v1 = v + _mm_popcnt_u32(m0), v2 = v1 + _mm_popcnt_u32(m1), v3 = v2 + _mm_popcnt_u32(m2);                            \
    acc0 = _mm512_fmadd_ps(EXPAND(m0, load16(a.values, a.dtype, v)), _mm512_loadu_ps(x + c * 16), acc0);                        \
    acc1 = _mm512_fmadd_ps(EXPAND(m1, load16(a.values, a.dtype, v1)), _mm512_loadu_ps(x + c * 16 + 16), acc1);                  \
    acc2 = _mm512_fmadd_ps(EXPAND(m2, load16(a.values, a.dtype, v2)), _mm512_loadu_ps(x + c * 16 + 32), acc2);                  \
    acc3 = _mm512_fmadd_ps(EXPAND(m3, load16(a.values, a.dtype, v3)), _mm512_loadu_ps(x + c * 16 + 48), acc3);                  \
    v = v3 + _mm_popcnt_u32(m3);                                                                                                \
  }                                                                                                                             \
  for (; c < a.chunks; ++c) {                                                                                                   \
    __mmask16 m = mrow[c];                                                                                                      \
    acc0 = _mm512_fmadd_ps(EXPAND(m, load16(a.values, a.dtype, v)), load_x(x, c, a.cols), acc0);                                \
    v += _mm_popcnt_u32(m);                                                                                                     \
  }                                                                                                                             \
  float bias = a.bias ? a.bias[r] : 0.f;                                                                                        \
  put_y(a, b * a.rows + r, _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3))) + bias);

AVX512 void bitmask_row1_avx512(const Args& a, int64_t r, int64_t b) { BITMASK_ROW1_F32(_mm512_maskz_expand_ps) }

// Rows [r0, r1) of every input: batch tiles of 8, 4 and 2 inputs, then single inputs.
#define BITMASK_ROWS_F32(TILE, ROW1)                       \
  for (int64_t r = r0; r < r1; ++r) {                      \
    int64_t b = 0;                                         \
    for (; b + 8 <= a.batch; b += 8) TILE<8>(a, r, b);     \
    for (; b + 4 <= a.batch; b += 4) TILE<4>(a, r, b);     \
    for (; b + 2 <= a.batch; b += 2) TILE<2>(a, r, b);     \
    for (; b < a.batch; ++b) ROW1(a, r, b);                \
  }

AVX512 void bitmask_rows_avx512(const Args& a, int64_t r0, int64_t r1) {
  BITMASK_ROWS_F32(bitmask_tile_avx512, bitmask_row1_avx512)
}

// bf16 values and bf16 inputs (AVX512_BF16 + VBMI2): 32 columns per step, one 16-bit expand and
// one pairwise dot product (products exact in float32, float32 accumulation).
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi2,popcnt")))

// Batch tile of BT inputs: each 32-column step of W is decompressed once and used BT times.
#define BITMASK_TILE_BF16(EXPAND)                                                                      \
  __m512 acc[BT];                                                                                      \
  for (int t = 0; t < BT; ++t) acc[t] = _mm512_setzero_ps();                                           \
  const uint16_t* mrow = a.mask + r * a.chunks;                                                        \
  const uint16_t* values = static_cast<const uint16_t*>(a.values);                                     \
  int64_t v = a.row_ptr[r];                                                                            \
  for (int64_t c = 0; c < a.chunks; c += 2) {                                                          \
    uint32_t m = mrow[c] | (c + 1 < a.chunks ? static_cast<uint32_t>(mrow[c + 1]) << 16 : 0u);         \
    __m512i w = EXPAND(m, _mm512_loadu_si512(values + v));                                             \
    v += _mm_popcnt_u32(m);                                                                            \
    for (int t = 0; t < BT; ++t) {                                                                     \
      __m512i xv = _mm512_loadu_si512(a.xb + (b0 + t) * a.xb_stride + c * 16);                         \
      acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)w, (__m512bh)xv);                                    \
    }                                                                                                  \
  }                                                                                                    \
  float bias = a.bias ? a.bias[r] : 0.f;                                                               \
  for (int t = 0; t < BT; ++t) put_y(a, (b0 + t) * a.rows + r, _mm512_reduce_add_ps(acc[t]) + bias);

template <int BT>
AVX512BF16 void bitmask_tile_bf16dp(const Args& a, int64_t r, int64_t b0) { BITMASK_TILE_BF16(_mm512_maskz_expand_epi16) }

// Batch 1: four accumulators over four 32-column steps hide the dot-product latency. EXPAND(mask,
// values) decompresses 32 bf16 lanes (vpexpandw, or a permute on the avx512_permute level).
#define BITMASK_ROW1_BF16(EXPAND)                                                                       \
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()}; \
  const uint32_t* mrow = reinterpret_cast<const uint32_t*>(a.mask + r * a.chunks); /* 32 columns */   \
  const uint16_t* values = static_cast<const uint16_t*>(a.values);                                      \
  const uint16_t* x = a.xb + b * a.xb_stride;                                                           \
  int64_t v = a.row_ptr[r], steps = a.chunks / 2, s = 0;                                                \
  for (; s + 4 <= steps; s += 4) {                                                                      \
    uint32_t m[4];                                                                                      \
    prefetch_bitmask(a, v, mrow + s);                                                                   \
    std::memcpy(m, mrow + s, sizeof(m));                                                                \
    int64_t off[4] = {v, 0, 0, 0};                                                                      \
    for (int k = 1; k < 4; ++k) off[k] = off[k - 1] + _mm_popcnt_u32(m[k - 1]);                        \
    for (int k = 0; k < 4; ++k) {                                                                       \
      __m512i w = EXPAND(m[k], _mm512_loadu_si512(values + off[k]));                                    \
      acc[k] = _mm512_dpbf16_ps(acc[k], (__m512bh)w, (__m512bh)_mm512_loadu_si512(x + (s + k) * 32));   \
    }                                                                                                   \
    v = off[3] + _mm_popcnt_u32(m[3]);                                                                  \
  }                                                                                                     \
  for (int64_t c = s * 2; c < a.chunks; c += 2) {                                                       \
    uint32_t m = a.mask[r * a.chunks + c] |                                                             \
                 (c + 1 < a.chunks ? static_cast<uint32_t>(a.mask[r * a.chunks + c + 1]) << 16 : 0u);   \
    __m512i w = EXPAND(m, _mm512_loadu_si512(values + v));                                              \
    v += _mm_popcnt_u32(m);                                                                             \
    acc[0] = _mm512_dpbf16_ps(acc[0], (__m512bh)w, (__m512bh)_mm512_loadu_si512(x + c * 16));           \
  }                                                                                                     \
  __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));             \
  put_y(a, b * a.rows + r, _mm512_reduce_add_ps(sum) + (a.bias ? a.bias[r] : 0.f));

AVX512BF16 void bitmask_row1_bf16dp(const Args& a, int64_t r, int64_t b) { BITMASK_ROW1_BF16(_mm512_maskz_expand_epi16) }

// Rows [r0, r1) of every input: batch tiles of 4 inputs, then single inputs.
#define BITMASK_ROWS_BF16(TILE, ROW1)                      \
  for (int64_t r = r0; r < r1; ++r) {                      \
    int64_t b = 0;                                         \
    for (; b + 4 <= a.batch; b += 4) TILE<4>(a, r, b);     \
    for (; b < a.batch; ++b) ROW1(a, r, b);                \
  }

AVX512BF16 void bitmask_rows_bf16dp(const Args& a, int64_t r0, int64_t r1) {
  BITMASK_ROWS_BF16(bitmask_tile_bf16dp, bitmask_row1_bf16dp)
}

// ---------------------------------------------------------------- AVX-512 with permutes (AMD)

#define AVX512PERMUTE \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi2,avx512bitalg,avx512vpopcntdq,f16c,fma,popcnt")))

// vexpandps as a permute: lane j takes source lane popcount(m & ((1 << j) - 1)) when bit j is set.
AVX512PERMUTE inline __m512 permute_expand_ps(__mmask16 m, __m512 packed) {
  const __m512i below = _mm512_setr_epi32(0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 4095, 8191, 16383, 32767);
  __m512i src = _mm512_popcnt_epi32(_mm512_and_si512(_mm512_set1_epi32(m), below));
  return _mm512_maskz_permutexvar_ps(m, src, packed);
}

template <int BT>
AVX512PERMUTE void bitmask_tile_f32_permute(const Args& a, int64_t r, int64_t b0) { BITMASK_TILE_F32(permute_expand_ps) }

AVX512PERMUTE void bitmask_row1_f32_permute(const Args& a, int64_t r, int64_t b) { BITMASK_ROW1_F32(permute_expand_ps) }

AVX512PERMUTE void bitmask_rows_f32_permute(const Args& a, int64_t r0, int64_t r1) {
  BITMASK_ROWS_F32(bitmask_tile_f32_permute, bitmask_row1_f32_permute)
}

// vpexpandw as a permute over 32 16-bit lanes: lanes 0-15 rank within the low mask half, lanes 16-31
// within the high half plus the low half's count.
alignas(64) const uint16_t kBelow16[32] = {0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 4095, 8191, 16383, 32767,
                                           0, 1, 3, 7, 15, 31, 63, 127, 255, 511, 1023, 2047, 4095, 8191, 16383, 32767};

AVX512PERMUTE inline __m512i permute_expand_epi16(uint32_t m, __m512i packed) {
  __m512i halves = _mm512_mask_set1_epi16(_mm512_set1_epi16(static_cast<int16_t>(m)), 0xFFFF0000u, static_cast<int16_t>(m >> 16));
  __m512i src = _mm512_popcnt_epi16(_mm512_and_si512(halves, _mm512_load_si512(kBelow16)));
  src = _mm512_mask_add_epi16(src, 0xFFFF0000u, src, _mm512_set1_epi16(static_cast<int16_t>(_mm_popcnt_u32(m & 0xFFFF))));
  return _mm512_maskz_permutexvar_epi16(m, src, packed);
}

AVX512PERMUTE void bitmask_row1_bf16_permute(const Args& a, int64_t r, int64_t b) { BITMASK_ROW1_BF16(permute_expand_epi16) }

template <int BT>
AVX512PERMUTE void bitmask_tile_bf16_permute(const Args& a, int64_t r, int64_t b0) { BITMASK_TILE_BF16(permute_expand_epi16) }

AVX512PERMUTE void bitmask_rows_bf16_permute(const Args& a, int64_t r0, int64_t r1) {
  BITMASK_ROWS_BF16(bitmask_tile_bf16_permute, bitmask_row1_bf16_permute)
}

// Four column indices; int16 ones from one 8-byte load instead of four (measured here: 1536x576 at
// 90%, one thread, hot, 17.1 → 15.4 µs in float32: the gather is bound by its loads and shuffles).
template <typename T>
inline std::array<uint32_t, 4> columns4(const T* c) {
  if constexpr (sizeof(T) == 2) {
    uint64_t four;
    std::memcpy(&four, c, 8);
    return {static_cast<uint32_t>(four & 0xFFFF), static_cast<uint32_t>((four >> 16) & 0xFFFF),
            static_cast<uint32_t>((four >> 32) & 0xFFFF), static_cast<uint32_t>(four >> 48)};
  } else {
    return {static_cast<uint32_t>(c[0]), static_cast<uint32_t>(c[1]), static_cast<uint32_t>(c[2]), static_cast<uint32_t>(c[3])};
  }
}

// x at 4 / 8 / 16 columns, built in registers from scalar loads: measured here 1.2-1.6x faster than
// vgatherdps, and 2x faster than filling a buffer with scalar stores (its vector reload waits for them).
// AVX2 code inlines into the AVX-512 kernels too.
template <typename T>
AVX2 inline __m128 gather_x4(const float* x, const T* c) {
  auto [i0, i1, i2, i3] = columns4(c);
  __m128 lo = _mm_insert_ps(_mm_load_ss(x + i0), _mm_load_ss(x + i1), 0x10);
  __m128 hi = _mm_insert_ps(_mm_load_ss(x + i2), _mm_load_ss(x + i3), 0x10);
  return _mm_movelh_ps(lo, hi);
}

template <typename T>
AVX2 inline __m256 gather_x8(const float* x, const T* c) {
  return _mm256_insertf128_ps(_mm256_castps128_ps256(gather_x4(x, c)), gather_x4(x, c + 4), 1);
}

template <typename T>
AVX512 inline __m512 gather_x16(const float* x, const T* c) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(gather_x8(x, c)), gather_x8(x, c + 8), 1);
}

// Slice s for BT inputs: each slot's values are loaded once and used BT times. T: the column type.
template <int BT, typename T>
AVX512 void sell_slice_avx512(const Args& a, int64_t s, int64_t b0) {
  const T* col = static_cast<const T*>(a.col);
  __m512 acc[BT];
  for (int t = 0; t < BT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = a.slice_ptr[s]; i < a.slice_ptr[s + 1]; i += 16) {
    prefetch_ahead(a, i);
    __m512 w = load16(a.values, a.dtype, i);
    for (int t = 0; t < BT; ++t) acc[t] = _mm512_fmadd_ps(w, gather_x16(a.x + (b0 + t) * a.cols, col + i), acc[t]);
  }
  for (int t = 0; t < BT; ++t) _mm512_storeu_ps(a.lanes + (b0 + t) * a.lanes_stride + s * 16, acc[t]);
}

// Slices [s0, s1) of every input, by the column type: batch tiles of 4 inputs, then single inputs.
#define SELL_SLICES(SLICE)                                                   \
  for (int64_t s = s0; s < s1; ++s) {                                        \
    int64_t b = 0;                                                           \
    for (; b + 4 <= a.batch; b += 4)                                         \
      a.col16 ? SLICE<4, int16_t>(a, s, b) : SLICE<4, int32_t>(a, s, b);     \
    for (; b < a.batch; ++b)                                                 \
      a.col16 ? SLICE<1, int16_t>(a, s, b) : SLICE<1, int32_t>(a, s, b);     \
  }

AVX512 void sell_slices_avx512(const Args& a, int64_t s0, int64_t s1) { SELL_SLICES(sell_slice_avx512) }

// y back in row order from the lanes (plus bias), from row r0 on.
void sell_rows(const Args& a, int64_t r0) {
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t r = r0; r < a.rows; ++r)
      put_y(a, b * a.rows + r, a.lanes[b * a.lanes_stride + a.where[r]] + (a.bias ? a.bias[r] : 0.f));
}

// The same, 16 rows per step for float32 and bfloat16 y (bf16 rounded to nearest even, NaN → 0x7FC0,
// exactly as at::BFloat16 does); the scalar loop measured 0.64 µs for 576 bf16 rows.
AVX512 void sell_rows_avx512(const Args& a) {
  if (a.y_dtype == kF16) return sell_rows(a, 0);
  int64_t full = a.rows / 16 * 16;
  for (int64_t b = 0; b < a.batch; ++b) {
    const float* lanes = a.lanes + b * a.lanes_stride;
    for (int64_t r = 0; r < full; r += 16) {
      __m512 v = _mm512_i32gather_ps(_mm512_loadu_si512(a.where + r), lanes, 4);
      if (a.bias) v = _mm512_add_ps(v, _mm512_loadu_ps(a.bias + r));
      if (a.y_dtype == kF32) {
        _mm512_storeu_ps(static_cast<float*>(a.y) + b * a.rows + r, v);
        continue;
      }
      __m512i bits = _mm512_castps_si512(v);
      __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
      __m512i h = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF))), 16);
      h = _mm512_mask_mov_epi32(h, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(a.y) + b * a.rows + r), _mm512_cvtepi32_epi16(h));
    }
  }
  sell_rows(a, full);
}

// ---------------------------------------------------------------- AVX2 + FMA

AVX2 inline __m256 load8(const void* values, int dtype, int64_t i) {
  if (dtype == kF32) return _mm256_loadu_ps(static_cast<const float*>(values) + i);
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(values) + i));
  if (dtype == kBF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

AVX2 inline __m256 expand8(uint32_t m, const void* values, int dtype, int64_t v) {
  return expand8_ps(m, load8(values, dtype, v));
}

// x lanes [off, off + 8) of a row; lanes past the row read as zero.
AVX2 inline __m256 load_x8(const float* x, int64_t off, int64_t cols) {
  if (off + 8 <= cols) return _mm256_loadu_ps(x + off);
  alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t j = off; j < cols; ++j) tmp[j - off] = x[j];
  return _mm256_load_ps(tmp);
}

template <int BT>
AVX2 void bitmask_tile_avx2(const Args& a, int64_t r, int64_t b0) {
  __m256 acc[BT];
  for (int t = 0; t < BT; ++t) acc[t] = _mm256_setzero_ps();
  const uint16_t* mrow = a.mask + r * a.chunks;
  const float* x = a.x + b0 * a.cols;
  int64_t v = a.row_ptr[r], full = a.cols / 8;
  for (int64_t h = 0; h < full; ++h) {  // whole 8-column halves of a mask word: plain loads, no tail test
    uint32_t mh = (mrow[h >> 1] >> (8 * (h & 1))) & 0xFF;
    __m256 w = expand8(mh, a.values, a.dtype, v);
    v += _mm_popcnt_u32(mh);
    for (int t = 0; t < BT; ++t) acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + t * a.cols + h * 8), acc[t]);
  }
  if (full * 8 < a.cols) {
    __m256 w = expand8((mrow[full >> 1] >> (8 * (full & 1))) & 0xFF, a.values, a.dtype, v);
    for (int t = 0; t < BT; ++t) acc[t] = _mm256_fmadd_ps(w, load_x8(x + t * a.cols, full * 8, a.cols), acc[t]);
  }
  float bias = a.bias ? a.bias[r] : 0.f;
  for (int t = 0; t < BT; ++t) put_y(a, (b0 + t) * a.rows + r, hsum8(acc[t]) + bias);
}

AVX2 void bitmask_rows_avx2(const Args& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    int64_t b = 0;
    for (; b + 4 <= a.batch; b += 4) bitmask_tile_avx2<4>(a, r, b);
    for (; b < a.batch; ++b) bitmask_tile_avx2<1>(a, r, b);
  }
}

// A 16-row slice as two 8-lane halves.
template <int BT, typename T>
AVX2 void sell_slice_avx2(const Args& a, int64_t s, int64_t b0) {
  const T* col = static_cast<const T*>(a.col);
  __m256 lo[BT], hi[BT];
  for (int t = 0; t < BT; ++t) lo[t] = hi[t] = _mm256_setzero_ps();
  for (int64_t i = a.slice_ptr[s]; i < a.slice_ptr[s + 1]; i += 16) {
    prefetch_ahead(a, i);
    __m256 w0 = load8(a.values, a.dtype, i), w1 = load8(a.values, a.dtype, i + 8);
    for (int t = 0; t < BT; ++t) {
      const float* x = a.x + (b0 + t) * a.cols;
      lo[t] = _mm256_fmadd_ps(w0, gather_x8(x, col + i), lo[t]);
      hi[t] = _mm256_fmadd_ps(w1, gather_x8(x, col + i + 8), hi[t]);
    }
  }
  for (int t = 0; t < BT; ++t) {
    _mm256_storeu_ps(a.lanes + (b0 + t) * a.lanes_stride + s * 16, lo[t]);
    _mm256_storeu_ps(a.lanes + (b0 + t) * a.lanes_stride + s * 16 + 8, hi[t]);
  }
}

AVX2 void sell_slices_avx2(const Args& a, int64_t s0, int64_t s1) { SELL_SLICES(sell_slice_avx2) }

// ---------------------------------------------------------------- dispatch

// ---- the packed weight: one uint8 tensor, a header of 16 int64 then the parts at 64-byte aligned
// offsets (kernel.py writes it). One tensor per call rather than four: in a decode step every layer
// is called once with its metadata cold in cache, and each tensor argument then costs ~0.15 µs.
constexpr int64_t kMagic = 0x31534B50;  // "PKS1"
constexpr int64_t kHeaderBytes = 128;
// header: magic, kind (0 bitmask, 1 sell), rows, cols, values dtype (Dtype), column index bytes (sell),
// then (offset, bytes) of each part: bitmask mask, values, row_ptr; sell slice_ptr, col, values, where.
struct Packed {
  int64_t kind, rows, cols;
  int dtype;
  bool col16;
  const void* part[4];
};

Packed read_packed(const at::Tensor& blob) {
  TORCH_CHECK(blob.scalar_type() == at::kByte && blob.dim() == 1 && blob.is_contiguous() && blob.numel() >= kHeaderBytes,
              "the packed weight must be a contiguous 1-D uint8 tensor with prunekit's header");
  const uint8_t* base = blob.data_ptr<uint8_t>();
  int64_t h[16];
  std::memcpy(h, base, sizeof(h));
  TORCH_CHECK(h[0] == kMagic, "not a prunekit packed weight (wrong magic number)");
  Packed p{h[1], h[2], h[3], static_cast<int>(h[4]), h[5] == 2, {}};
  constexpr int64_t kMaxDim = int64_t{1} << 31;  // bounds the size arithmetic below
  TORCH_CHECK((p.kind == 0 || p.kind == 1) && p.rows >= 0 && p.rows < kMaxDim && p.cols >= 0 && p.cols < kMaxDim &&
              p.dtype >= kF32 && p.dtype <= kF16 && (p.kind == 0 || h[5] == 2 || h[5] == 4), "corrupt packed weight header");
  const int64_t vsize = p.dtype == kF32 ? 4 : 2, isize = h[5];
  int64_t bytes[4];
  for (int k = 0; k < 3 + p.kind; ++k) {
    int64_t off = h[6 + 2 * k];
    bytes[k] = h[7 + 2 * k];
    TORCH_CHECK(off >= kHeaderBytes && off % 64 == 0 && bytes[k] >= 0 && off + bytes[k] <= blob.numel(),
                "corrupt packed weight: part ", k, " lies outside the tensor");
    p.part[k] = base + off;
  }
  if (p.kind == 0) {  // mask (rows, chunks), values, row_ptr (rows + 1)
    TORCH_CHECK(bytes[0] == p.rows * ((p.cols + 15) / 16) * 2 && bytes[2] == (p.rows + 1) * 8, "corrupt packed weight: sizes");
    int64_t nonzeros = static_cast<const int64_t*>(p.part[2])[p.rows];
    TORCH_CHECK(nonzeros >= 0 && nonzeros <= blob.numel() && bytes[1] >= (nonzeros + 32) * vsize,
                "corrupt packed weight: values must hold every nonzero plus 32 padding entries");
  } else {  // slice_ptr (slices + 1), col, values, where (rows)
    int64_t slices = (p.rows + 15) / 16;
    TORCH_CHECK(bytes[0] == (slices + 1) * 8 && bytes[3] == p.rows * 4, "corrupt packed weight: sizes");
    int64_t entries = static_cast<const int64_t*>(p.part[0])[slices];
    TORCH_CHECK(entries >= 0 && entries <= blob.numel() && bytes[1] == entries * isize && bytes[2] == entries * vsize,
                "corrupt packed weight: sizes");
  }
  return p;
}

// x is contiguous, (..., cols); y (undefined on the tiled path) is written in x's dtype.
Args packed_args(const Packed& p, const at::Tensor& x, at::Tensor& y, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.is_contiguous(), "x must be contiguous");
  Args a{};
  a.y = y.defined() ? y.data_ptr() : nullptr;
  a.y_dtype = x_dtype(x);
  a.dtype = p.dtype;
  a.cols = x.size(-1);
  a.batch = inputs(x);
  a.rows = p.rows;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == p.rows && bias->is_contiguous(), "bias must be float32 (rows)");
    a.bias = bias->data_ptr<float>();
  }
  if (p.kind == 0) {
    a.mask = static_cast<const uint16_t*>(p.part[0]);
    a.values = p.part[1];
    a.row_ptr = static_cast<const int64_t*>(p.part[2]);
    a.chunks = (p.cols + 15) / 16;
  } else {
    a.slice_ptr = static_cast<const int64_t*>(p.part[0]);
    a.col = p.part[1];
    a.col16 = p.col16;
    a.values = p.part[2];
    a.where = static_cast<const int32_t*>(p.part[3]);
  }
  return a;
}

template <typename F>
void run_rows(const Args& a, F rows_fn) {
  // ~16k columns × batch per task (measured: even small layers gain from both cores)
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, a.cols * a.batch));
  at::parallel_for(0, a.rows, grain, [&](int64_t r0, int64_t r1) { rows_fn(a, r0, r1); });
}

// Slices are sorted by nonzero count, so equal numbers of slices are unequal work: each task takes
// the slices holding an equal share of the stored entries.
template <typename F>
void run_slices(const Args& a, int64_t slices, F slices_fn) {
  const int64_t total = a.slice_ptr[slices] * a.batch;
  const int64_t tasks = std::min<int64_t>(at::get_num_threads(), std::max<int64_t>(1, total / kSellTaskEntries));
  if (tasks <= 1) return slices_fn(a, 0, slices);
  auto first = [&](int64_t t) -> int64_t {  // the first slice of task t
    if (t >= tasks) return slices;
    return std::lower_bound(a.slice_ptr, a.slice_ptr + slices, a.slice_ptr[slices] * t / tasks) - a.slice_ptr;
  };
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) { slices_fn(a, first(t0), first(t1)); });
}

// The sparse kernels for a few inputs: x (..., cols) into y (..., rows), both contiguous.
void bitmask_small(const Packed& p, const at::Tensor& x, at::Tensor& y, const c10::optional<at::Tensor>& bias,
                   int64_t level) {
  Args a = packed_args(p, x, y, bias);
  if (level >= kAvx512Bf16 && x.scalar_type() == at::kBFloat16 && p.dtype == kBF16) {
    a.xb = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
    a.xb_stride = a.cols;
    Scratch<uint16_t> padded;  // rows must span whole 32-column steps: pad with zeros unless they already do
    if (a.cols % 32) {
      a.xb_stride = (a.chunks + 1) / 2 * 32;
      padded.assign(a.batch * a.xb_stride, 0);
      for (int64_t b = 0; b < a.batch; ++b) std::memcpy(&padded[b * a.xb_stride], a.xb + b * a.cols, 2 * a.cols);
      a.xb = padded.data();
    }
    return run_rows(a, level == kAvx512Permute ? bitmask_rows_bf16_permute : bitmask_rows_bf16dp);
  }
  Scratch<float> buf;
  a.x = x_as_f32(x, buf);
  switch (level) {
    case kAvx512Permute: run_rows(a, bitmask_rows_f32_permute); break;
    case kAvx512Bf16:
    case kAvx512: run_rows(a, bitmask_rows_avx512); break;
    case kAvx2: run_rows(a, bitmask_rows_avx2); break;
    default: run_rows(a, bitmask_rows_scalar);
  }
}

void sell_small(const Packed& p, const at::Tensor& x, at::Tensor& y, const c10::optional<at::Tensor>& bias, int64_t level) {
  Args a = packed_args(p, x, y, bias);
  Scratch<float> buf, lanes;
  a.x = x_as_f32(x, buf);
  int64_t slices = (p.rows + 15) / 16;
  lanes.resize_for_overwrite(a.batch * slices * 16);  // every lane is written
  a.lanes = lanes.data();
  a.lanes_stride = slices * 16;
  if (level >= kAvx512) {
    run_slices(a, slices, sell_slices_avx512);
    return sell_rows_avx512(a);
  }
  if (level == kAvx2) run_slices(a, slices, sell_slices_avx2);
  else run_slices(a, slices, sell_slices_scalar);
  sell_rows(a, 0);
}

// Dense float32 rows [r0, r1) of a compressed matrix into `out`, for the tiled large-batch path.
void bitmask_unpack_rows(const Args& a, float* out, int64_t r0, int64_t r1) {
  std::memset(out, 0, sizeof(float) * (r1 - r0) * a.cols);
  for (int64_t r = r0; r < r1; ++r) {
    int64_t v = a.row_ptr[r];
    float* dst = out + (r - r0) * a.cols;
    for (int64_t c = 0; c < a.chunks; ++c) {
      uint32_t m = a.mask[r * a.chunks + c];
      while (m) {
        int j = __builtin_ctz(m);
        dst[c * 16 + j] = scalar_value(a.values, a.dtype, v++);
        m &= m - 1;
      }
    }
  }
}

AVX512 void bitmask_unpack_rows_avx512(const Args& a, float* out, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    int64_t v = a.row_ptr[r];
    float* dst = out + (r - r0) * a.cols;
    const uint16_t* mrow = a.mask + r * a.chunks;
    int64_t full = a.cols / 16;
    for (int64_t c = 0; c < full; ++c) {
      __mmask16 m = mrow[c];
      _mm512_storeu_ps(dst + c * 16, _mm512_maskz_expand_ps(m, load16(a.values, a.dtype, v)));
      v += _mm_popcnt_u32(m);
    }
    if (full < a.chunks) {
      __mmask16 tail = static_cast<__mmask16>((1u << (a.cols - full * 16)) - 1);
      _mm512_mask_storeu_ps(dst + full * 16, tail, _mm512_maskz_expand_ps(mrow[full], load16(a.values, a.dtype, v)));
    }
  }
}

// sell: row r is lane where[r] % 16 of slice where[r] / 16; its entries are every 16th from the
// slice's start, padding (the only zeros stored) skipped.
void sell_unpack_rows(const Args& a, float* out, int64_t r0, int64_t r1) {
  std::memset(out, 0, sizeof(float) * (r1 - r0) * a.cols);
  for (int64_t r = r0; r < r1; ++r) {
    int64_t s = a.where[r] / 16;
    float* dst = out + (r - r0) * a.cols;
    for (int64_t i = a.slice_ptr[s] + a.where[r] % 16; i < a.slice_ptr[s + 1]; i += 16) {
      float v = scalar_value(a.values, a.dtype, i);
      if (v != 0.f) dst[col_at(a, i)] = v;
    }
  }
}

// 16-bit values copied as they are into a tile of the same 16-bit type (bf16 or fp16 model).
void bitmask_unpack_rows16(const Args& a, uint16_t* out, int64_t r0, int64_t r1) {
  const uint16_t* values = static_cast<const uint16_t*>(a.values);
  std::memset(out, 0, sizeof(uint16_t) * (r1 - r0) * a.cols);
  for (int64_t r = r0; r < r1; ++r) {
    int64_t v = a.row_ptr[r];
    uint16_t* dst = out + (r - r0) * a.cols;
    for (int64_t c = 0; c < a.chunks; ++c) {
      uint32_t m = a.mask[r * a.chunks + c];
      while (m) {
        dst[c * 16 + __builtin_ctz(m)] = values[v++];
        m &= m - 1;
      }
    }
  }
}

AVX512BF16 void bitmask_unpack_rows16_vbmi2(const Args& a, uint16_t* out, int64_t r0, int64_t r1) {
  const uint16_t* values = static_cast<const uint16_t*>(a.values);
  for (int64_t r = r0; r < r1; ++r) {
    int64_t v = a.row_ptr[r];
    uint16_t* dst = out + (r - r0) * a.cols;
    for (int64_t c = 0; c < a.chunks; c += 2) {  // 32 columns per step
      uint32_t m = a.mask[r * a.chunks + c] | (c + 1 < a.chunks ? static_cast<uint32_t>(a.mask[r * a.chunks + c + 1]) << 16 : 0u);
      __m512i w = _mm512_maskz_expand_epi16(m, _mm512_loadu_si512(values + v));
      v += _mm_popcnt_u32(m);
      int64_t left = a.cols - c * 16;
      __mmask32 k = left >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << left) - 1);
      _mm512_mask_storeu_epi16(dst + c * 16, k, w);
    }
  }
}

void sell_unpack_rows16(const Args& a, uint16_t* out, int64_t r0, int64_t r1) {
  const uint16_t* values = static_cast<const uint16_t*>(a.values);
  std::memset(out, 0, sizeof(uint16_t) * (r1 - r0) * a.cols);
  for (int64_t r = r0; r < r1; ++r) {
    int64_t s = a.where[r] / 16;
    uint16_t* dst = out + (r - r0) * a.cols;
    for (int64_t i = a.slice_ptr[s] + a.where[r] % 16; i < a.slice_ptr[s + 1]; i += 16)
      if (values[i] & 0x7FFF) dst[col_at(a, i)] = values[i];
  }
}

// Large batches: unpack tiles of rows into a dense buffer (kept in cache) and run dense GEMM on each,
// in x's own dtype (as nn.Linear would: a bf16 model keeps its bf16 GEMM). 16-bit values of x's own
// dtype are copied as they are (unpack16); anything else goes through float32 (unpack32).
template <typename F, typename G>
at::Tensor linear_tiled(const Args& a, const at::Tensor& x, const c10::optional<at::Tensor>& bias, int64_t tile_rows,
                        F unpack32, G unpack16) {
  TORCH_CHECK(tile_rows > 0, "tile_rows must be positive");
  auto dt = x.scalar_type();
  bool raw16 = (dt == at::kBFloat16 && a.dtype == kBF16) || (dt == at::kHalf && a.dtype == kF16);
  c10::optional<at::Tensor> b;
  if (a.bias) b = bias->to(dt);
  auto unpacked = [&](at::Tensor& tile, int64_t r0, int64_t r1) {  // rows [r0, r1) as a (r1 - r0, cols) tensor of dt
    at::Tensor dense = tile.narrow(0, 0, r1 - r0);
    if (raw16) {
      auto* out = static_cast<uint16_t*>(tile.data_ptr());
      at::parallel_for(r0, r1, 8, [&](int64_t s0, int64_t s1) { unpack16(a, out + (s0 - r0) * a.cols, s0, s1); });
      return dense;
    }
    float* out = tile.data_ptr<float>();
    at::parallel_for(r0, r1, 8, [&](int64_t s0, int64_t s1) { unpack32(a, out + (s0 - r0) * a.cols, s0, s1); });
    return dt == at::kFloat ? dense : dense.to(dt);
  };
  at::Tensor tile = at::empty({std::min(tile_rows, a.rows), a.cols}, x.options().dtype(raw16 ? dt : at::kFloat));
  if (a.rows <= tile_rows) return at::linear(x, unpacked(tile, 0, a.rows), b);  // exactly what nn.Linear runs
  at::Tensor yt = at::empty({a.rows, a.batch}, x.options());  // (rows, batch): each tile's rows are contiguous
  at::Tensor xt = x.t();
  for (int64_t r0 = 0; r0 < a.rows; r0 += tile_rows) {
    int64_t r1 = std::min(a.rows, r0 + tile_rows);
    at::Tensor dense = unpacked(tile, r0, r1);  // (tile, cols)
    at::Tensor ys = yt.narrow(0, r0, r1 - r0);  // (tile, batch)
    if (b) {
      at::addmm_out(ys, b->narrow(0, r0, r1 - r0).unsqueeze(1), dense, xt);
    } else {
      at::mm_out(ys, dense, xt);
    }
  }
  return yt.t().contiguous();
}

at::Tensor tiled(const Packed& p, const at::Tensor& x, const c10::optional<at::Tensor>& bias, int64_t tile_rows,
                 int64_t level) {
  at::Tensor unused;
  Args a = packed_args(p, x, unused, bias);
  if (p.kind == 1) return linear_tiled(a, x, bias, tile_rows, sell_unpack_rows, sell_unpack_rows16);
  if (level >= kAvx512Bf16) return linear_tiled(a, x, bias, tile_rows, bitmask_unpack_rows_avx512, bitmask_unpack_rows16_vbmi2);
  if (level == kAvx512) return linear_tiled(a, x, bias, tile_rows, bitmask_unpack_rows_avx512, bitmask_unpack_rows16);
  return linear_tiled(a, x, bias, tile_rows, bitmask_unpack_rows, bitmask_unpack_rows16);
}

// nn.Linear's forward for a packed weight, in one call (fixed costs are most of a small layer's time):
// x of any shape (..., cols); batches up to `small_batch` rows run the sparse kernel, larger ones the
// tiled dense path.
at::Tensor sparse_forward(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias,
                          int64_t isa, int64_t small_batch, int64_t tile_rows) {
  TORCH_CHECK(x.is_cpu() && packed.is_cpu() && (!bias.has_value() || !bias->defined() || bias->is_cpu()),
              "the sparse kernel runs on CPU tensors only");
  Packed p = read_packed(packed);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == p.cols, "x must end in a dimension of ", p.cols, " features, got shape ",
              x.sizes());
  x_dtype(x);
  at::Tensor xc = x.contiguous();
  int64_t batch = inputs(x);
  at::DimVector shape(x.sizes());
  shape.back() = p.rows;
  int64_t level = resolve_isa(isa);
  if (batch <= small_batch) {  // no reshapes: a small layer's call is a few µs, and each Tensor op costs ~0.2
    at::Tensor y = at::empty(shape, x.options());
    if (p.kind == 0) bitmask_small(p, xc, y, bias, level);
    else sell_small(p, xc, y, bias, level);
    return y;
  }
  if (tile_rows <= 0) tile_rows = std::max<int64_t>(64, (int64_t{1} << 21) / std::max<int64_t>(p.cols, 1));  // ~8 MB
  return tiled(p, xc.view({batch, p.cols}), bias, tile_rows, level).view(shape);
}

std::string isa_name(int64_t isa) {
  switch (resolve_isa(isa)) {
    case kAvx512Permute: return "avx512_permute";
    case kAvx512Bf16: return "avx512_bf16";
    case kAvx512: return "avx512";
    case kAvx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace

void bind_memory_pool(pybind11::module_& m);  // memory_pool.cpp
void bind_dense_quant_linear(pybind11::module_& m);  // dense_quant_linear.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("sparse_forward", &sparse_forward, "nn.Linear forward for a packed W: any leading dims, small or tiled path");
  m.def("isa_name", &isa_name, "the ISA a call with this request would use");
  bind_memory_pool(m);
  bind_dense_quant_linear(m);
}
