package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"runtime"
	"sync"
	"time"
	"weak"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// sharedKeys is the agent-wide key of share_keys = true: every instance whose
// key_rotation is a duration uses the same private key until it is as old as that
// instance's key_rotation allows, so N instances starting together make one key, not N.
// Concurrent callers that find the key too old wait for one generation (run under the
// agent-wide key-generation semaphore) instead of starting their own. Safe for
// concurrent use; close waits for a generation in progress.
//
// The trade-off (README): one key in N certificates means a key that leaks from one
// instance's files opens every certificate issued for it until each expires.
type sharedKeys struct {
	gen func() (crypto.Signer, error)
	sem chan struct{}

	mu      sync.Mutex
	cur     crypto.Signer
	der     []byte // cur as PKCS#8, encoded once for every instance's files
	born    time.Time
	pending *keyCall
	wg      sync.WaitGroup
}

// keyCall is one generation in progress; done is closed when key/err are set.
type keyCall struct {
	done chan struct{}
	key  crypto.Signer
	der  []byte
	err  error
	born time.Time
}

func newSharedKeys(gen func() (crypto.Signer, error), sem chan struct{}) *sharedKeys {
	return &sharedKeys{gen: gen, sem: sem}
}

// get returns the shared key, its PKCS#8 encoding (nil if it has none) and when it was
// made, making a new one when there is none or the current one is maxAge old at now.
func (s *sharedKeys) get(ctx context.Context, now time.Time, maxAge time.Duration) (crypto.Signer, []byte, time.Time, error) {
	s.mu.Lock()
	if s.cur != nil && now.Sub(s.born) < maxAge {
		k, der, b := s.cur, s.der, s.born
		s.mu.Unlock()
		return k, der, b, nil
	}
	c := s.pending
	if c == nil {
		c = &keyCall{done: make(chan struct{}), born: now}
		s.pending = c
		s.wg.Add(1)
		go s.generate(c)
	}
	s.mu.Unlock()
	select {
	case <-c.done:
		return c.key, c.der, c.born, c.err
	case <-ctx.Done():
		return nil, nil, time.Time{}, ctx.Err()
	}
}

func (s *sharedKeys) generate(c *keyCall) {
	defer s.wg.Done()
	s.sem <- struct{}{}
	c.key, c.err = s.gen()
	if c.err == nil {
		c.der = compact(c.key).der
	}
	<-s.sem
	s.mu.Lock()
	if c.err == nil {
		s.cur, s.der, s.born = c.key, c.der, c.born
	}
	s.pending = nil
	s.mu.Unlock()
	close(c.done)
}

// close waits for a generation in progress.
func (s *sharedKeys) close() {
	if s != nil {
		s.wg.Wait()
	}
}

// newRSAKey is the default key generator: bundle.NewKey as a crypto.Signer.
func newRSAKey() (crypto.Signer, error) { return bundle.NewKey() }

// caIntern shares parsed CA certificates between instances that get the same CA (every
// instance of a project with a shared CA, GOOGLE_MANAGED_CAS): one *x509.Certificate
// per distinct DER, held weakly, so a CA no bundle uses any more is collected and
// leaves the table. Safe for concurrent use.
type caIntern struct {
	mu sync.Mutex
	m  map[[32]byte]weak.Pointer[x509.Certificate]
}

func newCAIntern() *caIntern { return &caIntern{m: map[[32]byte]weak.Pointer[x509.Certificate]{}} }

// intern replaces b's CA certificates by the shared copies of the same DER. b may be nil.
func (c *caIntern) intern(b *bundle.Bundle) {
	if c == nil || b == nil {
		return
	}
	for i, ca := range b.CAs {
		b.CAs[i] = c.one(ca)
	}
}

func (c *caIntern) one(ca *x509.Certificate) *x509.Certificate {
	k := sha256.Sum256(ca.Raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.m[k].Value(); p != nil {
		return p
	}
	c.m[k] = weak.Make(ca)
	runtime.AddCleanup(ca, c.forget, k)
	return ca
}

// forget drops a collected certificate's entry (unless a new one took its place).
func (c *caIntern) forget(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if wp, ok := c.m[k]; ok && wp.Value() == nil {
		delete(c.m, k)
	}
}

func (c *caIntern) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
