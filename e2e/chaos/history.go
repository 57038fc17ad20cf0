package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// Kind is what an operation did.
type Kind string

// Operation kinds.
const (
	// KindAdd adds a token: POST /v1/pools/{pool}/tokens.
	KindAdd Kind = "add"
	// KindDelete removes a token: DELETE /v1/pools/{pool}/tokens/{id}.
	KindDelete Kind = "delete"
	// KindReport reports a token unauthorized, which fails it:
	// POST /v1/pools/{pool}/tokens/{id}/report.
	KindReport Kind = "report"
	// KindFetch is a plain, local token fetch: GET /v1/pools/{pool}/token.
	KindFetch Kind = "fetch"
	// KindRead is a consistent read of a pool's tokens:
	// GET /v1/pools/{pool}/tokens?consistent.
	KindRead Kind = "read"
)

// Outcome is what a client can know about an operation's effect.
type Outcome string

// Outcomes, as Jepsen names them.
const (
	// OK: the operation happened, and its result is known.
	OK Outcome = "ok"
	// Fail: the operation certainly had no effect (a rule rejection, a
	// refused connection, a read that failed).
	Fail Outcome = "fail"
	// Info: the outcome is unknown (a timeout, a transport error or a 5xx
	// on a write, a report still pending): it may have taken effect, at any
	// time after its call, or never.
	Info Outcome = "info"
)

// Token states as the model and the checks see them.
const (
	StateAbsent = "absent"
	StateActive = "active"
	StateFailed = "failed"
)

// Op is one operation of the history: who called what, on which node, when,
// and what came back.
type Op struct {
	// ID is the operation's position in the history, in call order.
	ID int
	// Process is the client (worker) that made the call; a process makes
	// one call at a time.
	Process int
	Node    string
	Kind    Kind
	Pool    string
	// Key names the token the workload wrote (its "chaos" label); a fetch
	// records the key of the token it got.
	Key string
	// TokenID is the id of the token deleted, reported or fetched, or of
	// the token an add created.
	TokenID string
	// ExpiresAt is the expiry an add asked for, or a fetched token's.
	ExpiresAt time.Time

	Call, Return time.Time
	// Status is the HTTP status; 0 when no answer came.
	Status int
	// Code is the API error code of an error answer.
	Code string
	// Err is the transport error, when no answer came.
	Err string
	// Index is a write's commit index (a report's: the index that holds
	// its failure, when committed), or the applied index a read's
	// X-Tokend-Index says; 0 when unknown.
	Index uint64
	// Outcome is what the client knows about the operation's effect.
	Outcome Outcome
	// Committed says a report's failure is in the replicated state (a 200
	// answer with committed true); Changed that the reporting agent's
	// answer said it changed the token's health.
	Committed bool
	// Tokens is what a consistent read returned: key → state, for the
	// tokens the workload owns.
	Tokens map[string]string
	// Foreign lists ids a consistent read returned that carry no key.
	Foreign []string
}

func (o *Op) String() string {
	s := fmt.Sprintf("#%d p%d %s %s pool=%s", o.ID, o.Process, o.Node, o.Kind, o.Pool)
	if o.Key != "" {
		s += " key=" + o.Key
	}
	if o.TokenID != "" {
		s += " id=" + o.TokenID
	}
	s += fmt.Sprintf(" [%s → %s] %s", o.Call.Format("15:04:05.000"), o.Return.Format("15:04:05.000"), o.Outcome)
	if o.Status != 0 {
		s += fmt.Sprintf(" status=%d", o.Status)
	}
	if o.Code != "" {
		s += " code=" + o.Code
	}
	if o.Err != "" {
		s += " err=" + o.Err
	}
	if o.Index != 0 {
		s += fmt.Sprintf(" index=%d", o.Index)
	}
	if o.Kind == KindReport {
		s += fmt.Sprintf(" committed=%v", o.Committed)
	}
	if o.Tokens != nil {
		s += fmt.Sprintf(" tokens=%v", o.Tokens)
	}
	return s
}

// History records operations from many goroutines. Its zero value is ready
// to use.
type History struct {
	mu  sync.Mutex
	ops []*Op
}

// Invoke records the call of an operation and returns it; the caller fills
// in the result and calls Complete.
func (h *History) Invoke(op Op) *Op {
	p := &op
	if p.Call.IsZero() {
		p.Call = time.Now()
	}
	h.mu.Lock()
	p.ID = len(h.ops)
	h.ops = append(h.ops, p)
	h.mu.Unlock()
	return p
}

// Complete records the return of op, which Invoke returned, now. The caller
// fills in op's result before, and leaves op alone after.
func (h *History) Complete(op *Op) {
	now := time.Now()
	h.mu.Lock()
	op.Return = now
	h.mu.Unlock()
}

// Add appends a finished operation, for histories built by hand.
func (h *History) Add(op Op) *Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := &op
	p.ID = len(h.ops)
	h.ops = append(h.ops, p)
	return p
}

// Ops returns a copy of the completed operations, in call order.
func (h *History) Ops() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Op, 0, len(h.ops))
	for _, p := range h.ops {
		if !p.Return.IsZero() {
			out = append(out, *p)
		}
	}
	slices.SortStableFunc(out, func(a, b Op) int { return a.Call.Compare(b.Call) })
	return out
}

// Len is the number of operations invoked.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Record is everything the checks look at, as saved next to a failed run's
// artifacts: rerun the checks on it with Check(record.Input()).
type Record struct {
	Seed   int64
	Ops    []Op
	Faults []Window
	Final  []NodeState
}

// Input returns the record as checks' input.
func (r Record) Input() CheckInput {
	return CheckInput{Ops: r.Ops, Faults: r.Faults, Final: r.Final}
}

// Save writes the record as JSON to path.
func (r Record) Save(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// LoadRecord reads a record that Save wrote.
func LoadRecord(path string) (Record, error) {
	var r Record
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	return r, err
}
