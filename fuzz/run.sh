#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds (default 60) from its committed
# seed corpus, and fails if any of them finds a crash.
#
#   fuzz/run.sh 20            every target, 20 s each (what CI runs)
#   fuzz/run.sh 600 toml      one target, 10 minutes
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a toolchain:
# nightly when installed, else stable, which builds these targets as well
# since they use no sanitizer; FUZZ_TOOLCHAIN picks another. The build goes
# to FUZZ_TARGET_DIR if set (CI keeps it between runs), else target/.
#
# The committed seeds (corpus/TARGET) are only read: what a run learns goes
# to target/corpus/TARGET, which later runs start from too. A crash leaves
# its input in artifacts/TARGET/, and the log (target/logs/TARGET.log) ends
# with the panic, the input and the command that replays it.
#
# No sanitizer: the parsers are safe Rust (unsafe code is denied outside
# the platform module), so AddressSanitizer would only halve the speed.
# Overflow checks and debug assertions are on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds=${1:-60}
shift || true
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(flat toml resolve cmdline proxy)
fi

toolchain=${FUZZ_TOOLCHAIN:-nightly}
if ! rustup toolchain list | grep "^$toolchain" >/dev/null; then
    echo "fuzz: no $toolchain toolchain; building with stable" >&2
    toolchain=stable
fi
fuzz=(cargo "+$toolchain" fuzz)
build=(--sanitizer none --debug-assertions)
if [ -n "${FUZZ_TARGET_DIR:-}" ]; then
    build+=(--target-dir "$FUZZ_TARGET_DIR")
fi

if [ $# -gt 0 ]; then
    for target in "${targets[@]}"; do
        "${fuzz[@]}" build "${build[@]}" "$target"
    done
else
    "${fuzz[@]}" build "${build[@]}"
fi
mkdir -p target/logs
failed=()
for target in "${targets[@]}"; do
    mkdir -p "target/corpus/$target"
    log="target/logs/$target.log"
    # -timeout: seconds one input may take; -rss_limit_mb: memory cap;
    # -max_len: room for the example files (the TOML one is 6 KiB).
    if "${fuzz[@]}" run "${build[@]}" "$target" "target/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -dict="dict/$target.dict" -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$target")
    fi
    # libFuzzer's last status line: runs, coverage, corpus, speed.
    stats=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | tr -s ' \t' ' ' || true)
    printf '%-8s %-6s %s\n' "$target" "$status" "$stats"
    if [ "$status" = FAILED ]; then
        # From the panic on: the input (libFuzzer prints it in Base64) and
        # how to replay it. A build error has no panic: its last lines.
        if grep -q 'panicked at\|ERROR: libFuzzer' "$log"; then
            sed -n '/panicked at\|ERROR: libFuzzer/,$p' "$log" | head -n 150
        else
            tail -n 40 "$log"
        fi
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}; add each input as a regression test" >&2
    exit 1
fi
