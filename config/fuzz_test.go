package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: no input makes the loader panic or overflow the stack; a refused input
// comes back as *DiagError with at least one error, rendered within bounds; an
// accepted one as a Config. The seeds (testdata/fuzz/FuzzParse and every fixture,
// the example and a rich valid config) run with every `go test`.
func FuzzParse(f *testing.F) {
	for _, s := range mutationSeeds(f) {
		f.Add(s)
	}
	opts := testOptions()
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse("fuzz.hcl", src, opts)
		if err == nil {
			if cfg == nil {
				t.Fatal("no config and no error")
			}
			return
		}
		var de *DiagError
		if !errors.As(err, &de) {
			t.Fatalf("error is not a diagnostic: %v", err)
		}
		if de.ErrorCount() == 0 {
			t.Fatal("refused without an error diagnostic")
		}
		var buf bytes.Buffer
		if err := de.Render(&buf, 100); err != nil {
			t.Fatal(err)
		}
		if buf.Len() > 64<<10 {
			t.Fatalf("%d bytes of diagnostics", buf.Len())
		}
	})
}

func TestFileFunction(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "project"), []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("x"), maxFileFuncSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	src := "instance \"cloudsql\" \"x\" {\n  project = file(\"project\")\n  instance = \"i\"\n  sink \"file\" { dir = \"/d\" }\n}\n"
	cfg, err := Parse(filepath.Join(dir, "agent.hcl"), []byte(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Instances[0].CloudSQL.Project; got != "from-file" {
		t.Errorf("project = %q", got)
	}
	_, err = Parse(filepath.Join(dir, "agent.hcl"), []byte(strings.Replace(src, `file("project")`, `file("big")`, 1)), Options{})
	if err == nil || !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Errorf("big file: %v", err)
	}
}
