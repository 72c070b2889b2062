package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestWatchConfigFollowsConfigMapSwap: a ConfigMap volume replaces agent.hcl by writing
// a new timestamped directory and renaming a new ..data link over the old one; no event
// names agent.hcl. The watcher must still ask for a reload.
func TestWatchConfigFollowsConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	write := func(gen, content string) {
		if err := os.MkdirAll(filepath.Join(dir, gen), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, gen, "agent.hcl"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("..2026_11_29_00_00_00.1", "# one\n")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("..2026_11_29_00_00_00.1", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/agent.hcl", filepath.Join(dir, "agent.hcl")))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	reloads := make(chan struct{}, 1)
	must(watchConfig(ctx, filepath.Join(dir, "agent.hcl"), reloads, &wg))

	// An unrelated file in the directory asks for nothing.
	must(os.WriteFile(filepath.Join(dir, "other.txt"), []byte("x"), 0o644))
	select {
	case <-reloads:
		t.Fatal("a reload was requested for an unrelated file")
	case <-time.After(time.Second):
	}

	// The kubelet's update: new directory, ..data_tmp link, rename over ..data, old
	// directory removed.
	write("..2026_11_29_00_01_00.2", "# two\n")
	must(os.Symlink("..2026_11_29_00_01_00.2", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.RemoveAll(filepath.Join(dir, "..2026_11_29_00_00_00.1")))
	select {
	case <-reloads:
	case <-time.After(10 * time.Second):
		t.Fatal("no reload requested after the ..data swap")
	}
}
