package sinks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// testCA is a self-signed CA that issues client certificates for tests.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

var serial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(serial.Add(1)) }

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{key: key, cert: cert}
}

// issue returns a client bundle: a leaf for key signed by ca, and ca as the server CA.
func (ca *testCA) issue(t testing.TB, key crypto.Signer) *bundle.Bundle {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "client"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &bundle.Bundle{Key: key, Chain: []*x509.Certificate{leaf}, CAs: []*x509.Certificate{ca.cert}}
}

// ecBundle issues a client bundle for a fresh ECDSA P-256 key.
func (ca *testCA) ecBundle(t testing.TB) *bundle.Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ca.issue(t, key)
}

// rsaBundle issues a client bundle for a fresh RSA-2048 key.
func (ca *testCA) rsaBundle(t testing.TB) *bundle.Bundle {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return ca.issue(t, key)
}

// caOnly is a CA-only bundle of ca.
func (ca *testCA) caOnly() *bundle.Bundle {
	return &bundle.Bundle{CAs: []*x509.Certificate{ca.cert}}
}

// newSink makes a sink, failing the test on a config error. UID/GID default to -1.
func newSink(t testing.TB, opts FileOptions) *File {
	t.Helper()
	f, err := NewFile(opts)
	if err != nil {
		t.Fatalf("NewFile(%+v): %v", opts, err)
	}
	return f
}

// sinkDir returns a fresh sink directory path (not yet created) inside a temp dir.
func sinkDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "sink")
}

func opts(dir string) FileOptions { return FileOptions{Dir: dir, UID: -1, GID: -1} }

// mustWrite writes b and checks changed.
func mustWrite(t testing.TB, f *File, b *bundle.Bundle, wantChanged bool) {
	t.Helper()
	changed, err := f.Write(t.Context(), b)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if changed != wantChanged {
		t.Fatalf("Write: changed = %v, want %v", changed, wantChanged)
	}
}

// mustCurrent reads the current bundle and checks it equals want.
func mustCurrent(t testing.TB, f *File, want *bundle.Bundle) {
	t.Helper()
	got, err := f.Current()
	if err != nil {
		t.Fatalf("Current: %v", err)
	}
	if !bundle.Equal(got, want) {
		t.Fatalf("Current returned a different bundle than was written")
	}
}

// generations lists the generation directories in dir, sorted.
func generations(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var gens []string
	for _, e := range entries {
		if isGeneration(e.Name()) {
			gens = append(gens, e.Name())
		}
	}
	slices.Sort(gens)
	return gens
}

// dataTarget returns the target of dir/..data.
func dataTarget(t testing.TB, dir string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(dir, dataLink))
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// fileMode returns the permission and special bits of path (following symlinks).
func fileMode(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
}

// exists reports whether path exists without following a final symlink.
func exists(t testing.TB, path string) bool {
	t.Helper()
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// snapshot records every path below root with its content (files) or target (links).
func snapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			snap[p] = "link:" + target + ":" + fi.Mode().String()
			return err
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			snap[p] = "file:" + string(data) + ":" + fi.Mode().String()
			return err
		default:
			snap[p] = "dir:" + fi.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// snapshotDiff describes how two snapshots differ (paths only), "" when equal.
func snapshotDiff(before, after map[string]string) string {
	var diff []string
	for p, v := range before {
		if w, ok := after[p]; !ok {
			diff = append(diff, "removed "+p)
		} else if w != v {
			diff = append(diff, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diff = append(diff, "added "+p)
		}
	}
	slices.Sort(diff)
	return strings.Join(diff, "\n")
}
