package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzParse: no input makes the loader panic or overflow the stack; a refused input
// comes back as *DiagError with at least one error, rendered within bounds; an
// accepted one as a Config; and parsing in the smallest pieces gives what parsing the
// whole file gives. The seeds (testdata/fuzz/FuzzParse and every fixture, the example
// and a rich valid config) run with every `go test`.
func FuzzParse(f *testing.F) {
	for _, s := range mutationSeeds(f) {
		f.Add(s)
	}
	opts := testOptions()
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse("fuzz.hcl", src, opts)
		samePieces(t, src, opts)
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

// samePieces fails t unless src parsed in pieces as small as possible gives the same
// Config, or the same diagnostics, as src parsed whole. Diagnostics are compared as a
// set: HCL reports a body's unsupported arguments in map order.
func samePieces(t *testing.T, src []byte, opts Options) {
	t.Helper()
	whole, werr := parse("p.hcl", src, opts, len(src)+1)
	pieces, perr := parse("p.hcl", src, opts, 1)
	if (werr == nil) != (perr == nil) {
		t.Fatalf("whole: %v\nin pieces: %v", werr, perr)
	}
	if werr != nil {
		w, p := renderEach(t, werr), renderEach(t, perr)
		if !slices.Equal(w, p) {
			t.Fatalf("diagnostics differ\nwhole:\n%s\nin pieces:\n%s", strings.Join(w, ""), strings.Join(p, ""))
		}
		return
	}
	if !reflect.DeepEqual(whole, pieces) {
		t.Fatalf("configs differ\nwhole:     %+v\nin pieces: %+v", whole, pieces)
	}
}

// renderEach renders each diagnostic of err, a *DiagError, and sorts them.
func renderEach(t *testing.T, err error) []string {
	t.Helper()
	var de *DiagError
	if !errors.As(err, &de) {
		t.Fatalf("not a diagnostic: %v", err)
	}
	var out []string
	for _, d := range de.Diags {
		var b bytes.Buffer
		if err := de.render(&b, d, 100); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.String())
	}
	slices.Sort(out)
	return out
}
