#!/bin/bash
# variant_lib.sh -- builds libsfa.so of another version for an A/B run in one GPU call:
# the sources of a git revision (default HEAD), optionally with sed expressions applied to
# files, built in a scratch dir and copied (with the liblua5.4.so.0 it loads) into
# build/var/NAME, which travels with build/ to the GPU machine. There:
#   SFA_LIBRARY=$PWD/build/var/NAME/libsfa.so python3 bench/prof_case.py ...
# times that version against the default build in the same run (Python only: the C tests link
# libsfa statically). Usage:
#   bash bench/variant_lib.sh NAME [REV] [FILE SED-EXPRESSION]...
# e.g. the ws backward's producer at 40 registers (session 23's 4% question):
#   bash bench/variant_lib.sh p40 HEAD gen/variant.c 's/fill_ws(v, desc ? 40 : 24)/fill_ws(v, 40)/'
# Each expression must change its file (else the script stops: a silent no-op A/B is worse than
# none). Keep build/ under the device tool's 64 MiB carry limit: each variant adds about 1 MB.
# VAR_TESTS="test_gpu_backward ..." also builds those test targets of that version (libsfa linked
# in statically) into build/var/NAME/tests/, so that its GPU suites run there too (about 1 MB each).
set -euo pipefail
case "${1:-}" in -h|--help|"") sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;; esac
cd "$(dirname "$0")/.."
name=$1 rev=${2:-HEAD}
shift $(( $# >= 2 ? 2 : 1 ))
[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "variant_lib.sh: NAME '$name': letters, digits, _ . - only" >&2; exit 2; }
(( $# % 2 == 0 )) || { echo "variant_lib.sh: FILE and SED-EXPRESSION come in pairs" >&2; exit 2; }
src=$(mktemp -d /tmp/sfa-var-XXXXXX)
trap 'rm -rf "$src"' EXIT
git archive "$rev" | tar -x -C "$src"
while (( $# )); do
  file=$1 expr=$2
  shift 2
  [[ -f $src/$file ]] || { echo "variant_lib.sh: $file is not in $rev" >&2; exit 1; }
  cp "$src/$file" "$src/$file.orig"
  sed -i -e "$expr" "$src/$file"
  if cmp -s "$src/$file" "$src/$file.orig"; then
    echo "variant_lib.sh: '$expr' changes nothing in $file" >&2
    exit 1
  fi
  rm "$src/$file.orig"
done
echo "variant_lib.sh: building libsfa.so of $rev in $src"
cmake -S "$src" -B "$src/b" -DCMAKE_BUILD_TYPE=Release > "$src/cmake.log" 2>&1 ||
  { tail -20 "$src/cmake.log" >&2; exit 1; }
cmake --build "$src/b" -j"$(nproc)" --target sfa_shared > "$src/build.log" 2>&1 ||
  { tail -20 "$src/build.log" >&2; exit 1; }
mkdir -p build/var
rm -rf "build/var/$name"
mkdir "build/var/$name"
cp -a "$src"/b/libsfa.so* "build/var/$name/"
for t in ${VAR_TESTS:-}; do
  cmake --build "$src/b" -j"$(nproc)" --target "$t" >> "$src/build.log" 2>&1 ||
    { tail -20 "$src/build.log" >&2; exit 1; }
  mkdir -p "build/var/$name/tests"
  cp "$src/b/tests/$t" "build/var/$name/tests/"
done
lua=$(ldd "$src/b/libsfa.so" | awk '/liblua5.4/ {print $3}')
[[ -n $lua ]] && cp -L "$lua" "build/var/$name/liblua5.4.so.0"
echo "variant_lib.sh: build/var/$name ($(du -sh "build/var/$name" | cut -f1)); build/ is $(du -sh build | cut -f1)"
