// Inference preprocessing: an RGB8 image already resized to (rw, rh) placed at (px, py) on a
// (tw, th) canvas of the pad colour, then p * a[c] + b[c] per channel (kiln's `(p / scale -
// mean) / std`), in the model's channel order, as NCHW or NHWC f32 at `out`. One thread per
// output pixel; the batch's images are separate launches writing to their slice of one tensor.

extern "C" __global__ void letterbox(
    const unsigned char* img, int rw, int rh, int stride,
    float* out, int tw, int th, int px, int py,
    int pad0, int pad1, int pad2, int o0, int o1, int o2,
    float a0, float a1, float a2, float b0, float b1, float b2, int nhwc)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= tw || y >= th) return;
    int ix = x - px, iy = y - py;
    float p[3];
    if (ix >= 0 && iy >= 0 && ix < rw && iy < rh) {
        const unsigned char* s = img + (size_t)iy * stride + (size_t)ix * 3;
        p[0] = (float)s[0]; p[1] = (float)s[1]; p[2] = (float)s[2];
    } else {
        p[0] = (float)pad0; p[1] = (float)pad1; p[2] = (float)pad2;
    }
    float v0 = p[o0] * a0 + b0, v1 = p[o1] * a1 + b1, v2 = p[o2] * a2 + b2;
    size_t i = (size_t)y * tw + x;
    if (nhwc) {
        out[i * 3] = v0; out[i * 3 + 1] = v1; out[i * 3 + 2] = v2;
    } else {
        size_t plane = (size_t)tw * th;
        out[i] = v0; out[plane + i] = v1; out[2 * plane + i] = v2;
    }
}
