package config

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/hcl/v2"
)

// Limits on a configuration file, checked before HCL parses it: the HCL parser has no
// nesting limit (deep nesting overflows the stack and kills the process) and some deep
// constructs take quadratic time, so a broken or hostile file could otherwise take the
// agent down. Both are far above anything a real configuration needs.
const (
	// MaxFileSize is the largest configuration file accepted (1 MiB).
	MaxFileSize = 1 << 20
	// MaxNesting is how deep brackets, braces, parentheses, strings, template
	// interpolations (${ and %{), template directives (%{ if }, %{ for }) and runs of
	// unary operators may nest.
	MaxNesting = 100
	// MaxTemplateMarks is how many "$" and "%" characters one quoted string or heredoc
	// may hold: HCL's parser takes quadratic time over them (64 KiB of "%" take
	// seconds, 1 MiB would take an hour).
	MaxTemplateMarks = 1000
)

// frame is one open construct during the nesting scan.
type frame struct {
	kind   byte   // '{', '[', '(', 'i' (${ or %{), '"' (quoted string), 'h' (heredoc)
	marker []byte // heredoc end marker
	dirs   int    // open %{ if } / %{ for } directives inside this string or heredoc
	marks  int    // "$" and "%" seen in this string or heredoc
}

// checkLimits returns a diagnostic when src is larger than MaxFileSize or nests deeper
// than MaxNesting, else nil. The scan knows enough of HCL's lexical structure
// (comments, quoted strings and their escapes, heredocs, templates) not to count
// brackets inside text; anything it does not understand it leaves to the parser.
func checkLimits(filename string, src []byte) *hcl.Diagnostic {
	_, d := scanFile(filename, src)
	return d
}

// scanFile is checkLimits that also returns where top-level blocks end: the position
// just after each newline that follows (white space aside) a "}" closing a top-level
// block. The scan's view of HCL is approximate; parseFile checks its cuts.
func scanFile(filename string, src []byte) ([]hcl.Pos, *hcl.Diagnostic) {
	if len(src) > MaxFileSize {
		return nil, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Configuration file too large",
			Detail:  fmt.Sprintf("The file is larger than %d bytes (1 MiB), the most the agent reads; a configuration needs a few kilobytes.", MaxFileSize),
			Subject: &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos}}
	}
	s := scanner{src: src, line: 1, col: 1}
	if pos, ok := s.scan(); !ok && s.marks {
		return nil, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "String too complex",
			Detail:  fmt.Sprintf("This string holds more than %d \"$\" and \"%%\" characters; the agent refuses such files to protect itself. Put long text in a file and use file(\"...\").", MaxTemplateMarks),
			Subject: &hcl.Range{Filename: filename, Start: pos, End: hcl.Pos{Line: pos.Line, Column: pos.Column + 1, Byte: pos.Byte + 1}}}
	} else if !ok {
		return nil, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Configuration nested too deeply",
			Detail:  fmt.Sprintf("Brackets, braces, parentheses, strings, template interpolations or unary operators nest more than %d levels deep here; the agent refuses such files to protect itself. Real configurations nest a few levels.", MaxNesting),
			Subject: &hcl.Range{Filename: filename, Start: pos, End: hcl.Pos{Line: pos.Line, Column: pos.Column + 1, Byte: pos.Byte + 1}}}
	}
	return s.ends, nil
}

type scanner struct {
	src       []byte
	i         int // byte offset
	line, col int // of src[i]
	stack     []frame
	dirs      int  // sum of the frames' dirs
	unary     int  // length of the current run of unary operators
	marks     bool // the scan stopped at MaxTemplateMarks, not at MaxNesting
	closed    bool // a top-level block closed and only white space followed on its line
	ends      []hcl.Pos
}

func (s *scanner) depth() int { return len(s.stack) + s.dirs + s.unary }

func (s *scanner) pos() hcl.Pos { return hcl.Pos{Line: s.line, Column: s.col, Byte: s.i} }

// advance moves n bytes forward, keeping line and column (in characters) current.
func (s *scanner) advance(n int) {
	for ; n > 0 && s.i < len(s.src); n-- {
		c := s.src[s.i]
		s.i++
		switch {
		case c == '\n':
			s.line, s.col = s.line+1, 1
		case c&0xC0 != 0x80: // not a UTF-8 continuation byte
			s.col++
		}
	}
}

func (s *scanner) has(prefix string) bool { return bytes.HasPrefix(s.src[s.i:], []byte(prefix)) }

func (s *scanner) push(f frame) bool {
	s.stack = append(s.stack, f)
	return s.depth() <= MaxNesting
}

func (s *scanner) pop() {
	top := s.stack[len(s.stack)-1]
	s.dirs -= top.dirs
	s.stack = s.stack[:len(s.stack)-1]
}

func (s *scanner) top() byte {
	if len(s.stack) == 0 {
		return 0
	}
	return s.stack[len(s.stack)-1].kind
}

// scan walks src; it returns the position where the nesting limit is exceeded and
// false, or true.
func (s *scanner) scan() (hcl.Pos, bool) {
	for s.i < len(s.src) {
		var ok bool
		switch s.top() {
		case '"':
			ok = s.stringStep()
		case 'h':
			ok = s.heredocStep()
		default:
			ok = s.exprStep()
		}
		if !ok {
			return s.pos(), false
		}
	}
	return hcl.Pos{}, true
}

