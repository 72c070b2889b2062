// Package bundle holds the credential material of one database instance — private key,
// client certificate chain, server CA certificates — with its PEM encodings and checks.
//
// It is a leaf: it imports nothing of this module, so providers (which produce bundles)
// and sinks (which store them) can share it without knowing of each other.
package bundle

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Bundle is the material one refresh of an instance produced.
//
// A client-certificate bundle has Key, Chain and CAs. A CA-only bundle (GeminiDB) has only
// CAs; Key and Chain are nil.
type Bundle struct {
	// Key is the private key the leaf certificate was issued for. nil for CA-only bundles.
	Key crypto.Signer
	// Chain is the client certificate chain, leaf first, then any intermediates in the
	// order the API returned them.
	Chain []*x509.Certificate
	// CAs are the server CA certificates, every one the API returned, in its order.
	CAs []*x509.Certificate
	// TokenExpiry, when non-zero, is the expiry of a login token embedded in the leaf
	// (Cloud SQL IAM database authentication); the effective lifetime ends there if it is
	// earlier than the leaf's NotAfter.
	TokenExpiry time.Time
	// Issued is when the agent obtained the material (zero: unknown). Sinks read it back
	// from when they wrote it. It starts the effective lifetime when it is later than
	// the leaf's NotBefore, which servers backdate to tolerate clock skew.
	Issued time.Time
	// LoginToken is an IAM database login token (Cloud SQL), written by sinks that are
	// asked for a token file or a .pgpass line; its expiry is TokenExpiry. "" for none.
	LoginToken Secret
	// Host is the address clients connect to (from the API), for .pgpass and connection
	// files; "" unknown.
	Host string
	// Engine is the database engine as the API names it (Cloud SQL databaseVersion such
	// as "POSTGRES_15", "MYSQL_8_0", "SQLSERVER_2019_STANDARD"; AlloyDB "POSTGRES");
	// "" unknown.
	Engine string
	// DNSName is the instance's DNS name from the API (Cloud SQL connectSettings
	// dnsName), which verify checks the server certificate against; "" none.
	DNSName string
	// KeyPKCS8, when set, is Key encoded as PKCS#8 DER by whoever had it at hand (the
	// daemon keeps keys encoded), so KeyDER and KeyPEM need not encode Key again: an
	// RSA key takes about 0.1 ms, and a shared key is written by every instance. It
	// must be Key's encoding; nil is always fine. Not material: Equal ignores it.
	KeyPKCS8 []byte
}

// Secret is a value that must never be logged: it prints as [REDACTED] in every
// format (and through slog's LogValuer).
type Secret string

func (Secret) String() string   { return "[REDACTED]" }
func (Secret) GoString() string { return "[REDACTED]" }

// LogValue keeps the value out of slog output.
func (Secret) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// Reveal returns the value, for the code that must write or send it.
func (s Secret) Reveal() string { return string(s) }

// ErrInvalid is wrapped by every error Verify and the Parse functions return, so callers
// can tell "the material is bad" (permanent) from I/O trouble.
var ErrInvalid = errors.New("invalid credential material")

// HasClientCert reports whether b carries a client certificate (not CA-only).
func (b *Bundle) HasClientCert() bool { return b != nil && len(b.Chain) > 0 }

// Leaf returns the client certificate, or nil for a CA-only bundle.
func (b *Bundle) Leaf() *x509.Certificate {
	if !b.HasClientCert() {
		return nil
	}
	return b.Chain[0]
}

// NotBefore is the leaf's NotBefore, or the zero time for CA-only bundles.
func (b *Bundle) NotBefore() time.Time {
	if l := b.Leaf(); l != nil {
		return l.NotBefore
	}
	return time.Time{}
}

// Start is the beginning of the effective lifetime: the later of the leaf's NotBefore
// and Issued. Zero for CA-only bundles.
func (b *Bundle) Start() time.Time {
	t := b.NotBefore()
	if !t.IsZero() && b.Issued.After(t) {
		t = b.Issued
	}
	return t
}

// Lifetime is the effective lifetime, Start to NotAfter (0 for CA-only bundles).
func (b *Bundle) Lifetime() time.Duration {
	if !b.HasClientCert() {
		return 0
	}
	return b.NotAfter().Sub(b.Start())
}

// NotAfter is the end of the effective lifetime: the earlier of the leaf's NotAfter and
// TokenExpiry (when set). For a CA-only bundle it is the earliest CA NotAfter.
func (b *Bundle) NotAfter() time.Time {
	var t time.Time
	if l := b.Leaf(); l != nil {
		t = l.NotAfter
	} else {
		t = b.CANotAfter()
	}
	if !b.TokenExpiry.IsZero() && (t.IsZero() || b.TokenExpiry.Before(t)) {
		t = b.TokenExpiry
	}
	return t
}

