# tokend — two commands set up a fresh machine: `make run` and `make test`.
# Everything the targets need comes from the Go module proxy.

GO        ?= go
BIN       := bin/tokend
FUZZTIME  ?= 2m
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BANNER    := !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

.PHONY: all build run test bench bench-go bench-compare bench-failover bench-scale bench-smoke e2e e2e-docker e2e-docker-if-reachable chaos soak lint fuzz clean docker

all: build

## build: a static binary in bin/tokend
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/tokend

## run: a single-node dev agent on 127.0.0.1:8550 and /tmp/tokend-dev.sock
run: build
	./$(BIN) agent --dev

## test: formatting, vet, every test (unit, in-process clusters, e2e) with the race detector, then allocation tests without it, then the container fault suite when a Docker engine is reachable
test:
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags docker ./e2e/docker/
	$(GO) test -race -count=1 -timeout 15m ./...
	# Allocation counts are only meaningful without the race detector.
	$(GO) test -count=1 -run 'NotAllocate' ./...
	# tokend's change to hashicorp/raft (third_party/raft/TOKEND.md).
	cd third_party/raft && $(GO) vet . && $(GO) test -race -count=1 -run 'TestQuietTick|TestTickTimeout' .
	# The load driver's own module (bench/): its unit tests need no etcd.
	cd bench && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	@$(MAKE) --no-print-directory e2e-docker-if-reachable

## e2e-docker: the container fault suite: agents in containers (an image it builds FROM scratch; nothing is pulled) partitioned, paused, delayed and killed while clients fetch and write. Needs a Docker engine and root (nsenter)
e2e-docker:
	@# Latency needs tc's netem or, where the kernel has none, iptables (NFQUEUE).
	@command -v iptables >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  (echo "installing iptables for the latency faults"; apt-get update -qq && apt-get install -y -qq iptables >/dev/null)
	$(GO) test -tags docker -count=1 -v -timeout 15m ./e2e/docker/

# Run by make test: the container fault suite, or a banner saying loudly
# that it did not run.
e2e-docker-if-reachable:
	@if ! docker info >/dev/null 2>&1; then \
	  echo; echo "$(BANNER)"; \
	  echo "DOCKER NOT REACHABLE: the container fault suite did NOT run (make e2e-docker)"; \
	  echo "$(BANNER)"; echo; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo; echo "$(BANNER)"; \
	  echo "NOT ROOT: the container fault suite did NOT run; it enters containers' network namespaces (sudo make e2e-docker)"; \
	  echo "$(BANNER)"; echo; \
	else \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory e2e-docker || exit 1; \
	  echo "container fault suite passed in $$(( $$(date +%s) - start )) s"; \
	fi

## bench: the Go benchmarks, the comparative suite, then the failover measurements (about 1.5 min); results go in BENCHMARKS.md
bench: bench-go bench-compare bench-failover bench-scale

## bench-go: Go benchmarks (go test -bench) of every package
bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./...

## bench-compare: tokend against the floor server and etcd on loopback (bench/run.sh; knobs BENCH_DURATION, BENCH_ROUNDS, … there)
bench-compare:
	sh bench/run.sh

## bench-failover: leader SIGKILL → first write committed by the new leader, and report on a follower → no agent serves the token, on a 3-agent loopback cluster at the default Raft multiplier and at 1 (knobs FAILOVER_KILLS, FAILOVER_REPORTS; tables in bin/bench/failover-*.md, samples in …json)
FAILOVER_KILLS   ?= 20
FAILOVER_REPORTS ?= 200
bench-failover:
	mkdir -p bin/bench
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/tokend ./cmd/tokend
	cd bench && CGO_ENABLED=0 $(GO) build -trimpath -o ../bin/tokend-bench ./cmd/tokend-bench
	bin/tokend-bench failover -tokend bin/tokend -kills $(FAILOVER_KILLS) -reports $(FAILOVER_REPORTS) -json bin/bench/failover-default.json >bin/bench/failover-default.md && cat bin/bench/failover-default.md
	bin/tokend-bench failover -tokend bin/tokend -raft-multiplier 1 -kills $(FAILOVER_KILLS) -reports $(FAILOVER_REPORTS) -json bin/bench/failover-m1.json >bin/bench/failover-m1.md && cat bin/bench/failover-m1.md

## bench-scale: 10,000 tokens in 100 pools on 3 agents: RSS, idle CPU, snapshot save + restore (issue 7; SCALE_ARGS for more flags, e.g. "-idle 60s -rounds 5 -keep")
SCALE_ARGS ?=
bench-scale:
	mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/tokend ./cmd/tokend
	cd bench && CGO_ENABLED=0 $(GO) build -trimpath -o ../bin/tokend-bench ./cmd/tokend-bench
	bin/tokend-bench scale -tokend bin/tokend $(SCALE_ARGS)
	$(GO) test -run='^$$' -bench='10k$$' -benchmem -count=1 ./fsm/

## bench-smoke: start every server of the comparative suite, run each system briefly, check all is cleaned up
bench-smoke:
	cd bench && TOKEND_BENCH_SMOKE=1 $(GO) test -count=1 -v -run TestSuiteSmoke ./cmd/tokend-bench

## e2e: only the process tests against the built binary, verbose
e2e:
	$(GO) test -count=1 -v -timeout 10m ./e2e/...

## chaos: one run of the loopback fault suite, verbose (TOKEND_CHAOS_SEED=N replays a seed; TOKEND_CHAOS_ARTIFACTS=DIR keeps logs and history)
chaos:
	$(GO) test -race -count=1 -v -run '^TestChaos$$' -timeout 15m ./e2e/

## soak: 2-second tokens rotated for a minute on three agents while clients fetch everywhere; then process faults drawn at random for CHAOS_DURATION (default 10m) under the chaos checks (e2e, verbose)
CHAOS_DURATION ?= 10m
soak:
	TOKEND_SOAK=1 $(GO) test -count=1 -v -run TestRotationSoak -timeout 10m ./e2e/
	# Without the race detector: the agents never have it, and the history of a long soak is big under it.
	TOKEND_CHAOS_DURATION=$(CHAOS_DURATION) $(GO) test -count=1 -v -run '^TestChaos$$' -timeout 0 ./e2e/

## lint: gofmt, vet and staticcheck
lint:
	@test -z "$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*'))" || (gofmt -l . && exit 1)
	$(GO) vet ./...
	$(GO) vet -tags docker ./e2e/docker/
	$(GO) run $(STATICCHECK) ./...
	cd bench && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags docker ./e2e/docker/

## fuzz: run each fuzz target for FUZZTIME (default 2m)
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzApply$$' -fuzztime=$(FUZZTIME) ./fsm
	$(GO) test -run='^$$' -fuzz='^FuzzRestore$$' -fuzztime=$(FUZZTIME) ./fsm

## docker: image tokend:dev FROM scratch with the static binary, and .env holding a new cluster key (kept if present)
docker:
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags='-s -w' -o bin/docker/tokend ./cmd/tokend
	docker build -t tokend:dev .
	@test -f .env || (umask 077; echo "TOKEND_ENCRYPT_KEY=$$(bin/docker/tokend keygen)" > .env; echo "wrote .env with a new cluster key")

clean:
	rm -rf bin
