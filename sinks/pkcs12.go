package sinks

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"
	"strings"

	pkcs12 "software.sslmate.com/src/go-pkcs12"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// PKCS12Options makes a file sink also write Java key stores (spec §4): keystore.p12
// (private key and chain; mode KeyMode) and truststore.p12 (every CA as a trusted
// certificate entry; mode 0644). CA-only bundles get only truststore.p12.
//
// Encoding is go-pkcs12's Modern2023: PBES2 with AES-256-CBC and PBKDF2-HMAC-SHA-256,
// and a SHA-256 MAC. Limitation: the library gives the key entry no friendlyName, so
// Java names the key entry "1", not "user"; pgjdbc's PKCS#12 key manager (which asks
// for "user") therefore cannot use keystore.p12 — point pgjdbc's sslkey at the DER key
// (key.pk8 / postgresql.pk8) instead. JSSE key managers (javax.net.ssl.keyStore), which
// take any key entry, and trust managers work with both files.
type PKCS12Options struct {
	// PasswordFile, when set, holds the password; it is read at every write and one
	// trailing newline ("\n" or "\r\n") is removed.
	PasswordFile string
	// Password is used when PasswordFile is "". One of the two must give a non-empty
	// password.
	Password bundle.Secret
}

// password reads the key store password (at every write).
func (o *PKCS12Options) password() (bundle.Secret, error) {
	if o.PasswordFile == "" {
		if o.Password == "" {
			return "", errors.New("the pkcs12 password is empty")
		}
		return o.Password, nil
	}
	data, err := os.ReadFile(o.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("reading the pkcs12 password_file: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("the pkcs12 password_file %s is empty", o.PasswordFile)
	}
	return bundle.Secret(s), nil
}

// encodeKeyStore encodes the key and chain of b.
func encodeKeyStore(b *bundle.Bundle, pw bundle.Secret) ([]byte, error) {
	data, err := pkcs12.Modern2023.Encode(b.Key, b.Chain[0], b.Chain[1:], pw.Reveal())
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", keystoreName, err)
	}
	return data, nil
}

// encodeTrustStore encodes every CA of b as a trusted certificate entry.
func encodeTrustStore(b *bundle.Bundle, pw bundle.Secret) ([]byte, error) {
	data, err := pkcs12.Modern2023.EncodeTrustStore(b.CAs, pw.Reveal())
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", truststoreName, err)
	}
	return data, nil
}

// keyStoreHolds reports whether the key store data opens with pw and holds b's key and
// chain.
func keyStoreHolds(data []byte, pw bundle.Secret, b *bundle.Bundle) bool {
	key, leaf, chain, err := pkcs12.DecodeChain(data, pw.Reveal())
	if err != nil || !leaf.Equal(b.Chain[0]) || len(chain) != len(b.Chain)-1 {
		return false
	}
	for i, c := range chain {
		if !c.Equal(b.Chain[i+1]) {
			return false
		}
	}
	signer, ok := key.(crypto.Signer)
	return ok && bundle.PublicKeysEqual(signer.Public(), b.Key.Public())
}

// trustStoreHolds reports whether the trust store data opens with pw and holds exactly
// b's CAs.
func trustStoreHolds(data []byte, pw bundle.Secret, b *bundle.Bundle) bool {
	certs, err := pkcs12.DecodeTrustStore(data, pw.Reveal())
	if err != nil || len(certs) != len(b.CAs) {
		return false
	}
	for i, c := range certs {
		if !bytes.Equal(c.Raw, b.CAs[i].Raw) {
			return false
		}
	}
	return true
}