func (s *scanner) exprStep() bool {
	c := s.src[s.i]
	switch {
	case c == ' ' || c == '\t' || c == '\r':
		s.advance(1)
		return true // white space does not end a run of unary operators
	case c == '!' || c == '-' && !s.has("->"):
		s.closed = false
		s.unary++
		if s.depth() > MaxNesting {
			return false
		}
		s.advance(1)
		return true
	}
	s.unary = 0
	closed := s.closed
	s.closed = false
	switch {
	case c == '\n':
		s.advance(1)
		if closed {
			s.ends = append(s.ends, s.pos())
		}
	case c == '#' || s.has("//"):
		for s.i < len(s.src) && s.src[s.i] != '\n' {
			s.advance(1)
		}
	case s.has("/*"):
		end := bytes.Index(s.src[s.i+2:], []byte("*/"))
		if end < 0 {
			s.advance(len(s.src) - s.i)
		} else {
			s.advance(end + 4)
		}
	case c == '"':
		if !s.push(frame{kind: '"'}) {
			return false
		}
		s.advance(1)
	case s.has("<<"):
		if m, n := heredocStart(s.src[s.i:]); m != nil {
			if !s.push(frame{kind: 'h', marker: m}) {
				return false
			}
			s.advance(n)
		} else {
			s.advance(2)
		}
	case c == '{' || c == '[' || c == '(':
		if !s.push(frame{kind: c}) {
			return false
		}
		s.advance(1)
	case c == '}':
		if t := s.top(); t == '{' || t == 'i' {
			s.pop()
			s.closed = t == '{' && len(s.stack) == 0
		}
		s.advance(1)
	case c == ']' || c == ')':
		if t := s.top(); t == '[' && c == ']' || t == '(' && c == ')' {
			s.pop()
		}
		s.advance(1)
	default:
		s.advance(1)
	}
	return true
}

// template handles ${ and %{ (and their $${ and %%{ escapes) inside a string or
// heredoc and counts "$" and "%"; it reports whether it consumed anything and whether
// the limits hold.
func (s *scanner) template() (consumed, ok bool) {
	if c := s.src[s.i]; c != '$' && c != '%' {
		return false, true
	}
	f := &s.stack[len(s.stack)-1] // the string or heredoc
	if f.marks++; f.marks > MaxTemplateMarks {
		s.marks = true
		return true, false
	}
	switch {
	case s.has("$${") || s.has("%%{"):
		s.advance(3)
		return true, true
	case s.has("${"):
	case s.has("%{"):
		// Directives that open a block (if, for) nest until their end directive.
		switch directive(s.src[s.i+2:]) {
		case "if", "for":
			f.dirs++
			s.dirs++
		case "endif", "endfor":
			if f.dirs > 0 {
				f.dirs--
				s.dirs--
			}
		}
	default:
		return false, true
	}
	s.unary = 0
	if !s.push(frame{kind: 'i'}) {
		return true, false
	}
	s.advance(2)
	return true, true
}

func (s *scanner) stringStep() bool {
	if consumed, ok := s.template(); consumed {
		return ok
	}
	switch s.src[s.i] {
	case '\\':
		s.advance(2)
	case '"':
		s.pop()
		s.advance(1)
	case '\n': // quoted strings end at the line; the parser reports the rest
		s.pop()
		s.advance(1)
	default:
		s.advance(1)
	}
	return true
}

func (s *scanner) heredocStep() bool {
	if s.i == 0 || s.src[s.i-1] == '\n' {
		line := s.src[s.i:]
		if j := bytes.IndexByte(line, '\n'); j >= 0 {
			line = line[:j]
		}
		if bytes.Equal(bytes.TrimSpace(line), s.stack[len(s.stack)-1].marker) {
			s.pop()
			s.advance(len(line))
			return true
		}
	}
	if consumed, ok := s.template(); consumed {
		return ok
	}
	s.advance(1)
	return true
}

// heredocStart recognises "<<MARKER\n" or "<<-MARKER\n" at the start of b and returns
// the marker and the length up to and including the newline.
func heredocStart(b []byte) ([]byte, int) {
	i := 2
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	for i < len(b) && (b[i] == '_' || b[i] == '-' || b[i] >= 'a' && b[i] <= 'z' || b[i] >= 'A' && b[i] <= 'Z' || b[i] >= '0' && b[i] <= '9' && i > start) {
		i++
	}
	if i == start {
		return nil, 0
	}
	m := b[start:i]
	if i < len(b) && b[i] == '\r' {
		i++
	}
	if i >= len(b) || b[i] != '\n' {
		return nil, 0
	}
	return m, i + 1
}

// directive returns the keyword after "%{" (skipping "~" and white space).
func directive(b []byte) string {
	b = bytes.TrimLeft(b, "~ \t")
	n := 0
	for n < len(b) && n < 8 && b[n] >= 'a' && b[n] <= 'z' {
		n++
	}
	return string(b[:n])
}
