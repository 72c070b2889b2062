package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/alloydb"
	"github.com/dbcert-agent/dbcert-agent/agent/cloudsql"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
	"github.com/dbcert-agent/dbcert-agent/agent/gcpauth"
	"github.com/dbcert-agent/dbcert-agent/agent/geminidb"
	"github.com/dbcert-agent/dbcert-agent/agent/huaweiauth"
	"github.com/dbcert-agent/dbcert-agent/agent/wire"
	"github.com/dbcert-agent/dbcert-agent/config"
)

// Hostile answers (spec §5, §6): for each provider, an answer that is HTML with 200, a
// certificate that does not parse, is for another key, is expired or not yet valid, a
// 10 MiB body, an empty body, an answer that stalls past the timeout, a CA that does not
// parse, and 429 with Retry-After. Each must get the right class (retryable or
// permanent), make the agent write nothing and leave the previous files byte for byte as
// they were — and never panic.

// reissue returns a certificate PEM for the public key of the first certificate in
// pemData, valid from notBefore to notAfter, signed by a throwaway CA; other=true uses
// another key instead. The agent checks key and validity of client certificates, not
// their issuer, so this isolates exactly the property under test.
func reissue(t *testing.T, pemData string, notBefore, notAfter time.Time, other bool) string {
	t.Helper()
	blk, _ := pem.Decode([]byte(pemData))
	if blk == nil {
		t.Fatalf("no certificate in %.40q", pemData)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := leaf.PublicKey
	if other {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = k.Public()
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "hostile"},
		NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hostile CA"},
		NotBefore: notBefore, NotAfter: notAfter.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caT, caT, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

const junkCert = "-----BEGIN CERTIFICATE-----\nMIIBAAAAAAAAAAAAAAAAAAAA\n-----END CERTIFICATE-----\n"

// hostileProvider says where a provider's certificate and CA travel.
type hostileProvider struct {
	name     string
	caOnly   bool
	certCall string // fault Match of the call that brings the certificate
	caCall   string // fault Match of the call that brings the CA
	// editCert / editCA rewrite the certificate / CA in the answer of certCall / caCall.
	editCert func(t *testing.T, f func(string) string) func([]byte) []byte
	editCA   func(t *testing.T, f func(string) string) func([]byte) []byte
}

func field(m map[string]any, path ...string) (map[string]any, string) {
	for _, p := range path[:len(path)-1] {
		next, _ := m[p].(map[string]any)
		if next == nil {
			return nil, ""
		}
		m = next
	}
	return m, path[len(path)-1]
}

func editJSONString(f func(string) string, path ...string) func([]byte) []byte {
	return emulator.MutateJSON(func(m map[string]any) {
		if obj, k := field(m, path...); obj != nil {
			s, _ := obj[k].(string)
			obj[k] = f(s)
		}
	})
}

var hostileProviders = []hostileProvider{
	{
		name: "cloudsql", certCall: "generateEphemeralCert", caCall: "connectSettings",
		editCert: func(t *testing.T, f func(string) string) func([]byte) []byte {
			return editJSONString(f, "ephemeralCert", "cert")
		},
		editCA: func(t *testing.T, f func(string) string) func([]byte) []byte {
			return editJSONString(f, "serverCaCert", "cert")
		},
	},
	{
		name: "alloydb", certCall: "generateClientCertificate", caCall: "generateClientCertificate",
		editCert: func(t *testing.T, f func(string) string) func([]byte) []byte {
			return emulator.MutateJSON(func(m map[string]any) {
				if chain, _ := m["pemCertificateChain"].([]any); len(chain) > 0 {
					s, _ := chain[0].(string)
					m["pemCertificateChain"] = []any{f(s)} // the leaf alone: the hostile leaf has another issuer
				}
			})
		},
		editCA: func(t *testing.T, f func(string) string) func([]byte) []byte {
			return editJSONString(f, "caCert")
		},
	},
	{
		name: "geminidb", caOnly: true, certCall: "download-link", caCall: "GET /nosql-certs/",
		editCA: func(t *testing.T, f func(string) string) func([]byte) []byte {
			return func(b []byte) []byte { return []byte(f(string(b))) }
		},
	},
}

const (
	hwProject  = "0123456789abcdef0123456789abcdef"
	hwInstance = "a1b2c3d4e5f64a7b8c9d0e1f2a3b4c5din06"
)

// hostileInstance builds one instance of the provider against emu with a file sink in
// dir/out.
func hostileInstance(t *testing.T, emu *emulator.Emulator, dir, provider string) *Instance {
	t.Helper()
	sa, err := emu.ServiceAccountJSON("agent@p.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	saPath, pwPath := filepath.Join(dir, "sa.json"), filepath.Join(dir, "pw")
	os.WriteFile(saPath, sa, 0o600)
	os.WriteFile(pwPath, []byte("pw\n"), 0o600)
	out := filepath.Join(dir, "out")
	var body string
	switch provider {
	case "cloudsql":
		emu.AddCloudSQLInstance("p", "i", emulator.CloudSQLInstance{})
		body = `instance "cloudsql" "x" {
  project = "p"
  instance = "i"
  api_endpoint = %[1]q
  sink "file" { dir = %[2]q }
}`
	case "alloydb":
		emu.AddAlloyDBCluster("p", "us-central1", "c")
		body = `instance "alloydb" "x" {
  project = "p"
  location = "us-central1"
  cluster = "c"
  api_endpoint = %[1]q
  sink "file" { dir = %[2]q }
}`
	case "geminidb":
		emu.AddGeminiDBInstance(hwProject, hwInstance)
		emu.AddHuaweiUser("acct", "ops", "pw")
		body = `credentials "huaweicloud" "default" {
  region = "cn-north-4"
  iam_endpoint = %[1]q
  user_name = "ops"
  password_file = %[3]q
  domain_name = "acct"
  project_id = "` + hwProject + `"
}
instance "geminidb" "x" {
  project_id = "` + hwProject + `"
  instance_id = "` + hwInstance + `"
  api_endpoint = %[1]q
  sink "file" { dir = %[2]q }
}`
	}
	src := fmt.Sprintf("credentials \"google\" \"default\" { credentials_file = %q }\n", saPath) +
		fmt.Sprintf(body, emu.URL(), out, pwPath)
	cfg, err := config.Parse(filepath.Join(dir, "agent.hcl"), []byte(src), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ins, err := Build(context.Background(), cfg, BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ins[0].Err != nil {
		t.Fatal(ins[0].Err)
	}
	return ins[0]
}

// snapshot reads every file under dir (links followed), for byte-for-byte comparison.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if fi, serr := os.Stat(p); d.IsDir() || (serr == nil && fi.IsDir()) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		target, _ := os.Readlink(p)
		out[strings.TrimPrefix(p, dir)] = target + "|" + string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHostileAnswers(t *testing.T) {
	now := time.Now()
	type hcase struct {
		name       string
		fault      func(t *testing.T, p hostileProvider) *emulator.Fault // nil: not applicable
		retryable  bool
		retryAfter time.Duration
		stall      bool
	}
	mut := func(t *testing.T, p hostileProvider, ca bool, f func(string) string) *emulator.Fault {
		if ca {
			return &emulator.Fault{Match: p.caCall, Mutate: p.editCA(t, f)}
		}
		if p.caOnly {
			return nil
		}
		return &emulator.Fault{Match: p.certCall, Mutate: p.editCert(t, f)}
	}
	cases := []hcase{
		{name: "HTML with 200", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return &emulator.Fault{Match: p.certCall, Garbage: true, Status: http.StatusOK}
		}},
		{name: "certificate does not parse", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return mut(t, p, false, func(string) string { return junkCert })
		}},
		{name: "certificate for another key", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return mut(t, p, false, func(s string) string { return reissue(t, s, now.Add(-time.Hour), now.Add(time.Hour), true) })
		}},
		{name: "certificate expired", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return mut(t, p, false, func(s string) string { return reissue(t, s, now.Add(-2*time.Hour), now.Add(-time.Hour), false) })
		}},
		{name: "certificate not yet valid", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return mut(t, p, false, func(s string) string { return reissue(t, s, now.Add(time.Hour), now.Add(2*time.Hour), false) })
		}},
		{name: "10 MiB body", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return &emulator.Fault{Match: p.certCall, HugeBody: 10 << 20}
		}},
		{name: "empty body", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return &emulator.Fault{Match: p.certCall, EmptyBody: true}
		}},
		{name: "CA does not parse", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return mut(t, p, true, func(string) string { return junkCert })
		}},
		{name: "429 with Retry-After", retryable: true, retryAfter: 7 * time.Second, fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return &emulator.Fault{Match: p.certCall, Status: http.StatusTooManyRequests, RetryAfter: "7"}
		}},
		{name: "CA answer: HTML with 200", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return caCallFault(p, emulator.Fault{Garbage: true, Status: http.StatusOK})
		}},
		{name: "CA answer: 10 MiB body", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return caCallFault(p, emulator.Fault{HugeBody: 10 << 20})
		}},
		{name: "CA answer: empty body", fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return caCallFault(p, emulator.Fault{EmptyBody: true})
		}},
		{name: "CA answer stalls", stall: true, fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return caCallFault(p, emulator.Fault{Delay: time.Minute})
		}},
		{name: "stalls past the timeout", stall: true, fault: func(t *testing.T, p hostileProvider) *emulator.Fault {
			return &emulator.Fault{Match: p.certCall, Delay: time.Minute}
		}},
	}
	for _, p := range hostileProviders {
		t.Run(p.name, func(t *testing.T) {
			emu, err := emulator.New(emulator.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := emu.Start(""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { emu.Close() })
			dir := t.TempDir()
			in := hostileInstance(t, emu, dir, p.name)
			logs := &syncBuffer{}
			a := NewWithInstances([]*Instance{in}, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("agent log:\n%s", logs.String())
				}
			})
			ctx := context.Background()
			if err := a.Once(ctx, OnceOptions{Timeout: 20 * time.Second}); err != nil {
				t.Fatalf("first run: %v", err)
			}
			out := filepath.Join(dir, "out")
			before := snapshot(t, out)
			if len(before) == 0 {
				t.Fatal("nothing written by the first run")
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					f := tc.fault(t, p)
					if f == nil {
						t.Skip("not applicable to this provider")
					}
					// The class, as the agent's retry loop sees it (fetch and verify).
					emu.ClearFaults()
					emu.Inject(*f)
					k, err := in.keyForTest()
					if err != nil {
						t.Fatal(err)
					}
					if !in.NeedsKey {
						k = nil
					}
					fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					if tc.stall {
						fctx, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
					}
					_, ferr := a.fetchWith(fctx, in, k)
					cancel()
					if ferr == nil {
						t.Fatal("the hostile answer was accepted")
					}
					t.Logf("error: %v", ferr)
					retry, after := retryable(ferr)
					switch {
					case tc.stall:
						if !errors.Is(ferr, context.DeadlineExceeded) {
							t.Errorf("a stalled answer did not end with the deadline: %v", ferr)
						}
					case retry != tc.retryable || after != tc.retryAfter:
						t.Errorf("retryable=%v after=%v, want %v %v", retry, after, tc.retryable, tc.retryAfter)
					}
					// The files: a forced run fails and leaves them as they were.
					emu.ClearFaults()
					emu.Inject(*f)
					oerr := a.Once(ctx, OnceOptions{Force: true, Timeout: 500 * time.Millisecond})
					emu.ClearFaults()
					if oerr == nil {
						t.Error("Once succeeded with a hostile answer")
					}
					if after := snapshot(t, out); !mapsEqual(before, after) {
						t.Errorf("the files changed after a hostile answer")
					}
				})
			}
			// And a good answer still works afterwards.
			if err := a.Once(ctx, OnceOptions{Force: true, Timeout: 20 * time.Second}); err != nil {
				t.Fatalf("good run after the hostile ones: %v", err)
			}
		})
	}
}

