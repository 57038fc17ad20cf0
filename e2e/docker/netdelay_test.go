//go:build docker

package docker

// Latency without netem. Where the kernel has no sch_netem (this suite's own
// CI machine is one), the driver delays a container's outgoing packets in
// user space instead: an iptables rule in the container's network namespace
// sends every packet leaving its cluster interface to an NFQUEUE, and this
// test binary, run again inside that namespace by nsenter, holds each packet
// for delay ± jitter (dropping a fraction when asked) before it lets it go.
// The rule has --queue-bypass, so packets flow untouched once the helper is
// gone, even if it crashed.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// envNetDelay, set in the environment of the test binary, makes it the
// delaying helper instead of running tests: "queue=N,delay=D,jitter=D,loss=F,seed=S".
const envNetDelay = "TOKEND_E2E_NETDELAY"

// netDelayConfig is what one helper does.
type netDelayConfig struct {
	Queue  uint16
	Delay  time.Duration
	Jitter time.Duration
	Loss   float64
	Seed   uint64
}

func (c netDelayConfig) String() string {
	return fmt.Sprintf("queue=%d,delay=%s,jitter=%s,loss=%g,seed=%d", c.Queue, c.Delay, c.Jitter, c.Loss, c.Seed)
}

func parseNetDelay(s string) (netDelayConfig, error) {
	var c netDelayConfig
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch k {
		case "queue":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 16)
			c.Queue = uint16(n)
		case "delay":
			c.Delay, err = time.ParseDuration(v)
		case "jitter":
			c.Jitter, err = time.ParseDuration(v)
		case "loss":
			c.Loss, err = strconv.ParseFloat(v, 64)
		case "seed":
			c.Seed, err = strconv.ParseUint(v, 10, 64)
		default:
			err = fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			return c, fmt.Errorf("%s: %v", kv, err)
		}
	}
	return c, nil
}

