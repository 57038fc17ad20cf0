// Package exec implements the exec provider: it issues a token by running a
// command that prints it as JSON, like AWS's credential_process, and revokes
// one by running a command that reads it on stdin.
//
// The commands run without a shell, in their own process group, with an
// environment made only of the agent's variables the spec names, and within
// the spec's call timeout; when the call ends, whatever the command left
// running in its process group is killed.
//
// The issue command prints one JSON object on stdout:
//
//	{"token": "...", "expires_at": "2030-01-02T15:04:05Z", "metadata": {"k": "v"}}
//	{"token": "...", "expires_in": 3600}
//
// expires_at (RFC 3339) and expires_in (seconds from now) are optional, and
// exclusive; without either the token does not expire. Any other field is
// rejected.
//
// Errors start with "exec provider: ", name the command's program (argv[0])
// and never hold the token: the command's stderr, quoted in an error, has
// every occurrence of the token replaced by [redacted].
package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tokend/tokend/tokens"
)

// Environment variables the provider sets for its commands. They override
// a variable of the same name listed in the spec's env.
const (
	// EnvIdempotencyKey holds IssueRequest.Key.
	EnvIdempotencyKey = "TOKEND_IDEMPOTENCY_KEY"
	// EnvReplacingMetadata holds the JSON of IssueRequest.Replacing, when
	// the issue replaces a token.
	EnvReplacingMetadata = "TOKEND_REPLACING_METADATA"
	// EnvTokenMetadata holds the JSON of RevokeRequest.Metadata.
	EnvTokenMetadata = "TOKEND_TOKEN_METADATA"
)

const (
	// MaxOutput bounds the issue command's stdout.
	MaxOutput = 64 << 10
	// maxStderrExcerpt bounds the stderr quoted in an error.
	maxStderrExcerpt = 1 << 10
	// stderrTail is how much of the end of stderr is kept, so the excerpt
	// can be taken after redaction.
	stderrTail = 16 << 10
	// waitDelay bounds how long a call waits, once its command was killed
	// or has exited, for processes that left the command's process group
	// to release stdin, stdout and stderr.
	waitDelay = time.Second
	// maxExpiresIn bounds expires_in (about 100 years), well inside
	// time.Duration.
	maxExpiresIn = 100 * 365 * 24 * 60 * 60
	// minFragment is the shortest piece of the token, cut at the edge of
	// the kept stderr, that is redacted.
	minFragment = 4
	prefix      = "exec provider: "
	redacted    = "[redacted]"
)

// Provider issues tokens by running the spec's command and revokes them by
// running its revoke command. It is safe for concurrent use.
type Provider struct {
	command       []string
	revokeCommand []string
	// env holds the allowed variables of the agent's environment.
	env     []string
	timeout time.Duration
	// now is the clock expires_in counts from and expires_at is checked
	// against.
	now func() time.Time
}

var (
	_ tokens.Provider = (*Provider)(nil)
	_ tokens.Revoker  = (*Provider)(nil)
)

// New returns the provider of an exec spec. environ is the agent's
// environment (os.Environ()): the commands see only the variables spec.Env
// names, taken from it, and the TOKEND_* variables the provider sets.
func New(spec tokens.ProviderSpec, environ []string) (*Provider, error) {
	switch spec.Type {
	case tokens.ProviderExec:
	case "":
		spec.Type = tokens.ProviderExec
	default:
		return nil, fmt.Errorf(prefix+"the provider type is %q, not %q", spec.Type, tokens.ProviderExec)
	}
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf(prefix+"%w", err)
	}
	return &Provider{
		command:       slices.Clone(spec.Command),
		revokeCommand: slices.Clone(spec.RevokeCommand),
		env:           allowedEnv(spec.Env, environ),
		timeout:       spec.CallTimeout(),
		now:           time.Now,
	}, nil
}

// allowedEnv returns the variables of environ that names lists, in the
// order of names; a name set twice in environ takes its last value, as
// os/exec does. The variables the provider sets are left out.
func allowedEnv(names, environ []string) []string {
	values := make(map[string]string, len(names))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && slices.Contains(names, k) {
			values[k] = v
		}
	}
	env := make([]string, 0, len(names))
	seen := make(map[string]bool, len(names))
	for _, k := range names {
		v, ok := values[k]
		if !ok || seen[k] || k == EnvIdempotencyKey || k == EnvReplacingMetadata || k == EnvTokenMetadata {
			continue
		}
		seen[k] = true
		env = append(env, k+"="+v)
	}
	return env
}