// caCallFault aims f at the call that brings the CA, when it is not the certificate's.
func caCallFault(p hostileProvider, f emulator.Fault) *emulator.Fault {
	if p.caCall == p.certCall {
		return nil
	}
	f.Match = p.caCall
	return &f
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal([]byte(v), []byte(w)) {
			return false
		}
	}
	return true
}

// TestClientsRefuseInsecureEndpoints: every API client refuses http:// to a host that is
// not loopback on its own — at construction, and the authenticating transports refuse
// to send credentials there whatever URL they are handed — while loopback http works.
func TestClientsRefuseInsecureEndpoints(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	os.WriteFile(tokFile, []byte("ya29.token\n"), 0o600)
	const insecure = "http://db-api.example.com/"
	plain := &http.Client{}
	ctors := map[string]func(endpoint string) error{
		"cloudsql": func(ep string) error {
			_, err := cloudsql.New(cloudsql.Options{Project: "p", Instance: "i", Endpoint: ep, HTTPClient: plain})
			return err
		},
		"alloydb": func(ep string) error {
			_, err := alloydb.New(alloydb.Options{Project: "p", Location: "l", Cluster: "c", Endpoint: ep, HTTPClient: plain})
			return err
		},
		"geminidb": func(ep string) error {
			_, err := geminidb.New(geminidb.Options{ProjectID: "p", InstanceID: "i", Endpoint: ep, HTTPClient: plain})
			return err
		},
		"huaweiauth iam_endpoint": func(ep string) error {
			_, err := huaweiauth.NewTransport(huaweiauth.Options{IAMEndpoint: ep, UserName: "u", Password: "pw", DomainName: "d", ProjectID: "p"})
			return err
		},
		"gcpauth IAM Credentials endpoint": func(ep string) error {
			_, err := gcpauth.NewClient(context.Background(), gcpauth.Options{TokenFile: tokFile, ImpersonateServiceAccount: "sa@p.iam.gserviceaccount.com", IAMCredentialsEndpoint: ep})
			return err
		},
	}
	for name, ctor := range ctors {
		if err := ctor(insecure); !errors.Is(err, wire.ErrInsecure) {
			t.Errorf("%s accepted %s: %v", name, insecure, err)
		}
		if err := ctor("http://127.0.0.1:1/"); err != nil {
			t.Errorf("%s refused loopback http: %v", name, err)
		}
	}
	gc, err := gcpauth.NewClient(context.Background(), gcpauth.Options{TokenFile: tokFile})
	if err != nil {
		t.Fatal(err)
	}
	hwTr, err := huaweiauth.NewTransport(huaweiauth.Options{TokenFile: tokFile})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*http.Client{"gcpauth": gc, "huaweiauth": {Transport: hwTr}} {
		if _, err := c.Get(insecure + "v1/x"); !errors.Is(err, wire.ErrInsecure) {
			t.Errorf("the %s transport sent credentials to %s: %v", name, insecure, err)
		}
	}
}

