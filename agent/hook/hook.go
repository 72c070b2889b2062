// Package hook runs the actions that tell consumers an instance's files
// changed: an exec hook runs a command (argv, no shell) with the event in its
// environment; a signal hook sends a signal to the process named by a pid
// file.
//
// Hooks never see key material: they get file paths only.
package hook

import (
	"context"
	"time"
)

// Event kinds.
const (
	KindRenewed   = "renewed"    // a new client certificate (and key) was written
	KindCAChanged = "ca-changed" // only the CA changed (CA-only instances, CA rotation)
)

// Event describes one change of an instance's files; hooks get it once per
// change, after every sink of the instance has been written.
type Event struct {
	Instance string
	Kind     string // KindRenewed or KindCAChanged
	Dir      string // the first sink's directory
	// Visible paths in the first sink; "" when the instance has none (a
	// CA-only instance has no cert and key).
	CertFile, KeyFile, CAFile string
	// NotAfter is the client certificate's expiry (for CA-only instances,
	// the CA's); zero when unknown.
	NotAfter time.Time
}

// Hook is what Exec and Signal implement.
type Hook interface {
	Run(ctx context.Context, ev Event) error
	String() string
}

var (
	_ Hook = (*Exec)(nil)
	_ Hook = (*Signal)(nil)
)

// env returns the DBCERT_* variables for ev.
func (ev Event) env() []string {
	notAfter := ""
	if !ev.NotAfter.IsZero() {
		notAfter = ev.NotAfter.UTC().Format(time.RFC3339)
	}
	return []string{
		"DBCERT_INSTANCE=" + ev.Instance,
		"DBCERT_EVENT=" + ev.Kind,
		"DBCERT_DIR=" + ev.Dir,
		"DBCERT_CERT_FILE=" + ev.CertFile,
		"DBCERT_KEY_FILE=" + ev.KeyFile,
		"DBCERT_CA_FILE=" + ev.CAFile,
		"DBCERT_NOT_AFTER=" + notAfter,
	}
}
