#!/usr/bin/env bash
# Generates the image test corpus into data/corpus/ (gitignored) from the mate-backgrounds
# photos (scripts/fetch-photos.sh), with vips, vipsthumbnail, exiftool and python3 (stdlib).
# Idempotent: skipped when data/corpus/.stamp matches this script's checksum.
#
# data/corpus/
#   upright.png            640x400 truth for the orientation cases: Dune.jpg with a red bar on
#                          the left (x<160) and a blue bar on top (y<60)
#   orient/orient_N.jpg    N=1..8: pixels stored transformed, EXIF Orientation=N, so that every
#                          one renders upright as upright.png (5..8 are stored 400x640)
#   icc/adobergb.jpg       640x400 JPEG (q95, 4:4:4) in Adobe RGB (1998) with the profile embedded
#   icc/srgb_ref.png       the same JPEG correctly converted to sRGB (what a viewer shows)
#   icc/raw.png            the same JPEG's numbers with the profile ignored (the wrong rendering)
#   formats/               progressive.jpg alpha.png (gradient alpha) photo.webp photo.gif
#                          photo.tif cmyk.jpg gray.jpg photo16.png (16-bit)
#   bad/                   truncated.jpg (first 40% of Dune.jpg), zero.jpg (0 bytes),
#                          garbage.bin (4 KiB of seeded random bytes), text.jpg (text),
#                          bomb.png (valid 1-bit PNG declaring 50000x50000, ~300 KB),
#                          bomb.jpg (a small JPEG whose SOF0 says 65000x65000)
#   ref/photos/NAME_256.png  vipsthumbnail --size 256x256 of every mate-backgrounds photo
#   ref/*.png              vipsthumbnail --size 256x256 of upright, icc/srgb_ref, icc/raw,
#                          and of each formats/ input (formats_photo_webp_256.png, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/data/corpus
PHOTOS=$ROOT/data/mate-backgrounds/usr/share/backgrounds/mate
AROGB_ICC=/usr/share/color/icc/compatibleWithAdobeRGB1998.icc

stamp=$(sha256sum "$0" | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ]; then
  exit 0
fi

for tool in vips vipsthumbnail vipsheader exiftool python3; do
  command -v "$tool" >/dev/null || { echo "make-corpus: $tool is missing; run scripts/setup.sh" >&2; exit 1; }
done
[ -f "$AROGB_ICC" ] || { echo "make-corpus: $AROGB_ICC is missing; run scripts/setup.sh (icc-profiles-free)" >&2; exit 1; }
[ -d "$PHOTOS" ] || bash scripts/fetch-photos.sh >/dev/null

echo "make-corpus: generating $OUT"
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"/{orient,icc,formats,bad,ref/photos}
T=$OUT.tmp
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# --- the upright truth: a real photo with asymmetric colour bars ----------------------------
vipsthumbnail "$PHOTOS/nature/Dune.jpg" --size 640x400 -o "$W/base.v"
vips draw_rect "$W/base.v" "255 0 0" 0 0 160 400 --fill
vips draw_rect "$W/base.v" "0 0 255" 0 0 640 60 --fill
vips copy "$W/base.v" "$T/upright.png[strip]"

# --- orientation 1..8 ------------------------------------------------------------------------
# Stored pixels S = inverse of the display transform applied to the upright image U.
U=$W/base.v
vips copy "$U" "$W/s1.v"
vips flip "$U" "$W/s2.v" horizontal
vips rot "$U" "$W/s3.v" d180
vips flip "$U" "$W/s4.v" vertical
vips rot "$U" "$W/t.v" d90 && vips flip "$W/t.v" "$W/s5.v" horizontal      # transpose
vips rot "$U" "$W/s6.v" d270
vips rot "$U" "$W/t.v" d270 && vips flip "$W/t.v" "$W/s7.v" horizontal     # transverse
vips rot "$U" "$W/s8.v" d90
for n in 1 2 3 4 5 6 7 8; do
  vips jpegsave "$W/s$n.v" "$T/orient/orient_$n.jpg" --Q 95 --subsample-mode off --strip
  exiftool -q -overwrite_original "-Orientation#=$n" "$T/orient/orient_$n.jpg"
done
# Self-check: vips' own autorot must render every case upright.
for n in 1 2 3 4 5 6 7 8; do
  vips autorot "$T/orient/orient_$n.jpg" "$W/up$n.v"
  d=$(vips subtract "$W/up$n.v" "$U" "$W/d.v" && vips abs "$W/d.v" "$W/a.v" && vips avg "$W/a.v")
  python3 -c "import sys; sys.exit(0 if float('$d') < 2.0 else 1)" ||
    { echo "make-corpus: orient_$n.jpg does not autorotate to upright (mean abs diff $d)" >&2; exit 1; }
done

# --- ICC: Adobe RGB (1998) JPEG with embedded profile ----------------------------------------
vipsthumbnail "$PHOTOS/nature/YellowFlower.jpg" --size 640x400 -o "$W/flower.v"
vips icc_transform "$W/flower.v" "$W/adobe.v" "$AROGB_ICC" --input-profile srgb
vips jpegsave "$W/adobe.v" "$T/icc/adobergb.jpg" --Q 95 --subsample-mode off
vipsheader -f icc-profile-data "$T/icc/adobergb.jpg" >/dev/null 2>&1 ||
  { echo "make-corpus: icc/adobergb.jpg has no embedded profile" >&2; exit 1; }
