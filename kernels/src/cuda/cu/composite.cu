// Alpha compositing with kiln's integer arithmetic (kernels::image::composite): a mark (RGB or
// straight-alpha RGBA, times `op` in 0..=256) "over" a base (RGB or RGBA) at (ox, oy), and
// RGBA flattened onto a background colour. Integer math: the GPU and the CPU agree exactly.

__device__ __forceinline__ unsigned char blend(unsigned int fg, unsigned int bg, unsigned int a)
{
    return (unsigned char)((fg * a + bg * (255u - a) + 127u) / 255u);
}

extern "C" __global__ void over(
    unsigned char* base, int bw, int bh, int cb,
    const unsigned char* mark, int mw, int mh, int cm,
    int ox, int oy, unsigned int op)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= mw || y >= mh || ox + x >= bw || oy + y >= bh) return;
    const unsigned char* m = mark + ((size_t)y * mw + x) * cm;
    unsigned char* b = base + ((size_t)(oy + y) * bw + (ox + x)) * cb;
    unsigned int ma = cm == 4 ? m[3] : 255u;
    unsigned int a = (ma * op) >> 8;
    if (a == 0) return;
    if (cb == 3) {
        for (int c = 0; c < 3; c++) b[c] = blend(m[c], b[c], a);
    } else {
        unsigned int ba = b[3];
        unsigned int out_a = a * 255u + ba * (255u - a);
        unsigned int d = out_a > 0 ? out_a : 1u;
        for (int c = 0; c < 3; c++) {
            unsigned int v = ((unsigned int)m[c] * a * 255u + (unsigned int)b[c] * ba * (255u - a) + out_a / 2u) / d;
            b[c] = (unsigned char)(v < 255u ? v : 255u);
        }
        b[3] = (unsigned char)((out_a + 127u) / 255u);
    }
}

extern "C" __global__ void flatten(const unsigned char* rgba, unsigned char* rgb, int n, int bg0, int bg1, int bg2)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const unsigned char* p = rgba + (size_t)i * 4;
    unsigned int a = p[3];
    rgb[(size_t)i * 3] = blend(p[0], (unsigned int)bg0, a);
    rgb[(size_t)i * 3 + 1] = blend(p[1], (unsigned int)bg1, a);
    rgb[(size_t)i * 3 + 2] = blend(p[2], (unsigned int)bg2, a);
}