// CanRevoke reports whether the spec has a revoke command.
func (p *Provider) CanRevoke() bool { return len(p.revokeCommand) > 0 }

// Issue runs the command and returns the token it printed.
func (p *Provider) Issue(ctx context.Context, req tokens.IssueRequest) (tokens.Issued, error) {
	env := slices.Clip(slices.Clone(p.env))
	if req.Key != "" {
		env = append(env, EnvIdempotencyKey+"="+req.Key)
	}
	if req.Replacing != nil {
		b, err := json.Marshal(req.Replacing)
		if err != nil {
			return tokens.Issued{}, fmt.Errorf(prefix+"encoding the replaced token's metadata: %w", err)
		}
		env = append(env, EnvReplacingMetadata+"="+string(b))
	}
	name := p.command[0]
	// expires_in counts from before the command ran: the issuer's clock
	// started no earlier, so the token never looks longer-lived than it is.
	start := p.now()
	res := p.run(ctx, p.command, env, nil)
	if res.err != nil {
		// No token is known, but one may be in stdout: keep it out of the
		// quoted stderr all the same.
		return tokens.Issued{}, res.failure(name, guessToken(res.stdout))
	}
	if len(bytes.TrimSpace(res.stdout)) == 0 {
		return tokens.Issued{}, fmt.Errorf(prefix+"%q printed nothing on stdout, expected a JSON object with a token%s", name, res.stderrNote(""))
	}
	issued, err := parseOutput(res.stdout, start, p.now())
	if err != nil {
		return tokens.Issued{}, fmt.Errorf(prefix+"%q: %w", name, err)
	}
	return issued, nil
}

// Revoke runs the revoke command with the token on stdin. It fails,
// wrapping errors.ErrUnsupported, when the spec has no revoke command.
func (p *Provider) Revoke(ctx context.Context, req tokens.RevokeRequest) error {
	if !p.CanRevoke() {
		return fmt.Errorf(prefix+"cannot revoke: no revoke_command is configured: %w", errors.ErrUnsupported)
	}
	if len(req.Value) == 0 {
		return errors.New(prefix + "cannot revoke an empty token")
	}
	env := slices.Clip(slices.Clone(p.env))
	if req.Metadata != nil {
		b, err := json.Marshal(req.Metadata)
		if err != nil {
			return fmt.Errorf(prefix+"encoding the token's metadata: %w", err)
		}
		env = append(env, EnvTokenMetadata+"="+string(b))
	}
	stdin := make([]byte, 0, len(req.Value)+1)
	stdin = append(append(stdin, req.Value...), '\n')
	res := p.run(ctx, p.revokeCommand, env, stdin)
	if res.err != nil {
		return res.failure(p.revokeCommand[0], req.Value.Reveal())
	}
	return nil
}

// result is what one run of a command did.
type result struct {
	stdout []byte
	stderr *tailBuffer
	// err is nil when the command exited with status 0 and its output was
	// within bounds.
	err error
	// timeout is the call's own timeout, for the message.
	timeout time.Duration
}

var errOutputTooLarge = errors.New("output too large")

