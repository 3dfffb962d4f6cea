// Shared by the compiled kernels (sparse_linear.cpp, dense_quant_linear.cpp): instruction-set
// detection, the dtypes x may have, per-call scratch memory, x as float32, and AVX2 helpers.
#pragma once

#include <torch/extension.h>
#include <c10/util/SmallVector.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace prunekit {

enum Isa : int64_t { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3, kAvx512Permute = 4 };
enum Dtype : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

inline int64_t detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) {
    bool bf16 = __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vbmi2");
    if (!bf16) return kAvx512;
    bool permute = __builtin_cpu_is("amd") && __builtin_cpu_supports("avx512bitalg") &&
                   __builtin_cpu_supports("avx512vpopcntdq");
    return permute ? kAvx512Permute : kAvx512Bf16;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
  return kScalar;
}

inline int64_t resolve_isa(int64_t requested) {
  static const int64_t best = detect_isa();  // once per process, not per call
  return requested < 0 || requested > best ? best : requested;
}

// x may be float32, bfloat16 or float16: the kernels compute in float32 and write y in x's dtype.
inline int x_dtype(const at::Tensor& x) {
  auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, "x must be float32, bfloat16 or float16, got ", t);
  return t == at::kFloat ? kF32 : t == at::kBFloat16 ? kBF16 : kF16;
}

// Per-call scratch memory on the stack up to 16 KB: filling a fresh 2.3 KB std::vector measured
// ~0.7 µs per call here (page faults, by the look of it), a fifth of a small layer's kernel time.
template <typename T>
using Scratch = c10::SmallVector<T, 16384 / sizeof(T)>;

// x (contiguous) as float32: its own data, or converted into `buf` (cheaper here than a Tensor.to call).
inline const float* x_as_f32(const at::Tensor& x, Scratch<float>& buf) {
  if (x.scalar_type() == at::kFloat) return x.data_ptr<float>();
  const int64_t n = x.numel();
  buf.resize_for_overwrite(n);
  if (x.scalar_type() == at::kBFloat16) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits = static_cast<uint32_t>(h[i]) << 16;
      std::memcpy(&buf[i], &bits, 4);
    }
  } else {
    const at::Half* h = x.data_ptr<at::Half>();
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(h[i]);
  }
  return buf.data();
}

// The number of inputs in x (..., cols): the product of its leading dimensions.
inline int64_t inputs(const at::Tensor& x) {
  int64_t n = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) n *= x.size(d);
  return n;
}


// y[i] = v, rounded to y's dtype (round to nearest even, as Tensor.to does).
inline void put_value(void* y, int y_dtype, int64_t i, float v) {
  if (y_dtype == kF32) static_cast<float*>(y)[i] = v;
  else if (y_dtype == kBF16) static_cast<at::BFloat16*>(y)[i] = at::BFloat16(v);
  else static_cast<at::Half*>(y)[i] = at::Half(v);
}

#define AVX2 __attribute__((target("avx2,fma,f16c,popcnt")))

// For each 8-bit mask, the source lane of every set bit in the packed values (rank of the bit): AVX2 has no
// expand instruction, so a mask's lanes come from one permute with this row as its index.
struct ExpandTable {
  alignas(32) int32_t idx[256][8];
  ExpandTable() {
    for (int m = 0; m < 256; ++m) {
      int k = 0;
      for (int j = 0; j < 8; ++j) idx[m][j] = (m >> j) & 1 ? k++ : 0;
    }
  }
};
inline const ExpandTable kExpand;

// The 8 lanes of `packed` expanded under mask m: lane j takes the next packed lane where bit j is set, else 0.
AVX2 inline __m256 expand8_ps(uint32_t m, __m256 packed) {
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  __m256i lanes = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), bits), bits);
  __m256 w = _mm256_permutevar8x32_ps(packed, _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.idx[m])));
  return _mm256_and_ps(w, _mm256_castsi256_ps(lanes));
}

AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace prunekit