// TestBuildWiresConnection: a connection block reaches the providers — Cloud SQL picks
// the address of its ip_type from connectSettings, AlloyDB asks connectionInfo of the
// block's instance — and an address the API lacks is a permanent error naming ip_type.
func TestBuildWiresConnection(t *testing.T) {
	emu, err := emulator.New(emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	dir := t.TempDir()
	sa, _ := emu.ServiceAccountJSON("agent@p.iam.gserviceaccount.com")
	saPath := filepath.Join(dir, "sa.json")
	os.WriteFile(saPath, sa, 0o600)
	emu.AddCloudSQLInstance("p", "my", emulator.CloudSQLInstance{DatabaseVersion: "MYSQL_8_0",
		IPAddresses: []emulator.IPMapping{{Type: "PRIVATE", IPAddress: "127.0.0.3"}}})
	emu.AddAlloyDBCluster("p", "us-central1", "c")
	emu.AddAlloyDBInstance("p", "us-central1", "c", "primary", emulator.AlloyDBInstance{PublicIPAddress: "127.0.0.2"})
	src := fmt.Sprintf(`credentials "google" "default" { credentials_file = %q }
instance "cloudsql" "my" {
  project = "p"
  instance = "my"
  api_endpoint = %[2]q
  sink "file" { dir = %[3]q }
}
instance "alloydb" "al" {
  project = "p"
  location = "us-central1"
  cluster = "c"
  api_endpoint = %[2]q
  sink "file" { dir = %[4]q }
}
`, saPath, emu.URL(), filepath.Join(dir, "my"), filepath.Join(dir, "al"))
	build := func(sqlIP, alIP string) []*Instance {
		cfg, err := config.Parse(filepath.Join(dir, "agent.hcl"), []byte(src), config.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// The connection blocks, as config decodes them.
		cfg.Instances[0].Connection = &config.Connection{User: "app", IPType: sqlIP}
		cfg.Instances[1].Connection = &config.Connection{User: "app", IPType: alIP, Instance: "primary"}
		ins, err := Build(context.Background(), cfg, BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ins
	}
	fetch := func(in *Instance) (hostEngine string, err error) {
		k, _ := in.keyForTest()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		b, err := in.Provider.Fetch(ctx, k)
		if err != nil {
			return "", err
		}
		return b.Host + " " + b.Engine, nil
	}
	ins := build("private", "public")
	for i, want := range []string{"127.0.0.3 MYSQL_8_0", "127.0.0.2 POSTGRES"} {
		if got, err := fetch(ins[i]); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", ins[i].Name, got, err, want)
		}
	}
	ins = build("public", "psc")
	for _, in := range ins {
		_, err := fetch(in)
		if ok, _ := retryable(err); err == nil || ok || !strings.Contains(err.Error(), "ip_type") {
			t.Errorf("%s: %v, want a permanent error naming ip_type", in.Name, err)
		}
	}
}
