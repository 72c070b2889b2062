package sinks

import (
	"errors"
	"io/fs"
	"slices"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// Visible names besides the layout's.
const (
	tokenName      = "token"           // IAM login token (FileOptions.Token)
	pgpassName     = ".pgpass"         // libpq password file (FileOptions.PGPassUser)
	keystoreName   = "keystore.p12"    // PKCS#12 key store: key and chain (FileOptions.PKCS12)
	truststoreName = "truststore.p12"  // PKCS#12 trust store: every CA (FileOptions.PKCS12)
	pgServiceName  = "pg_service.conf" // PostgreSQL engines (FileOptions.Connection)
	connEnvName    = "connection.env"  // PostgreSQL and MySQL engines (FileOptions.Connection)
	myCnfName      = "my.cnf"          // MySQL engines (FileOptions.Connection)
)

// extraNames are the visible names a sink may write besides its layout's.
var extraNames = []string{tokenName, pgpassName, keystoreName, truststoreName, pgServiceName, connEnvName, myCnfName}

// kind is what of a bundle decides which names a sink writes for it.
type kind struct {
	client bool       // has a client certificate and key
	engine engineKind // connection files
}

func kindOf(b *bundle.Bundle) kind {
	return kind{client: b.HasClientCert(), engine: engineOf(b.Engine)}
}

// names is the one list of the visible names the sink writes for a bundle of kind k, in
// write order: the private key (PEM, then DER, then the key store) and the token files
// first, then the certificate, the CA, the trust store and the connection files. Write
// writes exactly these (and checks every one before writing anything), Current expects
// exactly these, and every other name of allNames must not be the sink's link.
func (f *File) names(k kind) []string {
	var out []string
	if k.client {
		out = append(out, f.layout.key, f.layout.pk8)
		if f.p12 != nil {
			out = append(out, keystoreName)
		}
		if f.token {
			out = append(out, tokenName)
		}
		if f.pgUser != "" {
			out = append(out, pgpassName)
		}
		out = append(out, f.layout.cert)
	}
	out = append(out, f.layout.ca)
	if f.p12 != nil {
		out = append(out, truststoreName)
	}
	if k.client && f.conn != nil {
		switch k.engine {
		case enginePostgres:
			out = append(out, pgServiceName, connEnvName)
		case engineMySQL:
			out = append(out, myCnfName, connEnvName)
		}
	}
	return out
}

// Names returns the visible names (single path elements in Dir) the sink writes for b,
// in write order. Every one of them is a symlink into the current generation once b is
// written; no other name in Dir is the sink's (besides the reserved ".." names).
func (f *File) Names(b *bundle.Bundle) []string { return f.names(kindOf(b)) }

// allNames lists every visible name any sink may create: those of every layout and
// every optional file. The sink removes its own links among them that the current
// bundle does not use (after a layout switch, or a switch to a CA-only bundle).
func allNames() []string {
	var out []string
	for _, l := range layouts {
		out = append(out, l.names()...)
	}
	for _, n := range extraNames {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// split returns the names a bundle of kind k needs, and the other names of allNames.
func (f *File) split(k kind) (want, drop []string) {
	want = f.names(k)
	for _, n := range allNames() {
		if !slices.Contains(want, n) {
			drop = append(drop, n)
		}
	}
	return want, drop
}

// Preflight reports, without writing anything, whether a Write could be refused because
// a name the sink writes is taken by a file it did not create (the error wraps
// ErrForeign) or because Dir is not a real directory. clientCert says whether the
// instance issues client certificates. It checks every name of Names but the
// connection files (which depend on the engine the API reports; Write checks those).
// Callers can use it before asking an API for material the sink would then refuse. A
// missing Dir is no error.
func (f *File) Preflight(clientCert bool) error {
	d, err := f.openDir(false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.close()
	if _, err := readData(d); err != nil {
		return err
	}
	return checkVisible(d, f.names(kind{client: clientCert}))
}
