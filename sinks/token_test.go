package sinks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// TestTokenFiles: a sink asked for the login token writes "token" (key mode) and
// ".pgpass" (0600) in the same generation as the certificate, reads them back, and
// removes its links when no longer configured.
func TestTokenFiles(t *testing.T) {
	ca := newCA(t, "token-test")
	dir := filepath.Join(t.TempDir(), "out")
	s, err := NewFile(FileOptions{Dir: dir, Layout: "libpq", UID: -1, GID: -1, KeyMode: 0o640, Token: true, PGPassUser: "agent@p.iam"})
	if err != nil {
		t.Fatal(err)
	}
	b := ca.ecBundle(t)
	b.LoginToken, b.Host = "ya29.tok:en", "10.0.0.5"
	if _, err := s.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]struct {
		content string
		mode    os.FileMode
	}{
		"token":   {"ya29.tok:en\n", 0o640},
		".pgpass": {"10.0.0.5:*:*:agent@p.iam:ya29.tok\\:en\n", 0o600},
	} {
		p := filepath.Join(dir, name)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != want.content {
			t.Errorf("%s = %q, want %q", name, data, want.content)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != want.mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want.mode)
		}
		if target, err := os.Readlink(p); err != nil || !strings.HasPrefix(target, "..data/") {
			t.Errorf("%s is not a link into the generation: %q %v", name, target, err)
		}
	}
	cur, err := s.Current()
	if err != nil {
		t.Fatal(err)
	}
	if cur.LoginToken != b.LoginToken || cur.Host != b.Host {
		t.Errorf("read back token/host %q %q", cur.LoginToken.Reveal(), cur.Host)
	}
	if changed, err := s.Write(context.Background(), cur); err != nil || changed {
		t.Errorf("rewriting what is there: changed=%v err=%v", changed, err)
	}

	// A bundle without a token cannot satisfy the sink.
	if _, err := s.Write(context.Background(), ca.ecBundle(t)); err == nil {
		t.Error("a sink configured for a token accepted a bundle without one")
	}

	// The same directory without token/pgpass: its links go away.
	plain, _ := NewFile(FileOptions{Dir: dir, Layout: "libpq", UID: -1, GID: -1})
	if _, err := plain.Write(context.Background(), ca.ecBundle(t)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"token", ".pgpass"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s still exists: %v", name, err)
		}
	}
}

// TestPGPassOnlyReadsTheTokenBack: a sink writing .pgpass but no token file reads the
// token (the last field) and host (the first) back unescaped, whatever ':' and '\' they
// hold, so an unchanged bundle writes nothing new.
func TestPGPassOnlyReadsTheTokenBack(t *testing.T) {
	ca := newCA(t, "pgpass-only")
	for _, tok := range []string{"ya29.plain", `tok:en`, `a\b:c\:d`, `ends\`} {
		t.Run(tok, func(t *testing.T) {
			s := newSink(t, FileOptions{Dir: sinkDir(t), UID: -1, GID: -1, PGPassUser: "app"})
			b := ca.ecBundle(t)
			b.LoginToken, b.Host = bundle.Secret(tok), "10.0.0.5"
			mustWrite(t, s, b, true)
			cur, err := s.Current()
			if err != nil {
				t.Fatalf("Current right after Write: %v", err)
			}
			if cur.LoginToken != b.LoginToken || cur.Host != b.Host {
				t.Errorf("read back token %q host %q, want %q %q", cur.LoginToken.Reveal(), cur.Host, tok, b.Host)
			}
			mustWrite(t, s, b, false)
		})
	}
}