// run runs argv with env and stdin, in its own process group, until it
// exits or the call's deadline passes, and then kills what is left of its
// process group.
func (p *Provider) run(ctx context.Context, argv, env []string, stdin []byte) result {
	res := result{stderr: &tailBuffer{max: stderrTail}, timeout: p.timeout}
	ctx, cancelTimeout := context.WithTimeout(ctx, p.timeout)
	defer cancelTimeout()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	cmd := osexec.CommandContext(ctx, argv[0], argv[1:]...)
	// A non-nil, possibly empty, Env: nil would pass the agent's.
	cmd.Env = append(make([]string, 0, len(env)), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = waitDelay

	// Own pipes rather than os/exec's copying goroutines, so that Wait
	// returns when the command exits, even if something it started holds
	// stdout, and that something can then be killed.
	outR, outW, err := os.Pipe()
	if err != nil {
		res.err = fmt.Errorf("could not be run: creating a pipe: %w", err)
		return res
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		res.err = fmt.Errorf("could not be run: creating a pipe: %w", err)
		return res
	}
	defer errR.Close()
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		res.err = fmt.Errorf("could not be started: %w", err)
		return res
	}

	var (
		wg       sync.WaitGroup
		overflow bool
	)
	wg.Go(func() {
		res.stdout, overflow = readLimited(outR, MaxOutput)
		if overflow {
			cancel(errOutputTooLarge)
		}
	})
	wg.Go(func() { _, _ = io.Copy(res.stderr, errR) })

	waitErr := cmd.Wait()
	// The command has exited: kill what it left in its group, and give
	// the readers a moment to drain what was written.
	_ = killGroup(cmd.Process.Pid)
	drain := time.Now().Add(waitDelay)
	_ = outR.SetReadDeadline(drain)
	_ = errR.SetReadDeadline(drain)
	wg.Wait()

	switch {
	case overflow:
		res.err = fmt.Errorf("printed more than %d KiB on stdout", MaxOutput>>10)
	case waitErr == nil:
	case ctx.Err() != nil:
		cause := context.Cause(ctx)
		if errors.Is(cause, context.DeadlineExceeded) {
			res.err = fmt.Errorf("timed out (call timeout %s): %w", p.timeout, cause)
		} else {
			res.err = fmt.Errorf("was interrupted: %w", cause)
		}
	default:
		var exitErr *osexec.ExitError
		if errors.As(waitErr, &exitErr) {
			res.err = fmt.Errorf("failed: %s", exitErr.ProcessState)
		} else {
			res.err = fmt.Errorf("failed: %w", waitErr)
		}
	}
	return res
}

// failure is the error of a failed run of the command name, with its
// stderr and without secret.
func (r result) failure(name, secret string) error {
	return fmt.Errorf(prefix+"%q %w%s", name, r.err, r.stderrNote(secret))
}

// stderrNote quotes the end of stderr, with secret redacted, for an error
// message; it is empty when stderr is.
func (r result) stderrNote(secret string) string {
	s := r.stderr.excerpt(secret)
	if s == "" {
		return ""
	}
	return "; stderr: " + fmt.Sprintf("%q", s)
}

func killGroup(pid int) error {
	if pid <= 0 {
		return os.ErrProcessDone
	}
	return syscall.Kill(-pid, syscall.SIGKILL)
}

