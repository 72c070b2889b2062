package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// keyRecorder is a provider that records the key of each Fetch and fails permanently
// (so each loop makes exactly one attempt during a test).
type keyRecorder struct {
	mu   *sync.Mutex // shared by the recorders of a test
	keys map[string]crypto.Signer
	name string
}

type permanentErr struct{}

func (permanentErr) Error() string   { return "test: permanent" }
func (permanentErr) Retryable() bool { return false }

func (k *keyRecorder) Fetch(_ context.Context, key crypto.Signer) (*bundle.Bundle, error) {
	k.mu.Lock()
	k.keys[k.name] = key
	k.mu.Unlock()
	return nil, permanentErr{}
}

// countingGen makes cheap ECDSA keys and counts them.
type countingGen struct{ n atomic.Int64 }

func (c *countingGen) gen() (crypto.Signer, error) {
	c.n.Add(1)
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func TestSharedKeysDaemon(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		share     bool
		keyMaxAge time.Duration
		wantKeys  int64
	}{
		{"share_keys: 1000 instances, one key", 1000, true, time.Hour, 1},
		{"default: a key per instance", 50, false, time.Hour, 50},
		{"share_keys does not touch per-certificate rotation", 50, true, 0, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := map[string]crypto.Signer{}
			var mu sync.Mutex
			var ins []*Instance
			for i := range tt.n {
				name := fmt.Sprintf("db%04d", i)
				ins = append(ins, &Instance{Name: name, NeedsKey: true, Renewal: config.Renewal{KeyMaxAge: tt.keyMaxAge},
					Provider: &keyRecorder{mu: &mu, keys: keys, name: name}})
			}
			a := NewWithInstances(ins, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			d, err := newDaemon(a, RunOptions{ShareKeys: tt.share})
			if err != nil {
				t.Fatal(err)
			}
			g := &countingGen{}
			d.newKey = g.gen
			if d.shared != nil {
				d.shared.gen = g.gen
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- d.run(ctx) }()
			seen := func() int {
				mu.Lock()
				defer mu.Unlock()
				return len(keys)
			}
			eventually(t, 30*time.Second, "every instance fetched once", func() bool { return seen() == tt.n })
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := g.n.Load(); got != tt.wantKeys {
				t.Errorf("key generations = %d, want %d", got, tt.wantKeys)
			}
			distinct := map[crypto.Signer]bool{}
			for _, k := range keys {
				distinct[k] = true
			}
			if int64(len(distinct)) != tt.wantKeys {
				t.Errorf("distinct keys sent = %d, want %d", len(distinct), tt.wantKeys)
			}
		})
	}
}

func TestSharedKeysAge(t *testing.T) {
	g := &countingGen{}
	s := newSharedKeys(g.gen, make(chan struct{}, 1))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ctx := context.Background()
	k1, _, born, err := s.get(ctx, t0, time.Hour)
	if err != nil || !born.Equal(t0) {
		t.Fatal(err, born)
	}
	steps := []struct {
		at     time.Duration
		maxAge time.Duration
		same   bool
	}{
		{59 * time.Minute, time.Hour, true},         // younger than key_rotation: reused
		{30 * time.Minute, 20 * time.Minute, false}, // too old for this instance: a new key
	}
	for i, st := range steps {
		k, _, _, err := s.get(ctx, t0.Add(st.at), st.maxAge)
		if err != nil {
			t.Fatal(err)
		}
		if (k == k1) != st.same {
			t.Errorf("step %d: same key = %v, want %v", i, k == k1, st.same)
		}
	}
	if g.n.Load() != 2 {
		t.Errorf("generations = %d, want 2", g.n.Load())
	}
	// A failed generation is returned to every waiter and not kept.
	fail := newSharedKeys(func() (crypto.Signer, error) { return nil, errors.New("no entropy") }, make(chan struct{}, 1))
	if _, _, _, err := fail.get(ctx, t0, time.Hour); err == nil {
		t.Error("want the generation error")
	}
	s.close()
	fail.close()
}

func TestCAIntern(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	parse := func() *x509.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	other := func() *x509.Certificate {
		d, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key) // new signature
		c, _ := x509.ParseCertificate(d)
		return c
	}
	c := newCAIntern()
	a := &bundle.Bundle{CAs: []*x509.Certificate{parse()}}
	b := &bundle.Bundle{CAs: []*x509.Certificate{parse(), other()}}
	c.intern(a)
	c.intern(b)
	c.intern(nil)
	if a.CAs[0] != b.CAs[0] {
		t.Error("the same CA DER parsed twice was not shared")
	}
	if b.CAs[1] == a.CAs[0] {
		t.Error("a different CA was merged")
	}
	if c.len() != 2 {
		t.Errorf("table holds %d entries, want 2", c.len())
	}
	// Once no bundle holds them, the entries go.
	a, b = nil, nil
	for range 20 {
		runtime.GC()
		if c.len() == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.len(); n != 0 {
		t.Errorf("%d entries left after the bundles were dropped", n)
	}
	_, _ = a, b
}
