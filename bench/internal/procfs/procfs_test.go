package procfs

import (
	"os"
	"strings"
	"testing"
	"time"
)

const status = `Name:	tokend
Umask:	0022
State:	S (sleeping)
Tgid:	4242
VmPeak:	 1261500 kB
VmSize:	 1261500 kB
VmLck:	       0 kB
VmHWM:	   51234 kB
VmRSS:	   40960 kB
RssAnon:	   30000 kB
RssFile:	   10900 kB
RssShmem:	      60 kB
Threads:	12
`

func TestParseStatus(t *testing.T) {
	m, err := ParseStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Memory{RSS: 40960 << 10, HWM: 51234 << 10, Anon: 30000 << 10, File: 10900 << 10}); m != want {
		t.Fatalf("got %+v, want %+v", m, want)
	}
}

func TestParseStatusRefuses(t *testing.T) {
	for name, text := range map[string]string{
		"kernel thread": "Name:\tkthreadd\nState:\tS (sleeping)\n",
		"no HWM":        "VmRSS:\t 100 kB\n",
		"unit":          "VmHWM:\t 100 kB\nVmRSS:\t 100 MB\n",
		"number":        "VmHWM:\t 100 kB\nVmRSS:\t x kB\n",
		"negative":      "VmHWM:\t 100 kB\nVmRSS:\t -1 kB\n",
	} {
		if m, err := ParseStatus([]byte(text)); err == nil {
			t.Errorf("%s: got %+v, want an error", name, m)
		}
	}
}

func TestParseStat(t *testing.T) {
	// The command name holds a space and a ')', as a process may name
	// itself; utime is 1234 ticks and stime 56.
	stat := "4242 (tok end) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 56 0 0 20 0 12 0 999 1261500000 10240 18446744073709551615\n"
	c, err := ParseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if c.User != 12340*time.Millisecond || c.System != 560*time.Millisecond {
		t.Fatalf("got %+v, want user 12.34s system 560ms", c)
	}
	if c.Total() != 12900*time.Millisecond {
		t.Fatalf("total %v", c.Total())
	}
}

func TestParseStatRefuses(t *testing.T) {
	for name, text := range map[string]string{
		"no name":  "4242 tokend S 1 2 3",
		"short":    "4242 (tokend) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234",
		"not a nr": "4242 (tokend) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 56 0 0",
	} {
		if c, err := ParseStat([]byte(text)); err == nil {
			t.Errorf("%s: got %+v, want an error", name, c)
		}
	}
}

func TestPercent(t *testing.T) {
	if p := Percent(300*time.Millisecond, 30*time.Second); p != 1 {
		t.Fatalf("300ms in 30s: %v%%, want 1%%", p)
	}
	if p := Percent(time.Second, 0); p != 0 {
		t.Fatalf("no wall time: %v", p)
	}
}

// TestReadSelf reads this test's own process: the files parse on this
// kernel.
func TestReadSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	m, err := ReadMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Fatalf("implausible %+v", m)
	}
	if _, err := ReadCPU(os.Getpid()); err != nil && !strings.Contains(err.Error(), "no such") {
		t.Fatal(err)
	}
}
