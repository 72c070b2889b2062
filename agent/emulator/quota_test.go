package emulator_test

import (
	"context"
	"testing"
	"time"

	"golang.org/x/oauth2/google"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

// saToken gets a real access token for a new service account of the emulator.
func saToken(t *testing.T, e *emulator.Emulator, email string) string {
	t.Helper()
	js, err := e.ServiceAccountJSON(email)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := google.CredentialsFromJSON(context.Background(), js, emulator.ScopeCloudPlatform)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := creds.TokenSource.Token()
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func TestQuotaPerIdentity(t *testing.T) {
	clk := &clock{t: time.Now()} // JWT assertions are checked against this clock
	e := start(t, emulator.Options{Now: clk.Now, Quota: emulator.Quota{PerMinute: 5, PerSecond: 2}})
	a := saToken(t, e, "a@my-proj.iam.gserviceaccount.com")
	b := saToken(t, e, "b@my-proj.iam.gserviceaccount.com")
	settings := base + "/connectSettings"
	steps := []struct {
		name      string
		advance   time.Duration
		token     string
		want      int
		wantAfter string
	}{
		{"burst of the per-second bucket, 1", 0, a, 200, ""},
		{"burst of the per-second bucket, 2", 0, a, 200, ""},
		{"per-second bucket empty", 0, a, 429, "1"},
		{"another identity has its own buckets", 0, b, 200, ""},
		{"half a second refills one", 500 * time.Millisecond, a, 200, ""},
		{"refused requests cost nothing", 500 * time.Millisecond, a, 200, ""},
		{"fifth of the minute", 500 * time.Millisecond, a, 200, ""},
		{"minute bucket empty: 10.1 s until one more", 400 * time.Millisecond, a, 429, "11"},
		{"minute bucket refilled", 12 * time.Second, a, 200, ""},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		r := call(t, e, "GET", settings, s.token, "")
		if r.status != s.want {
			t.Fatalf("%s: status %d, want %d: %s", s.name, r.status, s.want, r.body)
		}
		if got := r.header.Get("Retry-After"); got != s.wantAfter {
			t.Errorf("%s: Retry-After %q, want %q", s.name, got, s.wantAfter)
		}
		if s.want == 429 {
			code, status, reason := r.googleErr(t)
			if code != 429 || status != "RESOURCE_EXHAUSTED" || reason != "rateLimitExceeded" {
				t.Errorf("%s: body %s", s.name, r.body)
			}
		}
	}
	if ok, thr := e.QuotaCounts(); ok != 7 || thr != 2 {
		t.Errorf("QuotaCounts = %d admitted, %d throttled; want 7, 2", ok, thr)
	}
	// The token endpoint is not an admin API: getting tokens never counts.
	for range 5 {
		saToken(t, e, "c@my-proj.iam.gserviceaccount.com")
	}
	e.SetQuota(emulator.Quota{})
	for range 10 {
		if r := call(t, e, "GET", settings, a, ""); r.status != 200 {
			t.Fatalf("quota off: status %d", r.status)
		}
	}
}
