package config

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// DiagError is returned by Load when the configuration has errors. Error() gives one
// line per diagnostic ("agent.hcl:5:3: Summary; detail"); Render writes the full form
// with source snippets.
type DiagError struct {
	Diags hcl.Diagnostics
	files map[string]*hcl.File
}

// MaxShownDiagnostics is how many diagnostics Error and Render show; the rest are
// counted ("and N more errors").
const MaxShownDiagnostics = 20

// maxSnippetWidth is the longest source line quoted whole; longer lines are cut to an
// excerpt around the column.
const maxSnippetWidth = 160

// Error implements error: at most MaxShownDiagnostics lines, then how many more.
func (e *DiagError) Error() string {
	var lines []string
	more := 0
	for _, d := range e.Diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if len(lines) == MaxShownDiagnostics {
			more++
			continue
		}
		lines = append(lines, diagLine(d))
	}
	if more > 0 {
		lines = append(lines, moreErrors(more))
	}
	return strings.Join(lines, "\n")
}

func moreErrors(n int) string {
	if n == 1 {
		return "and 1 more error"
	}
	return fmt.Sprintf("and %d more errors", n)
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
	s := cut(d.Summary, maxSnippetWidth)
	if d.Detail != "" {
		s += "; " + cut(d.Detail, 4*maxSnippetWidth)
	}
	if d.Subject == nil {
		return s
	}
	return fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, s)
}

// cut shortens s to at most n runes, marking the cut.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}

// Render writes the diagnostics as "file:line:col: error: summary" followed by HCL's
// usual text form ("on agent.hcl line 5, in instance ...:" with the source snippet).
// It shows at most MaxShownDiagnostics, then "and N more errors"; a source line
// longer than maxSnippetWidth is quoted as an excerpt around the column. width wraps
// the detail text; 0 means no wrapping.
func (e *DiagError) Render(w io.Writer, width uint) error {
	shown := 0
	for _, d := range e.Diags {
		if shown == MaxShownDiagnostics {
			break
		}
		shown++
		if err := e.render(w, d, width); err != nil {
			return err
		}
	}
	if more := len(e.Diags) - shown; more > 0 {
		if _, err := fmt.Fprintf(w, "%s\n\n", moreErrors(more)); err != nil {
			return err
		}
	}
	return nil
}

func (e *DiagError) render(w io.Writer, d *hcl.Diagnostic, width uint) error {
	sev := "error"
	if d.Severity == hcl.DiagWarning {
		sev = "warning"
	}
	files := e.files
	heading := d.Subject != nil
	if heading {
		fmt.Fprintf(w, "%s:%d:%d: %s: %s\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, sev, cut(d.Summary, maxSnippetWidth))
		if line, ok := e.longLine(d.Subject); ok {
			// HCL would quote the whole line (once per diagnostic); quote an excerpt and
			// let HCL write only the detail.
			fmt.Fprintf(w, "\n  on %s line %d:\n%4d: %s\n", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Line, line)
			c := *d
			c.Subject, c.Context, c.Expression, c.EvalContext = nil, nil, nil, nil
			d, files = &c, nil
		}
	}
	var buf bytes.Buffer
	tw := hcl.NewDiagnosticTextWriter(&buf, files, width, false)
	if err := tw.WriteDiagnostic(d); err != nil {
		return err
	}
	// Drop HCL's own "Error: summary" heading when the line above already says it.
	text := buf.Bytes()
	if i := bytes.IndexByte(text, '\n'); i >= 0 && heading {
		text = text[i+1:]
	}
	_, err := w.Write(text)
	return err
}

// longLine returns an excerpt of the source line at rng when that line is longer than
// maxSnippetWidth characters.
func (e *DiagError) longLine(rng *hcl.Range) (string, bool) {
	f := e.files[rng.Filename]
	if f == nil || rng.Start.Byte < 0 || rng.Start.Byte > len(f.Bytes) {
		return "", false
	}
	src := f.Bytes
	start := bytes.LastIndexByte(src[:rng.Start.Byte], '\n') + 1
	end := len(src)
	if j := bytes.IndexByte(src[rng.Start.Byte:], '\n'); j >= 0 {
		end = rng.Start.Byte + j
	}
	line := []rune(strings.ToValidUTF8(string(src[start:end]), "\uFFFD"))
	if len(line) <= maxSnippetWidth {
		return "", false
	}
	col := min(max(rng.Start.Column-1, 0), len(line))
	from := max(col-maxSnippetWidth/2, 0)
	to := min(from+maxSnippetWidth, len(line))
	ex := string(line[from:to])
	if from > 0 {
		ex = "…" + ex
	}
	if to < len(line) {
		ex += "…"
	}
	return ex, true
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
