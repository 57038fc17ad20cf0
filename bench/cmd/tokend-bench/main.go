// Command tokend-bench is tokend's load driver (issue 7): closed-loop load
// at a given concurrency for a given time, with throughput and exact
// p50/p99/p99.9 latency, against tokend, a floor HTTP server and etcd.
//
//	tokend-bench suite [flags]   the comparative suite (make bench): starts a 3-agent
//	                             tokend cluster, the floor server and a 3-member etcd
//	                             cluster on loopback, runs interleaved rounds and
//	                             prints a markdown table (and writes it and JSON)
//	tokend-bench up [flags]      starts the same servers, prints where they are and
//	                             waits for ^C: for load runs and profiling by hand
//	tokend-bench load [flags]    one closed-loop run against one target
//	tokend-bench floor [flags]   the floor server (the suite starts it)
//	tokend-bench report FILE...  a suite's markdown again from its JSON (-json); several suites' merged
//	tokend-bench failover        leader SIGKILL → first write committed by the new
//	                             leader, and report → no agent serves the token
//	                             (failover.go)
//	tokend-bench scale [flags]   10,000 tokens in 100 pools: RSS, idle CPU, snapshot round trip
//
// It lives in its own module (bench/) so that etcd's client and gRPC stay
// out of tokend's go.mod; it builds against the tokend tree next to it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "suite":
		err = runSuite(ctx, os.Args[2:])
	case "up":
		err = runUp(ctx, os.Args[2:])
	case "load":
		err = runLoad(ctx, os.Args[2:])
	case "floor":
		err = runFloor(ctx, os.Args[2:])
	case "report":
		err = runReport(os.Args[2:])
	case "failover":
		err = runFailover(ctx, os.Args[2:])
	case "scale":
		err = runScale(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokend-bench:", err)
		stop()
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: tokend-bench suite|up|load|floor|report|failover|scale [flags]   (tokend-bench CMD -h for flags)`)
	os.Exit(2)
}

// logf prints a progress line on stderr.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}
