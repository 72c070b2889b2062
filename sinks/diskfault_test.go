package sinks

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dbcert-agent/dbcert-agent/agent/bundle"
)

// needRoot skips a test that mounts file systems unless it runs as root, and fails it
// instead under DBCERT_E2E=require.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("DBCERT_E2E") == "require" {
		t.Fatal("disk-fault tests mount a tmpfs and need root (DBCERT_E2E=require)")
	}
	t.Skip("disk-fault tests mount a tmpfs and need root")
}

// smallTmpfs mounts a fresh tmpfs of the given size (e.g. "512k") and returns its path;
// it is unmounted in Cleanup.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	needRoot(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	must(t, os.Mkdir(dir, 0o755))
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size+",mode=0755"); err != nil {
		if os.Getenv("DBCERT_E2E") == "require" {
			t.Fatalf("mounting a tmpfs: %v", err)
		}
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a file in dir until the file system is full.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	must(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}
			return
		}
	}
}

// remountRO makes the tmpfs at dir read-only.
func remountRO(t *testing.T, dir string) {
	t.Helper()
	must(t, unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""))
}

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
		{"full", fillDisk, "no space left on device"},
		{"read-only", remountRO, "read-only file system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mnt := smallTmpfs(t, "256k")
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
