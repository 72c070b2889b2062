package verify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// Engines a Target speaks.
const (
	EnginePostgres = "postgres"
	EngineMySQL    = "mysql"
)

// Target is one instance to check, with the files a client would use.
type Target struct {
	Instance string // the config's instance name, for the report
	Engine   string // EnginePostgres | EngineMySQL
	Addr     string // host:port
	// ServerName is sent as TLS SNI when it is a DNS name ("" = none).
	ServerName string
	User       string // database user ("" = postgres / root)
	Database   string // database ("" = the server's default)
	CertFile   string // client certificate (leaf first, then intermediates), PEM
	KeyFile    string // client private key, PEM
	CAFile     string // server CA certificate(s), PEM
	// Identity says what the server certificate must name; the zero value checks the
	// chain alone (AlloyDB).
	Identity Identity
}

// Identity is the expected identity of a server certificate: a DNS SAN equal to DNSName
// (when set) or the common name CN (when set). When both are empty, only the chain is
// checked.
type Identity struct {
	DNSName string
	CN      string
}

// Result is the outcome of one check.
type Result struct {
	Instance   string
	Engine     string
	Addr       string
	TLSVersion string    // e.g. "TLS1.3"; "" when no handshake happened
	Subject    string    // server certificate subject
	NotAfter   time.Time // server certificate expiry
	ChainOK    bool
	ChainErr   error
	IdentityOK bool
	// IdentityNote says what matched, or what was expected when nothing did.
	IdentityNote string
	Accepted     bool   // the server accepted the client certificate
	Detail       string // the server's own words, when it answered with an error
	Err          error  // why the check could not complete (connect, TLS, rejection)
}

// OK reports whether every part of the check passed.
func (r Result) OK() bool { return r.Err == nil && r.ChainOK && r.IdentityOK && r.Accepted }

// Check connects to t.Addr, runs t's protocol with the client certificate, key and CA
// files read from disk, and reports what it saw. It never returns an error: problems are
// in Result.Err. ctx bounds the whole check.
func Check(ctx context.Context, t Target) Result {
	res := Result{Instance: t.Instance, Engine: t.Engine, Addr: t.Addr}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		res.Err = fmt.Errorf("loading the client certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
		return res
	}
	roots, err := loadCAs(t.CAFile)
	if err != nil {
		res.Err = err
		return res
	}
	var peer []*x509.Certificate
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain and identity are checked below, against the CA file and the
		// instance, and reported separately from the handshake.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection's caller
		VerifyConnection: func(cs tls.ConnectionState) error {
			peer = cs.PeerCertificates
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}
	if t.ServerName != "" && net.ParseIP(t.ServerName) == nil {
		cfg.ServerName = t.ServerName
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.Addr)
	if err != nil {
		res.Err = fmt.Errorf("connecting to %s: %w", t.Addr, err)
		return res
	}
	defer c.Close()

	var st *tls.ConnectionState
	var out Outcome
	switch t.Engine {
	case EngineMySQL:
		st, out, err = MySQL(ctx, c, cfg, t.User, t.Database)
	default:
		st, out, err = Postgres(ctx, c, cfg, t.User, t.Database)
	}
	if len(peer) > 0 {
		leaf := peer[0]
		res.Subject = leaf.Subject.String()
		res.NotAfter = leaf.NotAfter
		res.ChainErr = verifyChain(peer, roots)
		res.ChainOK = res.ChainErr == nil
		res.IdentityOK, res.IdentityNote = checkIdentity(leaf, t.Identity)
	}
	if st != nil {
		res.TLSVersion = strings.ReplaceAll(tls.VersionName(st.Version), " ", "")
	}
	res.Accepted, res.Detail, res.Err = out.Accepted, out.Detail, err
	return res
}

func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: %w", path, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA file %s holds no certificate", path)
	}
	return pool, nil
}

// verifyChain checks the server's chain (leaf, then what it sent) against roots, without
// a host name (the identity is checked on its own).
func verifyChain(peer []*x509.Certificate, roots *x509.CertPool) error {
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	_, err := peer[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// checkIdentity matches leaf against want: a DNS SAN equal to want.DNSName, or the CN
// want.CN. The zero Identity accepts any certificate (chain only).
func checkIdentity(leaf *x509.Certificate, want Identity) (bool, string) {
	if want == (Identity{}) {
		return true, "chain only"
	}
	if want.DNSName != "" {
		dn := strings.TrimSuffix(strings.ToLower(want.DNSName), ".")
		for _, san := range leaf.DNSNames {
			if strings.TrimSuffix(strings.ToLower(san), ".") == dn {
				return true, "DNS " + want.DNSName
			}
		}
	}
	if want.CN != "" && leaf.Subject.CommonName == want.CN {
		return true, "CN " + want.CN
	}
	var exp []string
	if want.DNSName != "" {
		exp = append(exp, "DNS name "+want.DNSName)
	}
	if want.CN != "" {
		exp = append(exp, "CN "+want.CN)
	}
	return false, "expected " + strings.Join(exp, " or ")
}

// WriteLine prints r as one line: "INSTANCE: ok|FAIL ENGINE ADDR TLS server SUBJECT
// expires TIME chain=.. identity=.. client-cert=.." followed by the cause of a failure.
func WriteLine(w io.Writer, r Result) {
	status := "ok"
	if !r.OK() {
		status = "FAIL"
	}
	yes := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "FAIL"
	}
	tlsv := r.TLSVersion
	if tlsv == "" {
		tlsv = "no-TLS"
	}
	line := fmt.Sprintf("%s: %s %s %s %s", r.Instance, status, r.Engine, r.Addr, tlsv)
	if r.Subject != "" {
		line += fmt.Sprintf(" server=%q expires=%s chain=%s identity=%s(%s)", r.Subject,
			r.NotAfter.UTC().Format(time.RFC3339), yes(r.ChainOK), yes(r.IdentityOK), r.IdentityNote)
	}
	accepted := "accepted"
	if !r.Accepted {
		accepted = "not-accepted"
	}
	line += " client-cert=" + accepted
	var causes []string
	if r.Subject != "" && r.ChainErr != nil {
		causes = append(causes, "server certificate chain does not verify against the CA file: "+r.ChainErr.Error())
	}
	if r.Subject != "" && !r.IdentityOK {
		causes = append(causes, "server certificate identity does not match the instance ("+r.IdentityNote+")")
	}
	if r.Err != nil {
		causes = append(causes, r.Err.Error())
	}
	if r.Detail != "" && r.Err == nil {
		causes = append(causes, "server said: "+r.Detail)
	}
	if len(causes) > 0 {
		line += " — " + strings.Join(causes, "; ")
	}
	fmt.Fprintln(w, line)
}

// ErrNoTargets is returned by Targets when no instance has a connection block.
var ErrNoTargets = errors.New("no instance has a connection block; verify has nothing to check")
