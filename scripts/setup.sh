#!/usr/bin/env bash
# System setup for a fresh Debian 12 machine that already has the Rust toolchain.
# Installs only the apt packages that are missing (and runs `apt-get update` only then):
#   build-essential cmake nasm pkg-config  building kiln (libjpeg-turbo via cmake+nasm, rav1e asm, libwebp)
#   libvips-tools                          vips/vipsthumbnail: test corpus, reference thumbnails, bench baseline
#   libimage-exiftool-perl                 exiftool: EXIF Orientation test cases
#   icc-profiles-free                      /usr/share/color/icc/compatibleWithAdobeRGB1998.icc (ICC v2 AdobeRGB)
#   jq curl python3 time util-linux        scripts, benches (GNU time for peak RSS, taskset for pinning)
#   ffmpeg libav*-dev clang libclang-dev   transcode: ffmpeg-next links the system FFmpeg (bindgen needs
#                                          libclang); the ffmpeg/ffprobe CLIs make test clips, validate
#                                          outputs and are the transcode bench baseline
#   libvulkan1 mesa-vulkan-drivers         render: the wgpu compositor's Vulkan loader and Mesa's lavapipe (CPU Vulkan)
#   fonts-dejavu-core                      render: the sans/serif/mono text fonts
#   poppler-utils                          render tests: pdfinfo, pdftoppm (an independent PDF rasteriser)
# Idempotent; as root it runs apt-get directly, otherwise through sudo when available.
set -euo pipefail

PACKAGES=(
  build-essential cmake nasm pkg-config
  libvips-tools libimage-exiftool-perl icc-profiles-free
  jq curl python3 time util-linux ca-certificates
  ffmpeg libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev clang libclang-dev
  libvulkan1 mesa-vulkan-drivers fonts-dejavu-core poppler-utils
)

missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all system packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: not root and sudo is not available; install them as root:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
