#!/bin/sh
# A/B of tokend builds on a shared machine: runs the comparative suite's
# write groups (etcd alongside, as the yardstick of each round) once per
# build, the builds alternating, REPEATS times; then merges each build's
# runs into one table (tokend-bench report FILE...).
#
#   sh bench/ab.sh OUTDIR REPEATS BIN_A BIN_B [BIN ...]
#
# Knobs as bench/run.sh: BENCH_DURATION, BENCH_WARMUP, BENCH_ROUNDS (per
# run; default 2), BENCH_ETCD, BENCH_ARGS (e.g. -write-c 16). Needs
# bin/tokend-bench (bench/run.sh or `cd bench && go build -o ../bin/tokend-bench ./cmd/tokend-bench`).
set -eu
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { echo "usage: $0 OUTDIR REPEATS BIN_A BIN_B [BIN ...]" >&2; exit 2; }
out=$1 reps=$2
shift 2
mkdir -p "$out"
for r in $(seq 1 "$reps"); do
	for b in "$@"; do
		n=$(basename "$b")
		echo "bench: run $r of $reps, $n" >&2
		# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
		bin/tokend-bench suite -tokend "$b" -etcd "${BENCH_ETCD-/usr/bin/etcd}" -fetch-c= \
			-duration "${BENCH_DURATION:-2s}" -warmup "${BENCH_WARMUP:-500ms}" -rounds "${BENCH_ROUNDS:-2}" \
			-json "$out/$n-$r.json" ${BENCH_ARGS:-} >"$out/$n-$r.md" 2>"$out/$n-$r.log"
	done
done
for b in "$@"; do
	n=$(basename "$b")
	echo "## $n"
	bin/tokend-bench report "$out/$n"-*.json
	echo
done
