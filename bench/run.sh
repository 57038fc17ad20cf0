#!/bin/sh
# The comparative suite of issue 7 (the second half of `make bench`): builds
# bin/tokend and bin/tokend-bench, installs Debian's etcd-server when it is
# missing, and runs `tokend-bench suite`, which starts a 3-agent tokend
# cluster, the floor server and a 3-member etcd cluster on loopback, runs
# interleaved rounds and stops and removes all of it at the end (or on ^C).
# The markdown table goes to stdout and $BENCH_OUT, every sample to
# $BENCH_JSON.
#
# Knobs (environment):
#   BENCH_DURATION  measured time of each run           (default 2s)
#   BENCH_WARMUP    unmeasured time before each run      (default 500ms)
#   BENCH_ROUNDS    interleaved rounds                   (default 5)
#   BENCH_ETCD      etcd binary; empty leaves etcd out   (default /usr/bin/etcd)
#   BENCH_OUT       markdown report                      (default bin/bench/results.md)
#   BENCH_JSON      JSON report                          (default bin/bench/results.json)
#   BENCH_ARGS      more flags for tokend-bench suite, e.g. "-raw -write-to follower -keep"
# 70 runs of 2.5 s: about 3.5 minutes with the defaults.
set -eu
cd "$(dirname "$0")/.."

GO=${GO:-go}
BENCH_DURATION=${BENCH_DURATION:-2s}
BENCH_WARMUP=${BENCH_WARMUP:-500ms}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
BENCH_ETCD=${BENCH_ETCD-/usr/bin/etcd}
BENCH_OUT=${BENCH_OUT:-bin/bench/results.md}
BENCH_JSON=${BENCH_JSON:-bin/bench/results.json}
BENCH_ARGS=${BENCH_ARGS:-}

if [ -n "$BENCH_ETCD" ] && [ ! -x "$BENCH_ETCD" ]; then
	if [ "$BENCH_ETCD" != /usr/bin/etcd ]; then
		echo "bench: $BENCH_ETCD is not an executable" >&2
		exit 1
	fi
	echo "bench: installing Debian's etcd-server (apt-get)" >&2
	sudo=""
	if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
	# No service of its own: the suite starts the members it needs.
	# policy-rc.d keeps the package's init script from starting etcd on
	# the default ports (a systemd machine does not start it either
	# before it is configured).
	cleanup_policy=""
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
		$sudo chmod 755 /usr/sbin/policy-rc.d
		cleanup_policy=1
	fi
	status=0
	$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q etcd-server || status=$?
	if [ -n "$cleanup_policy" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
	if [ "$status" != 0 ]; then exit "$status"; fi
fi

mkdir -p bin "$(dirname "$BENCH_OUT")" "$(dirname "$BENCH_JSON")"
CGO_ENABLED=0 $GO build -trimpath -o bin/tokend ./cmd/tokend
(cd bench && CGO_ENABLED=0 $GO build -trimpath -o ../bin/tokend-bench ./cmd/tokend-bench)

# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
exec bin/tokend-bench suite -tokend bin/tokend -etcd "$BENCH_ETCD" \
	-duration "$BENCH_DURATION" -warmup "$BENCH_WARMUP" -rounds "$BENCH_ROUNDS" \
	-out "$BENCH_OUT" -json "$BENCH_JSON" $BENCH_ARGS
