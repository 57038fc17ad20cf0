// Package procfs reads what the scale benchmark needs of a process from
// Linux's /proc: its resident memory (/proc/PID/status) and the CPU time
// it has used (/proc/PID/stat). The parsers are pure functions of the
// files' text, so they are tested without a process.
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// UserHZ is the unit of the CPU times in /proc/PID/stat. The kernel
// reports them in USER_HZ, which is 100 on every Linux architecture Go
// supports (sysconf(_SC_CLK_TCK) needs cgo to ask).
const UserHZ = 100

// Memory is a process's memory as /proc/PID/status reports it.
type Memory struct {
	RSS int64 // VmRSS: resident now, bytes
	HWM int64 // VmHWM: the most ever resident, bytes
	// RSS is RssAnon (the heap, stacks: the process's own memory) plus
	// RssFile (mapped files: the binary, bbolt's mmap of the Raft log)
	// plus RssShmem; 0 where the kernel does not say (before 4.5).
	Anon, File int64
}

// ParseStatus reads VmRSS, VmHWM, RssAnon and RssFile from the text of /proc/PID/status.
func ParseStatus(b []byte) (Memory, error) {
	var m Memory
	var haveRSS, haveHWM bool
	for line := range bytes.Lines(b) {
		name, rest, ok := strings.Cut(string(line), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst, haveRSS = &m.RSS, true
		case "VmHWM":
			dst, haveHWM = &m.HWM, true
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("status: %s: want \"N kB\", got %q", name, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return Memory{}, fmt.Errorf("status: %s: %q is not a size", name, f[0])
		}
		*dst = kb << 10
	}
	if !haveRSS || !haveHWM {
		return Memory{}, fmt.Errorf("status: no VmRSS or VmHWM line (a kernel thread, or a zombie?)")
	}
	return m, nil
}

// CPU is the CPU time a process has used, in user and kernel mode.
type CPU struct {
	User, System time.Duration
}

// Total is user plus system time.
func (c CPU) Total() time.Duration { return c.User + c.System }

// ParseStat reads utime and stime (fields 14 and 15) from the text of
// /proc/PID/stat. The command name (field 2) is in parentheses and may
// itself hold spaces and parentheses, so the fields are counted from the
// last ')'.
func ParseStat(b []byte) (CPU, error) {
	s := string(bytes.TrimSpace(b))
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return CPU{}, fmt.Errorf("stat: no command name in %q", s)
	}
	// After ")": field 3 (state) is f[0], so field n is f[n-3].
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return CPU{}, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	ticks := func(n int) (time.Duration, error) {
		v, err := strconv.ParseUint(f[n-3], 10, 63)
		if err != nil {
			return 0, fmt.Errorf("stat: field %d: %q is not a tick count", n, f[n-3])
		}
		return time.Duration(v) * time.Second / UserHZ, nil
	}
	u, err := ticks(14)
	if err != nil {
		return CPU{}, err
	}
	st, err := ticks(15)
	if err != nil {
		return CPU{}, err
	}
	return CPU{User: u, System: st}, nil
}

// ReadMemory reads pid's /proc/PID/status.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	return ParseStatus(b)
}

// ReadCPU reads pid's /proc/PID/stat.
func ReadCPU(pid int) (CPU, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPU{}, err
	}
	return ParseStat(b)
}

// Percent is cpu used over wall as a percentage of one CPU.
func Percent(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * float64(cpu) / float64(wall)
}
