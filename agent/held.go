package agent

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"reflect"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// held is what a loop keeps, between refreshes, of the material its files hold: what
// scheduling, readiness and metrics read, plus enough to rebuild the whole bundle when
// a repair (restoring deleted files) needs it. Parsed, a bundle with its own RSA key and
// its own CA (Cloud SQL gives every instance one) costs about 10 KB; held keeps each
// certificate as its DER and validity times (an x509.Certificate is 1.4 KB even
// empty), the key as PKCS#8 DER unless it is shared (share_keys, key_rotation: the
// loop's key source holds that key anyway), and the rest of the bundle's fields: about
// 3.3 KB, most of it the DER (go test -bench HeldMemory). times builds the view the
// Bundle methods about times need when asked; the whole bundle is parsed again only
// to restore files.
type held struct {
	meta  bundle.Bundle // every field of the original but Key, KeyPKCS8, Chain and CAs
	chain []heldCert
	cas   []heldCert
	key   compactKey // encoded unless shared with the key source
}

// heldCert is a certificate as held: its DER and validity. The DER is the parsed
// certificate's own Raw, so instances whose CA was interned together (caIntern) share
// its bytes.
type heldCert struct {
	raw                 []byte
	notBefore, notAfter time.Time
}

func holdCerts(cs []*x509.Certificate) []heldCert {
	out := make([]heldCert, len(cs))
	for i, c := range cs {
		out[i] = heldCert{raw: c.Raw, notBefore: c.NotBefore, notAfter: c.NotAfter}
	}
	return out
}

// view is the certificates as scheduling sees them: Raw, NotBefore and NotAfter only.
func view(hs []heldCert) []*x509.Certificate {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*x509.Certificate, len(hs))
	for i, h := range hs {
		out[i] = &x509.Certificate{Raw: h.raw, NotBefore: h.notBefore, NotAfter: h.notAfter}
	}
	return out
}

// parse parses hs again.
func parse(hs []heldCert) ([]*x509.Certificate, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	out := make([]*x509.Certificate, len(hs))
	for i, h := range hs {
		c, err := x509.ParseCertificate(h.raw)
		if err != nil {
			return nil, fmt.Errorf("the certificate held in memory: %w", err)
		}
		out[i] = c
	}
	return out, nil
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
	h := &held{meta: *b, chain: holdCerts(b.Chain), cas: holdCerts(b.CAs)}
	h.meta.Key, h.meta.KeyPKCS8, h.meta.Chain, h.meta.CAs = nil, nil, nil, nil
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

// times is the bundle as scheduling sees it, built anew at every call: every field but
// Key, the certificates carrying only Raw, NotBefore and NotAfter. It serves the
// Bundle methods about times, HasClientCert, CANotAfter and certificate equality (Raw);
// never a sink or a verification. nil when h is nil.
func (h *held) times() *bundle.Bundle {
	if h == nil {
		return nil
	}
	b := h.meta
	b.Chain, b.CAs = view(h.chain), view(h.cas)
	return &b
}

// bundle rebuilds the whole bundle: the certificates and key parsed again.
func (h *held) bundle() (*bundle.Bundle, error) {
	b := h.meta
	var err error
	if b.Chain, err = parse(h.chain); err != nil {
		return nil, err
	}
	if b.CAs, err = parse(h.cas); err != nil {
		return nil, err
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
	v := h.times()
	if !h.key.empty() {
		key, err := h.key.signer(heldKey)
		if err != nil {
			return false
		}
		v.Key = key
	}
	return sameMaterial(v, b)
}
