package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dbcert-agent/dbcert-agent/agent/disktest"
)

// TestRunDiskFaults: with the sink on a full (or read-only) filesystem, the daemon keeps
// the old files, stays ready until they expire, reports not ready after, and renews by
// itself once the filesystem takes writes again, without a restart.
func TestRunDiskFaults(t *testing.T) {
	for _, fault := range []string{"full", "read-only"} {
		t.Run(fault, func(t *testing.T) {
			w := newWorld(t, 6*time.Second)
			out := filepath.Join(w.dir, "out")
			disktest.Mount(t, out, "256k")
			a := NewWithInstances(w.instances("a"), Options{Logger: w.log})
			stop := w.run(a, RunOptions{})
			defer stop()
			eventually(t, 5*time.Second, "files", func() bool { _, err := w.current("a"); return err == nil })
			first, _ := w.current("a")

			var clear func()
			switch fault {
			case "full":
				filler := disktest.Fill(t, out)
				clear = func() {
					if err := os.Remove(filler); err != nil {
						t.Fatal(err)
					}
				}
			case "read-only":
				disktest.ReadOnly(t, out)
				clear = func() { disktest.Writable(t, out) }
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
