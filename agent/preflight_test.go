package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/sinks"
)

// TestForeignFileCostsNoAPICall: a file the agent did not create at one of a sink's
// names (here key.pk8) is found before the API is asked, so neither `once` nor the
// daemon requests a certificate it could never write, and the daemon treats it as a
// permanent failure (not ready, retried only at the backoff ceiling).
func TestForeignFileCostsNoAPICall(t *testing.T) {
	w := newWorld(t, time.Hour)
	ins := w.instances("orders")
	dir := filepath.Join(w.dir, "out", "orders")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pk8"), []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := NewWithInstances(ins, Options{Logger: w.log})
	err := a.Once(context.Background(), OnceOptions{Force: true, Timeout: 5 * time.Second})
	if !errors.Is(err, sinks.ErrForeign) {
		t.Fatalf("once: %v; want an error wrapping sinks.ErrForeign", err)
	}
	if n := len(certRequests(w.emu)); n != 0 {
		t.Errorf("once asked the API for %d certificates it could not write", n)
	}

	a = NewWithInstances(w.instances("orders"), Options{Logger: w.log})
	stop := w.run(a, RunOptions{})
	defer stop()
	eventually(t, 10*time.Second, "the permanent failure to be reported", func() bool {
		ready, _ := a.Ready()
		line := a.ready.statusLine(time.Now())
		return !ready && strings.Contains(line, "failed permanently") && strings.Contains(line, "orders")
	})
	if n := len(certRequests(w.emu)); n != 0 {
		t.Errorf("the daemon asked the API for %d certificates it could not write", n)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "key.pk8")); string(got) != "someone else's" {
		t.Errorf("the foreign file was changed: %q", got)
	}
}
