// Package disktest gives tests real disk faults: a small tmpfs mounted for the test,
// filled up, or remounted read-only. Mounting needs root; without it (or when the
// kernel refuses the mount) the test is skipped, and fails instead under
// DBCERT_E2E=require, as in CI.
package disktest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Mount mounts a fresh tmpfs of size (such as "256k") at dir, creating dir, and
// unmounts it when the test ends.
func Mount(t testing.TB, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "disk-fault tests mount a tmpfs and need root")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size+",mode=0755"); err != nil {
		skipOrFail(t, "cannot mount a tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
}

// Tmpfs mounts a fresh tmpfs of size in a directory of the test's own and returns it.
func Tmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	Mount(t, dir, size)
	return dir
}

// Fill writes the file dir/filler until the file system is full and returns its path;
// removing it makes room again.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{'x'}, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

// ReadOnly remounts the tmpfs at dir read-only; Writable makes it writable again.
func ReadOnly(t testing.TB, dir string) { remount(t, dir, unix.MS_RDONLY) }

// Writable remounts the tmpfs at dir read-write.
func Writable(t testing.TB, dir string) { remount(t, dir, 0) }

func remount(t testing.TB, dir string, flags uintptr) {
	t.Helper()
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|flags, ""); err != nil {
		t.Fatalf("remounting %s: %v", dir, err)
	}
}

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("DBCERT_E2E") == "require" {
		t.Fatalf(format+" (DBCERT_E2E=require)", args...)
	}
	t.Skipf(format, args...)
}
