package agent

import (
	"context"
	"net"

	"golang.org/x/sys/unix"

	"github.com/tokend/tokend/api"
)

// peerCredContext tags a unix socket connection's requests with the
// caller's uid, gid and pid as the kernel reports them (SO_PEERCRED): the
// API authorizes socket callers by them.
func peerCredContext(ctx context.Context, c net.Conn) context.Context {
	peer := api.PeerCred{UID: -1, GID: -1}
	if uc, ok := c.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			_ = raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					peer = api.PeerCred{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
				}
			})
		}
	}
	return api.WithPeer(ctx, peer)
}
