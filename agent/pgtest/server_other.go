//go:build !linux

package pgtest

import (
	"errors"
	"runtime"
	"testing"
)

// process is unused off Linux.
type process struct{}

// Start is only implemented on Linux; elsewhere it skips t (fails it with
// DBCERT_E2E=require).
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	unavailable(t, "pgtest supports only linux, not "+runtime.GOOS)
	return nil
}

// Available reports that pgtest runs only on Linux.
func Available() error { return errors.New("pgtest supports only linux, not " + runtime.GOOS) }

// Launch is only implemented on Linux.
func Launch(o Options) (*Server, error) { return nil, Available() }

// Close does nothing off Linux.
func (s *Server) Close() error { return nil }

// ReplaceServerCert is only implemented on Linux.
func (s *Server) ReplaceServerCert(certPEM, keyPEM, clientCAPEM []byte) error {
	return errors.New("pgtest: not supported on " + runtime.GOOS)
}
