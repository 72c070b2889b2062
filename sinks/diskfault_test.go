package sinks

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
	"github.com/dbcert-agent/dbcert-agent/agent/disktest"
)

// TestDiskFaultsKeepPreviousFiles: when the disk is full or read-only during a Write,
// the Write fails naming the cause, and the previous files stay intact and matching,
// with no partial generation left behind — for a new bundle and for a metadata-only
// update.
func TestDiskFaultsKeepPreviousFiles(t *testing.T) {
	ca := newCA(t, "disk")
	tests := []struct {
		name  string
		fault func(t *testing.T, mnt string)
		cause string
	}{
		{"full", func(t *testing.T, mnt string) { disktest.Fill(t, mnt) }, "no space left on device"},
		{"read-only", func(t *testing.T, mnt string) { disktest.ReadOnly(t, mnt) }, "read-only file system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mnt := disktest.Tmpfs(t, "256k")
			dir := filepath.Join(mnt, "sink")
			o := fullOpts(dir)
			f := newSink(t, o)
			first := pgBundle(t, ca)
			first.Issued = time.Now().Add(-time.Minute)
			mustWrite(t, f, first, true)
			before := snapshot(t, dir)
			gens := generations(t, dir)

			tt.fault(t, mnt)
			second := ca.rsaBundle(t) // bigger than the first: needs space
			second.LoginToken, second.Host, second.Engine = "tok2", "10.0.0.6", "POSTGRES_15"
			_, err := f.Write(t.Context(), second)
			if err == nil {
				t.Fatal("Write on a faulty disk succeeded")
			}
			if !strings.Contains(err.Error(), tt.cause) {
				t.Errorf("the error does not name the cause %q: %v", tt.cause, err)
			}
			if d := snapshotDiff(before, snapshot(t, dir)); d != "" {
				t.Fatalf("a failed write changed the directory:\n%s", d)
			}
			if g := generations(t, dir); strings.Join(g, ",") != strings.Join(gens, ",") {
				t.Fatalf("generations %v after the failed write, want %v", g, gens)
			}
			mustCurrent(t, f, first)

			// A metadata-only update fails the same way and keeps the metadata.
			same := *first
			same.Issued = first.Issued.Add(time.Hour)
			if _, err := f.Write(t.Context(), &same); err == nil {
				t.Fatal("a metadata update on a faulty disk succeeded")
			}
			if d := snapshotDiff(before, snapshot(t, dir)); d != "" {
				t.Fatalf("a failed metadata update changed the directory:\n%s", d)
			}
			cur, err := f.Current()
			must(t, err)
			if !bundle.Equal(cur, first) {
				t.Fatal("Current changed after a failed metadata update")
			}
		})
	}
}
