package gcpauth

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/gapi"
)

// TestUnauthorizedRefreshesTokenOnce drives the real oauth2 JWT-bearer flow against the
// emulator: a 401 for a token the client still believes valid makes the transport drop
// it, fetch a fresh one and send the request once more (GET and POST with a body); a
// 401 that persists after the refresh is returned — after exactly one retry — as a
// permanent error.
func TestUnauthorizedRefreshesTokenOnce(t *testing.T) {
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	emu.AddCloudSQLInstance("p", "i", emulator.CloudSQLInstance{})
	sa, err := emu.ServiceAccountJSON("agent@p.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sa.json")
	if err := os.WriteFile(path, sa, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(context.Background(), Options{CredentialsFile: path})
	if err != nil {
		t.Fatal(err)
	}
	key, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := bundle.PublicKeyPEM(key, "RSA PUBLIC KEY")
	settings := gapi.Request{Method: http.MethodGet, URL: emu.URL() + "sql/v1beta4/projects/p/instances/i/connectSettings", Call: "connectSettings"}
	cert := gapi.Request{Method: http.MethodPost, URL: emu.URL() + "sql/v1beta4/projects/p/instances/i:generateEphemeralCert",
		Call: "generateEphemeralCert", Body: map[string]string{"public_key": string(pub)}}
	count := func() (tokens, api, unauthorized int) {
		for _, r := range emu.Requests() {
			if r.Path == "/token" {
				tokens++
			} else {
				api++
			}
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, req := range []gapi.Request{settings, cert} {
		t.Run(req.Call, func(t *testing.T) {
			if err := gapi.Do(ctx, c, req, nil); err != nil {
				t.Fatal(err)
			}
			tok0, api0, _ := count()
			emu.RevokeAccessTokens() // the client's cached token now gets 401
			if err := gapi.Do(ctx, c, req, nil); err != nil {
				t.Fatalf("after the token was revoked: %v (want one refresh and success)", err)
			}
			tok1, api1, _ := count()
			if tok1-tok0 != 1 || api1-api0 != 2 {
				t.Errorf("token requests %d, API requests %d; want 1 and 2 (the 401, then the retry)", tok1-tok0, api1-api0)
			}
		})
	}
	t.Run("persistent 401", func(t *testing.T) {
		emu.Inject(emulator.Fault{Match: "connectSettings", Status: http.StatusUnauthorized})
		defer emu.ClearFaults()
		_, api0, _ := count()
		err := gapi.Do(ctx, c, settings, nil)
		var ge *gapi.Error
		if !errors.As(err, &ge) || ge.Code != http.StatusUnauthorized || ge.Retryable() {
			t.Fatalf("err = %v, want a permanent 401", err)
		}
		if _, api1, _ := count(); api1-api0 != 2 {
			t.Errorf("%d API requests, want 2 (one retry after a refresh, no more)", api1-api0)
		}
		if !strings.Contains(err.Error(), "credentials") {
			t.Errorf("error %q does not say what to check", err)
		}
	})
}
