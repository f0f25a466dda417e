// YUV <-> RGB with a 3x3 matrix and offsets computed on the host (kernels::cuda::color::Matrix:
// BT.601/BT.709, full/limited range). One kernel pair serves NV12 (interleaved UV, cstep 2) and
// I420 (planar U and V, cstep 1); U and V are at offsets uo and vo of one chroma buffer. Chroma is 2x2 subsampled: decode takes the block's sample,
// encode averages the block's RGB before converting. Odd sizes: the last row/column's block is
// the pixels that exist.

__device__ __forceinline__ unsigned char to_u8(float v)
{
    v = floorf(v + 0.5f);
    return (unsigned char)fminf(fmaxf(v, 0.f), 255.f);
}

// m: 9 floats row-major (R,G,B from Y-oy, U-128, V-128), oy: luma offset.
extern "C" __global__ void yuv_to_rgb(
    const unsigned char* y_plane, int y_stride,
    const unsigned char* c_plane, int uo, int vo, int c_stride, int cstep,
    int w, int h, unsigned char* rgb, int rgb_stride, int ch,
    float m0, float m1, float m2, float m3, float m4, float m5, float m6, float m7, float m8, float oy)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= w || y >= h) return;
    float Y = (float)y_plane[(size_t)y * y_stride + x] - oy;
    size_t ci = (size_t)(y >> 1) * c_stride + (size_t)(x >> 1) * cstep;
    float U = (float)c_plane[uo + ci] - 128.f;
    float V = (float)c_plane[vo + ci] - 128.f;
    unsigned char* o = rgb + (size_t)y * rgb_stride + (size_t)x * ch;
    o[0] = to_u8(m0 * Y + m1 * U + m2 * V);
    o[1] = to_u8(m3 * Y + m4 * U + m5 * V);
    o[2] = to_u8(m6 * Y + m7 * U + m8 * V);
    if (ch == 4) o[3] = 255;
}

// One thread per 2x2 block. m: 9 floats row-major (Y, U, V from R, G, B), oy: luma offset.
extern "C" __global__ void rgb_to_yuv(
    const unsigned char* rgb, int rgb_stride, int ch, int w, int h,
    unsigned char* y_plane, int y_stride,
    unsigned char* c_plane, int uo, int vo, int c_stride, int cstep,
    float m0, float m1, float m2, float m3, float m4, float m5, float m6, float m7, float m8, float oy)
{
    int bx = blockIdx.x * blockDim.x + threadIdx.x;
    int by = blockIdx.y * blockDim.y + threadIdx.y;
    if (bx * 2 >= w || by * 2 >= h) return;
    float sr = 0.f, sg = 0.f, sb = 0.f;
    int n = 0;
    for (int dy = 0; dy < 2; dy++) {
        int yy = by * 2 + dy;
        if (yy >= h) break;
        for (int dx = 0; dx < 2; dx++) {
            int xx = bx * 2 + dx;
            if (xx >= w) break;
            const unsigned char* p = rgb + (size_t)yy * rgb_stride + (size_t)xx * ch;
            float r = (float)p[0], g = (float)p[1], b = (float)p[2];
            y_plane[(size_t)yy * y_stride + xx] = to_u8(m0 * r + m1 * g + m2 * b + oy);
            sr += r; sg += g; sb += b; n++;
        }
    }
    float inv = 1.f / (float)n;
    sr *= inv; sg *= inv; sb *= inv;
    size_t ci = (size_t)by * c_stride + (size_t)bx * cstep;
    c_plane[uo + ci] = to_u8(m3 * sr + m4 * sg + m5 * sb + 128.f);
    c_plane[vo + ci] = to_u8(m6 * sr + m7 * sg + m8 * sb + 128.f);
}
