#!/usr/bin/env bash
# tests/install/run.sh BUILD_DIR SOURCE_DIR -- installs the build into a
# temporary prefix and builds tiny consumers against the installed copy:
#   1. a CMake project with find_package(sfa) (shared and static library),
#   2. a plain `cc $(pkg-config --cflags --libs sfa)` program,
#   3. a parent project that takes the source tree with FetchContent;
# each runs consumer.c (version check + a bad argument rejected, no GPU).
# The shipped tuning tables are installed and import with sfa-tune.
# Also checks that libsfa.so exports only sfa.h's names and has the versioned
# SONAME, and that no binary needs libcuda or libnvrtc at link time.
# Exit 77 (CTest's skip) where cc or pkg-config is missing.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
here=$src/tests/install
for tool in cc pkg-config cmake nm readelf; do
  command -v "$tool" >/dev/null || { echo "skip: $tool not found"; exit 77; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/sfa-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
jobs=$(nproc 2>/dev/null || echo 2)

echo "== install into $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$prefix/lib
[ -f "$prefix/include/sfa.h" ] && [ -f "$libdir/libsfa.a" ] && [ -x "$prefix/bin/sfa-gen" ] \
  && [ -x "$prefix/bin/sfa-cache" ] && [ -x "$prefix/bin/sfa-tune" ] \
  && [ -f "$libdir/cmake/sfa/sfaConfig.cmake" ] && [ -f "$libdir/pkgconfig/sfa.pc" ]
echo "== the shipped tuning tables (there may be none), and sfa-tune imports them"
[ -d "$prefix/share/sfa/tuned" ] || { echo "FAIL: $prefix/share/sfa/tuned not installed"; exit 1; }
shopt -s nullglob
for t in "$src"/cache/tuned/*.tsv; do
  cmp "$t" "$prefix/share/sfa/tuned/$(basename "$t")"
  gpu=$(sed -n '1s/.* gpu=\(.*\) cc=[0-9]*$/\1/p' "$t"); cc=$(sed -n '1s/.* cc=//p' "$t")
  rows=$(grep -vc $'^#\\|^gpu\t' "$t") # its rows: not the comment or the header
  "$prefix/bin/sfa-tune" --cache-dir "$work/tunecache" --gpu "$gpu" --cc "$cc" \
    --import "$prefix/share/sfa/tuned/$(basename "$t")" 2>&1 | grep -Eq ": $rows rows? added"
done
shopt -u nullglob
soname=$(readelf -d "$libdir/libsfa.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
major=$(sed -n 's/^#define SFA_VERSION_MAJOR \([0-9]*\)$/\1/p' "$src/include/sfa.h")
[ "$soname" = "libsfa.so.$major" ] || { echo "FAIL: SONAME is '$soname', not libsfa.so.$major"; exit 1; }

echo "== exported symbols are sfa.h's"
exported=$(nm -D --defined-only "$libdir/libsfa.so" | awk '{print $3}' | sort)
declared=$(grep -o '^SFA_API [^(]*(' "$src/include/sfa.h" | sed 's/($//; s/.*[ *]//' | sort)
if [ "$exported" != "$declared" ]; then
  echo "FAIL: libsfa.so exports differ from sfa.h's SFA_API declarations:"
  diff <(echo "$declared") <(echo "$exported") || true
  exit 1
fi
echo "   $(echo "$exported" | wc -l) symbols, all declared in sfa.h"

echo "== no link-time CUDA dependency"
for f in "$libdir/libsfa.so" "$prefix"/bin/sfa-*; do
  if readelf -d "$f" | grep -E 'NEEDED.*(libcuda|libnvrtc)'; then
    echo "FAIL: $f needs a CUDA library at link time"; exit 1
  fi
done

echo "== find_package(sfa)"
cmake -S "$here/cmake" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake" -j"$jobs" >/dev/null
"$work/cmake/consumer_shared"
"$work/cmake/consumer_static"

echo "== cc \$(pkg-config --cflags --libs sfa)"
export PKG_CONFIG_PATH=$libdir/pkgconfig
# shellcheck disable=SC2046
cc -std=c11 -o "$work/consumer_pc" "$here/consumer.c" $(pkg-config --cflags --libs sfa)
LD_LIBRARY_PATH=$libdir "$work/consumer_pc"

echo "== FetchContent / add_subdirectory from a parent project"
cmake -S "$here/fetch" -B "$work/fetch" -DSFA_SOURCE="$src" >/dev/null
cmake --build "$work/fetch" -j"$jobs" >/dev/null
"$work/fetch/consumer_sub"
echo "install test: passed"
