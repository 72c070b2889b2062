package agent

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// skipOrFailE2E skips a test whose environment is missing, or fails it when
// DBCERT_E2E=require (CI).
func skipOrFailE2E(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("DBCERT_E2E") == "require" {
		t.Fatalf(format+" (DBCERT_E2E=require)", args...)
	}
	t.Skipf(format, args...)
}

// mountTmpfs mounts a tmpfs of size bytes at dir (created) and unmounts it when the
// test ends.
func mountTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFailE2E(t, "mounting a small tmpfs needs root")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)+",mode=0755"); err != nil {
		skipOrFailE2E(t, "mount -t tmpfs %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
}

// fill writes a file in dir until the filesystem is full.
func fill(t *testing.T, dir string) string {
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
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

// TestRunDiskFaults: with the sink on a full (or read-only) filesystem, the daemon keeps
// the old files, stays ready until they expire, reports not ready after, and renews by
// itself once the filesystem takes writes again, without a restart.
func TestRunDiskFaults(t *testing.T) {
	for _, fault := range []string{"full", "read-only"} {
		t.Run(fault, func(t *testing.T) {
			w := newWorld(t, 6*time.Second)
			out := filepath.Join(w.dir, "out")
			mountTmpfs(t, out, 256<<10)
			a := NewWithInstances(w.instances("a"), Options{Logger: w.log})
			stop := w.run(a, RunOptions{})
			defer stop()
			eventually(t, 5*time.Second, "files", func() bool { _, err := w.current("a"); return err == nil })
			first, _ := w.current("a")

			var clear func()
			switch fault {
			case "full":
				filler := fill(t, out)
				clear = func() {
					if err := os.Remove(filler); err != nil {
						t.Fatal(err)
					}
				}
			case "read-only":
				if out, err := exec.Command("mount", "-o", "remount,ro", out).CombinedOutput(); err != nil {
					skipOrFailE2E(t, "remount read-only: %v: %s", err, out)
				}
				clear = func() {
					if out, err := exec.Command("mount", "-o", "remount,rw", out).CombinedOutput(); err != nil {
						t.Fatalf("remount rw: %v: %s", err, out)
					}
				}
			}
			// Renewal is due at about 4 s; the writes fail.
			eventually(t, 10*time.Second, "a failed write", func() bool {
				return strings.Contains(w.buf.String(), "writing files (hooks not run)")
			})
			if time.Now().Before(first.notAfter.Add(-200 * time.Millisecond)) {
				if ok, _ := a.Ready(); !ok {
					t.Error("not ready while the old files are still valid")
				}
			}
			if c, err := w.current("a"); err != nil || c.serial != first.serial {
				t.Fatalf("the old files were not kept: %+v, %v", c, err)
			}
			eventually(t, 10*time.Second, "not ready once the old files expired", func() bool {
				ok, missing := a.Ready()
				return !ok && len(missing) == 1 && missing[0] == "a"
			})
			if !time.Now().After(first.notAfter) {
				t.Errorf("not ready before the files expired")
			}
			clear()
			eventually(t, 15*time.Second, "new files once the disk takes writes", func() bool {
				c, err := w.current("a")
				ok, _ := a.Ready()
				return err == nil && c.serial != first.serial && ok
			})
		})
	}
}
