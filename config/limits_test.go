package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestLimitsRefuseHostileFiles: files that would crash HCL's parser (stack overflow)
// or keep it busy for minutes are refused with one diagnostic naming file:line:col.
func TestLimitsRefuseHostileFiles(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		summary string
		at      string // file:line:col of the diagnostic
	}{
		{"6 MB of parentheses", "a = " + strings.Repeat("(", 6<<20), "Configuration file too large", "h.hcl:1:1"},
		{"1 MB of parentheses", "a = " + strings.Repeat("(", 1<<20-10), "Configuration nested too deeply", "h.hcl:1:105"},
		{"nested interpolations", "a = \"" + strings.Repeat("${", 64<<10) + "\"\n", "Configuration nested too deeply", "h.hcl:1:205"},
		{"nested directives", "a = \"" + strings.Repeat("%{ if true }", 60000) + "\"\n", "Configuration nested too deeply", "h.hcl:1:"},
		{"unary operators", "a = " + strings.Repeat("!", 1<<20-10) + "true\n", "Configuration nested too deeply", "h.hcl:1:105"},
		{"unary minus with spaces", "a = " + strings.Repeat("- ", 200) + "1\n", "Configuration nested too deeply", "h.hcl:1:"},
		{"nested blocks", strings.Repeat("b {\n", 200), "Configuration nested too deeply", "h.hcl:101:3"},
		{"nested for", "a = " + strings.Repeat("[for x in ", 200) + "\n", "Configuration nested too deeply", "h.hcl:1:"},
		{"heredoc interpolations", "a = <<EOT\n" + strings.Repeat("${", 200) + "\nEOT\n", "Configuration nested too deeply", "h.hcl:2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("h.hcl", []byte(tt.src), testOptions())
			var de *DiagError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v, want *DiagError", err)
			}
			if len(de.Diags) != 1 || de.Diags[0].Summary != tt.summary {
				t.Fatalf("diagnostics = %v", err)
			}
			var buf bytes.Buffer
			if err := de.Render(&buf, 78); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			if !strings.HasPrefix(out, tt.at) {
				t.Errorf("rendered diagnostic does not start with %s:\n%.400s", tt.at, out)
			}
			if len(out) > 2000 {
				t.Errorf("rendered diagnostic is %d bytes long:\n%.400s", len(out), out)
			}
		})
	}
}

// TestLimitsAcceptRealisticFiles: brackets inside strings, comments and heredocs, and
// escaped template sequences, do not count; nesting up to the limit is fine.
func TestLimitsAcceptRealisticFiles(t *testing.T) {
	deep := strings.Repeat("[", MaxNesting-2) + strings.Repeat("]", MaxNesting-2)
	srcs := map[string]string{
		"brackets in strings":   `a = "` + strings.Repeat("((([[[{{{", 100) + `"` + "\n",
		"escaped templates":     `a = "` + strings.Repeat("$${%%{", 300) + `"` + "\n",
		"comments":              "# " + strings.Repeat("(", 500) + "\n// " + strings.Repeat("{", 500) + "\n/* " + strings.Repeat("[", 500) + " */\na = 1\n",
		"heredoc":               "a = <<-EOT\n  " + strings.Repeat("{", 500) + "\n  -----BEGIN CERTIFICATE-----\n  EOT\nb = 2\n",
		"escaped quotes":        `a = "\"(((\"` + strings.Repeat("(", 0) + `"` + "\nb = \"" + strings.Repeat("\\\"[", 200) + "\"\n",
		"deep but within limit": "a = " + deep + "\n",
		"dashes and bangs":      "a = 1 - -2\nb = !!true\nc = \"" + strings.Repeat("-", 500) + "\"\nd = x-y-z\n",
		"templates":             "a = \"%{ for x in [1] }${x}%{ endfor }%{ if true }y%{ else }n%{ endif }\"\n",
	}
	for name, src := range srcs {
		t.Run(name, func(t *testing.T) {
			if d := checkLimits("r.hcl", []byte(src)); d != nil {
				t.Errorf("refused: %s: %s", d.Summary, d.Subject)
			}
		})
	}
	// Every fixture and the example pass the scan (their errors are elsewhere).
	files, _ := filepath.Glob("testdata/invalid/*.hcl")
	for _, f := range append(files, "../agent.hcl.example") {
		if strings.HasSuffix(f, "/too_deep.hcl") || strings.HasSuffix(f, "/too_many_template_marks.hcl") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if d := checkLimits(f, src); d != nil {
			t.Errorf("%s refused: %s", f, d.Summary)
		}
	}
}

// TestDiagnosticsBounded: a file with one 64K-character line of invalid characters
// renders at most MaxShownDiagnostics diagnostics, each quoting an excerpt of the line,
// then says how many more there are; Error() (logged on reload) is bounded the same way.
func TestDiagnosticsBounded(t *testing.T) {
	src := "a = 1\nb = " + strings.Repeat("\x01", 64<<10) + "\n"
	_, err := Parse("big.hcl", []byte(src), testOptions())
	var de *DiagError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v", err)
	}
	if de.ErrorCount() <= MaxShownDiagnostics {
		t.Fatalf("only %d diagnostics; the test needs more than %d", de.ErrorCount(), MaxShownDiagnostics)
	}
	var buf bytes.Buffer
	if err := de.Render(&buf, 78); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := len(regexp.MustCompile(`(?m)^big\.hcl:\d+:\d+: error: `).FindAllString(out, -1)); n != MaxShownDiagnostics {
		t.Errorf("%d diagnostics shown, want %d", n, MaxShownDiagnostics)
	}
	if !strings.Contains(out, "and "+itoa(de.ErrorCount()-MaxShownDiagnostics)+" more errors") {
		t.Errorf("no \"and N more errors\" line:\n%.2000s", out)
	}
	if len(out) > MaxShownDiagnostics*4*maxSnippetWidth {
		t.Errorf("rendered diagnostics are %d bytes", len(out))
	}
	if e := err.Error(); len(e) > (MaxShownDiagnostics+1)*6*maxSnippetWidth || !strings.HasSuffix(e, "more errors") {
		t.Errorf("Error() is %d bytes: %.300s", len(e), e)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestLimitsTemplateMarks: strings full of "$" or "%" (quadratic in HCL's parser) are
// refused; a realistic number is fine.
func TestLimitsTemplateMarks(t *testing.T) {
	for name, src := range map[string]string{
		"percent":        "a = \"" + strings.Repeat("%", 64<<10) + "\"\n",
		"dollar heredoc": "a = <<EOT\n" + strings.Repeat("$", 64<<10) + "\nEOT\n",
		"escapes":        "a = \"" + strings.Repeat("$${", 20<<10) + "\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse("m.hcl", []byte(src), testOptions())
			var de *DiagError
			if !errors.As(err, &de) || len(de.Diags) != 1 || de.Diags[0].Summary != "String too complex" {
				t.Fatalf("err = %.300v", err)
			}
			if !strings.HasPrefix(err.Error(), "m.hcl:") {
				t.Errorf("no file:line:col: %.200s", err)
			}
		})
	}
	ok := "a = \"" + strings.Repeat("${x}%%{", MaxTemplateMarks/2) + "\"\nb = \"" + strings.Repeat("$", MaxTemplateMarks) + "\"\n"
	if d := checkLimits("ok.hcl", []byte(ok)); d != nil {
		t.Errorf("refused: %s", d.Summary)
	}
}
