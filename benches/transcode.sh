#!/usr/bin/env bash
# Transcode benchmark: a 1080p30 source (lavfi testsrc2 + a sine tone, H.264/AAC) to a 3-rung
# HLS ladder (1080/720/480 at 5000/3000/1500 kbps, libx264 veryfast, 4 s segments, AAC 128k),
# kiln against the ffmpeg CLI doing the same in one process (split filter, one HLS output per
# rung, same rate control and forced keyframes), alternating, ROUNDS rounds.
#
#   benches/transcode.sh [SECONDS=25] [ROUNDS=3]
#   KILN_BIN=target/release/kiln (default; falls back to target/debug/kiln)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-25}
ROUNDS=${2:-3}
BIN=${KILN_BIN:-target/release/kiln}
[ -x "$BIN" ] || BIN=target/debug/kiln
WORK=$(mktemp -d /tmp/kiln-transcode-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/src-1080p30.mp4
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30:duration=$SECS" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$SECS" \
  -c:v libx264 -preset veryfast -b:v 8000k -pix_fmt yuv420p -c:a aac -b:a 128k -shortest "$SRC"
FRAMES=$((SECS * 30))

kiln_round() {
  local out=$WORK/kiln-$1
  cat > "$WORK/job-$1.json" <<JSON
{"id":"bench-$1","kind":"transcode","output":"file://$out/","input":{"source":"$SRC","segment_seconds":4,
 "accel":"cpu","preset":"veryfast","audio_bitrate_kbps":128,
 "ladder":[{"height":1080,"bitrate_kbps":5000},{"height":720,"bitrate_kbps":3000},{"height":480,"bitrate_kbps":1500}]}}
JSON
  KILN_STORE_URL="file://$WORK/store-$1/" /usr/bin/time -f "%e %M" -o "$WORK/time-kiln-$1" \
    "$BIN" run "$WORK/job-$1.json" > "$WORK/result-$1.json" 2>/dev/null
  grep -q '"status":"succeeded"' "$WORK/result-$1.json" || { cat "$WORK/result-$1.json"; exit 1; }
}

cli_round() {
  local out=$WORK/cli-$1
  mkdir -p "$out/1080p" "$out/720p" "$out/480p"
  local common=(-c:v libx264 -preset veryfast -pix_fmt yuv420p -force_key_frames "expr:gte(t,n_forced*4)"
                -c:a aac -b:a 128k -f hls -hls_time 4 -hls_playlist_type vod)
  /usr/bin/time -f "%e %M" -o "$WORK/time-cli-$1" ffmpeg -v error -y -i "$SRC" \
    -filter_complex "[0:v]split=3[a][b][c];[b]scale=-2:720[b2];[c]scale=-2:480[c2]" \
    -map "[a]" -map 0:a "${common[@]}" -b:v 5000k -maxrate 5500k -bufsize 10000k -hls_segment_filename "$out/1080p/seg-%05d.ts" "$out/1080p/index.m3u8" \
    -map "[b2]" -map 0:a "${common[@]}" -b:v 3000k -maxrate 3300k -bufsize 6000k -hls_segment_filename "$out/720p/seg-%05d.ts" "$out/720p/index.m3u8" \
    -map "[c2]" -map 0:a "${common[@]}" -b:v 1500k -maxrate 1650k -bufsize 3000k -hls_segment_filename "$out/480p/seg-%05d.ts" "$out/480p/index.m3u8"
}

# PSNR (luma, average) of one rung's HLS output against the source scaled straight to the
# rung's size with bicubic, frames paired by index.
psnr() {
  ffmpeg -nostats -i "$1/$2p/index.m3u8" -i "$SRC" -filter_complex \
    "[0:v]settb=1/30,setpts=N[a];[1:v]settb=1/30,setpts=N,scale=$3:$2:flags=bicubic[r];[a][r]psnr" -f null - 2>&1 |
    grep -o 'PSNR y:[0-9.]*.*average:[0-9.]*' | awk '{sub("y:","",$2); sub("average:","",$5); printf "%s/%s", $2, $5}'
}

echo "source: ${SECS}s 1080p30 ($FRAMES frames), kiln binary: $BIN, $(nproc) cores"
printf "%-6s %10s %8s %10s %10s %8s %10s %7s\n" round kiln_s kiln_fps kiln_MB cli_s cli_fps cli_MB ratio
KS=0; CS=0
for r in $(seq 1 "$ROUNDS"); do
  kiln_round "$r"
  cli_round "$r"
  read -r ks km < "$WORK/time-kiln-$r"
  read -r cs cm < "$WORK/time-cli-$r"
  awk -v r="$r" -v ks="$ks" -v km="$km" -v cs="$cs" -v cm="$cm" -v f="$FRAMES" 'BEGIN {
    printf "%-6s %10.2f %8.1f %10.0f %10.2f %8.1f %10.0f %7.2f\n", r, ks, f/ks, km/1024, cs, f/cs, cm/1024, cs/ks }'
  KS=$(awk -v a="$KS" -v b="$ks" 'BEGIN { print a + b }'); CS=$(awk -v a="$CS" -v b="$cs" 'BEGIN { print a + b }')
  if [ "$r" = 1 ]; then
    for h in 720:1280 480:854; do
      echo "quality $h: PSNR y/avg vs the source scaled directly: kiln $(psnr "$WORK/kiln-1" "${h%%:*}" "${h##*:}") dB, cli $(psnr "$WORK/cli-1" "${h%%:*}" "${h##*:}") dB" >> "$WORK/quality"
    done
  fi
  rm -rf "$WORK/kiln-$r" "$WORK/cli-$r" "$WORK/store-$r"
done
awk -v ks="$KS" -v cs="$CS" -v f="$FRAMES" -v n="$ROUNDS" 'BEGIN {
  printf "%-6s %10.2f %8.1f %10s %10.2f %8.1f %10s %7.2f\n", "sum", ks, f*n/ks, "", cs, f*n/cs, "", cs/ks }'
echo "ratio = cli wall / kiln wall (> 1: kiln faster)"
cat "$WORK/quality"
