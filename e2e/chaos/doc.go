// Package chaos is tokend's Jepsen-style fault-injection harness: a
// workload that records a history of every operation against a cluster of
// agents while nemeses inject faults, and the checks run on that history.
//
// It knows agents only by their HTTP API (Target), and faults only through
// the Nemesis interface and a FaultLog, so the same run drives agents as
// processes on loopback (e2e/chaos_test.go) or as containers.
//
// A run (Run):
//
//  1. creates two pools, each with a stable token that is never deleted or
//     failed, and waits until every agent serves both;
//  2. starts writers that add tokens (some expiring within seconds), delete
//     them and report them unauthorized (which fails them) through random
//     agents; fetchers on every agent (local reads, recording the token and
//     X-Tokend-Index); optionally consistent readers
//     (GET /v1/pools/{pool}/tokens?consistent on random agents);
//  3. runs the nemeses on a schedule drawn from the seed, waiting after
//     each heal until the cluster is whole (Ready);
//  4. stops the workload, waits until every agent holds the same state
//     (Converge) and checks the history (Check).
//
// Every operation records its client, agent, call and return times, HTTP
// status, error code or transport error, and index. A write whose outcome
// is unknown (a timeout, a transport error, a 5xx, a report still pending)
// is Info: it may take effect at any time after its call, or never.
//
// The checks (see the Check* constants): writes and consistent reads are
// linearizable (porcupine, one partition per token: absent, healthy or
// failed, model.go); no acknowledged write
// is lost; the index an agent answers with never goes back, across clients
// and restarts; no fetch returns a token deleted or failed at or before the
// fetch's index, nor on the agent that acknowledged the change after it
// did, nor past its expires_at; fetches fail only during their agent's own
// process faults; every agent converges to the same state.
package chaos
