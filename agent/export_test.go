package agent

import "context"

// Names of leader RPCs, for tests that play another agent.
const (
	LeaderReports = leaderReports
	LeaderRotate  = leaderRotate
)

// CallLeader sends body to the leader's handler name, as another agent
// forwarding a request would.
func (a *Agent) CallLeader(ctx context.Context, name string, body []byte) ([]byte, error) {
	return a.cluster.CallLeader(ctx, name, body)
}