// CANotAfter is the earliest NotAfter among the CAs (zero when there are none).
func (b *Bundle) CANotAfter() time.Time {
	var t time.Time
	for _, c := range b.CAs {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}

// Verify checks the bundle before anything is written: at least one CA; for client
// bundles a key, a leaf whose public key equals the key's, and a leaf valid at now
// (NotBefore ≤ now+skew, now < NotAfter). A skew of one minute is tolerated on NotBefore,
// for servers whose clock runs slightly ahead of ours.
func (b *Bundle) Verify(now time.Time) error {
	if b == nil {
		return fmt.Errorf("%w: empty bundle", ErrInvalid)
	}
	if len(b.CAs) == 0 {
		return fmt.Errorf("%w: no server CA certificate", ErrInvalid)
	}
	if b.Key == nil && len(b.Chain) == 0 {
		return nil // CA-only
	}
	if b.Key == nil {
		return fmt.Errorf("%w: certificate without private key", ErrInvalid)
	}
	if len(b.Chain) == 0 {
		return fmt.Errorf("%w: private key without certificate", ErrInvalid)
	}
	leaf := b.Chain[0]
	if !PublicKeysEqual(leaf.PublicKey, b.Key.Public()) {
		return fmt.Errorf("%w: client certificate (serial %s) was not issued for our private key", ErrInvalid, leaf.SerialNumber)
	}
	const skew = time.Minute
	if now.Add(skew).Before(leaf.NotBefore) {
		return fmt.Errorf("%w: client certificate (serial %s) is not valid before %s; is the clock right?",
			ErrInvalid, leaf.SerialNumber, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if !now.Before(leaf.NotAfter) {
		return fmt.Errorf("%w: client certificate (serial %s) expired at %s",
			ErrInvalid, leaf.SerialNumber, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// PublicKeysEqual reports whether two public keys are the same key.
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// Equal reports whether a and b hold the same key, chain and CAs (byte for byte), the
// same login token and the same Host, Engine and DNSName — everything a sink derives
// files from. Issued and TokenExpiry are not compared: they are metadata of the same
// files.
func Equal(a, b *Bundle) bool {
	if a == nil || b == nil {
		return a == b
	}
	if !certsEqual(a.Chain, b.Chain) || !certsEqual(a.CAs, b.CAs) {
		return false
	}
	if (a.Key == nil) != (b.Key == nil) || a.LoginToken != b.LoginToken || a.Host != b.Host ||
		a.Engine != b.Engine || a.DNSName != b.DNSName {
		return false
	}
	return a.Key == nil || PublicKeysEqual(a.Key.Public(), b.Key.Public())
}

func certsEqual(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// CAsEqual reports whether a and b carry the same CA certificates.
func CAsEqual(a, b *Bundle) bool {
	if a == nil || b == nil {
		return a == b
	}
	return certsEqual(a.CAs, b.CAs)
}

// NewKey makes a fresh RSA-2048 key, the key type Cloud SQL and AlloyDB issue for.
func NewKey() (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, 2048)
}

// KeyDER encodes the private key as PKCS#8 DER (KeyPKCS8 when set). nil for CA-only.
func (b *Bundle) KeyDER() ([]byte, error) {
	if b.Key == nil {
		return nil, nil
	}
	if b.KeyPKCS8 != nil {
		return b.KeyPKCS8, nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(b.Key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return der, nil
}

// KeyPEM encodes the private key as PKCS#8 PEM (`BEGIN PRIVATE KEY`). nil for CA-only.
func (b *Bundle) KeyPEM() ([]byte, error) {
	der, err := b.KeyDER()
	if der == nil || err != nil {
		return nil, err
	}
	return PKCS8PEM(der), nil
}

// PKCS8PEM wraps a PKCS#8 DER private key as PEM (`BEGIN PRIVATE KEY`).
func PKCS8PEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// ChainPEM encodes the client chain, leaf first. nil for CA-only.
func (b *Bundle) ChainPEM() []byte { return CertsPEM(b.Chain) }

// CAPEM encodes every CA certificate.
func (b *Bundle) CAPEM() []byte { return CertsPEM(b.CAs) }

// CertsPEM encodes certificates as concatenated PEM CERTIFICATE blocks.
func CertsPEM(certs []*x509.Certificate) []byte {
	if len(certs) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// MaxCerts bounds how many certificates one PEM input may hold.
const MaxCerts = 16

// ParseCertsPEM parses one or more PEM CERTIFICATE blocks strictly: only CERTIFICATE
// blocks, at most MaxCerts, nothing but whitespace between or after them, at least one.
// what names the input in errors ("serverCaCert.cert", "ca.pem").
func ParseCertsPEM(data []byte, what string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: %s: unexpected PEM block %q (want CERTIFICATE)", ErrInvalid, what, blk.Type)
		}
		if len(certs) == MaxCerts {
			return nil, fmt.Errorf("%w: %s: more than %d certificates", ErrInvalid, what, MaxCerts)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: certificate %d: %v", ErrInvalid, what, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: %s: trailing data that is not a PEM certificate", ErrInvalid, what)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: %s: no PEM certificate found", ErrInvalid, what)
	}
	return certs, nil
}

// ParseKeyPEM parses a private key from PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1
// (`RSA PRIVATE KEY`) or SEC 1 (`EC PRIVATE KEY`). Exactly one block.
func ParseKeyPEM(data []byte, what string) (crypto.Signer, error) {
	blk, rest := pem.Decode(data)
	if blk == nil {
		return nil, fmt.Errorf("%w: %s: no PEM private key found", ErrInvalid, what)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: %s: trailing data after the private key", ErrInvalid, what)
	}
	var (
		k   any
		err error
	)
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("%w: %s: unexpected PEM block %q (want PRIVATE KEY)", ErrInvalid, what, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, what, err)
	}
	switch s := k.(type) {
	case *rsa.PrivateKey:
		return s, nil
	case *ecdsa.PrivateKey:
		return s, nil
	case ed25519.PrivateKey:
		return s, nil
	}
	return nil, fmt.Errorf("%w: %s: unsupported key type %T", ErrInvalid, what, k)
}

// PublicKeyPEM encodes the public half of key as PKIX (SubjectPublicKeyInfo) DER under
// the given PEM label. Cloud SQL's connector sends PKIX bytes labelled "RSA PUBLIC KEY";
// "PUBLIC KEY" is the honest label.
func PublicKeyPEM(key crypto.Signer, label string) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: label, Bytes: der}), nil
}

// Fingerprint is the hex SHA-256 of a certificate's DER, safe to log.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
