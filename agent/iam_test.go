package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/sinks"
)

// loginTokensSent returns the access_token of every generateEphemeralCert request and
// every bearer token the emulator saw in Authorization headers.
func loginTokensSent(t *testing.T, e *emulator.Emulator) (login, admin []string) {
	t.Helper()
	for _, r := range e.Requests() {
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			admin = append(admin, tok)
		}
		if strings.HasSuffix(r.Path, ":generateEphemeralCert") {
			var body struct {
				AccessToken string `json:"access_token"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Fatal(err)
			}
			login = append(login, body.AccessToken)
		}
	}
	return login, admin
}

// leafNotAfter is the NotAfter of the certificate on disk (not clamped to the token).
func leafNotAfter(t *testing.T, w *world, name string) time.Time {
	t.Helper()
	s, err := sinks.NewFile(sinks.FileOptions{Dir: filepath.Join(w.dir, "out", name), UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	return b.Leaf().NotAfter
}

func newIAMWorld(t *testing.T, tokenLife time.Duration) *world {
	t.Helper()
	// The emulator issues 1-hour certificates whatever the token's life, so only the
	// agent's own clamp (bundle.NotAfter) can bring the effective lifetime down to it.
	emu, err := emulator.New(emulator.Options{CertLifetime: time.Hour, TokenLifetime: tokenLife, NoLoginTokenClamp: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	w := newWorld(t, time.Hour)
	w.emu = emu
	sa, err := emu.ServiceAccountJSON("agent@p.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(w.dir, "sa.json"), sa, 0o600); err != nil {
		t.Fatal(err)
	}
	w.extra = "iam_authn = true"
	return w
}

// TestIAMAuthnRenewsByTheTokensClock: with 10-minute login tokens and 1-hour
// certificates, the certificate's effective life ends with the token, renewal is
// planned from that (a third of 10 minutes before it), and the request carries a
// sqlservice.login token, not the admin token.
func TestIAMAuthnRenewsByTheTokensClock(t *testing.T) {
	w := newIAMWorld(t, 10*time.Minute)
	start := time.Now()
	stop := w.run(NewWithInstances(w.instances("a"), Options{Logger: w.log}), RunOptions{})
	defer stop()
	renewal := regexp.MustCompile(`msg="next renewal" instance=a at=(\S+)`)
	// The renewal is logged just after the files are written.
	eventually(t, 10*time.Second, "files and the renewal plan", func() bool {
		_, err := w.current("a")
		return err == nil && renewal.MatchString(w.buf.String())
	})
	// The certificate itself lives the emulator's full hour: only the agent's clamp to
	// the token's expiry can make the renewal below come at the token's clock. (The
	// files on disk do not record the embedded token's expiry, so the effective end is
	// checked through the renewal the agent plans, not through the sink.)
	if left := time.Until(leafNotAfter(t, w, "a")); left < 50*time.Minute {
		t.Fatalf("the certificate itself has %v left, near the token's life; the emulator clamped it and the test proves nothing", left)
	}
	m := renewal.FindStringSubmatch(w.buf.String())
	if m == nil {
		t.Fatalf("no next renewal logged:\n%s", w.buf.String())
	}
	at, err := time.Parse(time.RFC3339, m[1])
	if err != nil {
		t.Fatal(err)
	}
	// Token clock: about 6m40s after issue (minus up to 30 s of jitter). Certificate clock
	// would say 40 minutes.
	if d := at.Sub(start); d < 6*time.Minute || d > 7*time.Minute {
		t.Errorf("renewal planned %v after start, want about 6m40s (the token's clock)", d.Round(time.Second))
	}
	login, admin := loginTokensSent(t, w.emu)
	if len(login) == 0 || login[0] == "" {
		t.Fatal("generateEphemeralCert carried no access_token")
	}
	for _, a := range admin {
		if a == login[0] {
			t.Error("the access_token in the body is the admin (Authorization) token")
		}
	}
}

// TestIAMAuthnReplacesShortLoginTokens: a login token with less than 5 minutes left is
// not put into a new certificate; a fresh one is fetched first.
func TestIAMAuthnReplacesShortLoginTokens(t *testing.T) {
	w := newIAMWorld(t, 5*time.Minute+2*time.Second)
	ins := w.instances("a")
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		k, err := ins[0].keyForTest()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ins[0].Provider.Fetch(ctx, k); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			time.Sleep(2500 * time.Millisecond) // now under 5 minutes left
		}
	}
	login, _ := loginTokensSent(t, w.emu)
	if len(login) != 2 || login[0] == login[1] {
		t.Errorf("login tokens sent: %d, same=%v; want a fresh token for the second certificate", len(login), len(login) == 2 && login[0] == login[1])
	}
}

// TestIAMAuthnRefusedForSQLServer: automatic IAM database authentication is not
// available for SQL Server instances; the error says so and what to change.
func TestIAMAuthnRefusedForSQLServer(t *testing.T) {
	w := newIAMWorld(t, time.Hour)
	w.emu.AddCloudSQLInstance("p", "mssql-pg", emulator.CloudSQLInstance{DatabaseVersion: "SQLSERVER_2019_STANDARD"})
	w.added = map[string]bool{"mssql": true}
	ins := w.instances("mssql")
	k, err := ins[0].keyForTest()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ins[0].Provider.Fetch(context.Background(), k)
	if err == nil || !strings.Contains(err.Error(), "SQL Server") || !strings.Contains(err.Error(), "iam_authn = false") {
		t.Fatalf("Fetch = %v, want a refusal naming SQL Server and iam_authn", err)
	}
	if ok, _ := retryable(err); ok {
		t.Error("the refusal is retryable; it is permanent")
	}
}
