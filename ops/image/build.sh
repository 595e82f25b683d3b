#!/usr/bin/env bash
# Builds the Cairn container image from a `cairn` binary built on this machine, with no base
# image to pull: the image is FROM scratch and holds the binary plus exactly the shared
# libraries it loads (as ldd lists them, at the paths the loader looks for them).
#
#   ops/image/build.sh [BINARY] [TAG]      defaults: target/release/cairn  cairn:latest
#
# The image's entrypoint is `cairn`, so its command is a subcommand and flags:
#   docker run --rm cairn:latest node --help
set -euo pipefail

bin=${1:-target/release/cairn}
tag=${2:-cairn:latest}
if [ ! -x "$bin" ]; then
    echo "no executable at $bin: build it first (cargo build --release)" >&2
    exit 1
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root=$context/rootfs
mkdir -p "$root/usr/local/bin" "$root/data" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/cairn"

# `libfoo.so => /lib/.../libfoo.so (0x…)` and the loader's own line `/lib64/ld-linux… (0x…)`;
# a static binary has none of either.
libraries=$(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true)
for lib in $libraries; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin CAIRN_LOG=info
ENTRYPOINT ["/usr/local/bin/cairn"]
CMD ["--help"]
DOCKERFILE

docker build --quiet --label org.opencontainers.image.title=cairn --tag "$tag" "$context" >/dev/null
echo "built $tag from $bin ($(echo "$libraries" | grep -c . || true) shared libraries)"
