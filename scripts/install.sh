#!/usr/bin/env bash
# Builds the broker (litebrokerd) and the CLI (litebroker) in release mode and
# installs both where cargo installs programs: ~/.cargo/bin, which rustup puts on
# the PATH (or DIR/bin with --root DIR; env CARGO_INSTALL_ROOT as for cargo).
#
#   scripts/install.sh [--root DIR] [--debug] [--uninstall]
#
# --debug installs a debug build instead: quicker to build, slower to run (the
# quick-start test uses it to reuse the test suite's build; cargo's environment,
# e.g. CARGO_TARGET_DIR and CARGO_NET_OFFLINE, applies as to any cargo command).
#
# It runs, from this repository, one command per program:
#   cargo install --locked --path server       # litebrokerd
#   cargo install --locked --path client/cli   # litebroker
# (--locked: the dependency versions of Cargo.lock, the ones tested.) The same two
# commands install them on Windows. Shell completions afterwards:
#   litebroker completions bash|zsh|fish|powershell
set -euo pipefail

die() { echo "install: $*" >&2; exit 2; }

root=()
profile=()
uninstall=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --root) [[ $# -ge 2 ]] || die "--root needs a folder"; root=(--root "$2"); shift 2 ;;
    --debug) profile=(--debug); shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

cd "$(dirname "$0")/.."
command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain (https://rustup.rs) first"

if [[ $uninstall == 1 ]]; then
  cargo uninstall "${root[@]}" litebroker-cli litebroker-server
  exit 0
fi

cargo install --locked "${root[@]}" "${profile[@]}" --path server
cargo install --locked "${root[@]}" "${profile[@]}" --path client/cli

# Where cargo put them: --root, else CARGO_INSTALL_ROOT, else CARGO_HOME (~/.cargo).
if [[ ${#root[@]} -gt 0 ]]; then
  bin=${root[1]}/bin
else
  bin=${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin
fi
echo "installed: $("$bin/litebrokerd" --version), $("$bin/litebroker" --version) in $bin"
found=$(command -v litebroker || true)
if [[ $found != "$bin/litebroker" ]]; then
  echo "note: $bin is not first on your PATH${found:+ (litebroker runs $found)}; add it:" >&2
  echo "  export PATH=\"$bin:\$PATH\"" >&2
fi
