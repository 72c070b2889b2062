package config

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// DiagError is returned by Load when the configuration has errors. Error() gives one
// line per diagnostic ("agent.hcl:5:3: Summary; detail"); Render writes the full form
// with source snippets.
type DiagError struct {
	Diags hcl.Diagnostics
	files map[string]*hcl.File
}

// Error implements error.
func (e *DiagError) Error() string {
	var lines []string
	for _, d := range e.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		lines = append(lines, diagLine(d))
	}
	return strings.Join(lines, "\n")
}

// ErrorCount is the number of error diagnostics (warnings excluded).
func (e *DiagError) ErrorCount() int {
	n := 0
	for _, d := range e.Diags {
		if d.Severity == hcl.DiagError {
			n++
		}
	}
	return n
}

func diagLine(d *hcl.Diagnostic) string {
	s := d.Summary
	if d.Detail != "" {
		s += "; " + d.Detail
	}
	if d.Subject == nil {
		return s
	}
	return fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, s)
}

// Render writes every diagnostic as "file:line:col: error: summary" followed by HCL's
// usual text form ("on agent.hcl line 5, in instance ...:" with the source snippet).
// width wraps the detail text; 0 means no wrapping.
func (e *DiagError) Render(w io.Writer, width uint) error {
	for _, d := range e.Diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		if d.Subject != nil {
			fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, sev, d.Summary)
		}
		var buf bytes.Buffer
		tw := hcl.NewDiagnosticTextWriter(&buf, e.files, width, false)
		if err := tw.WriteDiagnostic(d); err != nil {
			return err
		}
		// Drop HCL's own "Error: summary" heading when the line above already says it.
		text := buf.Bytes()
		if i := bytes.IndexByte(text, '\n'); i >= 0 && d.Subject != nil {
			text = text[i+1:]
		}
		if _, err := w.Write(text); err != nil {
			return err
		}
	}
	return nil
}

// errAt makes an error diagnostic pointing at rng.
func errAt(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &r}
}

// suggest returns " Did you mean "x"?" when given is close to one of names, else "".
func suggest(given string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if d := levenshtein(given, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

// levenshtein is the edit distance between a and b.
func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
