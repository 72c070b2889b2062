package main

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dbcert-agent/dbcert-agent/agent/disktest"
	"github.com/dbcert-agent/dbcert-agent/agent/emulator"
)

// dirState records every entry below dir: file contents and link targets.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	state := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			state[p] = "-> " + target
			return err
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			state[p] = string(data)
			return err
		}
		state[p] = "dir"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return state
}

// TestOnceDiskFaults: `once -force` with the sink on a full and on a read-only file
// system exits 1 with one sentence naming the instance and the cause; the previous
// files stay intact and matching, and no partial generation is left.
func TestOnceDiskFaults(t *testing.T) {
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
			mnt := disktest.Tmpfs(t, "512k")
			e := newEnv(t, emulator.Options{})
			out := filepath.Join(mnt, "out")
			hook := filepath.Join(e.dir, "hook")
			cfg := e.config(e.instanceBlock("orders", out, "pem", hook))
			if r := runAgent(t, "once", "-config", cfg); r.code != 0 {
				t.Fatalf("first once: exit %d\n%s", r.code, r.stderr)
			}
			before := dirState(t, out)
			tt.fault(t, mnt)

			r := runAgent(t, "once", "-config", cfg, "-force")
			if r.code != 1 {
				t.Fatalf("once on a %s disk: exit %d, want 1\n%s", tt.name, r.code, r.stderr)
			}
			t.Logf("stderr:\n%s", r.stderr)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			last := lines[len(lines)-1]
			for _, want := range []string{`instance "orders"`, tt.cause, "previous files are unchanged"} {
				if !strings.Contains(last, want) {
					t.Errorf("the final error lacks %q: %s", want, last)
				}
			}
			if strings.Contains(last, "/..") {
				t.Errorf("the final error names a generation that no longer exists: %s", last)
			}
			after := dirState(t, out)
			if !maps.Equal(before, after) {
				var diff []string
				for p := range after {
					if before[p] != after[p] {
						diff = append(diff, p)
					}
				}
				for p := range before {
					if _, ok := after[p]; !ok {
						diff = append(diff, "removed "+p)
					}
				}
				slices.Sort(diff)
				t.Fatalf("the failed refresh changed the sink directory:\n%s", strings.Join(diff, "\n"))
			}
			if r := runAgent(t, "status", "-config", cfg); r.code != 0 {
				t.Errorf("status after the failed refresh: exit %d (the previous files should be valid)\n%s%s", r.code, r.stdout, r.stderr)
			}
			if n := len(hookRuns(t, hook)); n != 1 {
				t.Errorf("hook ran %d times, want 1 (not for the failed refresh)", n)
			}
		})
	}
}
