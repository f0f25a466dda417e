#!/usr/bin/env bash
# Real photos for tests and benches: Debian's `mate-backgrounds` package (GPL-2+/CC-BY-SA
# wallpapers; 16 JPEG + 14 PNG in 1.26.0-1), downloaded with `apt-get download` (not
# installed) into data/debs/ and extracted with `dpkg -x` into data/mate-backgrounds/.
# Idempotent: nothing is downloaded when the photos are already extracted.
#
#   scripts/fetch-photos.sh          fetch if needed, print a one-line summary
#   scripts/fetch-photos.sh --list   same, then print every photo's path (JPEG and PNG), one a line
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEST=data/mate-backgrounds
PHOTOS=$DEST/usr/share/backgrounds/mate

list_photos() {
  find "$ROOT/$PHOTOS" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | LC_ALL=C sort
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "fetch-photos: need root (or sudo) for: $*" >&2; return 1; fi
}

if [ ! -d "$PHOTOS" ] || [ -z "$(list_photos | head -n1)" ]; then
  mkdir -p data/debs
  apt_opts=()
  # As root apt drops to the _apt user for downloads, which cannot write here.
  [ "$(id -u)" -eq 0 ] && apt_opts=(-o APT::Sandbox::User=root)
  if ! ls data/debs/mate-backgrounds_*.deb >/dev/null 2>&1; then
    echo "fetch-photos: apt-get download mate-backgrounds" >&2
    if ! (cd data/debs && apt-get "${apt_opts[@]}" download -q mate-backgrounds >/dev/null); then
      echo "fetch-photos: download failed; refreshing the package lists and retrying" >&2
      as_root apt-get update -qq >&2
      (cd data/debs && apt-get "${apt_opts[@]}" download -q mate-backgrounds >/dev/null)
    fi
  fi
  deb=$(ls data/debs/mate-backgrounds_*.deb | LC_ALL=C sort | tail -n1)
  echo "fetch-photos: extracting $(basename "$deb") into $DEST/" >&2
  rm -rf "$DEST.tmp"
  dpkg -x "$deb" "$DEST.tmp"
  rm -rf "$DEST"
  mv "$DEST.tmp" "$DEST"
fi

n_jpg=$(list_photos | grep -ciE '\.jpe?g$' || true)
n_png=$(list_photos | grep -ciE '\.png$' || true)
if [ "$((n_jpg + n_png))" -eq 0 ]; then
  echo "fetch-photos: no photos found under $PHOTOS" >&2
  exit 1
fi

if [ "${1:-}" = "--list" ]; then
  list_photos
else
  echo "fetch-photos: $((n_jpg + n_png)) photos ($n_jpg JPEG, $n_png PNG) in $PHOTOS/"
fi
