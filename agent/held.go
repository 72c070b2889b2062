package agent

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"reflect"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// held is what a loop keeps, between refreshes, of the material its files hold: what
// scheduling, readiness and metrics read, plus enough to rebuild the whole bundle when
// a repair (restoring deleted files) needs it. Parsed, a bundle with its own RSA key
// costs about 8 KB per instance; held keeps the certificates' DER and validity times,
// the key as PKCS#8 DER unless it is shared (share_keys, key_rotation: the loop's key
// source holds that key anyway), and the CAs as the interned copies every instance
// with the same CA shares: about 4 KB (go test -bench HeldMemory).
type held struct {
	// sched is the bundle as scheduling sees it: every field of the original except
	// Key (nil) and the chain, whose certificates carry only Raw, NotBefore and
	// NotAfter. It serves the Bundle methods about times, HasClientCert, CANotAfter and
	// leaf equality (Raw); never a sink or a verification.
	sched *bundle.Bundle
	key   compactKey // encoded unless shared with the key source
}

// compactKey is a private key kept in little memory: as PKCS#8 DER (about 1.2 KB for
// RSA-2048, against about 4.5 KB parsed) when it can be encoded, else as is.
type compactKey struct {
	der []byte
	key crypto.Signer
}

// compact encodes key; a key that is not RSA, ECDSA or Ed25519 is kept as is.
func compact(key crypto.Signer) compactKey {
	if key == nil {
		return compactKey{}
	}
	if der, err := x509.MarshalPKCS8PrivateKey(key); err == nil {
		return compactKey{der: der}
	}
	return compactKey{key: key}
}

func (c compactKey) empty() bool { return c.der == nil && c.key == nil }

// signer is the key, parsed again when it is encoded; what names it in errors.
func (c compactKey) signer(what string) (crypto.Signer, error) {
	if c.der == nil {
		return c.key, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(c.der)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", what, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s is a %T, not a signer", what, k)
	}
	return signer, nil
}

const heldKey = "the key held in memory"

// hold keeps b in little memory. keep is a key that b may carry which is held
// elsewhere anyway (the key source's key, to reuse); it is kept as a pointer, unless
// its type is not comparable (ed25519.PrivateKey is a slice): then it is encoded. A
// key that cannot be encoded as PKCS#8 (not RSA, ECDSA or Ed25519) is kept as is.
func hold(b *bundle.Bundle, keep crypto.Signer) *held {
	if b == nil {
		return nil
	}
	s := *b
	s.Key, s.KeyPKCS8 = nil, nil
	s.Chain = make([]*x509.Certificate, len(b.Chain))
	for i, c := range b.Chain {
		s.Chain[i] = &x509.Certificate{Raw: c.Raw, NotBefore: c.NotBefore, NotAfter: c.NotAfter}
	}
	h := &held{sched: &s}
	switch {
	case keep != nil && sameKey(b.Key, keep):
		h.key = compactKey{key: b.Key}
	case b.KeyPKCS8 != nil:
		h.key = compactKey{der: b.KeyPKCS8}
	default:
		h.key = compact(b.Key)
	}
	return h
}

// sameKey reports whether a and b are the same key object (not merely equal keys);
// false for key types that cannot be compared (Ed25519 is a slice).
func sameKey(a, b crypto.Signer) bool {
	return a != nil && reflect.TypeOf(a).Comparable() && reflect.TypeOf(a) == reflect.TypeOf(b) && a == b
}

// times is the bundle as scheduling sees it (see sched); nil when h is nil.
func (h *held) times() *bundle.Bundle {
	if h == nil {
		return nil
	}
	return h.sched
}

// bundle rebuilds the whole bundle: the chain and key parsed again, the rest as held.
func (h *held) bundle() (*bundle.Bundle, error) {
	b := *h.sched
	b.Chain = make([]*x509.Certificate, len(h.sched.Chain))
	for i, c := range h.sched.Chain {
		p, err := x509.ParseCertificate(c.Raw)
		if err != nil {
			return nil, fmt.Errorf("the certificate held in memory: %w", err)
		}
		b.Chain[i] = p
	}
	if !h.key.empty() {
		key, err := h.key.signer(heldKey)
		if err != nil {
			return nil, err
		}
		b.Key = key
	}
	return &b, nil
}

// same reports whether b holds the material h holds: sameMaterial with the held key.
func (h *held) same(b *bundle.Bundle) bool {
	if h == nil || b == nil {
		return false
	}
	view := *h.sched
	if !h.key.empty() {
		key, err := h.key.signer(heldKey)
		if err != nil {
			return false
		}
		view.Key = key
	}
	return sameMaterial(&view, b)
}
