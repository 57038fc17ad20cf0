package tokens

import (
	"testing"
)

var sink int

func BenchmarkZZ(b *testing.B) {
	_, toks, q := benchPool(SelectPriority)
	v := newView(&q)
	b.Run("touch", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for _, t := range toks {
				if t.Lifecycle == LifecycleActive && t.Health.State != Failed && t.ExpiresAt.IsZero() {
					n++
				}
			}
			sink += n
		}
	})
	b.Run("touch+usable", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for _, t := range toks {
				if t.Lifecycle == LifecycleActive && v.usable(t) {
					n++
				}
			}
			sink += n
		}
	})
	b.Run("touch+usable+exclude", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for _, t := range toks {
				if t.Lifecycle == LifecycleActive && v.usable(t) && !v.excluded(t.ID) {
					n++
				}
			}
			sink += n
		}
	})
	b.Run("touch+usable+exclude+state", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for _, t := range toks {
				if t.Lifecycle == LifecycleActive && v.usable(t) && !v.excluded(t.ID) && t.Health.StateAt(v.now) == Healthy {
					n++
				}
			}
			sink += n
		}
	})
	b.Run("touch+usable+exclude+state+lookup", func(b *testing.B) {
		for b.Loop() {
			n := 0
			for _, t := range toks {
				if t.Lifecycle == LifecycleActive && v.usable(t) && !v.excluded(t.ID) {
					if _, ok := v.overlay[t.ID]; ok {
						n++
					}
					if t.Health.StateAt(v.now) == Healthy {
						n++
					}
				}
			}
			sink += n
		}
	})
}
