// Separable resampling with weight tables computed on the host (kernels::cuda::resize::Table,
// the same tables as the CPU reference and fast_image_resize). Pass 1 convolves rows of u8
// pixels into f32 (optionally premultiplying alpha), pass 2 convolves columns into u8
// (optionally un-premultiplying). Compile with --fmad=false: the CPU reference then matches.

extern "C" __global__ void resize_h(
    const unsigned char* src, int src_stride, int ch, int premul,
    int row0, int rows, float* tmp, int dst_w,
    const int* starts, const int* lens, const float* w, int win)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= rows) return;
    const unsigned char* row = src + (size_t)(row0 + y) * src_stride;
    int s = starts[x], n = lens[x];
    const float* k = w + (size_t)x * win;
    float acc0 = 0.f, acc1 = 0.f, acc2 = 0.f, acc3 = 0.f;
    for (int i = 0; i < n; i++) {
        const unsigned char* p = row + (size_t)(s + i) * ch;
        float wi = k[i];
        if (ch == 4) {
            if (premul) {
                float a = (float)p[3] / 255.f;
                acc0 += wi * ((float)p[0] * a);
                acc1 += wi * ((float)p[1] * a);
                acc2 += wi * ((float)p[2] * a);
            } else {
                acc0 += wi * (float)p[0];
                acc1 += wi * (float)p[1];
                acc2 += wi * (float)p[2];
            }
            acc3 += wi * (float)p[3];
        } else if (ch == 3) {
            acc0 += wi * (float)p[0];
            acc1 += wi * (float)p[1];
            acc2 += wi * (float)p[2];
        } else {
            acc0 += wi * (float)p[0];
        }
    }
    float* o = tmp + ((size_t)y * dst_w + x) * ch;
    o[0] = acc0;
    if (ch >= 3) { o[1] = acc1; o[2] = acc2; }
    if (ch == 4) o[3] = acc3;
}

__device__ __forceinline__ unsigned char to_u8(float v)
{
    v = floorf(v + 0.5f);
    return (unsigned char)fminf(fmaxf(v, 0.f), 255.f);
}

extern "C" __global__ void resize_v(
    const float* tmp, int dst_w, int ch, int unpremul, int row0,
    unsigned char* dst, int dst_h, int dst_stride,
    const int* starts, const int* lens, const float* w, int win)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dst_w || y >= dst_h) return;
    int s = starts[y] - row0, n = lens[y];
    const float* k = w + (size_t)y * win;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int i = 0; i < n; i++) {
        const float* p = tmp + ((size_t)(s + i) * dst_w + x) * ch;
        float wi = k[i];
        for (int c = 0; c < ch; c++) acc[c] += wi * p[c];
    }
    unsigned char* o = dst + (size_t)y * dst_stride + (size_t)x * ch;
    if (ch == 4 && unpremul) {
        float a = fminf(fmaxf(acc[3], 0.f), 255.f);
        for (int c = 0; c < 3; c++) {
            float v = a > 0.f ? acc[c] * 255.f / a : 0.f;
            o[c] = to_u8(v);
        }
        o[3] = to_u8(a);
    } else {
        for (int c = 0; c < ch; c++) o[c] = to_u8(acc[c]);
    }
}
