package client

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/tokend/tokend/api"
)

func TestRotate(t *testing.T) {
	type seen struct{ method, path, query, ctype string }
	got := make(chan seen, 1)
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type")}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"rotations":["rot_0123456789abcdef","rot_fedcba9876543210"]}`))
	})
	ctx := context.Background()
	res, err := c.Rotate(ctx, "gh", "")
	if err != nil {
		t.Fatal(err)
	}
	if s, want := <-got, (seen{"POST", "/v1/pools/gh/rotate", "", ""}); s != want {
		t.Fatalf("request = %+v, want %+v", s, want)
	}
	if want := []string{"rot_0123456789abcdef", "rot_fedcba9876543210"}; !reflect.DeepEqual(res.Rotations, want) {
		t.Fatalf("Rotate = %+v, want rotations %v", res, want)
	}
	if _, err := c.Rotate(ctx, "a b", "tok 1"); err != nil {
		t.Fatal(err)
	}
	if s, want := <-got, (seen{"POST", "/v1/pools/a%20b/rotate", "token=tok+1", ""}); s != want {
		t.Fatalf("request = %+v, want %+v", s, want)
	}
	for _, name := range []string{"", ".", ".."} {
		if _, err := c.Rotate(ctx, name, ""); err == nil {
			t.Fatalf("Rotate(%q) succeeded", name)
		}
	}
	select {
	case s := <-got:
		t.Fatalf("unexpected request %+v", s)
	default:
	}
}

func TestRotateConflict(t *testing.T) {
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":{"code":"conflict","message":"pool \"s\" has a static provider, which cannot issue: add a new token instead"}}`))
	})
	_, err := c.Rotate(context.Background(), "s", "")
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusConflict || e.Code != "conflict" {
		t.Fatalf("Rotate of a static pool = %v, want a 409 conflict", err)
	}
}

func TestAlerts(t *testing.T) {
	type seen struct{ method, path, query, accept string }
	got := make(chan seen, 1)
	body := make(chan string, 1)
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Accept")}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(<-body))
	})
	ctx := context.Background()

	body <- `{
  "leader": "n1",
  "alerts": [
    {"name": "token_expiring", "pool": "gh", "token": "tok_1", "severity": "warning",
     "summary": "token tok_1 expires in 5m0s and has no replacement",
     "since": "2030-01-02T03:04:05Z", "last_sent": "2030-01-02T03:05:00Z"},
    {"name": "pool_below_min_healthy", "pool": "gh", "severity": "critical",
     "summary": "1 healthy token, min_healthy is 2", "since": "2030-01-02T03:00:00Z"}
  ]
}`
	res, err := c.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s, want := <-got, (seen{"GET", "/v1/alerts", "", "application/json"}); s != want {
		t.Fatalf("request = %+v, want %+v", s, want)
	}
	sent := time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC)
	want := api.Alerts{Leader: "n1", Alerts: []api.Alert{
		{Name: "token_expiring", Pool: "gh", Token: "tok_1", Severity: "warning",
			Summary: "token tok_1 expires in 5m0s and has no replacement",
			Since:   time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), LastSent: &sent},
		{Name: "pool_below_min_healthy", Pool: "gh", Severity: "critical",
			Summary: "1 healthy token, min_healthy is 2", Since: time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)},
	}}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("Alerts = %+v\nwant %+v", res, want)
	}

	body <- `{"leader": "n1", "alerts": []}`
	res, err = c.Alerts(ctx)
	<-got
	if err != nil || res.Leader != "n1" || len(res.Alerts) != 0 {
		t.Fatalf("Alerts with none firing = %+v, %v", res, err)
	}
}

func TestAlertsNoLeader(t *testing.T) {
	c := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"no_leader","message":"no cluster leader is known"}}`))
	})
	_, err := c.Alerts(context.Background())
	if ErrorCode(err) != "no_leader" {
		t.Fatalf("Alerts without a leader = %v, want no_leader", err)
	}
}
