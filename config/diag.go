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
		if snippet, ok := e.snippet(d); ok {
			// HCL would quote too much, or take too long finding the lines in a big
			// file: quote the lines here and let HCL write only the detail.
			if _, err := io.WriteString(w, snippet); err != nil {
				return err
			}
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
	_, err := w.Write(cutLines(text, maxRenderedLine))
	return err
}

// Beyond these sizes HCL's own snippet rendering gets slow (it scans the file line by
// line for every diagnostic), so Render quotes the lines itself.
const (
	bigFileBytes = 256 << 10
	bigFileLines = 4000
)

// maxSnippetLines is the most source lines quoted for one diagnostic.
const maxSnippetLines = 8

// snippet returns the source lines of d in HCL's layout ("  on FILE line N, in
// CONTEXT:" and numbered lines) when HCL would quote too much for it (a line longer
// than maxSnippetWidth, more than maxSnippetLines lines) or the file is big; lines are
// cut to an excerpt around the column.
func (e *DiagError) snippet(d *hcl.Diagnostic) (string, bool) {
	rng := d.Subject
	f := e.files[rng.Filename]
	if f == nil || rng.Start.Byte < 0 || rng.Start.Byte > len(f.Bytes) || rng.End.Byte > len(f.Bytes) || rng.End.Byte < rng.Start.Byte {
		return "", false
	}
	src := f.Bytes
	own := len(src) > bigFileBytes || bytes.Count(src, []byte{'\n'}) > bigFileLines
	from, to := rng.Start.Byte, rng.End.Byte
	if c := d.Context; c != nil && c.Start.Byte >= 0 && c.End.Byte <= len(src) && c.Start.Byte <= c.End.Byte {
		from, to = min(from, c.Start.Byte), max(to, c.End.Byte)
	}
	lines := wholeLines(src, from, to)
	if !own {
		if bytes.Count(lines, []byte{'\n'}) >= maxSnippetLines {
			own = true
		}
		for l := range bytes.SplitSeq(lines, []byte{'\n'}) {
			if own || utf8.RuneCount(l) > maxSnippetWidth {
				own = true
				break
			}
		}
	}
	if !own {
		return "", false
	}
	var b strings.Builder
	where := ""
	if cs, ok := f.Nav.(interface{ ContextString(int) string }); ok {
		if c := cs.ContextString(rng.Start.Byte); c != "" {
			where = ", in " + c
		}
	}
	fmt.Fprintf(&b, "\n  on %s line %d%s:\n", rng.Filename, rng.Start.Line, where)
	n := 0
	for l := range bytes.SplitSeq(wholeLines(src, rng.Start.Byte, rng.End.Byte), []byte{'\n'}) {
		if n == maxSnippetLines {
			b.WriteString("      …\n")
			break
		}
		col := 0
		if n == 0 {
			col = rng.Start.Column - 1
		}
		fmt.Fprintf(&b, "%4d: %s\n", rng.Start.Line+n, excerpt(l, col))
		n++
	}
	return cut(b.String(), maxSnippetLines*(maxSnippetWidth+20)+maxRenderedLine), true
}

// wholeLines returns the lines of src that hold bytes from..to.
func wholeLines(src []byte, from, to int) []byte {
	from = bytes.LastIndexByte(src[:from], '\n') + 1
	if j := bytes.IndexByte(src[to:], '\n'); j >= 0 {
		to += j
	} else {
		to = len(src)
	}
	if to < from {
		to = from
	}
	return src[from:to]
}

// excerpt returns line, or maxSnippetWidth characters of it around col, marked "…"
// where cut.
func excerpt(line []byte, col int) string {
	r := []rune(strings.ToValidUTF8(string(line), "\uFFFD"))
	if len(r) <= maxSnippetWidth {
		return string(r)
	}
	col = min(max(col, 0), len(r))
	lo := max(col-maxSnippetWidth/2, 0)
	hi := min(lo+maxSnippetWidth, len(r))
	ex := string(r[lo:hi])
	if lo > 0 {
		ex = "…" + ex
	}
	if hi < len(r) {
		ex += "…"
	}
	return ex
}

// maxRenderedLine caps every rendered line: a block label or a quoted value can be as
// long as the file.
const maxRenderedLine = 2 * maxSnippetWidth

// cutLines shortens every line of text to at most n characters.
func cutLines(text []byte, n int) []byte {
	if utf8.RuneCount(text) <= n {
		return text
	}
	var out bytes.Buffer
	for l := range bytes.SplitAfterSeq(text, []byte{'\n'}) {
		nl := bytes.HasSuffix(l, []byte{'\n'})
		out.WriteString(cut(string(bytes.TrimSuffix(l, []byte{'\n'})), n))
		if nl {
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
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
