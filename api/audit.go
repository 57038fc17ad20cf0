package api

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// audit records a denied request or an admin action: who, what, on what,
// and how it ended. Targets are names and ids from the path, never a body:
// no secret reaches the audit log.
func (s *server) audit(r *http.Request, p *Principal, status int, code string) {
	result := "ok"
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		result = "denied"
	case status >= 400:
		result = "failed"
	}
	remote := "unix"
	if p == nil || !p.Socket {
		remote, _, _ = net.SplitHostPort(r.RemoteAddr)
	}
	e := AuditEvent{
		At:        time.Now().UTC(),
		Principal: p.String(),
		Action:    r.Pattern,
		Target:    target(r),
		Result:    result,
		Status:    status,
		Code:      code,
		Remote:    remote,
	}
	if r.Pattern == "" {
		e.Action = r.Method + " " + truncate(r.URL.Path)
	}
	if p != nil && p.Socket {
		e.PID = p.Peer.PID
	}
	s.b.Audit(e)
}

// target names what a request acts on, from its path.
func target(r *http.Request) string {
	var parts []string
	for _, k := range []string{"pool", "id", "key", "name", "accessor"} {
		if v := r.PathValue(k); v != "" {
			parts = append(parts, k+"="+truncate(v))
		}
	}
	return strings.Join(parts, " ")
}

// MaxAuditEvents bounds GET /v1/audit.
const MaxAuditEvents = 1024

func (s *server) auditLog(w http.ResponseWriter, r *http.Request) error {
	if err := onlyParams(r, "limit"); err != nil {
		return err
	}
	limit := MaxAuditEvents
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAuditEvents {
			return badRequest("limit must be an integer between 1 and " + strconv.Itoa(MaxAuditEvents))
		}
		limit = n
	}
	events := s.b.AuditLog(limit)
	if events == nil {
		events = []AuditEvent{}
	}
	writeJSON(w, http.StatusOK, events)
	return nil
}
