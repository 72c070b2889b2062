package agent

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"runtime"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// TestHeld: what a loop keeps rebuilds the same material, compares like sameMaterial,
// and answers the scheduling questions like the parsed bundle.
func TestHeld(t *testing.T) {
	ca, err := sharedTestCA()
	if err != nil {
		t.Fatal(err)
	}
	from := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	rsaKey, err := bundle.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	withToken := ca.issue(t, rsaKey, from, time.Hour)
	withToken.TokenExpiry, withToken.LoginToken, withToken.Issued = from.Add(50*time.Minute), "tok", from.Add(time.Minute)
	withToken.Host, withToken.Engine, withToken.DNSName = "10.0.0.1", "POSTGRES_15", "x.example"
	tests := []struct {
		name    string
		b       *bundle.Bundle
		keep    crypto.Signer // the key source's key
		encoded bool          // the key is held as PKCS#8
	}{
		{"own RSA key, encoded", ca.issue(t, rsaKey, from, time.Hour), nil, true},
		{"own ECDSA key, encoded", ca.issue(t, ecKey, from, time.Hour), nil, true},
		{"key the key source keeps, by pointer", ca.issue(t, rsaKey, from, time.Hour), rsaKey, false},
		{"token, times and connection facts", withToken, nil, true},
		{"CA only", caOnly(t), nil, false},
		// An Ed25519 key is a slice: comparing it with the key source's would panic.
		{"Ed25519 key the key source keeps, encoded", ca.issue(t, edKey, from, time.Hour), edKey, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hold(tt.b, tt.keep)
			if got := h.key.der != nil; got != tt.encoded {
				t.Errorf("key held encoded = %v, want %v", got, tt.encoded)
			}
			if tt.keep != nil && !tt.encoded && h.key.key != tt.keep {
				t.Errorf("the key source's key is not held by pointer")
			}
			s := h.times()
			if s.Key != nil {
				t.Error("the scheduling view carries the key")
			}
			if !s.NotAfter().Equal(tt.b.NotAfter()) || !s.Start().Equal(tt.b.Start()) || s.Lifetime() != tt.b.Lifetime() ||
				s.HasClientCert() != tt.b.HasClientCert() || !s.CANotAfter().Equal(tt.b.CANotAfter()) {
				t.Errorf("times differ: held %v %v %v, parsed %v %v %v", s.Start(), s.NotAfter(), s.Lifetime(), tt.b.Start(), tt.b.NotAfter(), tt.b.Lifetime())
			}
			if tt.b.HasClientCert() && !s.Leaf().Equal(tt.b.Leaf()) {
				t.Error("the scheduling view's leaf is not equal to the parsed leaf (hooks compare leaves)")
			}
			full, err := h.bundle()
			if err != nil {
				t.Fatal(err)
			}
			if !bundle.Equal(full, tt.b) || !sameMaterial(full, tt.b) || full.LoginToken != tt.b.LoginToken || !full.Issued.Equal(tt.b.Issued) {
				t.Error("the rebuilt bundle differs from the original")
			}
			if tt.b.Key != nil {
				if err := full.Verify(from.Add(time.Minute)); err != nil {
					t.Errorf("the rebuilt bundle does not verify: %v", err)
				}
			}
			if !h.same(tt.b) || !h.same(full) {
				t.Error("same() is false for the bundle held")
			}
		})
	}
	t.Run("same tells other material apart", func(t *testing.T) {
		b := ca.issue(t, rsaKey, from, time.Hour)
		h := hold(b, nil)
		otherLeaf := ca.issue(t, rsaKey, from, time.Hour)
		otherKey := *b
		otherKey.Key = ecKey
		otherCA := *b
		otherCA.CAs = caOnly(t).CAs[:0]
		for name, o := range map[string]*bundle.Bundle{"leaf": otherLeaf, "key": &otherKey, "CAs": &otherCA, "CA only": caOnly(t), "nil": nil} {
			if h.same(o) {
				t.Errorf("same() with another %s = true", name)
			}
		}
		var none *held
		if none.same(b) || none.times() != nil {
			t.Error("a nil held is not empty")
		}
	})
}

// BenchmarkHeldMemory reports the heap a loop keeps per instance with its own RSA key
// and its own parsed copy of its CA (as each fetch parses the CA it gets): the bundle
// as parsed (what loops kept before held) and as held.
func BenchmarkHeldMemory(b *testing.B) {
	ca, err := sharedTestCA()
	if err != nil {
		b.Fatal(err)
	}
	const n = 50
	keys := make([][]byte, n) // encoded, so that the only parsed keys are the bundles'
	for i := range keys {
		k, err := bundle.NewKey()
		if err != nil {
			b.Fatal(err)
		}
		if keys[i], err = x509.MarshalPKCS8PrivateKey(k); err != nil {
			b.Fatal(err)
		}
	}
	heap := func() float64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapAlloc)
	}
	from := time.Now()
	for b.Loop() {
		base := heap()
		bs := make([]*bundle.Bundle, n)
		for i := range bs {
			k, err := x509.ParsePKCS8PrivateKey(keys[i])
			if err != nil {
				b.Fatal(err)
			}
			bs[i] = ca.issue(b, k.(crypto.Signer), from, time.Hour)
			own, err := x509.ParseCertificate(bytes.Clone(ca.cert.Raw))
			if err != nil {
				b.Fatal(err)
			}
			bs[i].CAs = []*x509.Certificate{own}
		}
		parsed := heap()
		hs := make([]*held, n)
		for i, x := range bs {
			hs[i] = hold(x, nil)
		}
		clear(bs)
		kept := heap()
		b.ReportMetric((parsed-base)/n, "B-parsed/instance")
		b.ReportMetric((kept-base)/n, "B-held/instance")
		runtime.KeepAlive(hs)
	}
}
