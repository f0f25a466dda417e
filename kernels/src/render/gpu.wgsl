// kiln render compositor: blends one source tile onto the page canvas.
// Premultiplied RGBA8 packed r | g<<8 | b<<16 | a<<24, integer arithmetic identical to
// kernels/src/render/blend.rs (the CPU reference), so both backends give the same pixels.

struct Params {
    page_w: u32,
    px: u32,
    py: u32,
    tile_w: u32,
    tx: u32,
    ty: u32,
    cw: u32,
    ch: u32,
    opacity: u32,
    mode: u32,
    _pad0: u32,
    _pad1: u32,
};

@group(0) @binding(0) var<storage, read_write> canvas: array<u32>;
@group(0) @binding(1) var<storage, read> tile: array<u32>;
@group(0) @binding(2) var<uniform> p: Params;

fn mul255(a: u32, b: u32) -> u32 {
    let t = a * b + 128u;
    return (t + (t >> 8u)) >> 8u;
}

fn fade(px: u32, op: u32) -> u32 {
    if (op == 255u) {
        return px;
    }
    var out = 0u;
    for (var s = 0u; s < 32u; s += 8u) {
        out |= mul255((px >> s) & 255u, op) << s;
    }
    return out;
}

fn blend_px(s: u32, b: u32, mode: u32) -> u32 {
    let sa = s >> 24u;
    let ba = b >> 24u;
    let a = min(sa + ba - mul255(sa, ba), 255u);
    var out = a << 24u;
    for (var sh = 0u; sh < 24u; sh += 8u) {
        let cs = (s >> sh) & 255u;
        let cb = (b >> sh) & 255u;
        var c: u32;
        if (mode == 1u) {
            c = mul255(cs, 255u - ba) + mul255(cb, 255u - sa) + mul255(cs, cb);
        } else if (mode == 2u) {
            c = cs + cb - mul255(cs, cb);
        } else {
            c = cs + mul255(cb, 255u - sa);
        }
        out |= min(c, a) << sh;
    }
    return out;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x >= p.cw || id.y >= p.ch) {
        return;
    }
    let sp = tile[(p.ty + id.y) * p.tile_w + p.tx + id.x];
    if (sp == 0u) {
        return;
    }
    let ci = (p.py + id.y) * p.page_w + p.px + id.x;
    canvas[ci] = blend_px(fade(sp, p.opacity), canvas[ci], p.mode);
}