vips icc_transform "$T/icc/adobergb.jpg" "$W/managed.v" srgb --embedded
vips copy "$W/managed.v" "$T/icc/srgb_ref.png[strip]"
vips copy "$T/icc/adobergb.jpg" "$T/icc/raw.png[strip]"

# --- other formats ---------------------------------------------------------------------------
F=$T/formats
vips jpegsave "$W/base.v" "$F/progressive.jpg" --Q 90 --interlace --strip
vips grey "$W/g.v" 640 400
vips linear "$W/g.v" "$W/g8.v" 255 0 --uchar
vips bandjoin "$W/base.v $W/g8.v" "$W/rgba.v"
vips copy "$W/rgba.v" "$F/alpha.png[strip]"
vips webpsave "$W/base.v" "$F/photo.webp" --Q 90 --strip
vips gifsave "$W/base.v" "$F/photo.gif"
vips tiffsave "$W/base.v" "$F/photo.tif" --compression deflate --strip
vips icc_transform "$W/base.v" "$W/cmyk.v" cmyk --input-profile srgb
vips jpegsave "$W/cmyk.v" "$F/cmyk.jpg" --Q 95
vips colourspace "$W/base.v" "$W/gray.v" b-w
vips jpegsave "$W/gray.v" "$F/gray.jpg" --Q 90 --strip
vips cast "$W/base.v" "$W/u16.v" ushort --shift
vips colourspace "$W/u16.v" "$W/rgb16.v" rgb16
vips pngsave "$W/rgb16.v" "$F/photo16.png" --strip

# --- bad inputs ------------------------------------------------------------------------------
python3 - "$PHOTOS/nature/Dune.jpg" "$T/bad" <<'PY'
import random, struct, sys, zlib, os
src, bad = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
open(os.path.join(bad, "truncated.jpg"), "wb").write(data[: len(data) * 40 // 100])
open(os.path.join(bad, "zero.jpg"), "wb").close()
rng = random.Random(20240601)
g = bytes(rng.getrandbits(8) for _ in range(4096))
g = b"\x13\x37" + g[2:]  # no known magic at the start
open(os.path.join(bad, "garbage.bin"), "wb").write(g)
open(os.path.join(bad, "text.jpg"), "w").write("this is a plain text file named .jpg, not a JPEG\n" * 20)

def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

# PNG bomb: a complete, valid 1-bit grayscale 50000x50000 PNG of zeros (2.5 Gpx, ~300 KB).
w = h = 50000
row = b"\x00" * (1 + (w + 7) // 8)  # filter byte + packed bits
z = zlib.compressobj(9)
parts = [z.compress(row) for _ in range(h)]
parts.append(z.flush())
idat = b"".join(parts)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
png += chunk(b"IDAT", idat) + chunk(b"IEND", b"")
open(os.path.join(bad, "bomb.png"), "wb").write(png)
PY
vips black "$W/small.v" 64 64 --bands 3
vips jpegsave "$W/small.v" "$W/small.jpg" --Q 80 --strip
python3 - "$W/small.jpg" "$T/bad/bomb.jpg" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
i = 2
while i < len(b):
    assert b[i] == 0xFF, "bad marker walk"
    m, n = b[i + 1], struct.unpack(">H", b[i + 2:i + 4])[0]
    if m in (0xC0, 0xC1, 0xC2):  # SOFn: len(2) precision(1) height(2) width(2)
        b[i + 5:i + 9] = struct.pack(">HH", 65000, 65000)
        break
    i += 2 + n
else:
    sys.exit("no SOF marker")
open(sys.argv[2], "wb").write(bytes(b))
PY

# --- reference thumbnails (vipsthumbnail, fit inside 256x256, PNG) ---------------------------
mapfile -t photos < <(find "$PHOTOS" -type f \( -iname '*.jpg' -o -iname '*.png' \) | LC_ALL=C sort)
vipsthumbnail "${photos[@]}" --size 256x256 -o "$T/ref/photos/%s_256.png"
vipsthumbnail "$T/upright.png" --size 256x256 -o "$T/ref/upright_256.png"
vipsthumbnail "$T/icc/srgb_ref.png" --size 256x256 -o "$T/ref/icc_srgb_256.png"
vipsthumbnail "$T/icc/raw.png" --size 256x256 -o "$T/ref/icc_raw_256.png"
for f in progressive.jpg alpha.png photo.webp photo.gif photo.tif gray.jpg photo16.png cmyk.jpg; do
  vipsthumbnail "$F/$f" --size 256x256 -o "$T/ref/formats_${f/./_}_256.png"
done

echo "$stamp" > "$T/.stamp"
rm -rf "$OUT"
mv "$T" "$OUT"
echo "make-corpus: $(find "$OUT" -type f | wc -l) files in data/corpus/"
