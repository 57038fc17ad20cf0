package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tokend/tokend/api"
	"github.com/tokend/tokend/api/client"
	"github.com/tokend/tokend/tokens"
)

// followWait is how long one request of `events --follow` lets the agent
// hold it when nothing happens.
const followWait = api.MaxEventsWait

// eventTypeWidth pads the event type so lines of every type line up.
var eventTypeWidth = len(tokens.EventTokenRemoved)

func newEventsCmd(o *clientOpts) *cobra.Command {
	var (
		since  uint64
		follow bool
		limit  int
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show what happened to pools and tokens",
		Long: `Show the latest events the cluster keeps (the last ` + strconv.Itoa(tokens.MaxEvents) + `): pools applied and
deleted, tokens added, removed and reset, and health changes. Each line has
the time (UTC), the Raft index, the type, the pool and token, the health
change, the reason and, in parentheses, the agent that reported it:

    2026-11-27T10:00:00Z  #42  token_health   github/tok_ab12  healthy→failed  unauthorized  (node1)

With --since only events after that Raft index are shown. With --follow the
command keeps waiting for new events and prints them as they happen, until
interrupted. With --json each event is printed as one JSON object per line.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > api.MaxEventsLimit {
				return fmt.Errorf("--limit %d must be between 1 and %d", limit, api.MaxEventsLimit)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			p := &eventPrinter{out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(), json: o.json}
			if !follow {
				ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
				defer cancel()
				res, err := c.Events(ctx, client.EventsOptions{Since: since, Limit: limit})
				if err != nil {
					return err
				}
				p.truncated(res.Truncated, since)
				if err := p.print(res.Events); err != nil {
					return err
				}
				switch {
				case len(res.Events) == 0 && !o.json:
					fmt.Fprintln(p.out, "No events.")
				case len(res.Events) >= limit:
					fmt.Fprintf(p.errOut, "(stopped at --limit %d; more events may follow index %d)\n", limit, res.Events[len(res.Events)-1].Index)
				}
				return nil
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return followEvents(ctx, c, p, since, limit)
		},
	}
	f := cmd.Flags()
	f.Uint64Var(&since, "since", 0, "show only events after this Raft index")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events as they happen, until interrupted")
	f.IntVar(&limit, "limit", 100, "at most this many events (with --follow: per request)")
	return cmd
}

// followEvents prints events as they happen until ctx ends, which is a
// clean exit. The agent ends every page on a Raft entry's last event and
// answers the index to resume from, so each event prints once.
func followEvents(ctx context.Context, c *client.Client, p *eventPrinter, since uint64, limit int) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout+followWait)
		res, err := c.Events(rctx, client.EventsOptions{Since: since, Wait: followWait, Limit: limit})
		cancel()
		if ctx.Err() != nil {
			return nil // interrupted
		}
		if err != nil {
			return err
		}
		p.truncated(res.Truncated, since)
		if err := p.print(res.Events); err != nil {
			return err
		}
		since = max(since, res.Index)
	}
}

// eventPrinter prints events as lines of text or of JSON.
type eventPrinter struct {
	out, errOut io.Writer
	json        bool
	warned      bool
}

func (p *eventPrinter) print(evs []tokens.Event) error {
	for _, e := range evs {
		var err error
		if p.json {
			err = json.NewEncoder(p.out).Encode(e)
		} else {
			_, err = fmt.Fprintln(p.out, eventLine(e))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// truncated says, once, that events after since were dropped before they
// could be read.
func (p *eventPrinter) truncated(truncated bool, since uint64) {
	if truncated && !p.warned {
		p.warned = true
		p.note(fmt.Sprintf("(events were dropped: some after index %d are no longer kept; the cluster keeps the last %d)", since, tokens.MaxEvents))
	}
}

// note prints a line that is not an event: among the events as text, on
// stderr with --json so that stdout stays JSON lines.
func (p *eventPrinter) note(msg string) {
	w := p.out
	if p.json {
		w = p.errOut
	}
	fmt.Fprintln(w, msg)
}

// eventLine formats one event on one line, fields separated by two spaces;
// fields an event does not have are left out.
func eventLine(e tokens.Event) string {
	subject := e.Pool
	if e.Token != "" {
		subject += "/" + e.Token
	}
	typ := cell(string(e.Type))
	if pad := eventTypeWidth - len(typ); pad > 0 {
		typ += strings.Repeat(" ", pad)
	}
	parts := []string{e.At.UTC().Format(time.RFC3339), "#" + strconv.FormatUint(e.Index, 10), typ, cell(subject)}
	if e.From != "" || e.To != "" {
		parts = append(parts, cell(string(e.From))+"→"+cell(string(e.To)))
	}
	if e.Reason != "" {
		parts = append(parts, cell(e.Reason))
	}
	if e.Reporter != "" {
		parts = append(parts, "("+cell(e.Reporter)+")")
	}
	return strings.Join(parts, "  ")
}