// readLimited reads r to EOF, or until it gives more than limit bytes,
// which it reports.
func readLimited(r io.Reader, limit int) ([]byte, bool) {
	var buf bytes.Buffer
	n, _ := io.Copy(&buf, io.LimitReader(r, int64(limit)+1))
	if n > int64(limit) {
		return nil, true
	}
	return buf.Bytes(), false
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.dropped = t.dropped || len(t.buf) > 0 || len(p) > t.max
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
		t.dropped = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// excerpt returns the end of what was written, at most maxStderrExcerpt
// bytes, trimmed, with every occurrence of secret, and any piece of it cut
// at the edges of what was kept, replaced by [redacted].
func (t *tailBuffer) excerpt(secret string) string {
	t.mu.Lock()
	s, dropped := string(t.buf), t.dropped
	t.mu.Unlock()
	if secret != "" {
		s = strings.ReplaceAll(s, secret, redacted)
		// A piece of the secret at the start, if the start was dropped,
		// or at the end, if the command stopped writing mid-token.
		for k := min(len(secret)-1, len(s)); dropped && k >= minFragment; k-- {
			if strings.HasPrefix(s, secret[len(secret)-k:]) {
				s = redacted + s[k:]
				break
			}
		}
		for k := min(len(secret)-1, len(s)); k >= minFragment; k-- {
			if strings.HasSuffix(s, secret[:k]) {
				s = s[:len(s)-k] + redacted
				break
			}
		}
	}
	s = strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
	if len(s) > maxStderrExcerpt {
		cut := len(s) - maxStderrExcerpt
		for cut < len(s) && !utf8.RuneStart(s[cut]) {
			cut++
		}
		s = "..." + s[cut:]
		dropped = false
	}
	if dropped {
		s = "..." + s
	}
	return s
}

// guessToken returns what stdout's token would be, to keep it out of an
// error: the token field if stdout is a JSON object that has one, else
// stdout itself if it is one short line (a command that printed a bare
// token).
func guessToken(stdout []byte) string {
	var out struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(stdout, &out) == nil {
		return out.Token
	}
	if s := strings.TrimSpace(string(stdout)); len(s) <= 8<<10 && !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return ""
}

// parseOutput parses the issue command's stdout. Its errors never hold the
// token.
func parseOutput(stdout []byte, start, now time.Time) (tokens.Issued, error) {
	fields, err := decodeObject(stdout)
	if err != nil {
		return tokens.Issued{}, err
	}
	for k := range fields {
		switch k {
		case "token", "expires_at", "expires_in", "metadata":
		default:
			return tokens.Issued{}, fmt.Errorf("output has an unknown field %q: expected token, expires_at or expires_in, and metadata", truncate(k, 40))
		}
	}

	raw, ok := fields["token"]
	if !ok {
		return tokens.Issued{}, errors.New(`output has no "token" field`)
	}
	token, ok := decodeString(raw)
	switch {
	case !ok:
		return tokens.Issued{}, errors.New(`output's "token" is not a string`)
	case token == "":
		return tokens.Issued{}, errors.New(`output's "token" is empty`)
	case strings.IndexFunc(token, unicode.IsControl) >= 0:
		return tokens.Issued{}, errors.New(`output's "token" holds a control character (a token is one line of printable text)`)
	}
	issued := tokens.Issued{Value: tokens.Secret(token)}

	rawAt, hasAt := fields["expires_at"]
	rawIn, hasIn := fields["expires_in"]
	switch {
	case hasAt && hasIn:
		return tokens.Issued{}, errors.New(`output has both "expires_at" and "expires_in": give one`)
	case hasAt:
		s, ok := decodeString(rawAt)
		if !ok {
			return tokens.Issued{}, errors.New(`output's "expires_at" is not a string: expected an RFC 3339 time such as "2030-01-02T15:04:05Z"`)
		}
		at, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return tokens.Issued{}, fmt.Errorf(`output's "expires_at" %q is not an RFC 3339 time such as "2030-01-02T15:04:05Z"`, truncate(s, 40))
		}
		if !at.After(now) {
			return tokens.Issued{}, fmt.Errorf(`output's "expires_at" %s is not in the future (now is %s)`, at.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		issued.ExpiresAt = at.UTC()
	case hasIn:
		var n json.Number
		if len(rawIn) == 0 || (rawIn[0] != '-' && (rawIn[0] < '0' || rawIn[0] > '9')) || json.Unmarshal(rawIn, &n) != nil {
			return tokens.Issued{}, errors.New(`output's "expires_in" is not a number of seconds`)
		}
		secs, err := n.Float64()
		switch {
		case err != nil || secs > maxExpiresIn:
			return tokens.Issued{}, fmt.Errorf(`output's "expires_in" %s is out of range (at most %d seconds)`, truncate(n.String(), 40), maxExpiresIn)
		case secs <= 0:
			return tokens.Issued{}, fmt.Errorf(`output's "expires_in" must be positive, got %s`, truncate(n.String(), 40))
		}
		issued.ExpiresAt = start.Add(time.Duration(secs * float64(time.Second)))
	}

	if raw, ok := fields["metadata"]; ok {
		md, err := decodeMetadata(raw)
		if err != nil {
			return tokens.Issued{}, err
		}
		issued.Metadata = md
	}
	return issued, nil
}

// decodeObject decodes a JSON object into its raw fields, rejecting
// duplicate fields and anything after the object. Its errors hold no value.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	bad := func(err error) error {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return fmt.Errorf("output is not valid JSON (syntax error at byte %d)", syn.Offset)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("output is not valid JSON (it ends early)")
		}
		return errors.New("output is not a JSON object")
	}
	if !utf8.Valid(data) {
		return nil, errors.New("output is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	t, err := dec.Token()
	if err != nil {
		return nil, bad(err)
	}
	if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, errors.New("output is not a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, bad(err)
		}
		k, ok := t.(string)
		if !ok {
			return nil, errors.New("output is not a JSON object")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, bad(err)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("output has the field %q twice", truncate(k, 40))
		}
		fields[k] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, bad(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("output has more after its JSON object")
	}
	return fields, nil
}

// decodeString decodes a JSON string; null is not one.
func decodeString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

func decodeMetadata(raw json.RawMessage) (map[string]string, error) {
	fields, err := decodeObject(raw)
	if err != nil {
		return nil, errors.New(`output's "metadata" is not an object of strings`)
	}
	md := make(map[string]string, len(fields))
	for k, v := range fields {
		s, ok := decodeString(v)
		if !ok {
			return nil, fmt.Errorf(`output's "metadata" field %q is not a string`, truncate(k, 40))
		}
		md[k] = s
	}
	return md, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
