package tokens

import (
	"fmt"
	"io"
)

// Secret holds a credential. It formats as "[redacted]" so a secret that
// strays into a log line or an error message does not leak; its bytes are
// reachable only through Reveal.
type Secret []byte

const redacted = "[redacted]"

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// Format prints "[redacted]" whatever the verb. Without it, verbs that
// fmt does not route to String (%d, %c, %o, %b, %U) print the bytes.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// Reveal returns the secret's value. Call it only where the value is meant
// to leave the process: the token fetch response.
func (s Secret) Reveal() string { return string(s) }