// runNetDelay is the helper's main: it binds the queue, prints "ready",
// and delays packets until SIGTERM, when it lets every held packet go.
func runNetDelay(spec string) int {
	cfg, err := parseNetDelay(spec)
	if err == nil {
		err = netDelay(cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netdelay:", err)
		return 1
	}
	return 0
}

// Constants of linux/netfilter/nfnetlink_queue.h and nfnetlink.h.
const (
	nfnlSubsysQueue    = 3
	nfqnlMsgPacket     = 0
	nfqnlMsgVerdict    = 1
	nfqnlMsgConfig     = 2
	nfqaPacketHdr      = 1
	nfqaVerdictHdr     = 2
	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxlen = 3
	nfqaCfgMask        = 4
	nfqaCfgFlags       = 5
	nfqnlCfgCmdBind    = 1
	nfqnlCopyMeta      = 1
	nfqaCfgFFailOpen   = 1
	nfAccept           = 1
	nfDrop             = 0
)

type heldPacket struct {
	id      uint32
	release time.Time
	drop    bool
}

func netDelay(cfg netDelayConfig) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink socket: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netlink: %v", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)

	seq := uint32(0)
	config := func(attrs ...[]byte) error {
		seq++
		msg := nfMessage(nfqnlMsgConfig, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, cfg.Queue, attrs...)
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		return readAck(fd, seq)
	}
	bind := []byte{nfqnlCfgCmdBind, 0, 0, 0} // command, pad, pf (unused by modern kernels)
	if err := config(nlAttr(nfqaCfgCmd, bind)); err != nil {
		return fmt.Errorf("bind queue %d: %v", cfg.Queue, err)
	}
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0)
	params[4] = nfqnlCopyMeta
	maxlen := binary.BigEndian.AppendUint32(nil, 65536)
	// Fail open: a full queue accepts packets rather than dropping them.
	flags := binary.BigEndian.AppendUint32(nil, nfqaCfgFFailOpen)
	if err := config(nlAttr(nfqaCfgParams, params), nlAttr(nfqaCfgQueueMaxlen, maxlen),
		nlAttr(nfqaCfgFlags, flags), nlAttr(nfqaCfgMask, flags)); err != nil {
		return fmt.Errorf("configure queue %d: %v", cfg.Queue, err)
	}

	verdict := func(id uint32, v uint32) error {
		hdr := make([]byte, 8)
		binary.BigEndian.PutUint32(hdr, v)
		binary.BigEndian.PutUint32(hdr[4:], id)
		msg := nfMessage(nfqnlMsgVerdict, unix.NLM_F_REQUEST, 0, cfg.Queue, nlAttr(nfqaVerdictHdr, hdr))
		return unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}

	queue := make(chan heldPacket, 65536)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	released := make(chan error, 1)
	go func() {
		// Packets leave in the order they came, each no earlier than its
		// release time: jitter without reordering. Once stopped, every held
		// packet goes at once.
		stopping := false
		for {
			var h heldPacket
			if stopping {
				select {
				case h = <-queue:
					_ = verdict(h.id, nfAccept)
					continue
				default:
					released <- nil
					return
				}
			}
			select {
			case h = <-queue:
			case <-stop:
				stopping = true
				continue
			}
			if d := time.Until(h.release); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-stop:
					t.Stop()
					stopping = true
					_ = verdict(h.id, nfAccept)
					continue
				}
			}
			v := uint32(nfAccept)
			if h.drop {
				v = nfDrop
			}
			if err := verdict(h.id, v); err != nil {
				released <- fmt.Errorf("verdict: %v", err)
				return
			}
		}
	}()
	fmt.Println("ready")

	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6e6574))
	var last time.Time
	buf := make([]byte, 1<<16)
	recvErr := make(chan error, 1)
	go func() {
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
					continue
				}
				recvErr <- err
				return
			}
			msgs, err := syscall.ParseNetlinkMessage(buf[:n])
			if err != nil {
				recvErr <- err
				return
			}
			for _, m := range msgs {
				if m.Header.Type != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(m.Data) < 4 {
					continue
				}
				id, ok := packetID(m.Data[4:])
				if !ok {
					continue
				}
				release := time.Now().Add(cfg.Delay)
				if cfg.Jitter > 0 {
					release = release.Add(time.Duration(rng.Int64N(int64(2*cfg.Jitter+1))) - cfg.Jitter)
				}
				if release.Before(last) {
					release = last
				}
				last = release
				queue <- heldPacket{id: id, release: release, drop: cfg.Loss > 0 && rng.Float64() < cfg.Loss}
			}
		}
	}()
	select {
	case err := <-released:
		return err
	case err := <-recvErr:
		return fmt.Errorf("receive: %v", err)
	}
}

// packetID finds NFQA_PACKET_HDR among a packet message's attributes.
func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs))
		typ := binary.NativeEndian.Uint16(attrs[2:]) & 0x3fff
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:]), true
		}
		attrs = attrs[min(len(attrs), (l+3)&^3):]
	}
	return 0, false
}

// nfMessage is a netlink message to the queue subsystem: header, nfgenmsg
// for queue, attributes.
func nfMessage(typ uint16, flags uint16, seq uint32, queue uint16, attrs ...[]byte) []byte {
	body := []byte{unix.AF_UNSPEC, 0 /* NFNETLINK_V0 */, byte(queue >> 8), byte(queue)}
	for _, a := range attrs {
		body = append(body, a...)
	}
	msg := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(msg[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(msg[4:], nfnlSubsysQueue<<8|typ)
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	return append(msg, body...)
}

func nlAttr(typ uint16, data []byte) []byte {
	a := make([]byte, 4, 4+len(data)+3)
	binary.NativeEndian.PutUint16(a, uint16(4+len(data)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	a = append(a, data...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

// readAck waits for the kernel's answer to request seq.
func readAck(fd int, seq uint32) error {
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}

// readyLine waits for the helper's "ready".
func readyLine(r *bufio.Reader) error {
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("helper said %q", line)
	}
	return nil
}
